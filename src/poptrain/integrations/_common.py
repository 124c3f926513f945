"""What the framework integrations share: importing an optional library, and the rule that
writes a member's hyperparameters only where they changed."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from poptrain.errors import ConfigError

APPLIED_KEY = "poptrain_hparams"
"""The key, in an integration's state, of the hyperparameters its optimizer state was trained with."""


def require(module: str, what: str, extra: str) -> ModuleType:
    """Import ``module``, or raise ``ConfigError`` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f'{what} needs {module.split(".")[0]}: pip install "poptrain[{extra}]"') from None


def changed(applied: Mapping[str, Any], hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters whose value differs from the ones the state was trained with.

    Writing only these keeps what a schedule did to the optimizer (a decayed learning rate)
    when nothing changed, so a member restored from its own checkpoint trains exactly as the
    live one did, and an explored value reaches the optimizer as it is.
    """
    missing = object()
    return {name: value for name, value in hparams.items() if applied.get(name, missing) != value}
