"""PBT for a Hugging Face ``Trainer``: four tiny BERT classifiers on synthetic token sequences.

The model is built from a config (random weights: nothing is downloaded, no tokenizer); the
label says whether the sequence holds token 7, so the models can learn it. Each member is a
``transformers.Trainer``; a step is 8 optimizer steps, resumed from the member's state with
Hugging Face's own ``resume_from_checkpoint``, and the score is ``trainer.evaluate()``. The
explored ``learning_rate`` rescales the live optimizer and its linear schedule; ``weight_decay``
goes to the parameter groups that decay.

    python examples/huggingface_example.py            # 4 members, 16 steps
    python examples/huggingface_example.py --quick    # seconds
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import tempfile
from typing import Any

import torch
import transformers

import poptrain
from poptrain.integrations import huggingface_member


class Sequences(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(8, 100, (n, 12), generator=g)
        holds = torch.rand(n, generator=g) < 0.5
        self.ids[holds, torch.randint(1, 12, (int(holds.sum()),), generator=g)] = 7
        self.ids[:, 0] = 1  # [CLS]
        self.labels = (self.ids == 7).any(1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": self.labels[i]}


def model_init(hparams: dict[str, Any]) -> Any:
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2
    )
    return transformers.BertForSequenceClassification(config)


def accuracy(prediction: Any) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, to see it work")
    parser.add_argument("--root", default="runs", help="the folder for the run's folder")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps, per_step = (4, 5) if options.quick else (16, 8)
    run = poptrain.create_run(
        name="huggingface",
        space={"learning_rate": poptrain.Float(1e-4, 1e-2, log=True), "weight_decay": poptrain.Float(0.0, 0.1)},
        population_size=4,
        metric="eval_accuracy",
        mode="max",
        ready=poptrain.every(2),
        exploit=poptrain.truncation(0.25),
        explore=poptrain.perturb(),
        seed=0,
        root=options.root,
        if_exists="overwrite",
    )
    with tempfile.TemporaryDirectory() as scratch:
        args = transformers.TrainingArguments(
            output_dir=scratch,  # each member writes under a temporary folder of its own instead
            per_device_train_batch_size=16,
            per_device_eval_batch_size=256,
            max_steps=steps * per_step,  # the linear schedule spans the whole run
            warmup_steps=per_step,
            logging_steps=per_step,
        )
        member = huggingface_member(
            model_init,
            args,
            train_dataset=Sequences(512, 0),
            eval_dataset=Sequences(256, 1),
            optimizer_steps=per_step,
            compute_metrics=accuracy,
        )
        run.optimize(member, steps=steps)
    best = run.best()
    print(f"best model: member {best.slot} at step {best.step}, eval_accuracy {best.score:.4f}, hparams {best.hparams}")


if __name__ == "__main__":
    main()
