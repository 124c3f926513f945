"""Trainables for the executor conformance suite (importable by worker processes and Ray actors)."""

from __future__ import annotations

import torch

import poptrain


class LrProbe(poptrain.Trainable):
    """The README Quickstart's pattern (the optimizer's state, with its learning rate, kept in
    ``state_dict``) plus dropout and a data order drawn from generators: ``evaluate()`` reports
    the learning rate the optimizer really used for the step just trained."""

    def setup(self, hparams, context):
        g = torch.Generator().manual_seed(context.seed)
        self.x = torch.randn(96, 6, generator=g)
        self.y = self.x @ torch.linspace(-1, 1, 6).unsqueeze(1)
        self.order = torch.Generator().manual_seed(context.seed + 1)  # data order: not in state_dict
        self.model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=hparams["lr"], momentum=0.5)
        self.used = float("nan")

    def step(self):
        self.model.train()
        batch = torch.randperm(96, generator=self.order)[:32]
        self.opt.zero_grad()
        torch.nn.functional.mse_loss(self.model(self.x[batch]), self.y[batch]).backward()
        self.used = self.opt.param_groups[0]["lr"]
        self.opt.step()

    def evaluate(self):
        self.model.eval()
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


class RisingCurve(poptrain.Trainable):
    """``score = step + h``: a learning curve that rises for everyone, with a fixed gap between
    members. The worst member (lowest h) must be replaced at its first ready point."""

    def setup(self, hparams, context):
        self.steps = 0
        self.h = float(hparams["h"])

    def step(self):
        self.steps += 1

    def evaluate(self):
        return self.steps + self.h

    def state_dict(self):
        return {"steps": self.steps, "h": self.h}

    def load_state_dict(self, state):
        self.steps = int(state["steps"])
        self.h = float(state["h"])

    def set_hparams(self, hparams):
        self.h = float(hparams["h"])


def rising_vectorized() -> object:
    """``RisingCurve`` for the vectorized executor: a zero-initialised ``Linear(1, 1)`` whose loss
    ``-h * output`` makes SGD add ``lr * h`` to its weight and bias each step, so the score
    (its output for 1) rises as ``2 * lr * h * step``: the same order of members at every step."""
    from poptrain.vectorized import VectorizedTrainable

    def model() -> torch.nn.Module:
        layer = torch.nn.Linear(1, 1)
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
        return layer

    def loss(output: torch.Tensor, target: torch.Tensor, hparams: dict) -> torch.Tensor:
        return -(hparams["h"] * output).mean()

    def evaluate(predict) -> dict:
        return {"score": predict(torch.ones(1, 1))[:, 0, 0]}

    return VectorizedTrainable(model, (torch.ones(8, 1), torch.zeros(8, 1)), loss, evaluate, batch_size=8, device="cpu")
