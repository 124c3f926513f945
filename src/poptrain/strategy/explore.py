"""Explore strategies: new hyperparameters from old, recording what was done to each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from poptrain.errors import StrategyError
from poptrain.space import HParams, SearchSpace
from poptrain.strategy._types import Explored


@dataclass(frozen=True)
class perturb:  # noqa: N801
    """Move each hyperparameter by a factor drawn from ``factors``, or resample it from its prior
    with probability ``resample_probability``."""

    factors: Sequence[float] = (0.8, 1.2)
    resample_probability: float = 0.0

    def __post_init__(self) -> None:
        factors = tuple(self.factors) if isinstance(self.factors, (list, tuple)) else ()
        if not factors or any(isinstance(f, bool) or not isinstance(f, (int, float)) or f <= 0 for f in factors):
            raise StrategyError(f"perturb(factors=...) needs a non-empty list of positive numbers, got {self.factors!r}")
        if not isinstance(self.resample_probability, (int, float)) or not 0.0 <= self.resample_probability <= 1.0:
            raise StrategyError(
                f"perturb(resample_probability=...) must be in [0, 1], got {self.resample_probability!r}"
            )
        object.__setattr__(self, "factors", factors)

    def __call__(self, hparams: HParams, space: SearchSpace, rng: np.random.Generator) -> Explored:
        new: HParams = {}
        operations: dict[str, str] = {}
        for name, param in space.items():
            if self.resample_probability and rng.random() < self.resample_probability:
                new[name], operations[name] = param.resample(rng)
            else:
                factor = float(self.factors[int(rng.integers(len(self.factors)))])
                new[name], operations[name] = param.perturb(hparams[name], factor, rng)
        return Explored(new, operations)


@dataclass(frozen=True)
class resample:  # noqa: N801
    """Draw every hyperparameter afresh from its prior."""

    def __call__(self, hparams: HParams, space: SearchSpace, rng: np.random.Generator) -> Explored:
        new: HParams = {}
        operations: dict[str, str] = {}
        for name, param in space.items():
            new[name], operations[name] = param.resample(rng)
        return Explored(new, operations)
