"""What an executor is: something that trains a run's members for the scheduler.

Most executors are transports: they carry the scheduler's ``SegmentTask``s to member runners
(``poptrain.runner.MemberRunner``) in this process, in worker processes or in Ray actors, and
bring the ``SegmentResult``s back; the scheduler decides everything. The vectorized executor
trains the whole population itself and commits through the same scheduler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from poptrain.runner import SegmentResult, SegmentTask
    from poptrain.scheduler import Scheduler

# what a transport hands back: (worker, slot or None, result or None); a result of None means the
# worker was lost (its live trainables with it, and the segment of ``slot`` when one was in flight)
Arrival = tuple[int, "int | None", "SegmentResult | None"]


class Executor(ABC):
    """Trains the members of a run; all decisions come from the scheduler."""

    def check(self, trainable: object, *, synchronous: bool = False) -> None:
        """Refuse, before anything is written, training code (or synchronous PBT) this executor cannot run."""

    @abstractmethod
    def run(self, scheduler: Scheduler) -> None:
        """Train every member to ``scheduler.total_steps``."""


class Transport(Executor):
    """An executor that carries segments to member runners: ``run`` is the scheduler's loop."""

    worker_kind = "worker"  # how messages name one of its workers
    # whether its runners save checkpoints through the scheduler's own store in this process
    # (then the scheduler has the files written by a background thread: ``WriteBehindStore``)
    saves_here = False

    def run(self, scheduler: Scheduler) -> None:
        scheduler.drive(self)

    @abstractmethod
    def start(self, scheduler: Scheduler, members: int) -> None:
        """Start the workers for ``members`` members (``scheduler.runner_spec`` makes their spec)."""

    @abstractmethod
    def idle(self) -> list[int]:
        """The workers that can take a segment now."""

    @abstractmethod
    def submit(self, worker: int, task: SegmentTask) -> None:
        """Send ``task`` to ``worker`` (one segment at a time per worker)."""

    @abstractmethod
    def wait(self) -> list[Arrival]:
        """What came back since the last call, waiting a little when nothing has yet."""

    def close(self) -> None:
        """Stop the workers (also after an error)."""
