"""The digits MLP (see ``poptrain.experiments.digits``) with a population of 64 trained as one
batched program by the vectorized executor: the same model, search space and strategy, four
times the population, in less time than the sequential run of 16.

    poptrain run poptrain.experiments.digits_vectorized
"""

from __future__ import annotations

from typing import Any

from poptrain.experiments import digits
from poptrain.experiments.digits import summarize

__all__ = ["experiment", "summarize"]


def experiment() -> dict[str, Any]:
    """The run ``poptrain run poptrain.experiments.digits_vectorized`` performs."""
    settings = digits.experiment()
    settings.update(trainable=digits.vectorized_trainable(), population_size=64, executor="vectorized")
    return settings
