"""PBT for a PyTorch Lightning module: four MLP classifiers on a synthetic two-moons-like set.

Each member is ``make_module(hparams)``; a step trains 10 more batches with Lightning's own
fit loop (Adam and its cosine LR schedule continue across steps and are copied by an exploit),
and the score is the module's validation loop. The explored ``lr`` is written into the
optimizer's param groups; ``dropout`` reaches the module through its ``set_hparams``. Nothing
is downloaded.

    python examples/lightning_example.py            # 4 members, 30 steps
    python examples/lightning_example.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import poptrain
from poptrain.integrations import lightning_member


class Classifier(pl.LightningModule):
    def __init__(self, lr: float, dropout: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Dropout(dropout), torch.nn.Linear(64, 2)
        )

    def set_hparams(self, hparams: dict[str, Any]) -> None:
        """poptrain calls this when a hyperparameter changed (lr is written into the optimizer)."""
        self.net[2].p = hparams["dropout"]

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
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=100)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def make_module(hparams: dict[str, Any]) -> Classifier:
    return Classifier(hparams["lr"], hparams["dropout"])


def moons(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * math.pi
    label = torch.randint(0, 2, (n,), generator=g)
    x = torch.stack([torch.cos(t) + label, torch.sin(t) * (1 - 2 * label) + 0.5 * label], 1)
    return TensorDataset(x + 0.15 * torch.randn(n, 2, generator=g), label)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, to see it work")
    parser.add_argument("--root", default="runs", help="the folder for the run's folder")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = 6 if options.quick else 30
    run = poptrain.create_run(
        name="lightning",
        space={"lr": poptrain.Float(1e-4, 0.1, log=True), "dropout": poptrain.Float(0.0, 0.5)},
        population_size=4,
        metric="val_acc",
        mode="max",
        ready=poptrain.every(2),
        exploit=poptrain.truncation(0.25),
        explore=poptrain.perturb(),
        seed=0,
        root=options.root,
        if_exists="overwrite",
    )
    member = lightning_member(
        make_module,
        train_dataloaders=DataLoader(moons(640, 0), batch_size=32, shuffle=True),
        val_dataloaders=DataLoader(moons(512, 1), batch_size=512),
        batches=10,
    )
    run.optimize(member, steps=steps)
    best = run.best()
    print(f"best model: member {best.slot} at step {best.step}, val_acc {best.score:.4f}, hparams {best.hparams}")


if __name__ == "__main__":
    main()
