"""The member runner: the one place where training code is driven.

A runner trains members' segments: construct, ``setup``, restore a checkpoint or load a
donor's, **apply the member's recorded hyperparameters after any load**, train until ready,
evaluate after each step, save a checkpoint. It decides nothing and never touches the run's
database: what it did goes back to the scheduler as a ``SegmentResult``. Every executor uses
it: in this process (sequential), in warm worker processes, in Ray actors.

Each member's random state (torch, NumPy and Python's global generators, and the generators
its trainable holds) is its own: it is swapped in for the member's segment, saved with every
checkpoint and restored with it, so a member trains the same whether its trainable stayed live
or was rebuilt from a checkpoint in another process, and a resumed run draws what the
uninterrupted one drew. A live trainable's random state is kept as a ``Snapshot`` (the
generators' own states, not encoded), so continuing it costs no decoding; only the checkpoint
gets the encoded form.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from poptrain.checkpoints import CheckpointStore, open_shared
from poptrain.errors import CheckpointError, TrainableError
from poptrain.random_state import Snapshot, restore, seed_globals, snapshot
from poptrain.records import CheckpointRecord, NewCheckpoint
from poptrain.strategy import MemberSnapshot
from poptrain.trainable import Trainable, TrainContext, call_user, check_trainable, train_one_step


@dataclass(frozen=True)
class SegmentTask:
    """Train member ``slot`` from ``step`` to its next ready point (or ``total_steps``).

    ``fresh``: build the trainable anew (``setup(hparams)``, then load ``restore``, the model
    the member holds, and its own random state from ``own``, its newest own checkpoint);
    otherwise continue the live one, first loading ``load`` (a donor's model after an exploit).
    Either way ``hparams`` are applied with ``set_hparams`` after any load and after a decision
    (``decided``).
    """

    slot: int
    step: int
    hparams: dict[str, Any]
    context: TrainContext
    snapshot: MemberSnapshot
    fresh: bool
    restore: CheckpointRecord | None = None
    own: CheckpointRecord | None = None
    load: CheckpointRecord | None = None
    decided: bool = False


@dataclass(frozen=True)
class SegmentResult:
    """What a segment produced: the scores of each step ``(step, value, metrics, wall time)``,
    the checkpoint saved at its end, or the error that stopped it (message, detail, whether a
    retry may help)."""

    slot: int
    scores: list[tuple[int, float, dict[str, float], float]] = field(default_factory=list)
    checkpoint: NewCheckpoint | None = None
    error: tuple[str, str | None, bool] | None = None
    seconds: float = 0.0
    pid: int = 0
    stop: bool = False  # the error is one no retry or replacement can mend (a state no checkpoint can hold)

    @property
    def last_step(self) -> int | None:
        return self.scores[-1][0] if self.scores else None

    def raise_error(self) -> None:
        if self.error is not None:
            message, detail, retry = self.error
            raise TrainableError(message, detail=detail, slot=self.slot, retry=retry)


@dataclass(frozen=True)
class RunnerSpec:
    """What a runner needs (picklable: sent to worker processes and Ray actors).

    ``checkpoints``: the run's checkpoint store, or its shared location (a folder or URL).
    ``max_live``: how many trainables stay live in memory (``None``: all); the others are
    parked in their checkpoints and rebuilt when their turn comes.
    """

    trainable_factory: Callable[[], Trainable]
    checkpoints: CheckpointStore | str
    metric: str
    total_steps: int
    ready: Callable[[MemberSnapshot], bool]
    torch_threads: int | None = None
    max_live: int | None = None


class MemberRunner:
    """Trains members' segments for one executor's worker (this process, a worker process, an actor)."""

    def __init__(self, spec: RunnerSpec) -> None:
        if spec.torch_threads is not None:
            import torch

            torch.set_num_threads(spec.torch_threads)
        self.spec = spec
        self.store = open_shared(spec.checkpoints) if isinstance(spec.checkpoints, str) else spec.checkpoints
        self.live: OrderedDict[int, tuple[Trainable, Snapshot]] = OrderedDict()  # slot -> (trainable, random state)

    def pid(self) -> int:
        return os.getpid()

    def holds(self, slot: int) -> bool:
        return slot in self.live

    def drop(self, slot: int) -> None:
        self.live.pop(slot, None)

    def segment(self, task: SegmentTask) -> SegmentResult:
        """Run ``task``; training code's errors come back in the result, not raised."""
        started = time.perf_counter()
        scores: list[tuple[int, float, dict[str, float], float]] = []
        try:
            trainable, saved = self._prepare(task)
            if isinstance(saved, Snapshot):
                saved.restore()
            elif saved is not None:
                restore(trainable, saved)
            step = task.step
            while step < self.spec.total_steps:
                step += 1
                value, metrics = train_one_step(trainable, task.slot, step, self.spec.metric)
                scores.append((step, value, metrics, time.time()))
                if step < self.spec.total_steps and self.spec.ready(replace(task.snapshot, step=step)):
                    break
            random_state = snapshot(trainable)
            state = call_user(task.slot, step, "state_dict", trainable.state_dict)
            try:
                checkpoint = self.store.save(task.slot, step, state, random_state=random_state.encode())
            except CheckpointError as exc:
                self.live.pop(task.slot, None)
                return SegmentResult(
                    task.slot,
                    scores,
                    None,
                    (str(exc), None, False),
                    time.perf_counter() - started,
                    os.getpid(),
                    stop=True,
                )
        except TrainableError as error:
            self.live.pop(task.slot, None)
            return SegmentResult(
                task.slot,
                scores,
                None,
                (str(error), error.detail, error.retry),
                time.perf_counter() - started,
                os.getpid(),
            )
        if step >= self.spec.total_steps:
            self.live.pop(task.slot, None)
        else:
            self._keep(task.slot, trainable, random_state)
        return SegmentResult(task.slot, scores, checkpoint, None, time.perf_counter() - started, os.getpid())

    def _prepare(self, task: SegmentTask) -> tuple[Trainable, Snapshot | dict[str, Any] | None]:
        """The member's trainable, and the random state to put in place before it trains: a
        snapshot (a live trainable's, or one taken after ``setup``), a checkpoint's encoded
        state, or ``None`` when the globals already hold the member's (built just now and
        nothing loaded)."""
        kept = None if task.fresh else self.live.get(task.slot)
        slot, step = task.slot, task.step
        if kept is None:
            trainable = check_trainable(
                call_user(slot, step, "construct", self.spec.trainable_factory), self.spec.trainable_factory
            )
            seed_globals(task.context.seed)  # what setup draws is the member's own
            call_user(slot, step, "setup", trainable.setup, dict(task.hparams), task.context)
            if task.restore is None:
                return trainable, None
            after_setup = snapshot(trainable)
            state, saved = self._load(task.restore, slot, step, retry=False)
            call_user(slot, step, "load_state_dict", trainable.load_state_dict, state)
            if (
                task.own is not None and task.own.id != task.restore.id
            ):  # the model is a donor's; the random state is its own
                saved = self._load(task.own, slot, step, retry=False, random_only=True)[1]
            elif task.own is None:
                saved = None
            call_user(slot, step, "set_hparams", trainable.set_hparams, dict(task.hparams))
            return trainable, after_setup if saved is None else saved
        trainable, random_state = kept
        if task.load is not None:
            state, _ = self._load(task.load, slot, step, retry=True)
            call_user(slot, step, "load_state_dict", trainable.load_state_dict, state)
        if task.load is not None or task.decided:
            call_user(slot, step, "set_hparams", trainable.set_hparams, dict(task.hparams))
        return trainable, random_state

    def _keep(self, slot: int, trainable: Trainable, random_state: Snapshot) -> None:
        self.live[slot] = (trainable, random_state)
        self.live.move_to_end(slot)
        while self.spec.max_live is not None and len(self.live) > self.spec.max_live:
            self.live.popitem(last=False)

    def _load(
        self, record: CheckpointRecord, slot: int, step: int, *, retry: bool, random_only: bool = False
    ) -> tuple[Any, dict[str, Any] | None]:
        try:
            return self.store.load_member_and_random_state(record)
        except CheckpointError as exc:
            if random_only:  # the member's own random state is lost: it continues with the restored model's
                return None, None
            raise TrainableError(
                f"member {slot} cannot load checkpoint {record.uri}: {exc}", slot=slot, retry=retry
            ) from exc
