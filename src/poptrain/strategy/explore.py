"""Explore strategies: new hyperparameters from old, recording what was done to each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from poptrain.errors import StrategyError
from poptrain.space import HParams, SearchSpace
from poptrain.strategy._types import Explored


@dataclass(frozen=True)
class perturb:
    """Move each hyperparameter by a factor drawn from ``factors``, or resample it from its prior
    with probability ``resample_probability``."""

    factors: Sequence[float] = (0.8, 1.2)
    resample_probability: float = 0.0

    def __post_init__(self) -> None:
        factors = tuple(self.factors) if isinstance(self.factors, (list, tuple)) else ()
        if not factors or any(isinstance(f, bool) or not isinstance(f, (int, float)) or f <= 0 for f in factors):
            raise StrategyError(
                f"perturb(factors=...) needs a non-empty list of positive numbers, got {self.factors!r}"
            )
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
class resample:
    """Draw every hyperparameter afresh from its prior."""

    def __call__(self, hparams: HParams, space: SearchSpace, rng: np.random.Generator) -> Explored:
        new: HParams = {}
        operations: dict[str, str] = {}
        for name, param in space.items():
            new[name], operations[name] = param.resample(rng)
        return Explored(new, operations)


@dataclass(frozen=True)
class gaussian:
    """Add Gaussian noise to the named hyperparameters (default: every Float and Int): a
    standard deviation of ``scale`` times the parameter's range, measured on its own scale (in
    log space for a log parameter), clipped to the bounds. Others are kept."""

    scale: float = 0.1
    names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or self.scale <= 0:
            raise StrategyError(f"gaussian(scale=...) must be a positive number, got {self.scale!r}")
        if self.names is not None:
            object.__setattr__(self, "names", tuple(self.names))

    def check_space(self, space: SearchSpace) -> None:
        """Refuse names that are not in ``space`` (called when a run is created)."""
        unknown = set(self.names or ()) - {name for name, _ in space.items()}
        if unknown:
            raise StrategyError(f"gaussian(names=...) names {sorted(unknown)}, which are not in the search space")

    def __call__(self, hparams: HParams, space: SearchSpace, rng: np.random.Generator) -> Explored:
        import math

        from poptrain.space import Float, Int

        new: HParams = dict(hparams)
        operations: dict[str, str] = {}
        self.check_space(space)
        for name, param in space.items():
            if not isinstance(param, (Float, Int)) or (self.names is not None and name not in self.names):
                continue
            low, high, value = float(param.low), float(param.high), float(hparams[name])
            if param.log:
                moved = math.exp(math.log(value) + rng.normal(0.0, self.scale * (math.log(high) - math.log(low))))
            else:
                moved = value + rng.normal(0.0, self.scale * (high - low))
            moved = min(max(moved, low), high)
            new[name] = round(moved) if isinstance(param, Int) else moved
            operations[name] = f"+ gaussian noise ({value:.3g} -> {new[name]:.3g})"
        return Explored(new, operations)
