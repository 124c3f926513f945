"""Stop rules: when a run stops before its last step. Pure: each rule reads a ``StopState`` and
returns why the run should stop, or ``None``.

    run.optimize(MyTrainable, steps=1000, stop=[poptrain.time_budget(hours=2), poptrain.plateau(50)])

A stopped run keeps every member at its newest checkpoint, records why (``run.record.stop_reason``
is shown by ``poptrain status``) and continues from there when ``optimize`` is called again with
a larger budget, a higher target or a longer patience.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from poptrain.errors import ConfigError


@dataclass(frozen=True)
class StopState:
    """What the stop rules know of a run: ``seconds`` since this ``optimize`` call began, the
    population's newest ready ``step``, and ``improvements``: ``(step, score)`` each time the
    best score so far improved, oldest first (scores in the metric's own direction, see ``mode``)."""

    seconds: float
    step: int
    improvements: tuple[tuple[int, float], ...] = ()
    mode: str = "max"

    @property
    def best(self) -> float | None:
        """The best score so far."""
        return self.improvements[-1][1] if self.improvements else None

    @property
    def best_step(self) -> int:
        """The step the best score was reached at."""
        return self.improvements[-1][0] if self.improvements else 0

    def best_as_of(self, step: int) -> float | None:
        """The best score reached at or before ``step``."""
        known = [score for at, score in self.improvements if at <= step]
        return known[-1] if known else None

    def improved(self, old: float | None, new: float | None) -> float:
        """How much ``new`` is better than ``old`` (``inf`` from nothing, ``0`` to nothing)."""
        if new is None:
            return 0.0
        if old is None:
            return math.inf
        return new - old if self.mode == "max" else old - new


def record_improvement(
    improvements: tuple[tuple[int, float], ...], step: int, value: float | None, mode: str
) -> tuple[tuple[int, float], ...]:
    """``improvements`` with ``value`` (a score at ``step``) added if it beats the best so far."""
    if value is None or not math.isfinite(value):
        return improvements
    best = improvements[-1][1] if improvements else None
    if best is None or (value > best if mode == "max" else value < best):
        return (*improvements, (step, value))
    return improvements


class RunStopped(BaseException):
    """Raised by the scheduler when a stop rule fires; ``optimize`` catches it, records the run as
    ``stopped`` with the ``reason`` and returns (a ``BaseException``, like ``KeyboardInterrupt``,
    so that no handler of training failures takes it for one)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StopRule(Protocol):
    """``rule(state) -> reason | None``: why the run should stop now, or ``None``."""

    def __call__(self, state: StopState) -> str | None: ...


@dataclass(frozen=True)
class time_budget:
    """Stop once this ``optimize`` call has trained for ``seconds`` (plus ``minutes`` and
    ``hours``) of wall-clock time; the step in flight is undone, as after Ctrl-C."""

    seconds: float = 0.0
    minutes: float = 0.0
    hours: float = 0.0

    def __post_init__(self) -> None:
        for name in ("seconds", "minutes", "hours"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigError(f"time_budget({name}=...) must be a number >= 0, got {value!r}")
        if self.total <= 0:
            raise ConfigError("time_budget needs a budget > 0, e.g. time_budget(hours=2)")

    @property
    def total(self) -> float:
        """The budget in seconds."""
        return self.seconds + 60 * self.minutes + 3600 * self.hours

    def __call__(self, state: StopState) -> str | None:
        if state.seconds >= self.total:
            return f"the time budget of {_duration(self.total)} is spent"
        return None


@dataclass(frozen=True)
class target:
    """Stop once the best score reaches ``score`` (at least it under ``mode="max"``, at most under
    ``"min"``: the run's own mode)."""

    score: float

    def __post_init__(self) -> None:
        if isinstance(self.score, bool) or not isinstance(self.score, (int, float)) or not math.isfinite(self.score):
            raise ConfigError(f"target(score=...) must be a finite number, got {self.score!r}")

    def __call__(self, state: StopState) -> str | None:
        if state.best is None or math.isnan(state.best):
            return None
        reached = state.best >= self.score if state.mode == "max" else state.best <= self.score
        if reached:
            return f"the target {self.score:g} is reached (best {state.best:g} at step {state.best_step})"
        return None


@dataclass(frozen=True)
class plateau:
    """Stop when the best score has not improved by more than ``min_delta`` for ``steps`` steps."""

    steps: int
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"plateau(steps=...) must be a whole number >= 1, got {self.steps!r}")
        if (
            isinstance(self.min_delta, bool)
            or not isinstance(self.min_delta, (int, float))
            or not (0 <= self.min_delta < math.inf)
        ):
            raise ConfigError(f"plateau(min_delta=...) must be a number >= 0, got {self.min_delta!r}")

    def __call__(self, state: StopState) -> str | None:
        if state.best is None or state.step < self.steps:
            return None
        if state.improved(state.best_as_of(state.step - self.steps), state.best) > self.min_delta:
            return None
        return (
            f"the best score improved by no more than {self.min_delta:g} in the last {self.steps} steps "
            f"(best {state.best:g} at step {state.best_step})"
        )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)?", re.IGNORECASE)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"30m"``, ``"2h"`` or ``"1h30m"``; ``ConfigError`` otherwise."""
    cleaned = text.strip().replace(" ", "")
    parts = list(_DURATION.finditer(cleaned))
    if not cleaned or "".join(p.group(0) for p in parts) != cleaned:
        raise ConfigError(f"cannot read the duration {text!r}; write e.g. 90s, 30m, 2h or 1h30m")
    return sum(float(p.group(1)) * _UNIT_SECONDS[(p.group(2) or "s").lower()] for p in parts)


def check_rules(stop: object) -> tuple[StopRule, ...]:
    """``optimize(stop=...)`` as a tuple of rules: one rule, a list of them, or ``None``."""
    if stop is None:
        return ()
    rules = tuple(stop) if isinstance(stop, (list, tuple)) else (stop,)
    for rule in rules:
        if not callable(rule):
            raise ConfigError(
                f"stop must be a stop rule or a list of them (poptrain.time_budget, target, plateau), got {rule!r}"
            )
    return rules


def improvements_from(scored: Sequence[tuple[int, float | None]], mode: str) -> tuple[tuple[int, float], ...]:
    """The improvements of the best score along ``(step, score)`` pairs (in any order: read by step)."""
    seen: tuple[tuple[int, float], ...] = ()
    for step, value in sorted(scored, key=lambda pair: pair[0]):
        seen = record_improvement(seen, step, value, mode)
    return seen


def rules_from_setting(value: object) -> tuple[StopRule, ...]:
    """An experiment's ``stop`` setting as rules: ``None``, a rule or a list of them, or a mapping
    of any of ``time_budget`` (``"2h"`` or seconds), ``target`` (a score) and ``plateau`` (steps)
    as a YAML config writes it (``stop: {time_budget: 2h, plateau: 20}``)."""
    if not isinstance(value, dict):
        return check_rules(value)
    unknown = sorted(set(value) - {"time_budget", "target", "plateau"})
    if unknown:
        raise ConfigError(f"stop: unknown rule {unknown[0]!r}; use time_budget, target and plateau")
    rules: list[StopRule] = []
    if "time_budget" in value:
        budget = value["time_budget"]
        seconds = parse_duration(budget) if isinstance(budget, str) else budget
        rules.append(time_budget(seconds=seconds))
    if "target" in value:
        rules.append(target(value["target"]))
    if "plateau" in value:
        rules.append(plateau(value["plateau"]))
    return tuple(rules)


def first_reason(rules: Sequence[StopRule], state: StopState) -> str | None:
    """The reason of the first rule that stops the run, or ``None``."""
    for rule in rules:
        reason = rule(state)
        if reason:
            return reason
    return None


def _duration(seconds: float) -> str:
    """``90`` -> ``1m30s``; ``7200`` -> ``2h``."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or f"{seconds:g}s"
