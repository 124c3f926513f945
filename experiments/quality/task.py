"""What a quality task hands the suite: the trainable, its run settings, and its scorers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import poptrain
from poptrain.space import HParams

SELECTION = "selection"  # re-scores candidates; training never ranks on it
TEST = "test"  # the held-out split: only the final report reads it


@dataclass(frozen=True)
class Task:
    """One task of the suite.

    ``score(trainable, split)`` scores a live trainable (its checkpoint loaded) on ``"selection"``
    or ``"test"``, higher is better; ``splits`` names the ids (rows, seeds, noise streams) each
    split reads, so a test can check that the ranking (``"validation"``), selection and test
    splits share none. ``noise`` is the measured noise of the score PBT ranks on (one standard
    deviation): ``truncation(min_gap=noise)``. ``optimum``: the held-out score that counts as
    reaching the global optimum (ToyDeceptive), else ``None``.
    """

    name: str
    scale: str
    held_out: str
    trainable: Callable[[], poptrain.Trainable]
    space: Mapping[str, Any]
    population: int
    steps: int
    ready: int
    metric: str
    noise: float
    score: Callable[[poptrain.Trainable, str], float]
    splits: Mapping[str, frozenset[Any]]
    explore: Any = field(default_factory=lambda: poptrain.Strategy().explore)
    executor: str = "sequential"
    synchronous: bool = False
    initial_hparams: Callable[[int], list[HParams]] | None = None
    optimum: float | None = None

    def settings(self, seed: int) -> dict[str, Any]:
        """``create_run`` arguments every strategy shares for ``seed`` (same seed, same initial population)."""
        return {
            "space": self.space,
            "population_size": self.population,
            "metric": self.metric,
            "mode": "max",
            "ready": poptrain.every(self.ready),
            "synchronous": self.synchronous,
            "seed": seed,
            "initial_hparams": self.initial_hparams(seed) if self.initial_hparams else None,
        }
