"""Executors: how members are trained. Every executor takes the same decisions."""

from __future__ import annotations

from poptrain.errors import ConfigError
from poptrain.executors._base import Executor
from poptrain.executors.sequential import SequentialExecutor

EXECUTORS = {"sequential": SequentialExecutor}


def get_executor(executor: "str | Executor") -> Executor:
    """An executor by name (``"sequential"``) or the instance given."""
    if isinstance(executor, Executor):
        return executor
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; available here: {', '.join(sorted(EXECUTORS))}")
    return EXECUTORS[executor]()


__all__ = ["EXECUTORS", "Executor", "SequentialExecutor", "get_executor"]
