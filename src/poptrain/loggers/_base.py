"""What the loggers share: importing their library, and plain values to write."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from typing import Any

from poptrain.errors import ConfigError


def require(module: str, extra: str, what: str) -> Any:
    """Import ``module``, or one ``ConfigError`` line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        if exc.name in (None, top, module):  # None: blocked in sys.modules
            raise ConfigError(f'{what} needs {top}: pip install "poptrain[{extra}]"') from None
        raise ConfigError(f"{what}: importing {module} failed ({exc}); reinstall it: pip install -U {top}") from None


def number(value: Any) -> float | None:
    """``value`` as a float when it is a number (a bool counts as 0 or 1), else ``None``."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``values`` that are numbers, as floats."""
    return {k: v for k, v in ((str(k), number(v)) for k, v in values.items()) if v is not None}


def finite_or_text(value: float) -> float | str:
    """``value``, or ``"NaN"``/``"Infinity"``/``"-Infinity"`` (what ``float()`` reads back) when not finite."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def describe(decision: Any) -> str:
    """A decision in words: ``exploit of member 3: lr * 0.8, batch -> 64``."""
    head = decision.kind + (f" of member {decision.donor}" if decision.donor is not None else "")
    changes = ", ".join(f"{k} {v}" for k, v in decision.operations.items())
    return head + (f": {changes}" if changes else "")
