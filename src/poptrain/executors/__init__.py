"""Executors: how members are trained. Every executor takes the same decisions."""

from __future__ import annotations

from poptrain.errors import ConfigError
from poptrain.executors._base import Executor
from poptrain.executors.processes import ProcessesExecutor
from poptrain.executors.sequential import SequentialExecutor

EXECUTORS = {"sequential": SequentialExecutor, "processes": ProcessesExecutor, "vectorized": None}  # vectorized: imported when used


def get_executor(executor: "str | Executor", *, workers: int | None = None) -> Executor:
    """An executor by name (``"sequential"``, ``"processes"`` with ``workers``, ``"vectorized"``) or the
    instance given."""
    if isinstance(executor, Executor):
        return executor
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; use one of {', '.join(sorted(EXECUTORS))}")
    if executor == "processes":
        return ProcessesExecutor(workers if workers is not None else 2)
    if workers not in (None, 1):
        raise ConfigError(f"workers={workers} needs executor='processes'")
    if executor == "vectorized":
        from poptrain.executors.vectorized import VectorizedExecutor

        return VectorizedExecutor()
    return EXECUTORS[executor]()  # type: ignore[misc]


__all__ = ["EXECUTORS", "Executor", "ProcessesExecutor", "SequentialExecutor", "get_executor"]
