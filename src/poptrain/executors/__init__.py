"""Executors: how members are trained. Every executor takes the same decisions."""

from __future__ import annotations

from poptrain.errors import ConfigError
from poptrain.executors._base import Executor
from poptrain.executors.processes import ProcessesExecutor
from poptrain.executors.sequential import SequentialExecutor

# vectorized and ray: imported when used
EXECUTORS = {"sequential": SequentialExecutor, "processes": ProcessesExecutor, "vectorized": None, "ray": None}


def get_executor(executor: str | Executor, *, workers: int | None = None, address: str | None = None) -> Executor:
    """An executor by name (``"sequential"``, ``"processes"`` with ``workers``, ``"vectorized"``,
    ``"ray"`` with a cluster ``address``) or the instance given."""
    if isinstance(executor, Executor):
        return executor
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; use one of {', '.join(sorted(EXECUTORS))}")
    if address is not None and executor != "ray":
        raise ConfigError(f"address={address!r} needs executor='ray'")
    if executor == "ray":
        from poptrain.executors.ray_executor import RayExecutor

        return RayExecutor(address, actors=workers)
    if executor == "processes":
        return ProcessesExecutor(workers if workers is not None else 2)
    if workers not in (None, 1):
        raise ConfigError(f"workers={workers} needs executor='processes'")
    if executor == "vectorized":
        from poptrain.executors.vectorized import VectorizedExecutor

        return VectorizedExecutor()
    return EXECUTORS[executor]()  # type: ignore[misc]


__all__ = ["EXECUTORS", "Executor", "ProcessesExecutor", "SequentialExecutor", "get_executor"]
