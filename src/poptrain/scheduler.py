"""The scheduler: the one driver of every executor that trains members in segments.

It keeps the turn order (least-trained member first, lowest slot on ties), holds each
segment's result until its ready point may be decided fairly, plans every decision with one
pure function (``strategy.plan_round``) and commits each ready point in one storage call. The
executors are transports: they carry ``SegmentTask``s to member runners (``poptrain.runner``)
and ``SegmentResult``s back, and decide nothing.

Fair comparisons. A member's ready point at step t is decided only once every other member
still training has a score at step t (or has finished, or is behind because its last attempt
failed: such a member holds nobody up), and it is ranked against the others' scores at step t
(a member behind is ranked by its newest ready point). A member that is ahead waits at its ready point for those behind; with more
members than workers the workers meanwhile train the members behind (least trained first), so
nobody idles. Ready points at the same step are decided together against one snapshot: the
decisions of a round do not see each other (no cascade of copies within a step). Synchronous
PBT also waits for every member to reach the step (a generation barrier, failed segments
trained again first); with ``every(n)`` both modes make the same decisions, and they differ
when members are ready at different steps.

A member whose segment fails is rewound to its newest checkpoint and trained again; after
``max_retries`` failures in a row, or at once when retrying cannot help (a non-finite score
on training code that draws the same random numbers again), it is replaced by a copy of the
best healthy member.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from poptrain.callbacks import Callback, Callbacks
from poptrain.checkpoints import CheckpointStore, WriteBehindStore, collectable
from poptrain.errors import CheckpointError, ConfigError, StrategyError, TrainableError
from poptrain.records import (
    CheckpointRecord,
    GenerationRecord,
    MemberRecord,
    NewCheckpoint,
    ReadyPoint,
    RunRecord,
    ScoreRecord,
)
from poptrain.runner import RunnerSpec, SegmentResult, SegmentTask
from poptrain.seeding import member_seed
from poptrain.space import SearchSpace
from poptrain.stopping import (
    RunStopped,
    StopRule,
    StopState,
    first_reason,
    improvements_from,
    record_improvement,
    time_budget,
)
from poptrain.storage import Storage
from poptrain.strategy import (
    Decision,
    History,
    MemberSnapshot,
    Strategy,
    at_step,
    build_history,
    decision_rng,
    every,
    first_scores,
    lineage_scores,
    plan_round,
    rank,
    ranked_step,
    recent_window,
    replacement,
    uses_history,
)
from poptrain.trainable import Trainable, TrainContext

if TYPE_CHECKING:
    from poptrain.executors._base import Transport


@dataclass
class _Member:
    """A member as the scheduler follows it."""

    record: MemberRecord
    holder: int | None = None  # the worker holding its live trainable, in step with its record
    decision: Decision | None = None  # taken at its last ready point, applied at its next segment
    running_on: int | None = None
    result: SegmentResult | None = None  # a segment trained and recorded, its ready point not yet decided
    arrived_at: float = 0.0
    lost: int = 0  # segments lost in a row with their worker


_Record = TypeVar("_Record")


def _evolve(record: _Record, **changes: Any) -> _Record:
    """``dataclasses.replace`` for the frozen records of the per-step path (a score of every
    member at every step): a copy of the instance's fields with ``changes``. ``replace`` checks
    and passes every field through ``__init__`` (a large population spent seconds in it); a
    record has no ``__post_init__`` and no ``init=False`` field, so the copy is the same record."""
    fields = vars(record)
    assert fields.keys() >= changes.keys(), f"{type(record).__name__} has no field {set(changes) - set(fields)}"
    new = object.__new__(type(record))
    vars(new).update(fields, **changes)
    return new


LOST_WORKERS_FORGIVEN = 3  # segments a member may lose in a row with a dying worker before they count as its failures


@dataclass
class SchedulerStats:
    """For each ready point decided by ``drive``: seconds from its result reaching the driver to
    its decision being recorded (waiting for a fair comparison included), and the driver's own
    seconds to record and decide each round."""

    decision_seconds: list[float] = field(default_factory=list)
    commit_seconds: list[float] = field(default_factory=list)


def turn_order(member: MemberRecord) -> tuple[int, int, int]:
    """Least trained first, then fewest failures, then lowest slot."""
    return (member.step, member.failures, member.slot)


class Scheduler:
    """Owns a run's I/O while it trains; executors carry its segments."""

    def __init__(
        self,
        run: RunRecord,
        storage: Storage,
        checkpoints: CheckpointStore,
        space: SearchSpace,
        strategy: Strategy,
        trainable_factory: Callable[[], Trainable] | None,
        total_steps: int,
        progress: Callback | None = None,
        flush_seconds: float = 1.0,
        max_retries: int = 2,
        keep_checkpoints: int | None = 2,
        gc_seconds: float = 5.0,
        keep_best: int = 3,
        stop: Sequence[StopRule] = (),
    ) -> None:
        self.run = run
        self.storage = storage
        self.checkpoints = checkpoints
        self.space = space
        self.strategy = strategy
        self.trainable_factory = trainable_factory
        self.total_steps = total_steps
        self.callbacks = progress if isinstance(progress, Callbacks) else Callbacks([progress])
        self.stop_rules = tuple(stop)
        self._started = time.monotonic()
        self._improvements: tuple[tuple[int, float], ...] = (
            improvements_from([(c.step, c.score) for c in storage.get_checkpoints(run.id)], run.mode) if stop else ()
        )
        self.metric = run.metric
        self.flush_seconds = flush_seconds
        self.max_retries = max_retries
        self.keep_checkpoints = keep_checkpoints
        self.keep_best = keep_best
        self.gc_seconds = gc_seconds
        self.device = "cpu"
        self._pending: list[ScoreRecord] = []
        self._flushed_at = time.monotonic()
        self._collected_at = time.monotonic()
        self._population: dict[int, MemberRecord] | None = None
        self._failures_in_a_row = 0
        self._openings: dict[int, tuple[int, float | None]] = {}
        # generation id -> step -> value, for fair comparisons: a member that copied an older model
        # trains some steps again as a new generation, and another's model may descend from the old
        self._scores: dict[int, dict[int, float | None]] = {}
        self._scores_learned = False  # whether _scores holds those stored before (read when recent ones are needed)
        self._generations: dict[int, GenerationRecord] = {}  # by id, read when recent scores are needed
        self._checkpoints: dict[int, CheckpointRecord] = {}  # by id: those this scheduler recorded, and read
        self.stats = SchedulerStats()
        self._worker_kind = "worker"
        self.lease: int | None = None  # a fenced lease's token when a worker writes for the member it leased
        self.retired: set[int] = set()  # members that failed for good (strategy.replace_failed off)

    @property
    def progress(self) -> Callbacks:
        """The callbacks (the older name)."""
        return self.callbacks

    @classmethod
    def for_ask_tell(
        cls, run: RunRecord, storage: Storage, checkpoints: CheckpointStore, space: SearchSpace, strategy: Strategy
    ) -> Scheduler:
        """A scheduler that only commits ready points reported from the user's own loop
        (``Run.report``): it trains nothing and has no end."""
        return cls(run, storage, checkpoints, space, strategy, None, sys.maxsize)

    # --- views ------------------------------------------------------------------
    def members(self) -> list[MemberRecord]:
        """The members as stored now (also refreshes the population used for decisions)."""
        members = self.storage.get_members(self.run.id)
        self._population = {m.slot: m for m in members}
        return members

    def resumable_members(self) -> list[MemberRecord]:
        """The members still to train, each rewound to its newest ready point (what it did after
        it is undone: it trains again from that checkpoint). A member whose final checkpoint is
        recorded is marked finished; a retired one (see ``fail``) stays retired."""
        todo: list[MemberRecord] = []
        done: list[MemberRecord] = []
        for member in self.members():
            if member.state == "finished" and member.step >= self.total_steps:
                continue
            if member.state == "retired":  # failed for good under random search: it stays out
                self.retired.add(member.slot)
                continue
            if member.step != member.last_ready_step:
                member = self.storage.rewind_member(self.run.id, member.slot)
            (done if member.step >= self.total_steps else todo).append(member)
        if done:
            self.finish_members(done)
        if todo:
            self.members()
        return todo

    def snapshot(self, member: MemberRecord, step: int | None = None) -> MemberSnapshot:
        """What the strategies know of ``member``: its newest ready point's score and the
        hyperparameters that trained the model it holds; at ``step`` (default: its own)."""
        ready = member.last_ready_step > 0
        fitness = self.run.fitness(member.ready_score) if ready else None
        if ready and (fitness is None or not math.isfinite(fitness)):
            fitness = -math.inf  # a NaN or infinite score (SQL storage keeps it as NULL) ranks last
        hparams = member.ready_hparams if ready and member.ready_hparams is not None else member.hparams
        return MemberSnapshot(
            member.slot,
            member.step if step is None else step,
            dict(hparams),
            fitness,
            member.last_ready_step,
            member.generation,
        )

    def population(self) -> list[MemberSnapshot]:
        """Every member as of its newest ready point."""
        if self._population is None:
            self.members()
        assert self._population is not None
        return [self.snapshot(m, m.last_ready_step) for _, m in sorted(self._population.items())]

    def is_ready(self, member: MemberRecord, step: int) -> bool:
        """Whether ``member`` is ready after finishing ``step`` (never at the final step)."""
        if step >= self.total_steps:
            return False
        ready = self.strategy.ready
        if type(ready) is every:  # the usual rule, asked of every member after every step: no snapshot
            return ready.due(step, member.last_ready_step)
        return bool(ready(self.snapshot(member, step)))

    def history(self, ready: Sequence[tuple[int, int, float | None]] = ()) -> History | None:
        """The population's history for an explore that uses one (``None`` otherwise), from the
        stored lineage and checkpoints plus the ``ready`` points ``(slot, step, score)`` being
        decided."""
        if not uses_history(self.strategy.explore):
            return None
        generations: list[GenerationRecord] = self.storage.get_generations(self.run.id)
        checkpoints: list[CheckpointRecord] = self.storage.get_checkpoints(self.run.id)
        known = {c.slot for c in checkpoints} | {slot for slot, _, _ in ready}
        if not known <= set(self._openings):
            self._openings.update(first_scores([*self.storage.get_scores(self.run.id), *self._pending], generations))
            self._openings.update({slot: (0, None) for slot in known - set(self._openings)})
        return build_history(generations, checkpoints, mode=self.run.mode, ready=ready, openings=self._openings)

    # --- scores -----------------------------------------------------------------
    def record_score(self, member: MemberRecord, step: int, value: float, metrics: dict[str, float]) -> MemberRecord:
        """Record ``member``'s evaluation after ``step`` (written at least every ``flush_seconds``)."""
        self._pending.append(ScoreRecord(member.slot, step, value, member.generation_id, metrics, time.time()))
        self._scores.setdefault(member.generation_id, {})[step] = value
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()
        if self.callbacks.callbacks:
            self.callbacks.on_evaluation(
                member.slot, step, value, dict(metrics), dict(member.hparams), member.generation
            )
        if self.stop_rules:  # a time budget is checked after every step, the other rules at ready points
            self._check_stop(step, [r for r in self.stop_rules if isinstance(r, time_budget)])
        return _evolve(member, step=step, score=value)

    def record_scores(self, batch: Sequence[tuple[MemberRecord, int, float, dict[str, float]]]) -> list[MemberRecord]:
        """``record_score`` for each ``(member, step, value, metrics)`` of ``batch`` in turn (the
        vectorized executor's step: every member at once): the same score records (one wall time
        for the batch), then each evaluation's callbacks in the batch's order, and the members
        returned with their new step and score. With stop rules (a time budget is checked after
        every score) the members are recorded one by one."""
        if self.stop_rules:
            return [self.record_score(m, step, value, metrics) for m, step, value, metrics in batch]
        now = time.time()
        append, scores, new = self._pending.append, self._scores, object.__new__
        updated = []
        for member, step, value, metrics in batch:
            slot = member.slot
            generation_id = member.generation_id
            append(ScoreRecord(slot, step, value, generation_id, metrics, now))
            by_step = scores.get(generation_id)
            if by_step is None:
                by_step = scores[generation_id] = {}
            by_step[step] = value
            record = new(type(member))  # _evolve(member, step=step, score=value), without its checks
            fields = vars(record)
            fields.update(vars(member))
            fields["step"], fields["score"] = step, value
            updated.append(record)
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()
        if self.callbacks.callbacks:
            for member, step, value, metrics in batch:
                self.callbacks.on_evaluation(
                    member.slot, step, value, dict(metrics), dict(member.hparams), member.generation
                )
        return updated

    def flush(self) -> None:
        """Write the scores not yet written (at least every ``flush_seconds`` and with every ready
        point; those after a member's newest checkpoint would be trained again after a crash)."""
        pending, self._pending = self._pending, []
        self._flushed_at = time.monotonic()
        if pending:
            self.storage.record_scores(self.run.id, pending, lease=self.lease)

    def learn(self, stored: Iterable[ScoreRecord], *, pending: Sequence[ScoreRecord] = ()) -> None:
        """Know scores recorded before (``stored``) and ones to write with the next ready point
        (``pending``): ask/tell, whose members trained elsewhere, compares them fairly."""
        for score in [*stored, *pending]:
            self._scores.setdefault(score.generation_id, {})[score.step] = score.value
        self._pending.extend(pending)

    def learn_stored(self, step: int) -> None:
        """Know the stored scores that a ready point at ``step`` is decided with, for a scheduler
        whose population trains elsewhere too (a worker's): every member's score at ``step`` (the
        fair comparison, ``at_step``), and with an exploit that reads recent evaluations
        (``recent_window``), those from ``window`` steps before the oldest step a member can be
        ranked by (the runner scores every step, so a lineage's last ``window`` evaluations lie
        in that range). Not every score of the run: a ready point reads what its decision needs."""
        window = recent_window(self.strategy.exploit)
        if not window:
            self.learn(self.storage.get_scores(self.run.id, step=step))
            return
        if self._population is None:
            self.members()
        assert self._population is not None
        oldest = min([step, *(m.last_ready_step for m in self._population.values())])
        self.learn(self.storage.get_scores(self.run.id, since=max(oldest - window + 1, 0)))
        self._scores_learned = True  # every score a lineage's window reads (see _with_recent)

    def discard_pending(self) -> None:
        """Drop the scores not yet written (a stale worker's, refused by its lost lease)."""
        self._pending = []

    def _forget_after(self, member: MemberRecord) -> None:
        """Forget a rewound member's scores past its newest ready point."""
        self._pending = [s for s in self._pending if s.slot != member.slot or s.step <= member.last_ready_step]
        kept = self._scores.get(member.generation_id, {})
        self._scores[member.generation_id] = {s: v for s, v in kept.items() if s <= member.last_ready_step}

    # --- ready points -----------------------------------------------------------
    def commit(
        self, points: Sequence[tuple[MemberRecord, NewCheckpoint, bool]]
    ) -> list[tuple[MemberRecord, Decision | None]]:
        """Record members reaching a ready point at one step with their checkpoints, and decide
        for those marked ``True``: against one snapshot of the population at that step
        (``plan_round``), recorded with the pending scores in one storage call."""
        updated = [
            (_evolve(m, last_ready_step=m.step, ready_score=m.score, ready_hparams=dict(m.hparams)), c, d)
            for m, c, d in points
        ]
        decisions: dict[int, Decision] = {}
        ready = {m.slot: self.snapshot(m) for m, _, _ in updated}
        deciding = [ready[m.slot] for m, _, decide in updated if decide]
        if deciding:
            step = max(m.step for m, _, _ in updated)
            population = [ready.get(p.slot, p) for p in self.population()]
            current = self._current_scores([m for m, _, _ in updated])
            population = at_step(population, current, step, self.run.fitness)
            window = recent_window(self.strategy.exploit)
            if window:
                population = self._with_recent(population, [m for m, _, _ in updated], step, window, current)
                by_slot = {p.slot: p for p in population}
                deciding = [by_slot.get(d.slot, d) for d in deciding]
            history = self.history([(m.slot, m.step, m.score) for m, _, _ in updated])
            for decision in plan_round(
                population,
                deciding,
                self.space,
                self.strategy,
                lambda m: decision_rng(self.run.seed, m.slot, m.step),
                history=history,
            ):
                decisions[decision.slot] = decision
        self.checkpoints.flush()  # no record may name a file not yet written
        pending, self._pending = self._pending, []
        self._flushed_at = time.monotonic()
        records = self.storage.record_ready(
            self.run.id,
            [ReadyPoint(m.slot, m.step, c, m.score, decisions.get(m.slot)) for m, c, _ in updated],
            pending,
            lease=self.lease,
        )
        self._failures_in_a_row = 0
        for (member, ckpt, _), record in zip(updated, records, strict=True):
            if record.checkpoint_id is not None:  # known without reading it back (see ``checkpoint``)
                score = member.score if member.score is not None and math.isfinite(member.score) else None
                self._checkpoints[record.checkpoint_id] = CheckpointRecord(
                    record.checkpoint_id,
                    member.slot,
                    member.step,
                    ckpt.uri,
                    ckpt.sha256,
                    ckpt.size_bytes,
                    score,
                    generation_id=member.generation_id,  # the generation that trained it (before the decision)
                )
        if self._population is not None:
            self._population.update({r.slot: r for r in records})
        for (member, _, _), record in zip(updated, records, strict=True):
            if member.score is not None:
                self.callbacks.on_checkpoint(member.slot, member.step, member.score)
            if record.slot in decisions:
                self.callbacks.on_decision(decisions[record.slot])
        self.collect_checkpoints()
        if self.stop_rules:
            for member, _, _ in updated:
                self._improvements = record_improvement(self._improvements, member.step, member.score, self.run.mode)
            self._check_stop(max(m.step for m, _, _ in updated), self.stop_rules)
        return [(record, decisions.get(record.slot)) for record in records]

    def _check_stop(self, step: int, rules: Sequence[StopRule]) -> None:
        """Raise ``RunStopped`` when one of ``rules`` says the run should stop now."""
        state = StopState(time.monotonic() - self._started, step, self._improvements, self.run.mode)
        reason = first_reason(rules, state)
        if reason:
            self.flush()
            raise RunStopped(reason)

    def _current_scores(self, updated: Sequence[MemberRecord]) -> dict[int, dict[int, float | None]]:
        """slot -> step -> value of each member's current generation (``updated`` as being
        recorded, the others as last read), as ``at_step`` ranks a member's own model."""
        assert self._population is not None
        generation_ids = {m.slot: m.generation_id for m in [*self._population.values(), *updated]}
        return {slot: self._scores.get(gen_id, {}) for slot, gen_id in generation_ids.items()}

    def _with_recent(
        self,
        population: list[MemberSnapshot],
        updated: Sequence[MemberRecord],
        step: int,
        window: int,
        current: dict[int, dict[int, float | None]],
    ) -> list[MemberSnapshot]:
        """``population`` (fair at ``step``) with each member's last ``window`` evaluations
        (``MemberSnapshot.recent``) along its model's lineage, none after the step it is ranked by."""
        if not self._scores_learned:  # a resumed run: the scores recorded before it started
            for score in self.storage.get_scores(self.run.id):
                self._scores.setdefault(score.generation_id, {}).setdefault(score.step, score.value)
            self._scores_learned = True
            current = self._current_scores(updated)
        assert self._population is not None
        generation_ids = {m.slot: m.generation_id for m in [*self._population.values(), *updated]}
        if not set(generation_ids.values()) <= set(self._generations):
            self._generations = {g.id: g for g in self.storage.get_generations(self.run.id)}
        return [
            _evolve(
                p,
                recent=lineage_scores(
                    self._generations,
                    self._scores,
                    generation_ids[p.slot],
                    ranked_step(p, current, step),
                    window,
                    self.run.fitness,
                ),
            )
            for p in population
        ]

    def collect_checkpoints(self, *, force: bool = False) -> int:
        """Delete checkpoint files no longer needed (see ``checkpoints.collectable``), at most
        every ``gc_seconds`` unless ``force``; return how many went."""
        if self.keep_checkpoints is None or (not force and time.monotonic() - self._collected_at < self.gc_seconds):
            return 0
        self._collected_at = time.monotonic()
        members = self.storage.get_members(self.run.id)
        ranked = rank([self.snapshot(m) for m in members])
        doomed = collectable(
            self.storage.get_checkpoints(self.run.id),
            members,
            self.storage.get_generations(self.run.id),
            keep=self.keep_checkpoints,
            best_slot=ranked[0].slot if ranked else None,
            keep_best=self.keep_best,
            mode=self.run.mode,
        )
        if doomed:
            self.storage.mark_checkpoints_deleted(
                self.run.id, [c.id for c in doomed]
            )  # first: never a row without a file
            for ckpt in doomed:
                self._checkpoints.pop(ckpt.id, None)
            for uri in dict.fromkeys(c.uri for c in doomed):  # a population checkpoint's file: once for its records
                self.checkpoints.delete(uri)
        return len(doomed)

    def finish_member(self, member: MemberRecord) -> None:
        self.finish_members([member])

    def finish_members(self, members: Sequence[MemberRecord]) -> None:
        """Mark ``members`` finished (their final checkpoints are recorded), in one write."""
        self.storage.set_members_state(self.run.id, [m.slot for m in members], "finished")

    # --- failures -----------------------------------------------------------------
    def fail(self, member: MemberRecord, error: TrainableError, *, can_wait: bool = True) -> MemberRecord:
        """Record a failed attempt of ``member`` and return it ready to try again: rewound to its
        newest checkpoint, or, after ``max_retries`` failures in a row (at once when a retry
        cannot help), replaced by a copy of the best healthy member (``"replace"`` in the
        lineage); when the strategy does not replace failed members, it is retired instead
        (state ``retired``, its slot in ``retired``: it trains no more, not after a resume either). With nobody to copy yet,
        ``can_wait`` hands it back to be tried after the others reach a checkpoint. Raises when
        the run keeps failing with no ready point in between, or when a member must be replaced
        and cannot be."""
        self.flush()
        record = self.storage.record_failure(
            self.run.id,
            member.slot,
            f"{error}\n{error.detail}" if error.detail else str(error),
            lease=self.lease,
        )
        self._forget_after(record)
        self._failures_in_a_row += 1
        limit = self.run.settings.population_size * (self.max_retries + 1)
        if self._failures_in_a_row > limit:
            raise TrainableError(
                f"every member keeps failing ({self._failures_in_a_row} failed attempts without a ready point in "
                f"between); the last: {error}"
            ) from error
        if record.failures <= self.max_retries and error.retry:
            return record
        if not self.strategy.replaces_failed:  # random search stays random search: the member is retired
            self.retired.add(member.slot)
            self.storage.set_member_state(self.run.id, member.slot, "retired", error=record.error)
            return replace(record, state="retired")
        members = {m.slot: m for m in self.members()}
        healthy = [
            p
            for p in rank(self.population())
            if p.slot != member.slot and members[p.slot].failures == 0 and p.last_ready_step > 0
        ]
        if not healthy and can_wait and any(m.failures == 0 and m.slot != member.slot for m in members.values()):
            return record  # nobody to copy yet: try again after the others reach a checkpoint
        if not healthy:
            raise TrainableError(
                f"member {member.slot} failed {_times(record.failures)} and no healthy member with a checkpoint is "
                f"left to replace it; the last failure: {error}"
            ) from error
        reason = f"after {record.failures} failures" + ("" if error.retry else " (retrying cannot help)")
        decision = replacement(
            member.slot,
            record.step,
            healthy[0],
            reason,
            self.space,
            self.strategy,
            decision_rng(self.run.seed, member.slot, record.step),
            self.history(),
        )
        replaced = self.storage.record_replacement(self.run.id, decision)
        if self._population is not None:
            self._population[replaced.slot] = replaced
        self.callbacks.on_decision(decision)
        return replaced

    # --- the loop -------------------------------------------------------------------
    def runner_spec(
        self, checkpoints: CheckpointStore | str, *, torch_threads: int | None = None, max_live: int | None = None
    ) -> RunnerSpec:
        if self.trainable_factory is None:
            raise ConfigError("an ask/tell run trains in your own loop; poptrain builds no trainable for it")
        return RunnerSpec(
            self.trainable_factory,
            checkpoints,
            self.metric,
            self.total_steps,
            self.strategy.ready,
            torch_threads,
            max_live,
        )

    def drive(self, transport: Transport) -> None:
        """Train every member to ``total_steps`` through ``transport``'s workers."""
        todo = self.resumable_members()
        if not todo:
            return
        members = {m.slot: _Member(m) for m in todo}
        self._worker_kind = transport.worker_kind
        with self._written_behind(transport.saves_here):
            transport.start(self, len(members))
            try:
                while members:
                    self._dispatch(transport, members)
                    for worker, slot, result in transport.wait():
                        self._arrived(members, worker, slot, result)
                    self._commit_ready(members)
            finally:
                transport.close()
            self.collect_checkpoints(force=True)

    @contextmanager
    def _written_behind(self, enabled: bool) -> Iterator[None]:
        """While ``enabled`` (the runners save through ``self.checkpoints`` in this process),
        checkpoint files are written by a background thread as the next member trains
        (``WriteBehindStore``; ``commit`` waits for them before it records any); every write is
        done on leaving."""
        if not enabled:
            yield
            return
        store = self.checkpoints
        behind = self.checkpoints = WriteBehindStore(store)
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # the error on its way out says more than a write's
                behind.close()
            raise
        else:
            behind.close()
        finally:
            self.checkpoints = store

    def _dispatch(self, transport: Transport, members: dict[int, _Member]) -> None:
        """Send segments to idle workers, least-trained members first; among the members at the
        lowest step, an idle worker takes one whose trainable it holds live (no rebuild), else one
        nobody holds, else the first. The order members train in changes no decision: each
        draws from its own random state, and ready points are decided in rounds."""
        idle = transport.idle()
        waiting = sorted(
            (m for m in members.values() if m.running_on is None and m.result is None),
            key=lambda m: turn_order(m.record),
        )
        while idle and waiting:
            level = [m for m in waiting if m.record.step == waiting[0].record.step]
            worker, member = next(((w, m) for w in idle for m in level if m.holder == w), (idle[0], None))
            if member is None:
                member = next((m for m in level if m.holder is None or m.holder not in idle), level[0])
            idle.remove(worker)
            waiting.remove(member)
            member.running_on = worker
            transport.submit(worker, self._task(member, fresh=member.holder != worker))

    def _task(self, member: _Member, *, fresh: bool) -> SegmentTask:
        decision, member.decision = member.decision, None
        return self.task_for(member.record, decision, fresh=fresh or member.holder is None)

    def task_for(self, record: MemberRecord, decision: Decision | None = None, *, fresh: bool = True) -> SegmentTask:
        """The segment ``record`` trains next; ``decision``: the one taken at its last ready point,
        for a runner that holds it live (``fresh=False``)."""
        restore = self.checkpoint(record.resume_checkpoint_id) if record.resume_checkpoint_id is not None else None
        own = self.checkpoint(record.checkpoint_id) if record.checkpoint_id is not None else None
        context = TrainContext(
            self.run.name, record.slot, member_seed(self.run.seed, record.slot), self.device, self.run.seed, record.step
        )
        return SegmentTask(
            record.slot,
            record.step,
            dict(record.hparams),
            context,
            self.snapshot(record),
            fresh,
            restore,
            own,
            restore if decision is not None and decision.copies else None,
            decision is not None,
        )

    def checkpoint(self, checkpoint_id: int) -> CheckpointRecord:
        """The checkpoint record ``checkpoint_id``: one this scheduler recorded is known without a
        read (a checkpoint record never changes but for ``deleted``, and this scheduler deletes only
        those it forgets at once); another one is read from storage once."""
        known = self._checkpoints.get(checkpoint_id)
        if known is None:
            known = self._checkpoints[checkpoint_id] = self.storage.get_checkpoint(checkpoint_id)
        return known

    def _arrived(
        self, members: dict[int, _Member], worker: int, slot: int | None, result: SegmentResult | None
    ) -> None:
        """Take in what a worker sent back: a result (its scores recorded now), or the news that the
        worker was lost (the live trainables it held with it, and the segment it was training)."""
        if result is None:
            for member in members.values():
                if member.holder == worker:
                    member.holder = None
            if slot is None or slot not in members:
                return
            message = (
                f"member {slot}: the {self._worker_kind} training it died; it trains again from its newest checkpoint"
            )
            lost = members[slot]
            lost.running_on, lost.holder, lost.lost = None, None, lost.lost + 1
            if lost.lost <= LOST_WORKERS_FORGIVEN:  # not the member's fault: only the segment is lost
                lost.record = self.storage.rewind_member(self.run.id, slot)
                self._forget_after(lost.record)
                self.storage.set_member_state(self.run.id, slot, "pending", error=message)
                return
            result = SegmentResult(slot, error=(message, None, True))
            worker_kept = None
        else:
            worker_kept = worker
        member = members[slot]  # type: ignore[index]
        member.running_on = None
        record = member.record
        for step, value, metrics, _ in result.scores:
            record = self.record_score(record, step, value, metrics)
        if result.stop and result.error is not None:  # e.g. a state no checkpoint can hold: the run stops
            self.flush()
            self.storage.set_member_state(self.run.id, record.slot, "failed", error=result.error[0])
            raise CheckpointError(result.error[0])
        try:
            result.raise_error()
        except TrainableError as error:
            member.holder, member.decision = None, None
            member.record = self.fail(record, error, can_wait=not self.strategy.synchronous)
            if record.slot in self.retired:
                del members[record.slot]
                if len(self.retired) >= self.run.settings.population_size:
                    raise TrainableError(f"every member failed for good; the last: {error}") from error
            return
        member.record, member.result, member.holder = record, result, worker_kept
        member.arrived_at, member.lost = time.perf_counter(), 0

    def _commit_ready(self, members: dict[int, _Member]) -> None:
        """Decide every ready point that can be decided fairly, a step at a time."""
        while True:
            held = [m for m in members.values() if m.result is not None]
            if not held:
                return
            step = min(m.record.step for m in held)
            others = [m for m in members.values() if m.result is None or m.record.step != step]
            if any(m.record.step < step and m.record.failures == 0 for m in others):
                return  # someone behind has not reached this step yet (one behind through failures does not hold the others up)
            if self.strategy.synchronous and others and step < self.total_steps:
                if all(m.result is not None for m in members.values()):  # nobody left to catch up
                    first = min((m for m in held if m.record.step == step), key=lambda m: m.record.slot)
                    later = min(others, key=lambda m: m.record.step)
                    raise StrategyError(
                        f"synchronous PBT needs every member ready at the same steps, but member "
                        f"{first.record.slot} is ready at step {step} and member {later.record.slot} at step "
                        f"{later.record.step}; use a ready that makes all members ready together (e.g. "
                        "poptrain.every(4)) or create the run with synchronous=False"
                    )
                return  # a generation decides together
            round_ = sorted((m for m in held if m.record.step == step), key=lambda m: m.record.slot)
            done = step >= self.total_steps
            points = []
            for member in round_:
                assert member.result is not None and member.result.checkpoint is not None
                points.append((member.record, member.result.checkpoint, not done))
            began = time.perf_counter()
            committed = self.commit(points)
            now = time.perf_counter()
            self.stats.commit_seconds.append(now - began)
            self.stats.decision_seconds.extend(now - m.arrived_at for m in round_)
            for record, decision in committed:
                member = members[record.slot]
                member.record, member.decision, member.result = record, decision, None
                if done:
                    del members[record.slot]
            if done:
                self.finish_members([record for record, _ in committed])


def _times(count: int) -> str:
    """``once``, ``twice``, ``3 times``."""
    return {1: "once", 2: "twice"}.get(count, f"{count} times")
