"""The PoptrainError family: errors a user can act on.

Each error also inherits the matching built-in so that ``except ValueError`` keeps working.
Messages are one line that names the problem and the fix.
"""

from __future__ import annotations


class PoptrainError(Exception):
    """Base class of every error poptrain raises on purpose."""


class SearchSpaceError(PoptrainError, ValueError):
    """A search space or one of its parameters is malformed."""


class StrategyError(PoptrainError, ValueError):
    """A ready/exploit/explore strategy was configured wrongly or returned something invalid."""


class ConfigError(PoptrainError, ValueError):
    """A run configuration (YAML file, experiment module, CLI arguments) is invalid."""


class MetricError(PoptrainError, KeyError):
    """The trainable's evaluation did not return the metric the run optimises.

    ``metric`` is the run's metric and ``available`` the names evaluate() returned, when known.
    """

    def __init__(self, message: str, *, metric: str | None = None, available: list[str] | None = None) -> None:
        super().__init__(message)
        self.metric = metric
        self.available = available

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class StorageError(PoptrainError, RuntimeError):
    """The storage backend failed or could not be reached."""


class RunNotFoundError(StorageError, KeyError):
    """No run of that name exists in the storage."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RunExistsError(StorageError):
    """A run of that name exists already."""


class CheckpointError(PoptrainError, OSError):
    """A checkpoint could not be written, or is missing or corrupt on load."""


class TrainableError(PoptrainError, RuntimeError):
    """User training code raised or returned something poptrain cannot use.

    ``detail`` holds the traceback (or what was wrong), stored with the member.
    """

    def __init__(self, message: str, *, detail: str | None = None, slot: int | None = None, retry: bool = True) -> None:
        super().__init__(message)
        self.detail = detail
        self.slot = slot
        self.retry = retry


class ResourceError(PoptrainError, MemoryError):
    """A run needs more memory (or another resource) than the machine offers."""


class StaleWriteError(StorageError):
    """A write that would overwrite another worker's: a score for a step that already has one, or
    a write with a lease token the worker no longer holds (its lease expired or was taken over).
    Nothing of the call was written; the worker should stop training that member."""
