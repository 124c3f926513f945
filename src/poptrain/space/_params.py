"""Hyperparameter types. A parameter owns its moves: sample, perturb and resample.

Every move takes an explicit ``numpy.random.Generator``; none touches global random state.
A parameter checks its definition when it is bound to a name in a ``SearchSpace``, so that the
error can name it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from poptrain.errors import SearchSpaceError

JsonValue = Any  # str | int | float | bool | None


class Param(ABC):
    """Base class of a hyperparameter's prior and its moves."""

    kind: str = ""

    @abstractmethod
    def check(self, name: str) -> None:
        """Raise ``SearchSpaceError`` naming ``name`` if the definition is invalid."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> JsonValue:
        """Draw a value from the prior."""

    @abstractmethod
    def perturb(self, value: JsonValue, factor: float, rng: np.random.Generator) -> tuple[JsonValue, str]:
        """Move ``value`` by ``factor``; return the new value and what was done (``"* 0.8"``)."""

    def resample(self, rng: np.random.Generator) -> tuple[JsonValue, str]:
        """Draw afresh from the prior; return the value and ``"resample"``."""
        return self.sample(rng), "resample"

    @abstractmethod
    def contains(self, value: JsonValue) -> bool:
        """Whether ``value`` lies in this parameter's domain."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, read back by ``param_from_dict``."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Param) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"


def _check_bounds(name: str, kind: str, low: Any, high: Any, log: bool, integer: bool) -> None:
    for label, bound in (("low", low), ("high", high)):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise SearchSpaceError(f"parameter {name!r}: {kind} {label} must be a number, got {bound!r}")
        if not math.isfinite(bound):
            raise SearchSpaceError(f"parameter {name!r}: {kind} {label} must be finite, got {bound!r}")
        if integer and int(bound) != bound:
            raise SearchSpaceError(f"parameter {name!r}: Int {label} must be a whole number, got {bound!r}")
        if integer and abs(bound) >= 2**62:  # drawn with numpy's 64-bit integers
            raise SearchSpaceError(f"parameter {name!r}: Int {label} must lie within ±2**62, got {bound!r}")
    if low >= high:
        raise SearchSpaceError(
            f"parameter {name!r}: low ({low}) must be below high ({high}); swap them or widen the range"
        )
    if log and low <= 0:
        raise SearchSpaceError(
            f"parameter {name!r}: a log-scale range needs low > 0, got low={low}; raise low or set log=False"
        )


class Float(Param):
    """A real number in ``[low, high]``, uniform on a linear or (``log=True``) log scale.

    ``perturb`` multiplies by the factor (a shift of ``log(factor)`` on the log scale). On a
    linear scale a value of 0 cannot be moved by multiplying, so it moves by
    ``(factor - 1) * (high - low)`` instead. Results are clipped to the bounds.
    """

    kind = "float"

    def __init__(self, low: float, high: float, *, log: bool = False) -> None:
        self.low = low
        self.high = high
        self.log = bool(log)

    def check(self, name: str) -> None:
        _check_bounds(name, "Float", self.low, self.high, self.log, integer=False)

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def perturb(self, value: JsonValue, factor: float, rng: np.random.Generator) -> tuple[float, str]:
        value = float(value)
        moved = value * factor
        op = f"* {factor:g}"
        if moved == value and not self.log:
            moved = value + (factor - 1.0) * (self.high - self.low)
            op = f"{'+' if factor > 1 else '-'} {abs(factor - 1.0) * (self.high - self.low):g}"
        clipped = min(max(moved, float(self.low)), float(self.high))
        if clipped != moved:
            op += " (clipped)"
        return clipped, op

    def contains(self, value: JsonValue) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}


class Int(Param):
    """A whole number in ``[low, high]`` (both included), uniform on a linear or log scale.

    ``perturb`` multiplies and rounds; when rounding would leave the value where it was, it
    moves one step in the factor's direction (or the other way at a bound): an int always moves.
    """

    kind = "int"

    def __init__(self, low: int, high: int, *, log: bool = False) -> None:
        self.low = low
        self.high = high
        self.log = bool(log)

    def check(self, name: str) -> None:
        _check_bounds(name, "Int", self.low, self.high, self.log, integer=True)

    def sample(self, rng: np.random.Generator) -> int:
        if self.log:
            drawn = math.exp(rng.uniform(math.log(self.low - 0.5), math.log(self.high + 0.5)))
            return int(min(max(round(drawn), self.low), self.high))
        return int(rng.integers(int(self.low), int(self.high) + 1))

    def perturb(self, value: JsonValue, factor: float, rng: np.random.Generator) -> tuple[int, str]:
        value = int(value)
        moved = round(value * factor)
        op = f"* {factor:g}"
        if moved == value:
            moved = value + (1 if factor >= 1 else -1)
            op = "+ 1" if factor >= 1 else "- 1"
        clipped = int(min(max(moved, self.low), self.high))
        if clipped == value:  # stuck at a bound: step back inside
            clipped = value - 1 if value >= self.high else value + 1
            op = "- 1 (at bound)" if value >= self.high else "+ 1 (at bound)"
        elif clipped != moved:
            op += " (clipped)"
        return clipped, op

    def contains(self, value: JsonValue) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}


class Choice(Param):
    """One of a list of options (JSON values: str, int, float, bool or None).

    ``ordered=True`` treats the list as a scale: perturb shifts to a neighbour (up for a
    factor above 1, down otherwise, bouncing at the ends). Unordered, perturb resamples among
    the other options so that the value always changes.
    """

    kind = "choice"

    def __init__(self, options: Sequence[JsonValue], *, ordered: bool = False) -> None:
        self.options = list(options) if isinstance(options, (list, tuple)) else options
        self.ordered = bool(ordered)

    def check(self, name: str) -> None:
        if not isinstance(self.options, list):
            raise SearchSpaceError(f"parameter {name!r}: Choice options must be a list, got {self.options!r}")
        if not self.options:
            raise SearchSpaceError(f"parameter {name!r}: Choice needs at least one option, got an empty list")
        for option in self.options:
            if option is not None and not isinstance(option, (str, int, float, bool)):
                raise SearchSpaceError(
                    f"parameter {name!r}: Choice option {option!r} is not a str, number, bool or None; "
                    "use plain values and map them in your trainable"
                )
        if len(set(map(repr, self.options))) != len(self.options):
            raise SearchSpaceError(f"parameter {name!r}: Choice options must be distinct, got {self.options!r}")

    def sample(self, rng: np.random.Generator) -> JsonValue:
        return self.options[int(rng.integers(len(self.options)))]

    def _index(self, value: JsonValue) -> int:
        for i, option in enumerate(self.options):
            if option == value and type(option) is type(value):
                return i
        return self.options.index(value)

    def perturb(self, value: JsonValue, factor: float, rng: np.random.Generator) -> tuple[JsonValue, str]:
        if len(self.options) == 1:
            return self.options[0], "keep (one option)"
        index = self._index(value)
        if self.ordered:
            step = 1 if factor >= 1 else -1
            target = index + step
            if not 0 <= target < len(self.options):
                target = index - step
            return self.options[target], f"-> {self.options[target]!r}"
        others = [i for i in range(len(self.options)) if i != index]
        target = others[int(rng.integers(len(others)))]
        return self.options[target], f"resample -> {self.options[target]!r}"

    def contains(self, value: JsonValue) -> bool:
        try:
            self._index(value)
        except ValueError:
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "options": list(self.options), "ordered": self.ordered}


class Widths(Param):
    """The widths of a network's hidden layers: a list of ``layers`` whole numbers, each in
    ``[low, high]`` (Augmented PBT's topology). ``perturb`` moves each layer by ``-step``,
    ``0`` or ``+step`` units, chosen uniformly (clipped to the bounds; the factor is not used);
    ``resample`` draws every width afresh, uniformly."""

    kind = "widths"

    def __init__(self, low: int, high: int, *, layers: int = 1, step: int = 1) -> None:
        self.low = low
        self.high = high
        self.layers = layers
        self.step = step

    def check(self, name: str) -> None:
        _check_bounds(name, "Widths", self.low, self.high, False, integer=True)
        if self.low < 1:
            raise SearchSpaceError(f"parameter {name!r}: Widths low must be at least 1 unit, got {self.low}")
        for label, value in (("layers", self.layers), ("step", self.step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SearchSpaceError(f"parameter {name!r}: Widths {label} must be a whole number >= 1, got {value!r}")

    def sample(self, rng: np.random.Generator) -> list[int]:
        return [int(w) for w in rng.integers(int(self.low), int(self.high) + 1, size=self.layers)]

    def perturb(self, value: JsonValue, factor: float, rng: np.random.Generator) -> tuple[list[int], str]:
        old = [int(w) for w in value]
        moves = rng.choice([-self.step, 0, self.step], size=len(old))
        new = [int(min(max(w + int(m), self.low), self.high)) for w, m in zip(old, moves)]
        return new, f"{old} -> {new}" if new != old else "unchanged"

    def contains(self, value: JsonValue) -> bool:
        return (
            isinstance(value, (list, tuple))
            and len(value) == self.layers
            and all(isinstance(w, int) and not isinstance(w, bool) and self.low <= w <= self.high for w in value)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "low": self.low, "high": self.high, "layers": self.layers, "step": self.step}


_KINDS: dict[str, type[Param]] = {"float": Float, "int": Int, "choice": Choice, "widths": Widths}


def param_from_dict(name: str, spec: Any) -> Param:
    """Build a parameter from its ``to_dict`` form (as written in YAML or JSON)."""
    if isinstance(spec, Param):
        return spec
    if not isinstance(spec, dict):
        raise SearchSpaceError(
            f"parameter {name!r}: expected a mapping such as {{type: float, low: 0.001, high: 0.1}} "
            f"(in Python: poptrain.Float(0.001, 0.1), Int or Choice), got {spec!r}"
        )
    kind = spec.get("type")
    if kind not in _KINDS:
        raise SearchSpaceError(f"parameter {name!r}: unknown type {kind!r}; use one of {', '.join(sorted(_KINDS))}")
    fields = {k: v for k, v in spec.items() if k != "type"}
    allowed = {
        "float": {"low", "high", "log"},
        "int": {"low", "high", "log"},
        "choice": {"options", "ordered"},
        "widths": {"low", "high", "layers", "step"},
    }[kind]
    unknown = set(fields) - allowed
    if unknown:
        raise SearchSpaceError(
            f"parameter {name!r}: unknown field(s) {', '.join(sorted(unknown))} for type {kind}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    required = {"options"} if kind == "choice" else {"low", "high"}
    missing = required - set(fields)
    if missing:
        raise SearchSpaceError(f"parameter {name!r}: missing field(s) {', '.join(sorted(missing))} for type {kind}")
    if kind == "choice":
        return Choice(fields["options"], ordered=fields.get("ordered", False))
    if kind == "widths":
        return Widths(fields["low"], fields["high"], layers=fields.get("layers", 1), step=fields.get("step", 1))
    cls = _KINDS[kind]
    return cls(fields["low"], fields["high"], log=fields.get("log", False))  # type: ignore[call-arg]
