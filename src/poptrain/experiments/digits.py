"""An MLP on scikit-learn's bundled digits (8x8 images, 10 classes; no download).

PBT explores the learning rate, momentum, weight decay and dropout of a 64-128-10 MLP trained
with SGD; one step is one epoch at batch size 64; validation accuracy is the metric and the best
member's test accuracy is reported. The data is split 60/20/20 (train/validation/test), the
same split for every member.

    poptrain run poptrain.experiments.digits
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

import poptrain
from poptrain.space import HParams

BATCH_SIZE = 64
HIDDEN = 128
DATA_SEED = 1234

SPACE = {
    "lr": poptrain.Float(1e-3, 0.5, log=True),
    "momentum": poptrain.Float(0.0, 0.99),
    "weight_decay": poptrain.Float(1e-6, 1e-2, log=True),
    "dropout": poptrain.Float(0.0, 0.7),
}


@functools.lru_cache(maxsize=1)
def load_split() -> dict[str, torch.Tensor]:
    """The digits data as float tensors, split 60/20/20 with a fixed seed (scaled to [0, 1])."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise poptrain.ConfigError(
            "the digits experiment needs scikit-learn: pip install 'poptrain[experiments]'"
        ) from None
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(DATA_SEED))
    x, y = x[order], y[order]
    n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
    return {
        "x_train": x[:n_train],
        "y_train": y[:n_train],
        "x_val": x[n_train : n_train + n_val],
        "y_val": y[n_train : n_train + n_val],
        "x_test": x[n_train + n_val :],
        "y_test": y[n_train + n_val :],
    }


def build_model(dropout: float) -> nn.Sequential:
    """The 64-128-10 MLP."""
    return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Dropout(dropout), nn.Linear(HIDDEN, 10))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``(x, y)``."""
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(dim=1) == y).float().mean().item()
    return acc, loss


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, data: dict[str, torch.Tensor], generator: torch.Generator
) -> None:
    """One epoch of minibatch SGD over the training split, in a seeded order."""
    model.train()
    x, y = data["x_train"], data["y_train"]
    order = torch.randperm(len(y), generator=generator)
    for start in range(0, len(y), BATCH_SIZE):
        batch = order[start : start + BATCH_SIZE]
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()


def seed_dropout(model: nn.Module, generator: torch.Generator) -> None:
    """Seed the generator the next epoch's dropout masks come from with a number drawn from
    ``generator``: torch's CPU generator (and the model's CUDA device's when it is on one).

    Not ``torch.manual_seed``: on a machine without an initialised accelerator that also queues
    the seed for CUDA, XPU and MTIA with a ``traceback.format_stack()`` each, about 1 ms per call
    inside a trainable's ``step()``; the draws are the same.
    """
    seed = int(torch.randint(2**31, (1,), generator=generator))
    torch.random.default_generator.manual_seed(seed)
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)  # the current device: the one the model is on, for a model on one device


class DigitsMLP(poptrain.Trainable):
    """The digits MLP as a poptrain Trainable.

    ``self.generator`` draws the batch order and seeds the global torch generator for each
    epoch's dropout masks; it is not in ``state_dict()``. poptrain saves it anyway: each
    checkpoint also holds the member's random state (the global torch, NumPy and ``random``
    generators, and the generators a trainable holds as attributes, see
    ``poptrain.random_state``), restored when the member is rebuilt from its own checkpoint,
    so a resumed run trains as an uninterrupted one would.
    """

    def setup(self, hparams: HParams, context: poptrain.TrainContext) -> None:
        self.data = load_split()
        self.generator = torch.Generator().manual_seed(context.seed)
        with torch.random.fork_rng(devices=[]):  # the initial weights: the CPU generator, seeded
            torch.random.default_generator.manual_seed(context.seed)
            self.model = build_model(float(hparams["dropout"]))
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=float(hparams["lr"]),
            momentum=float(hparams["momentum"]),
            weight_decay=float(hparams["weight_decay"]),
        )
        self.epoch = 0

    def step(self) -> None:
        self.epoch += 1
        seed_dropout(self.model, self.generator)
        train_epoch(self.model, self.optimizer, self.data, self.generator)

    def evaluate(self) -> dict[str, float]:
        acc, loss = accuracy(self.model, self.data["x_val"], self.data["y_val"])
        return {"val_acc": acc, "val_loss": loss}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])

    def set_hparams(self, hparams: HParams) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = float(hparams["lr"])
            group["momentum"] = float(hparams["momentum"])
            group["weight_decay"] = float(hparams["weight_decay"])
        dropout = self.model[2]
        assert isinstance(dropout, nn.Dropout)
        dropout.p = float(hparams["dropout"])


def vectorized_model() -> nn.Sequential:
    """The same 64-128-10 MLP with a per-member dropout rate (``hparam="dropout"``)."""
    from poptrain.vectorized import Dropout

    return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), Dropout(hparam="dropout"), nn.Linear(HIDDEN, 10))


def evaluate_population(predict: Any) -> dict[str, torch.Tensor]:
    """Every member's validation accuracy and loss (``[P]`` each)."""
    data = load_split()
    logits = predict(data["x_val"])  # [P, n_val, 10]
    targets = data["y_val"].expand(logits.shape[0], -1)
    return {
        "val_acc": (logits.argmax(-1) == targets).float().mean(-1),
        "val_loss": nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(-1),
    }


def vectorized_trainable(device: str = "auto") -> Any:
    """The digits MLP as a ``VectorizedTrainable``: SGD with per-member lr, momentum, weight decay
    and dropout, one epoch per step at batch size 64 (the batch order shared by the population)."""
    from poptrain.vectorized import SGD, VectorizedTrainable

    data = load_split()
    return VectorizedTrainable(
        vectorized_model,
        (data["x_train"], data["y_train"]),
        nn.functional.cross_entropy,
        evaluate_population,
        optimizer=SGD(),
        batch_size=BATCH_SIZE,
        device=device,
    )


def experiment() -> dict[str, Any]:
    """The run ``poptrain run poptrain.experiments.digits`` performs."""
    return {
        "trainable": DigitsMLP,
        "space": SPACE,
        "population_size": 16,
        "steps": 30,
        "metric": "val_acc",
        "mode": "max",
        "ready": poptrain.every(4),
        "exploit": poptrain.truncation(0.2),
        "explore": poptrain.perturb((0.8, 1.2), resample_probability=0.25),
    }


def summarize(run: poptrain.Run) -> dict[str, float]:
    """Test accuracy of the best member's final model, and the population's initial median."""
    best = run.best()
    if best is None or best.checkpoint is None:
        return {}
    state = run.load_state(best.checkpoint)
    model = vectorized_model() if any(k.endswith(".rate") for k in state["model"]) else build_model(0.0)
    model.load_state_dict(state["model"])
    data = load_split()
    test_acc, test_loss = accuracy(model, data["x_test"], data["y_test"])
    first = sorted(s.value for s in run.scores() if s.step == 1)
    median_first = first[len(first) // 2] if first else float("nan")
    return {"test_acc": test_acc, "test_loss": test_loss, "median_val_acc_after_step_1": median_first}
