"""The Hugging Face integration: a ``transformers.Trainer`` trained as a poptrain member, on the
CPU with a tiny BERT built from a config (random weights, nothing downloaded) on synthetic tokens."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path
from typing import Any, ClassVar

import pytest

transformers = pytest.importorskip("transformers")

import torch

import poptrain
from poptrain.integrations import HFTrainable, huggingface_member

torch.set_num_threads(1)


class Tokens(torch.utils.data.Dataset):
    """Random token ids; the label says whether the first token after [CLS] is below 50."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 100, (n, 8), generator=g)
        self.ids[:, 0] = 0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (ids[1] < 50).long()}


def model_init(hparams: dict[str, Any]) -> Any:
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2
    )
    return transformers.BertForSequenceClassification(config)


def accuracy(prediction: Any) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def args(tmp_path: Path, **kwargs: Any) -> Any:
    base = {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 64, "max_steps": 30, "learning_rate": 1e-3}
    return transformers.TrainingArguments(output_dir=str(tmp_path / "unused"), **{**base, **kwargs})


TRAIN, EVAL = Tokens(64, 0), Tokens(64, 1)


def member(tmp_path: Path, callbacks: tuple[Any, ...] = (), **kwargs: Any) -> HFTrainable:
    factory = huggingface_member(
        model_init,
        args(tmp_path, **kwargs),
        train_dataset=TRAIN,
        eval_dataset=EVAL,
        optimizer_steps=3,
        compute_metrics=accuracy,
        callbacks=callbacks,
    )
    return factory()


def context(seed: int = 0) -> poptrain.TrainContext:
    return poptrain.TrainContext(run_name="t", slot=0, seed=seed)


class Probe(transformers.TrainerCallback):
    """What the optimizer holds as each optimizer step begins."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer, model = kwargs["optimizer"], kwargs["model"]
        Probe.seen.append(
            {
                "step": state.global_step,
                "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "moments": [(s["exp_avg"].clone(), s["exp_avg_sq"].clone()) for s in optimizer.state.values()],
                "lr": optimizer.param_groups[0]["lr"],
                "decay": [g["weight_decay"] for g in optimizer.param_groups],
                "scheduler": kwargs["lr_scheduler"].state_dict()["last_epoch"],
            }
        )


def test_an_exploit_copies_weights_adam_moments_and_the_scheduler_then_trains_with_the_explored_values(
    tmp_path: Path,
) -> None:
    donor = member(tmp_path, weight_decay=0.01)
    donor.setup({"learning_rate": 1e-3, "weight_decay": 0.01}, context(1))
    donor.step()
    donor.step()
    state = donor.state_dict()
    Probe.seen = []
    copy = member(tmp_path, callbacks=(Probe(),))
    copy.setup({"learning_rate": 5e-4, "weight_decay": 0.0}, context(2))
    copy.step()
    copy.load_state_dict(state)
    copy.set_hparams({"learning_rate": 2e-3, "weight_decay": 0.05})  # explored
    copy.step()
    seen = Probe.seen[3]  # the first optimizer step after the copy
    assert seen["step"] == 6
    assert all(torch.equal(seen["weights"][k], v) for k, v in state["model"].items())
    saved = state["optimizer"]["state"].values()
    assert len(seen["moments"]) == len(saved)
    assert all(
        torch.equal(a, s["exp_avg"]) and torch.equal(b, s["exp_avg_sq"]) for (a, b), s in zip(seen["moments"], saved)
    )
    assert seen["scheduler"] == state["scheduler"]["last_epoch"] == 6
    assert seen["lr"] == pytest.approx(2e-3 * (1 - 6 / 30))  # the explored peak, where the linear schedule is
    assert seen["decay"] == [0.05, 0.0]  # biases and LayerNorm do not decay
    assert copy.evaluate()["eval_accuracy"] >= 0.0


def hf_run(root: Path) -> poptrain.Run:
    return poptrain.create_run(
        name="hf",
        space={"learning_rate": poptrain.Float(1e-4, 1e-2, log=True)},
        population_size=3,
        metric="eval_accuracy",
        mode="max",
        ready=poptrain.every(2),
        exploit=poptrain.truncation(0.34),
        explore=poptrain.perturb(),
        seed=0,
        root=root,
    )


@pytest.mark.slow
def test_a_run_interrupted_and_resumed_scores_as_the_uninterrupted_one(tmp_path: Path) -> None:
    factory = huggingface_member(
        model_init, args(tmp_path), train_dataset=TRAIN, eval_dataset=EVAL, optimizer_steps=3, compute_metrics=accuracy
    )
    whole = hf_run(tmp_path / "whole").optimize(factory, steps=6)
    assert any(g.kind == "exploit" for g in whole.lineage())

    class Stop(poptrain.ProgressListener):
        seen = 0

        def on_score(self, *args: object) -> None:
            Stop.seen += 1
            if Stop.seen == 8:  # after the first ready round, mid-segment
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hf_run(tmp_path / "cut").optimize(factory, steps=6, progress=Stop())
    resumed = poptrain.load_run("hf", root=tmp_path / "cut").optimize(factory, steps=6)

    def signature(run: poptrain.Run) -> list[tuple[int, int, float]]:
        return sorted((s.slot, s.step, s.value) for s in run.scores())

    assert signature(resumed) == signature(whole)


def test_a_schedule_too_short_for_the_run_is_one_clear_error(tmp_path: Path) -> None:
    trainable = member(tmp_path, max_steps=4)
    trainable.setup({"learning_rate": 1e-3}, context())
    trainable.step()
    with pytest.raises(poptrain.ConfigError, match="stopped at step 4 of the 4 .* raise max_steps"):
        trainable.step()


def test_a_hyperparameter_the_optimizer_does_not_take_needs_on_hparams(tmp_path: Path) -> None:
    with pytest.raises(poptrain.ConfigError, match="'dropout' is not one the optimizer takes .* on_hparams="):
        member(tmp_path).setup({"learning_rate": 1e-3, "dropout": 0.1}, context())


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(poptrain.ConfigError, match="optimizer_steps=0; give a positive int"):
        huggingface_member(model_init, args(tmp_path), train_dataset=TRAIN, eval_dataset=EVAL, optimizer_steps=0)
    with pytest.raises(poptrain.ConfigError, match="args is a dict; give a transformers.TrainingArguments"):
        huggingface_member(model_init, {}, train_dataset=TRAIN, eval_dataset=EVAL, optimizer_steps=1)


def test_without_transformers_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(poptrain.ConfigError, match=r'pip install "poptrain\[hf\]"'):
        huggingface_member(model_init, None, train_dataset=TRAIN, eval_dataset=EVAL, optimizer_steps=1)
