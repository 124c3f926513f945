"""Ask/tell: PBT around your own PyTorch training loop.

Four small MLPs learn a synthetic regression; after each evaluation each one reports its score
with ``run.report`` and does what poptrain says: carry on, explore (new hyperparameters, set in
the optimizer in place) or exploit (load the donor's model and optimizer, then the new
hyperparameters). Nothing is downloaded.

    python examples/ask_tell.py            # 4 members, 60 steps
    python examples/ask_tell.py --quick    # seconds
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

import poptrain


def data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 8, generator=g)
    return x, torch.sin(x @ torch.linspace(-1, 1, 8)).unsqueeze(1)


class Member:
    """One member's model, optimizer and data: the code you would write without poptrain."""

    def __init__(self, hparams: dict[str, Any], seed: int) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=hparams["lr"], momentum=hparams["momentum"])
        self.x, self.y = data(0)
        self.val_x, self.val_y = data(1)

    def train(self, batches: int) -> None:
        for i in range(batches):
            rows = slice(64 * (i % 8), 64 * (i % 8 + 1))
            self.optimizer.zero_grad()
            torch.nn.functional.mse_loss(self.model(self.x[rows]), self.y[rows]).backward()
            self.optimizer.step()

    def val_loss(self) -> float:
        with torch.no_grad():
            return torch.nn.functional.mse_loss(self.model(self.val_x), self.val_y).item()

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def apply(self, hparams: dict[str, Any]) -> None:
        for group in self.optimizer.param_groups:  # in place: the momentum buffers stay
            group["lr"], group["momentum"] = hparams["lr"], hparams["momentum"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, to see it work")
    parser.add_argument("--root", default="runs", help="the folder for the run's folder")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = 12 if options.quick else 60
    run = poptrain.create_run(
        name="ask-tell",
        space={"lr": poptrain.Float(1e-3, 0.5, log=True), "momentum": poptrain.Float(0.0, 0.95)},
        population_size=4,
        metric="val_loss",
        mode="min",
        ready=poptrain.every(4),
        exploit=poptrain.truncation(0.25),
        explore=poptrain.perturb(),
        seed=0,
        root=options.root,
        if_exists="overwrite",
    )
    members = {record.slot: Member(dict(record.hparams), seed=record.slot) for record in run.members()}
    steps_done = dict.fromkeys(members, 0)
    while min(steps_done.values()) < steps:  # round-robin; each member could as well be its own process
        for slot, member in members.items():
            if steps_done[slot] >= steps:
                continue
            member.train(batches=8)
            action = run.report(slot, steps_done[slot] + 1, member.val_loss(), state=member.state)
            if action.kind == "exploit":
                member.load(action.load_state())
            if action.kind in ("exploit", "explore"):
                member.apply(action.hparams)
            assert action.step is not None
            steps_done[slot] = action.step
    best = run.best()
    print(f"best model: member {best.slot} at step {best.step}, val_loss {best.score:.4f}, hparams {best.hparams}")


if __name__ == "__main__":
    main()
