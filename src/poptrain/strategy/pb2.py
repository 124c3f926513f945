"""PB2: Population Based Bandits (Parker-Holder et al., 2020) as an explore strategy.

A Gaussian process models the population's fitness change per step as a function of time and
the continuous hyperparameters; a new member's hyperparameters maximise an upper confidence
bound. How this follows the paper:

- data: ``History.observations`` (one per member and ready interval, see ``build_history``),
  the ``window`` most recent steps of them (and at most ``max_observations``);
- inputs: the step, and each ``Float``/``Int`` mapped to [0, 1] (a log parameter on its log
  scale); the step is scaled to [0, 1] over the data. Outputs are standardised;
- kernel: the paper's time-varying kernel is a squared exponential over the hyperparameters
  times a decay over time. Here it is scikit-learn's anisotropic RBF over (time,
  hyperparameters), which is the product of an RBF over time and an RBF over the
  hyperparameters, each with its own length scale fitted by maximum likelihood, times a
  constant, plus white noise;
- batch: hyperparameters assigned by decisions whose results are not in yet
  (``History.pending``) are added as observations of the posterior mean, which leaves the
  mean alone and shrinks the variance near them (GP-BUCB, as PB2 does), so members deciding
  in the same round spread out;
- acquisition: ``mean + sqrt(beta) * std`` at the deciding member's step, maximised over
  [0, 1]^d by ``candidates`` uniform points (and the explored hyperparameters themselves),
  then L-BFGS-B from the ``restarts`` best. ``beta=None`` grows it with the data as PB2 does:
  ``0.2 + log(max(1, 0.4 n))``;
- integers are optimised as continuous values and rounded (to the nearest whole number, in
  bounds);
- ``Choice`` (and ``Widths``) values are kept from the explored hyperparameters (the donor's)
  or, with probability ``choice_probability``, perturbed as ``perturb`` does (an ordered
  choice moves to a neighbour, an unordered one to another option);
- with fewer than ``min_observations`` observations (the first ready points of a run),
  ``Float`` and ``Int`` values are resampled from their priors.

scikit-learn is imported when the strategy is made: ``pip install "poptrain[pb2]"``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from poptrain.errors import StrategyError
from poptrain.space import Float, HParams, Int, Param, SearchSpace
from poptrain.strategy._types import Explored
from poptrain.strategy.history import History


def _sklearn() -> Any:
    """scikit-learn's gaussian_process module, or a StrategyError naming the extra."""
    try:
        from sklearn import gaussian_process
    except ImportError:
        raise StrategyError('pb2 needs scikit-learn: pip install "poptrain[pb2]"') from None
    return gaussian_process


def to_unit(param: Float | Int, value: Any) -> float:
    """``value`` on [0, 1] across the parameter's range (its log scale for a log parameter)."""
    low, high, point = float(param.low), float(param.high), float(value)
    if param.log:
        low, high, point = math.log(low), math.log(high), math.log(max(point, float(param.low)))
    return min(max((point - low) / (high - low), 0.0), 1.0)


def from_unit(param: Float | Int, unit: float) -> float | int:
    """The parameter's value at ``unit`` in [0, 1] (rounded for an ``Int``), within bounds."""
    low, high = float(param.low), float(param.high)
    unit = min(max(float(unit), 0.0), 1.0)
    value = (
        math.exp(math.log(low) + unit * (math.log(high) - math.log(low))) if param.log else low + unit * (high - low)
    )
    value = min(max(value, low), high)
    return int(min(max(round(value), int(param.low)), int(param.high))) if isinstance(param, Int) else value


def _check_int(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise StrategyError(f"pb2({name}=...) must be a whole number >= {least}, got {value!r}")


@dataclass(frozen=True)
class pb2:
    """Population Based Bandits: new ``Float``/``Int`` values by a time-varying GP bandit fitted
    on the population's recent fitness changes (see the module's docstring).

    ``beta``: the UCB's exploration weight (``None``: PB2's schedule, growing with the data);
    ``window``: only observations ending in the last ``window`` steps (``None``: all, the
    time kernel discounting old ones); ``max_observations``: the newest ones kept;
    ``candidates``/``restarts``: the acquisition's random points and L-BFGS-B restarts;
    ``choice_probability``: how often a ``Choice`` is perturbed rather than kept;
    ``min_observations``: below this, values are resampled from the priors.
    """

    beta: float | None = None
    window: int | None = None
    max_observations: int = 256
    candidates: int = 256
    restarts: int = 3
    choice_probability: float = 0.25
    min_observations: int = 3
    uses_history: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.beta is not None and (
            isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not self.beta >= 0
        ):
            raise StrategyError(f"pb2(beta=...) must be a number >= 0 or None, got {self.beta!r}")
        if self.window is not None:
            _check_int("window", self.window, 1)
        _check_int("max_observations", self.max_observations, 1)
        _check_int("candidates", self.candidates, 1)
        _check_int("restarts", self.restarts, 0)
        _check_int("min_observations", self.min_observations, 1)
        probability = self.choice_probability
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0.0 <= probability <= 1.0:
            raise StrategyError(f"pb2(choice_probability=...) must be in [0, 1], got {probability!r}")
        _sklearn()

    def __call__(
        self, hparams: HParams, space: SearchSpace, rng: np.random.Generator, *, history: History | None = None
    ) -> Explored:
        history = history if history is not None else History()
        numeric = [(name, p) for name, p in space.items() if isinstance(p, (Float, Int))]
        new: HParams = dict(hparams)
        operations: dict[str, str] = {}
        observations = self.recent(history)
        if numeric and len(observations) < self.min_observations:
            for name, param in numeric:
                new[name] = param.sample(rng)
                operations[name] = f"pb2 resample ({len(observations)} observations) -> {new[name]:.4g}"
        elif numeric:
            x = np.array(
                [[o.end_step] + [to_unit(p, o.hparams[n]) for n, p in numeric] for o in observations], dtype=float
            )
            y = np.array([o.change for o in observations], dtype=float)
            pending = np.array(
                [[to_unit(p, h[n]) for n, p in numeric] for _, h in sorted(history.pending.items())], dtype=float
            )
            base = np.array([to_unit(p, hparams[n]) for n, p in numeric], dtype=float)
            best, beta = self.suggest(x, y, pending.reshape(-1, len(numeric)), base, float(history.step), rng)
            for (name, param), unit in zip(numeric, best):
                new[name] = from_unit(param, unit)
                operations[name] = (
                    f"pb2 ucb ({len(observations)} observations, {len(history.pending)} pending, beta {beta:.2f}): "
                    f"{hparams[name]:.4g} -> {new[name]:.4g}"
                )
        for name, other in space.items():
            if name in new and isinstance(other, (Float, Int)):
                continue
            new[name], operations[name] = self._other(other, hparams[name], rng)
        return Explored(new, operations)

    def recent(self, history: History) -> list[Any]:
        """The observations the GP is fitted on: finite, within ``window`` steps, the newest."""
        kept = [o for o in history.observations if math.isfinite(o.change)]
        if self.window is not None and kept:
            newest = max(history.step, max(o.end_step for o in kept))
            kept = [o for o in kept if o.end_step > newest - self.window]
        return sorted(kept, key=lambda o: (o.end_step, o.slot))[-self.max_observations :]

    def _other(self, param: Param, value: Any, rng: np.random.Generator) -> tuple[Any, str]:
        if self.choice_probability and rng.random() < self.choice_probability:
            return param.perturb(value, (0.8, 1.2)[int(rng.integers(2))], rng)
        return value, "keep"

    def suggest(
        self, x: np.ndarray, y: np.ndarray, pending: np.ndarray, base: np.ndarray, now: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, float]:
        """The point of [0, 1]^d maximising the UCB at time ``now``, and the beta used.

        ``x`` holds rows ``(step, unit hyperparameters...)``, ``y`` the changes; ``pending``
        rows of unit hyperparameters already assigned; ``base`` the explored ones.
        """
        from scipy.optimize import minimize

        gp_module = _sklearn()
        kernels = gp_module.kernels
        n, dims = x.shape[0], x.shape[1] - 1
        low, high = float(min(x[:, 0].min(), now)), float(max(x[:, 0].max(), now))
        span = high - low if high > low else 1.0
        x = x.copy()
        x[:, 0] = (x[:, 0] - low) / span
        t_now = (now - low) / span
        spread = float(y.std())
        y = (y - y.mean()) / spread if spread > 0 else np.zeros_like(y)
        kernel = kernels.ConstantKernel(1.0, (1e-3, 1e3)) * kernels.RBF(
            np.ones(dims + 1), (5e-2, 1e2)
        ) + kernels.WhiteKernel(0.1, (1e-6, 1e1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gp = gp_module.GaussianProcessRegressor(kernel, alpha=1e-8, normalize_y=False, n_restarts_optimizer=0)
            gp.fit(x, y)
            variance_gp = gp
            if len(pending):
                hallucinated = np.hstack([np.full((len(pending), 1), t_now), pending])
                variance_gp = gp_module.GaussianProcessRegressor(
                    gp.kernel_, alpha=1e-8, optimizer=None, normalize_y=False
                )
                variance_gp.fit(np.vstack([x, hallucinated]), np.concatenate([y, gp.predict(hallucinated)]))
        beta = float(self.beta) if self.beta is not None else 0.2 + max(0.0, math.log(0.4 * n))
        kappa = math.sqrt(beta)

        def ucb(units: np.ndarray) -> np.ndarray:
            points = np.hstack([np.full((len(units), 1), t_now), np.clip(units, 0.0, 1.0)])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mean: np.ndarray = gp.predict(points)
                std: np.ndarray
                _, std = variance_gp.predict(points, return_std=True)
            return mean + kappa * std

        starts = np.vstack([base.reshape(1, -1), rng.random((self.candidates, dims))])
        values = ucb(starts)
        best_index = int(np.argmax(values))
        best, best_value = starts[best_index], float(values[best_index])
        for index in np.argsort(-values, kind="stable")[: self.restarts]:
            result = minimize(
                lambda u: -float(ucb(u.reshape(1, -1))[0]),
                starts[index],
                method="L-BFGS-B",
                bounds=[(0.0, 1.0)] * dims,
                options={"maxiter": 50},
            )
            if np.all(np.isfinite(result.x)) and -float(result.fun) > best_value:
                best, best_value = np.clip(result.x, 0.0, 1.0), -float(result.fun)
        return best, beta
