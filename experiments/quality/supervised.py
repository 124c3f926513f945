"""The small classifiers: the digits MLP, the seed's FC+L1 classifier (digits) and APBT on Iris.

PBT ranks on the validation split; the held-out test split is cut in two by row parity: the
even rows are the selection split (``best(select=...)`` re-scores candidates on it), the odd
rows the test split the report reads. No training, ranking or selection decision reads a test row.
"""

from __future__ import annotations

import functools
import math

import torch

import poptrain
from experiments.quality.task import SELECTION, TEST, Task
from poptrain.experiments import digits as digits_mlp


def _halves(x: torch.Tensor, y: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The selection (even rows) or test (odd rows) half of a held-out split."""
    if split == SELECTION:
        return x[0::2], y[0::2]
    if split == TEST:
        return x[1::2], y[1::2]
    raise ValueError(f"unknown split {split!r}")


def _accuracy(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    module.eval()
    with torch.no_grad():
        return float((module(x).argmax(-1) == y).float().mean())


def _digits_scorer(trainable: poptrain.Trainable, split: str) -> float:
    data = digits_mlp.load_split()
    return _accuracy(trainable.module, *_halves(data["x_test"], data["y_test"], split))  # type: ignore[attr-defined]


@functools.cache
def digits_splits() -> dict[str, frozenset[int]]:
    """Row numbers (in ``load_split``'s shuffled order) of each split of the digits data."""
    data = digits_mlp.load_split()
    n_train, n_val, n_test = len(data["y_train"]), len(data["y_val"]), len(data["y_test"])
    held = list(range(n_train + n_val, n_train + n_val + n_test))
    return {
        "train": frozenset(range(n_train)),
        "validation": frozenset(range(n_train, n_train + n_val)),
        SELECTION: frozenset(held[0::2]),
        TEST: frozenset(held[1::2]),
    }


def _binomial_noise(accuracy: float, rows: int) -> float:
    """The standard error of an accuracy measured on ``rows`` rows."""
    return math.sqrt(accuracy * (1 - accuracy) / rows)


def digits(quick: bool = False) -> Task:
    """The digits MLP (lr, momentum, weight decay, dropout) on the vectorized executor, trained
    only briefly, so that the learning-rate schedule matters."""
    population, steps, ready = (6, 4, 2) if quick else (16, 10, 2)
    n_val = len(digits_mlp.load_split()["y_val"])
    return Task(
        name="digits",
        scale=f"population {population}, {steps} epochs (batch 64), ready every {ready}; vectorized executor",
        held_out="accuracy on the odd rows of the 20% test split (selection split: its even rows); PBT ranks on "
        "the validation split",
        trainable=digits_mlp.vectorized_trainable(device="cpu"),
        space=digits_mlp.SPACE,
        population=population,
        steps=steps,
        ready=ready,
        metric="val_acc",
        noise=_binomial_noise(0.95, n_val),
        score=_digits_scorer,
        splits=digits_splits(),
        executor="vectorized",
    )


def classify(quick: bool = False) -> Task:
    """The seed's fully connected network with an L1 penalty (``experiments.classify``), reduced."""
    from experiments import classify as fc

    population, steps, ready = (4, 4, 2) if quick else (fc.POPULATION, 12, 4)
    data = fc.load_data(None)
    return Task(
        name="classify",
        scale=f"population {population}, {steps} epochs (the seed's: 40), ready every {ready}; vectorized executor",
        held_out="accuracy on the odd rows of the digits test split (selection: its even rows); PBT ranks on "
        "the validation split",
        trainable=fc.trainable(data, device="cpu"),
        space=fc.SPACE,
        population=population,
        steps=steps,
        ready=ready,
        metric="val_acc",
        noise=_binomial_noise(0.95, len(data["y_val"])),
        score=_digits_scorer,
        splits=digits_splits(),
        executor="vectorized",
    )


def _iris_scorer(trainable: poptrain.Trainable, split: str) -> float:
    from experiments import apbt as paper

    prob = paper.problem("iris")
    return _accuracy(trainable.module, *_halves(prob.x_test, prob.y_test, split))  # type: ignore[attr-defined]


def iris_splits() -> dict[str, frozenset[int]]:
    """Row numbers of scikit-learn's Iris in each split (validation: the paper's 100 rows, which
    include the 80 trained on; selection and test: the paper's 50 test rows, alternately)."""
    from experiments.apbt import IRIS_TEST_ROWS

    test_rows = [i for i in range(150) if i in IRIS_TEST_ROWS]
    return {
        "validation": frozenset(i for i in range(150) if i not in IRIS_TEST_ROWS),
        SELECTION: frozenset(test_rows[0::2]),
        TEST: frozenset(test_rows[1::2]),
    }


def apbt(quick: bool = False) -> Task:
    """Augmented PBT on Iris (``experiments.apbt``: widths, lr and momentum; the paper's fitness),
    reduced from population 80 and 3000 epochs."""
    from experiments import apbt as paper

    prob = paper.problem("iris")
    population, steps = (6, 22) if quick else (16, 44)
    return Task(
        name="apbt",
        scale=f"population {population} (the paper's 80), {steps * prob.epochs_per_step} epochs (the paper's 3000), "
        f"ready every {prob.ready_epochs} epochs; vectorized executor",
        held_out="classification accuracy on 25 of the paper's 50 Iris test rows (selection: the other 25); "
        "PBT ranks on the size-penalised fitness over the 100 other rows",
        trainable=paper.trainable(prob, device="cpu"),
        space=paper.SPACE,
        population=population,
        steps=steps,
        ready=prob.ready_steps,
        metric="fitness",
        noise=APBT_FITNESS_NOISE,
        score=_iris_scorer,
        splits=iris_splits(),
        explore=poptrain.perturb((0.8, 1.2)),
        executor="vectorized",
    )


# The fitness's noise: 1.09^(100·acc) moves by a factor 1.09 per accuracy point, and the paper's
# accuracy measure on 100 rows has a standard error of about one point; the fitness of the
# members at the end of a random-search run is about 2000-4000 (measured), so one point is ~200.
APBT_FITNESS_NOISE = 200.0

__all__ = ["apbt", "classify", "digits", "digits_splits", "iris_splits"]
