"""Loggers: callbacks that write a run's events where other tools read them.

``jsonl`` (``JsonlLogger``, no extra package), ``tensorboard`` (``TensorBoardLogger``),
``mlflow`` (``MLflowLogger``) and ``wandb`` (``WandbLogger``). Each imports its library when
it is made, so ``import poptrain`` stays light; a missing one is one line naming the extra to
install (``pip install "poptrain[tensorboard]"``). By default each writes under the run's folder,
``runs/NAME/logs/``. Names are what ``poptrain run --log`` and a config's ``callbacks:`` take.
"""

from __future__ import annotations

import importlib
from typing import Any

LOGGERS: dict[str, str] = {
    "jsonl": "poptrain.loggers.jsonl:JsonlLogger",
    "tensorboard": "poptrain.loggers.tensorboard:TensorBoardLogger",
    "mlflow": "poptrain.loggers.mlflow:MLflowLogger",
    "wandb": "poptrain.loggers.wandb:WandbLogger",
}
"""Each logger's name and where its class is."""

_CLASSES = {path.rpartition(":")[2]: path for path in LOGGERS.values()}


def logger_class(name: str) -> Any:
    """The class of the logger called ``name`` (a key of ``LOGGERS``)."""
    module, _, attr = LOGGERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def __getattr__(name: str) -> Any:
    """The logger classes, each imported when first used."""
    if name in _CLASSES:
        module, _, attr = _CLASSES[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'poptrain.loggers' has no attribute {name!r}")


__all__ = ["LOGGERS", "JsonlLogger", "MLflowLogger", "TensorBoardLogger", "WandbLogger", "logger_class"]
