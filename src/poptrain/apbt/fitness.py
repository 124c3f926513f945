"""Fitness that trades accuracy against size, as in the Augmented PBT paper:
``f = acc_base ** (scale * accuracy) / size_base ** size`` (1.09, 100 and 1.02 there)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from poptrain.apbt.topology import ModelView
from poptrain.errors import ConfigError, MetricError

ScoreFn = Callable[[Mapping[str, torch.Tensor], ModelView], Mapping[str, torch.Tensor]]


def size_fitness(
    metric: str = "acc",
    *,
    acc_base: float = 1.09,
    size_base: float = 1.02,
    scale: float = 100.0,
    size: str = "weights",
    name: str = "fitness",
) -> ScoreFn:
    """A score function adding ``name`` = ``acc_base ** (scale * metrics[metric]) / size_base ** size``
    to each member's metrics; ``size`` is ``"weights"`` (the paper's published code: biases not
    counted) or ``"parameters"`` (weights and biases), of the active units only. Use it as
    ``VectorizedTrainable(score=size_fitness("val_acc"))`` and make ``name`` the run's metric.
    Any function ``score(metrics, model) -> {name: [P] values}`` can take its place."""
    if size not in ("weights", "parameters"):
        raise ConfigError(f"size must be 'weights' or 'parameters', got {size!r}")
    if acc_base <= 0 or size_base <= 0:
        raise ConfigError(f"acc_base and size_base must be positive, got {acc_base!r} and {size_base!r}")

    def score(metrics: Mapping[str, torch.Tensor], model: ModelView) -> dict[str, torch.Tensor]:
        if metric not in metrics:
            raise MetricError(f"size_fitness needs the metric {metric!r}; evaluate() returned {sorted(metrics)}")
        accuracy = torch.as_tensor(metrics[metric], dtype=torch.float64)
        count = model.weights if size == "weights" else model.weights + model.biases
        return {name: acc_base ** (scale * accuracy) / size_base ** count.to(torch.float64)}

    return score
