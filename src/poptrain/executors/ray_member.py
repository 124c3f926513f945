"""What a Ray actor does for the Ray executor: train one member for one segment.

Nothing here imports Ray: a ``MemberWorker`` is a plain object that the executor wraps in an
actor, so its logic is tested without a cluster. It keeps live trainables between segments
(members usually come back to the same actor), reads and writes checkpoints through the run's
shared checkpoint store, and never touches the run's database: scores, checkpoints' records
and decisions go back to the driver, which records them in order.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from poptrain.checkpoints import open_shared
from poptrain.errors import CheckpointError, TrainableError
from poptrain.records import CheckpointRecord, NewCheckpoint
from poptrain.strategy import MemberSnapshot
from poptrain.trainable import Trainable, TrainContext, call_user, check_trainable, train_one_step


@dataclass(frozen=True)
class SegmentTask:
    """Train member ``slot`` from ``step`` to its next ready point (or ``total_steps``).

    ``fresh``: build the trainable anew (``setup(hparams)``, then load ``restore`` if given);
    otherwise continue the live one, first loading ``load`` (a donor's checkpoint after an
    exploit) and applying ``set_hparams`` (after a decision).
    """

    slot: int
    step: int
    hparams: dict[str, Any]
    context: TrainContext
    snapshot: MemberSnapshot
    fresh: bool
    restore: CheckpointRecord | None = None
    load: CheckpointRecord | None = None
    set_hparams: dict[str, Any] | None = None


@dataclass(frozen=True)
class SegmentResult:
    """What a segment produced: the scores of each step, the checkpoint saved at its end, or the
    error that stopped it (``error``: message, detail, whether a retry may help)."""

    slot: int
    scores: list[tuple[int, float, dict[str, float], float]] = field(default_factory=list)
    checkpoint: NewCheckpoint | None = None
    error: tuple[str, str | None, bool] | None = None
    seconds: float = 0.0
    pid: int = 0

    def raise_error(self) -> None:
        if self.error is not None:
            message, detail, retry = self.error
            raise TrainableError(message, detail=detail, slot=self.slot, retry=retry)


class MemberWorker:
    """Trains members' segments; one per Ray actor. Keeps at most ``keep_live`` trainables."""

    def __init__(
        self,
        trainable_factory: Callable[[], Trainable],
        checkpoint_target: str,
        metric: str,
        total_steps: int,
        ready: Callable[[MemberSnapshot], bool],
        torch_threads: int | None = None,
        keep_live: int = 4,
    ) -> None:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        self.factory = trainable_factory
        self.store = open_shared(checkpoint_target)
        self.metric = metric
        self.total_steps = total_steps
        self.ready = ready
        self.keep_live = keep_live
        self.live: OrderedDict[int, Trainable] = OrderedDict()

    def pid(self) -> int:
        return os.getpid()

    def segment(self, task: SegmentTask) -> SegmentResult:
        """Run ``task``; training code's errors come back in the result, not raised."""
        started = time.perf_counter()
        scores: list[tuple[int, float, dict[str, float], float]] = []
        try:
            trainable = self._prepare(task)
            step = task.step
            while step < self.total_steps:
                step += 1
                value, metrics = train_one_step(trainable, task.slot, step, self.metric)
                scores.append((step, value, metrics, time.time()))
                if step < self.total_steps and self.ready(replace(task.snapshot, step=step)):
                    break
            state = call_user(task.slot, step, "state_dict", trainable.state_dict)
            checkpoint = self.store.save(task.slot, step, state)
        except TrainableError as error:
            self.live.pop(task.slot, None)
            return SegmentResult(task.slot, scores, None, (str(error), error.detail, error.retry), time.perf_counter() - started, os.getpid())
        if step >= self.total_steps:
            self.live.pop(task.slot, None)
        return SegmentResult(task.slot, scores, checkpoint, None, time.perf_counter() - started, os.getpid())

    def _prepare(self, task: SegmentTask) -> Trainable:
        trainable = None if task.fresh else self.live.get(task.slot)
        if trainable is None:
            trainable = check_trainable(call_user(task.slot, task.step, "construct", self.factory), self.factory)
            call_user(task.slot, task.step, "setup", trainable.setup, dict(task.hparams), task.context)
            if task.restore is not None:
                self._load(trainable, task.restore, task.slot, task.step, retry=False)
                # the member's recorded hyperparameters, not those inside the restored state
                call_user(task.slot, task.step, "set_hparams", trainable.set_hparams, dict(task.hparams))
        else:
            if task.load is not None:
                self._load(trainable, task.load, task.slot, task.step, retry=True)
            if task.set_hparams is not None:
                call_user(task.slot, task.step, "set_hparams", trainable.set_hparams, dict(task.set_hparams))
        self.live[task.slot] = trainable
        self.live.move_to_end(task.slot)
        while len(self.live) > self.keep_live:
            self.live.popitem(last=False)
        return trainable

    def _load(self, trainable: Trainable, record: CheckpointRecord, slot: int, step: int, *, retry: bool) -> None:
        try:
            state = self.store.load_member(record)
        except CheckpointError as exc:
            raise TrainableError(f"member {slot} cannot load checkpoint {record.uri}: {exc}", slot=slot, retry=retry) from exc
        call_user(slot, step, "load_state_dict", trainable.load_state_dict, state)

    def holds(self, slot: int) -> bool:
        return slot in self.live
