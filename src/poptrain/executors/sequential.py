"""The reference executor: one process, members take turns, deterministic for a seed.

Members train one segment at a time in this process, least-trained first (see
``poptrain.scheduler``); every trainable stays live in memory unless ``max_live`` says how many
may (the others are parked in their checkpoints and rebuilt when their turn comes, so a
population whose models do not all fit in memory still runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poptrain.errors import ConfigError
from poptrain.executors._base import Arrival, Transport
from poptrain.runner import MemberRunner, SegmentTask

if TYPE_CHECKING:
    from poptrain.scheduler import Scheduler


class SequentialExecutor(Transport):
    """Trains members one at a time in this process; ``max_live`` trainables kept live (default all)."""

    saves_here = True

    def __init__(self, *, max_live: int | None = None) -> None:
        if max_live is not None and (isinstance(max_live, bool) or not isinstance(max_live, int) or max_live < 1):
            raise ConfigError(f"max_live must be a whole number >= 1 or None, got {max_live!r}")
        self.max_live = max_live
        self._runner: MemberRunner | None = None
        self._done: list[Arrival] = []
        self._busy = False

    def start(self, scheduler: Scheduler, members: int) -> None:
        self._runner = MemberRunner(scheduler.runner_spec(scheduler.checkpoints, max_live=self.max_live))
        self._done, self._busy = [], False

    def idle(self) -> list[int]:
        return [] if self._busy else [0]

    def submit(self, worker: int, task: SegmentTask) -> None:
        assert self._runner is not None
        self._busy = True
        self._done.append((0, task.slot, self._runner.segment(task)))

    def wait(self) -> list[Arrival]:
        done, self._done, self._busy = self._done, [], False
        return done

    def close(self) -> None:
        self._runner = None
