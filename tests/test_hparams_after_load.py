"""A member rebuilt from a checkpoint trains with the hyperparameters its lineage records, even
when its state (the README Quickstart's optimizer state) carries older ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import poptrain


class LrReporter(poptrain.Trainable):
    """The Quickstart pattern: the optimizer's state (with its param_groups' lr) is in state_dict,
    and evaluate() reports the lr the optimizer really used for the last step."""

    def setup(self, hparams, context):
        g = torch.Generator().manual_seed(context.seed)
        self.x = torch.randn(64, 4, generator=g)
        self.y = self.x @ torch.ones(4, 1)
        self.model = torch.nn.Linear(4, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=hparams["lr"])
        self.used = float("nan")

    def step(self):
        self.opt.zero_grad()
        torch.nn.functional.mse_loss(self.model(self.x), self.y).backward()
        self.used = self.opt.param_groups[0]["lr"]
        self.opt.step()

    def evaluate(self):
        with torch.no_grad():
            loss = torch.nn.functional.mse_loss(self.model(self.x), self.y).item()
        return {"loss": loss, "lr_used": self.used}

    def state_dict(self):
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])

    def set_hparams(self, hparams):
        self.opt.param_groups[0]["lr"] = hparams["lr"]


def mismatches(run: poptrain.Run) -> list[tuple[int, int, float, float]]:
    """(slot, step, lr used, lr recorded) of every step trained with another lr than recorded."""
    recorded = {g.id: g.hparams["lr"] for g in run.lineage()}
    return [
        (s.slot, s.step, s.metrics["lr_used"], recorded[s.generation_id])
        for s in run.scores()
        if s.metrics["lr_used"] != pytest.approx(recorded[s.generation_id])
    ]


def make(tmp_path: Path) -> poptrain.Run:
    return poptrain.create_run(
        name="lr",
        space={"lr": poptrain.Float(0.001, 0.1, log=True)},
        population_size=4,
        metric="loss",
        mode="min",
        ready=poptrain.every(2),
        exploit=poptrain.truncation(0.34),
        explore=poptrain.perturb((0.5, 2.0)),
        seed=1,
        root=tmp_path,
    )


class Stopped(LrReporter):
    """Ctrl-C during the 17th step trained in this process: member 2's step 6, after every member
    decided at step 4 (so each restarts from a checkpoint saved before its decision)."""

    calls = 0

    def step(self):
        super().step()
        Stopped.calls += 1
        if Stopped.calls == 17:
            raise KeyboardInterrupt


def test_resumed_members_train_with_their_recorded_hyperparameters(tmp_path: Path) -> None:
    run = make(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run.optimize(Stopped, steps=12)
    resumed = poptrain.load_run("lr", root=tmp_path)
    assert resumed.record.state == "interrupted"
    resumed.optimize(LrReporter, steps=12)  # rebuilt from checkpoints saved before their decisions
    assert any(g.kind != "init" for g in resumed.lineage())  # decisions did change hyperparameters
    assert mismatches(resumed) == []
