"""Callbacks: the one extension point for watching a run train.

A ``Callback`` hears the run start and end, every evaluation of every member (all its
metrics, the hyperparameters it trained with and its generation), every checkpoint and
every decision (donor and operations included). The terminal view and the loggers
(``poptrain.loggers``: JSONL, TensorBoard, MLflow, Weights & Biases) are callbacks, and
``Run.optimize(callbacks=[...])`` combines any number of them.

Callbacks run in the driver process only (the one that calls ``optimize``), whatever the
executor: workers send their results to the driver, which alone records them and calls the
callbacks. They need not be picklable.

Failure policy: a callback that raises while the run trains does not stop it and loses
nothing the run records. The first failure of each callback is reported as a
``CallbackWarning`` (the callback, the hook and the error), later ones are counted and
reported once when the run ends, and the callback keeps being called. A callback that cannot
start (``on_run_start`` raises) fails the run before any training, with one line
(``ConfigError``). ``KeyboardInterrupt`` (and any other ``BaseException``) raised by a
callback stops the run as Ctrl-C does: the run is left ``interrupted`` and can be resumed.
To stop a run on any callback failure, turn the warning into an error:
``warnings.simplefilter("error", poptrain.CallbackWarning)``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poptrain.errors import ConfigError
from poptrain.records import Decision, RunRecord

__all__ = ["Callback", "CallbackSpec", "CallbackWarning", "Callbacks", "RunInfo", "make_callbacks"]


class CallbackWarning(UserWarning):
    """A callback raised while the run trained; the run went on without it for that event."""


@dataclass(frozen=True)
class RunInfo:
    """What a callback learns when a run starts.

    ``steps`` is what each member trains to, ``total_steps`` the steps of all members together
    and ``done_steps`` those done already (a resumed run). ``folder`` is the run's folder
    (``runs/NAME``), where the loggers write by default. ``record`` is the stored run: its
    ``spec`` holds the search space and the strategy.
    """

    name: str
    metric: str
    mode: str
    population_size: int
    steps: int
    total_steps: int
    done_steps: int
    seed: int
    executor: str
    folder: Path | None
    record: RunRecord

    def log_dir(self, kind: str) -> Path:
        """``<run folder>/logs/<kind>``, where the ``kind`` logger writes by default."""
        root = self.folder if self.folder is not None else Path("runs") / self.name
        return root / "logs" / kind


class Callback:
    """Watches a run train; override the hooks you need (each does nothing by default).

    Hooks run in the driver process, in this order: ``on_run_start`` once, then per member and
    step ``on_evaluation``, at a ready point ``on_checkpoint`` and (when it decided) ``on_decision``,
    and ``on_run_end`` once, whether the run finished, failed or was interrupted. Values handed
    over are copies: a callback may keep them.
    """

    def on_run_start(self, info: RunInfo) -> None:
        """Training begins (``info.done_steps`` already done, when resuming)."""

    def on_evaluation(
        self,
        slot: int,
        step: int,
        score: float,
        metrics: Mapping[str, float],
        hparams: Mapping[str, Any],
        generation: int,
    ) -> None:
        """Member ``slot`` was evaluated after ``step``: ``score`` is the run's metric, ``metrics``
        everything ``evaluate()`` returned (the run's metric included), ``hparams`` what the step
        trained with, ``generation`` the member's generation (how many decisions changed it)."""

    def on_checkpoint(self, slot: int, step: int, value: float) -> None:
        """Member ``slot`` saved its model at ``step`` with score ``value`` (a model ``best()`` can hand over)."""

    def on_decision(self, decision: Decision) -> None:
        """A member exploited (``decision.donor`` is the copied member), explored, or was replaced
        after failing; ``decision.operations`` says what changed (``{"lr": "* 0.8"}``)."""

    def on_run_end(self, state: str, error: BaseException | None) -> None:
        """Training ended: ``state`` is ``"finished"``, ``"stopped"`` (a stop rule; the run
        continues when asked), ``"failed"`` or ``"interrupted"``, and
        ``error`` what stopped it (``None`` when it finished)."""


CallbackSpec = Callback | str | Mapping[str, Any]
"""A callback, a logger's name (``"jsonl"``), an import path (``"mypkg.MyCallback"``) or a
mapping with a ``type`` (one of those) and its arguments (``{"type": "tensorboard", "dir": "tb"}``)."""


def _label(callback: Callback) -> str:
    return type(callback).__qualname__


class Callbacks(Callback):
    """Many callbacks as one, called in the order given, each under the failure policy in
    this module's docstring. ``failures`` counts each callback's failures by its position."""

    def __init__(self, callbacks: Iterable[Callback | None] = ()) -> None:
        self.callbacks: list[Callback] = []
        for callback in callbacks:
            if callback is None:
                continue
            if isinstance(callback, Callbacks):
                self.callbacks.extend(callback.callbacks)
            else:
                self.callbacks.append(callback)
        self.failures: dict[int, int] = {}
        self._started: list[int] = []

    def __len__(self) -> int:
        return len(self.callbacks)

    def _failed(self, index: int, hook: str, exc: Exception) -> None:
        count = self.failures[index] = self.failures.get(index, 0) + 1
        if count == 1:
            warnings.warn(
                f"callback {_label(self.callbacks[index])} failed in {hook}: {type(exc).__name__}: {exc}; "
                "training goes on (later failures of this callback are counted and reported when the run ends)",
                CallbackWarning,
                stacklevel=4,
            )

    def _each(self, hook: str, *args: Any) -> None:
        for index, callback in enumerate(self.callbacks):
            try:
                getattr(callback, hook)(*args)
            except Exception as exc:  # noqa: BLE001 - a user's callback may raise anything; training goes on
                self._failed(index, hook, exc)

    def on_run_start(self, info: RunInfo) -> None:
        self.failures, self._started = {}, []
        for index, callback in enumerate(self.callbacks):
            try:
                callback.on_run_start(info)
            except Exception as exc:
                self._end(self._started, "failed", exc)
                self._started = []
                message = " ".join(str(exc).split())
                raise ConfigError(
                    f"callback {_label(callback)} could not start: {type(exc).__name__}: {message}; "
                    "fix it or leave it out, then run again"
                ) from exc
            self._started.append(index)

    def on_evaluation(
        self,
        slot: int,
        step: int,
        score: float,
        metrics: Mapping[str, float],
        hparams: Mapping[str, Any],
        generation: int,
    ) -> None:
        self._each("on_evaluation", slot, step, score, metrics, hparams, generation)

    def on_checkpoint(self, slot: int, step: int, value: float) -> None:
        self._each("on_checkpoint", slot, step, value)

    def on_decision(self, decision: Decision) -> None:
        self._each("on_decision", decision)

    def _end(self, indices: Sequence[int], state: str, error: BaseException | None) -> None:
        for index in indices:
            try:
                self.callbacks[index].on_run_end(state, error)
            except Exception as exc:  # noqa: BLE001 - every callback gets to end
                self._failed(index, "on_run_end", exc)

    def on_run_end(self, state: str, error: BaseException | None) -> None:
        started, self._started = self._started, []
        self._end(started, state, error)
        for index, count in sorted(self.failures.items()):
            if count > 1:
                warnings.warn(
                    f"callback {_label(self.callbacks[index])} failed {count} times in this run",
                    CallbackWarning,
                    stacklevel=2,
                )


def _import_callback(path: str, where: str) -> Any:
    """The object at ``package.module:Name`` or ``package.module.Name``."""
    module_name, colon, attr = path.partition(":")
    if not colon:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"{where}: {path!r} is not an import path; write package.module.Name or package.module:Name")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"{where}: cannot import {path!r} ({exc}); check the name and that its module is on sys.path"
        ) from None
    return obj


def _one(spec: CallbackSpec, where: str) -> Callback:
    from poptrain.loggers import LOGGERS, logger_class

    known = ", ".join(sorted(LOGGERS))
    if isinstance(spec, Callback):
        return spec
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, Mapping) and isinstance(spec.get("type"), str):
        name, kwargs = spec["type"], {str(k): v for k, v in spec.items() if k != "type"}
    else:
        raise ConfigError(
            f"{where}: {spec!r} is not a callback; give a poptrain.Callback, one of {known}, an import path "
            "(mypkg.MyCallback) or a mapping with a type (e.g. {type: tensorboard, dir: logs/tb})"
        )
    name = name.strip()
    if name.lower() in LOGGERS:
        factory: Any = logger_class(name.lower())
    elif "." in name or ":" in name:
        factory = _import_callback(name, where)
        if isinstance(factory, type) and not issubclass(factory, Callback):
            raise ConfigError(
                f"{where}: {name!r} is the class {factory.__module__}.{factory.__qualname__}, "
                "not a poptrain.Callback subclass"
            )
        if not callable(factory):
            raise ConfigError(f"{where}: {name!r} is a {type(factory).__name__}, not a poptrain.Callback subclass")
    else:
        raise ConfigError(
            f"{where}: unknown callback {name!r}; known ones are {known}, or an import path mypkg.MyCallback"
        )
    try:
        made = factory(**kwargs)
    except ConfigError:
        raise
    except TypeError as exc:
        raise ConfigError(f"{where}: {name}: {exc}; check its arguments") from None
    if not isinstance(made, Callback):
        raise ConfigError(f"{where}: {name!r} made a {type(made).__name__}, not a poptrain.Callback subclass")
    return made


def make_callbacks(specs: Iterable[CallbackSpec] | CallbackSpec | None, where: str = "callbacks") -> list[Callback]:
    """Callbacks from what a user gave (see ``CallbackSpec``): a missing logger package, an unknown
    name or bad arguments are one ``ConfigError`` line starting with ``where``."""
    if specs is None:
        return []
    if isinstance(specs, (Callback, str, Mapping)):
        specs = [specs]
    return [_one(spec, where) for spec in specs]
