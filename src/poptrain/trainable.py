"""The contract between poptrain and user training code."""

from __future__ import annotations

import math
import sys
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from poptrain.errors import ConfigError, MetricError, PoptrainError, TrainableError
from poptrain.space import HParams


@dataclass(frozen=True)
class TrainContext:
    """What a member's training code may know about its place in the run."""

    run_name: str
    slot: int
    seed: int
    device: str = "cpu"
    run_seed: int = 0
    start_step: int = 0  # the step the member continues from (its newest checkpoint's, or 0)


_METHODS = ("setup", "step", "evaluate", "state_dict", "load_state_dict", "set_hparams")


def trainable_bases() -> tuple[type, ...]:
    """``Trainable``, and ``VectorizedTrainable`` when its module is loaded (any instance or
    subclass of it has loaded it; it is not imported here, since it imports torch)."""
    vectorized = sys.modules.get("poptrain.vectorized.trainable")
    return (Trainable,) + ((vectorized.VectorizedTrainable,) if vectorized is not None else ())


def check_trainable(made: Any, factory: Any) -> Any:
    """``made`` (what calling ``factory`` returned) if it has a Trainable's methods, else
    ``ConfigError`` naming what it is."""
    missing = [name for name in _METHODS if not callable(getattr(made, name, None))]
    if missing:
        who = getattr(factory, "__qualname__", repr(factory))
        raise ConfigError(
            f"the trainable {who} made a {type(made).__name__}, which has no {', '.join(missing)}; give a "
            "poptrain.Trainable subclass (or a function returning an instance of one)"
        )
    return made


class Trainable(ABC):
    """Subclass this to make training code trainable by PBT.

    poptrain calls ``cls()``, then ``setup(hparams, context)``, then repeatedly ``step()``
    (one unit of training: a few gradient steps, an epoch) and ``evaluate()``. At ready points
    it saves ``state_dict()``; a member that exploits another gets ``load_state_dict(state)``
    with the donor's state, then ``set_hparams(new)``, which must apply the hyperparameters in
    place (e.g. write the optimizer's ``param_groups``) so optimizer state survives.
    """

    @abstractmethod
    def setup(self, hparams: HParams, context: TrainContext) -> None:
        """Build the model, optimizer and data for these hyperparameters; seed from ``context.seed``."""

    @abstractmethod
    def step(self) -> None:
        """Train for one step."""

    @abstractmethod
    def evaluate(self) -> float | Mapping[str, float]:
        """The score, or a dict of metrics that contains the run's ``metric``."""

    @abstractmethod
    def state_dict(self) -> Any:
        """Everything needed to continue training: tensors, numbers, strings, lists and dicts."""

    @abstractmethod
    def load_state_dict(self, state: Any) -> None:
        """Restore a state returned by ``state_dict`` (possibly another member's)."""

    @abstractmethod
    def set_hparams(self, hparams: HParams) -> None:
        """Apply new hyperparameters in place, keeping model and optimizer state."""


def call_user(
    slot: int | None, step: int, what: str, fn: Callable[..., Any], *args: Any, who: str | None = None
) -> Any:
    """Call training code, turning what it raises into a ``TrainableError`` naming the member
    (or ``who``), the step and the method (poptrain's own errors pass through)."""
    try:
        return fn(*args)
    except PoptrainError:
        raise
    except Exception as exc:
        raise TrainableError(
            f"{who or f'member {slot}'} failed in {what}() at step {step}: {type(exc).__name__}: {exc}",
            detail="".join(traceback.format_exception(exc)).strip(),
            slot=slot,
        ) from exc


def train_one_step(trainable: Trainable, slot: int, step: int, metric: str) -> tuple[float, dict[str, float]]:
    """``step()`` then ``evaluate()``: the score of ``step`` and all metrics. A score that is not
    finite counts as a failed step that a retry cannot mend (the member draws the same random
    numbers again), so the member is replaced by a copy of a healthy one."""
    call_user(slot, step, "step", trainable.step)
    result = call_user(slot, step, "evaluate", trainable.evaluate)
    value, metrics = read_score(result, metric)
    if not math.isfinite(value):
        raise TrainableError(
            f"member {slot} scored {value} at step {step}: a non-finite score counts as a failed step",
            detail=f"evaluate() returned {metric} = {value} at step {step}",
            slot=slot,
            retry=False,
        )
    return value, metrics


def read_score(result: Any, metric: str) -> tuple[float, dict[str, float]]:
    """Split what ``evaluate()`` returned into the run's score and all metrics."""
    if isinstance(result, Mapping):
        if metric not in result:
            raise MetricError(
                f"evaluate() returned metrics {sorted(map(str, result))} without {metric!r}; "
                f"return it, or create the run with metric= one of those",
                metric=metric,
                available=sorted(map(str, result)),
            )
        metrics: dict[str, float] = {}
        for key, value in result.items():
            metrics[str(key)] = _number(value, f"metric {key!r}")
        return metrics[metric], metrics
    value = _number(result, "the score")
    return value, {metric: value}


def _number(value: Any, what: str) -> float:
    if hasattr(value, "item") and callable(value.item):  # tensors and numpy scalars
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TrainableError(f"evaluate() returned {value!r} for {what}; return a float or a dict of floats")
    return float(value)
