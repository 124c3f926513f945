"""The Lightning integration: a LightningModule trained as a poptrain member, with the real
``lightning`` on the CPU (a 2-layer MLP on a synthetic classification set)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("lightning")

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import poptrain
from poptrain.integrations import LightningTrainable, lightning_member

torch.set_num_threads(1)


class MLP(pl.LightningModule):
    """Adam with a step-interval StepLR, so optimizer moments and scheduler state both matter."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.8)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def make_module(hparams: dict[str, Any]) -> MLP:
    return MLP(hparams["lr"])


def data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, (x[:, 0] + x[:, 1] > 0).long())


TRAIN = DataLoader(data(64, 0), batch_size=8, shuffle=True)  # 8 batches an epoch
VAL = DataLoader(data(64, 1), batch_size=64)


def member(**kwargs: Any) -> LightningTrainable:
    made = lightning_member(make_module, train_dataloaders=TRAIN, val_dataloaders=VAL, **kwargs)()
    return made


def context(seed: int = 0) -> poptrain.TrainContext:
    return poptrain.TrainContext(run_name="t", slot=0, seed=seed)


def weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_steps_of_n_batches_train_exactly_as_one_uninterrupted_fit() -> None:
    """Five steps of 3 batches (crossing epoch ends mid-step) give one fit of 15 batches to the
    bit: the optimizer, the scheduler and the loader's place in its shuffled epoch carry over."""
    torch.manual_seed(7)
    trainable = member(batches=3)
    trainable.setup({"lr": 0.05}, context())
    for _ in range(5):
        trainable.step()
    torch.manual_seed(7)
    reference = make_module({"lr": 0.05})
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=15,
        limit_val_batches=0,
    )
    trainer.fit(reference, train_dataloaders=DataLoader(TRAIN.dataset, batch_size=8, shuffle=True))
    assert all(torch.equal(a, b) for a, b in zip(weights(trainable.module), weights(reference), strict=True))
    assert trainable.state_dict()["global_step"] == 15


def test_a_step_can_be_an_epoch() -> None:
    trainable = member()
    trainable.setup({"lr": 0.05}, context())
    trainable.step()
    trainable.step()
    state = trainable.state_dict()
    assert (state["epoch"], state["global_step"]) == (2, 16)
    metrics = trainable.evaluate()
    assert set(metrics) >= {"val_loss", "val_acc"} and all(isinstance(v, float) for v in metrics.values())


class Probe(pl.Callback):
    """What the optimizer holds when the first batch of a fit starts."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        optimizer = trainer.optimizers[0]
        Probe.seen.append(
            {
                "weights": weights(pl_module),
                "moments": [
                    (s["exp_avg"].clone(), s["exp_avg_sq"].clone(), float(s["step"])) for s in optimizer.state.values()
                ],
                "lr": optimizer.param_groups[0]["lr"],
                "scheduler": dict(trainer.lr_scheduler_configs[0].scheduler.state_dict()),
            }
        )


def test_an_exploit_copies_weights_adam_moments_and_the_scheduler_then_trains_with_the_explored_lr() -> None:
    donor = member(batches=3)
    donor.setup({"lr": 0.05}, context(1))
    donor.step()
    donor.step()  # 6 batches: StepLR(4, 0.8) has decayed once
    state = donor.state_dict()
    donor_lr = state["optimizer_states"][0]["param_groups"][0]["lr"]
    assert donor_lr == pytest.approx(0.05 * 0.8)

    Probe.seen = []
    member_ = member(batches=3, trainer_kwargs={"callbacks": [Probe()]})
    member_.setup({"lr": 0.01}, context(2))
    member_.step()
    member_.load_state_dict(state)
    member_.set_hparams({"lr": 0.02})  # explored
    member_.step()
    seen = Probe.seen[3]  # the first batch after the copy
    assert all(torch.equal(a, b) for a, b in zip(seen["weights"], state["state_dict"].values(), strict=True))
    donor_moments = state["optimizer_states"][0]["state"]
    for (avg, avg_sq, step), saved in zip(seen["moments"], donor_moments.values(), strict=True):
        assert torch.equal(avg, saved["exp_avg"]) and torch.equal(avg_sq, saved["exp_avg_sq"])
        assert step == float(saved["step"]) == 6
    assert seen["lr"] == 0.02  # the explored value, not the donor's decayed one
    assert seen["scheduler"]["last_epoch"] == state["lr_schedulers"][0]["last_epoch"] == 6
    after = member_.state_dict()
    assert after["global_step"] == 9 and after["poptrain_hparams"] == {"lr": 0.02}
    assert after["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.02 * 0.8)  # the schedule goes on


def test_an_unchanged_hyperparameter_keeps_what_the_scheduler_did() -> None:
    trainable = member(batches=3)
    trainable.setup({"lr": 0.05}, context())
    for _ in range(3):
        trainable.step()
        trainable.set_hparams({"lr": 0.05})
    assert trainable.state_dict()["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.8**2)


def lightning_run(root: Path) -> poptrain.Run:
    return poptrain.create_run(
        name="pl",
        space={"lr": poptrain.Float(1e-3, 0.1, log=True)},
        population_size=4,
        metric="val_acc",
        mode="max",
        ready=poptrain.every(2),
        exploit=poptrain.truncation(0.25),
        explore=poptrain.perturb(),
        seed=0,
        root=root,
    )


def test_a_run_interrupted_and_resumed_scores_as_the_uninterrupted_one(tmp_path: Path) -> None:
    factory = lightning_member(make_module, train_dataloaders=TRAIN, val_dataloaders=VAL, batches=3)
    whole = lightning_run(tmp_path / "whole").optimize(factory, steps=6)
    assert any(g.kind == "exploit" for g in whole.lineage())

    class Stop(poptrain.ProgressListener):
        seen = 0

        def on_score(self, *args: object) -> None:
            Stop.seen += 1
            if Stop.seen == 11:  # after the first ready round, mid-segment
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lightning_run(tmp_path / "cut").optimize(factory, steps=6, progress=Stop())
    resumed = poptrain.load_run("pl", root=tmp_path / "cut").optimize(factory, steps=6)

    def signature(run: poptrain.Run) -> list[tuple[int, int, float]]:
        return sorted((s.slot, s.step, s.value) for s in run.scores())

    assert signature(resumed) == signature(whole)
    assert [(g.slot, g.kind, g.donor) for g in resumed.lineage()] == [
        (g.slot, g.kind, g.donor) for g in whole.lineage()
    ]


def test_a_hyperparameter_the_module_cannot_take_is_one_clear_error() -> None:
    trainable = member(batches=2)
    trainable.setup({"lr": 0.05, "dropout": 0.1}, context())
    with pytest.raises(
        poptrain.ConfigError, match="'dropout' is no key of the optimizer's param_groups .* set_hparams"
    ):
        trainable.step()


def test_a_module_hook_takes_the_other_hyperparameters() -> None:
    class WithHook(MLP):
        got: ClassVar[list[dict[str, Any]]] = []

        def set_hparams(self, hparams: dict[str, Any]) -> None:
            WithHook.got.append(dict(hparams))

    trainable = LightningTrainable(lambda h: WithHook(h["lr"]), train_dataloaders=TRAIN, batches=2)
    trainable.setup({"lr": 0.05, "dropout": 0.1}, context())
    trainable.step()
    trainable.step()  # make_module had them, nothing changed: no call
    trainable.set_hparams({"lr": 0.05, "dropout": 0.2})
    trainable.step()
    assert WithHook.got == [{"lr": 0.05, "dropout": 0.2}]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batches": 0}, "batches=0; give a positive int"),
        ({"trainer_kwargs": {"max_steps": 5}}, "trainer_kwargs sets 'max_steps', which poptrain controls"),
    ],
)
def test_bad_arguments_are_one_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(poptrain.ConfigError, match=message):
        lightning_member(make_module, train_dataloaders=TRAIN, **kwargs)


def test_no_validation_data_is_one_clear_error() -> None:
    trainable = lightning_member(make_module, train_dataloaders=TRAIN)()
    trainable.setup({"lr": 0.05}, context())
    with pytest.raises(poptrain.ConfigError, match="no validation data to evaluate on; pass val_dataloaders="):
        trainable.evaluate()


def test_without_lightning_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(poptrain.ConfigError, match=r'pip install "poptrain\[lightning\]"'):
        lightning_member(make_module, train_dataloaders=TRAIN)
