"""The imperative shell around the pure PBT decisions: it trains members through an executor's
hands, records scores, saves checkpoints at ready points, plans decisions and applies them."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from poptrain.checkpoints import CheckpointStore, collectable
from poptrain.errors import CheckpointError, TrainableError
from poptrain.progress import ProgressListener
from poptrain.records import (
    CheckpointRecord,
    GenerationRecord,
    MemberRecord,
    NewCheckpoint,
    ReadyPoint,
    RunRecord,
    ScoreRecord,
)
from poptrain.seeding import member_seed
from poptrain.space import SearchSpace
from poptrain.storage import Storage
from poptrain.strategy import (
    Decision,
    History,
    MemberSnapshot,
    Strategy,
    build_history,
    decision_rng,
    explore_hparams,
    first_scores,
    plan_generation,
    plan_member,
    rank,
    uses_history,
)
from poptrain.trainable import Trainable, TrainContext, call_user, check_trainable, train_one_step


class Controller:
    """Owns a run's I/O while it trains. Executors call these methods; they decide nothing."""

    def __init__(
        self,
        run: RunRecord,
        storage: Storage,
        checkpoints: CheckpointStore,
        space: SearchSpace,
        strategy: Strategy,
        trainable_factory: Callable[[], Trainable],
        total_steps: int,
        progress: ProgressListener | None = None,
        flush_seconds: float = 1.0,
        max_retries: int = 2,
        keep_checkpoints: int | None = 2,
        gc_seconds: float = 5.0,
    ) -> None:
        self.run = run
        self.storage = storage
        self.checkpoints = checkpoints
        self.space = space
        self.strategy = strategy
        self.trainable_factory = trainable_factory
        self.total_steps = total_steps
        self.progress = progress or ProgressListener()
        self.metric = run.metric
        self.flush_seconds = flush_seconds
        self._pending: list[ScoreRecord] = []
        self._flushed_at = time.monotonic()
        self._population: dict[int, MemberRecord] | None = None
        self.max_retries = max_retries
        self._failures_in_a_row = 0
        self.keep_checkpoints = keep_checkpoints
        self.gc_seconds = gc_seconds
        self._collected_at = time.monotonic()
        self._openings: dict[int, tuple[int, float | None]] = {}

    # --- views ------------------------------------------------------------------
    def members(self) -> list[MemberRecord]:
        """The members as stored now (also refreshes the population used for decisions)."""
        members = self.storage.get_members(self.run.id)
        self._population = {m.slot: m for m in members}
        return members

    def resumable_members(self) -> list[MemberRecord]:
        """The members still to train, each rewound to its newest ready point: what a member did
        after it (steps, scores) is undone, since it trains again from that checkpoint. A member
        whose final checkpoint is recorded is marked finished."""
        todo = []
        for member in self.members():
            if member.state == "finished" and member.step >= self.total_steps:
                continue
            if member.step != member.last_ready_step:
                member = self.storage.rewind_member(self.run.id, member.slot)
            if member.step >= self.total_steps:
                self.finish_member(member)
                continue
            todo.append(member)
        return todo

    def population(self) -> list[MemberSnapshot]:
        """Every member as of its newest ready point: what decisions compare against.

        Only ready points change it, and in one process they all pass through this controller,
        so it is kept in memory; executors whose members train elsewhere call ``members()``
        to refresh it first.
        """
        if self._population is None:
            self.members()
        assert self._population is not None
        return [replace(self.snapshot(m), step=m.last_ready_step) for _, m in sorted(self._population.items())]

    def snapshot(self, member: MemberRecord) -> MemberSnapshot:
        fitness = self.run.fitness(member.ready_score) if member.last_ready_step > 0 else None
        if member.last_ready_step > 0 and (fitness is None or not math.isfinite(fitness)):
            fitness = -math.inf  # a NaN or infinite score (SQL storage keeps it as NULL) ranks last
        # a donor passes on the hyperparameters that trained its checkpoint, not ones it chose since
        hparams = member.ready_hparams if member.last_ready_step > 0 and member.ready_hparams is not None else member.hparams
        return MemberSnapshot(member.slot, member.step, dict(hparams), fitness, member.last_ready_step, member.generation)

    def history_records(self) -> tuple[list[GenerationRecord], list[CheckpointRecord]] | None:
        """What a decision round's history is built from (read once per round), or ``None`` when
        the explore strategy does not use a history."""
        if not uses_history(self.strategy.explore):
            return None
        return self.storage.get_generations(self.run.id), self.storage.get_checkpoints(self.run.id)

    def history(
        self,
        ready: Sequence[tuple[int, int, float | None]] = (),
        records: tuple[list[GenerationRecord], list[CheckpointRecord]] | None = None,
    ) -> History | None:
        """The population's history for an explore that uses one (``None`` otherwise), from the
        stored lineage and checkpoints plus the ``ready`` points ``(slot, step, score)`` being
        decided. Members' first scores are read from storage once and kept."""
        records = records if records is not None else self.history_records()
        if records is None:
            return None
        generations, checkpoints = records
        known = {c.slot for c in checkpoints} | {slot for slot, _, _ in ready}
        if not known <= set(self._openings):
            self._openings.update(first_scores([*self.storage.get_scores(self.run.id), *self._pending], generations))
            self._openings.update({slot: (0, None) for slot in known - set(self._openings)})  # none to be found
        return build_history(generations, checkpoints, mode=self.run.mode, ready=ready, openings=self._openings)

    def is_ready(self, member: MemberRecord, step: int) -> bool:
        """Whether ``member`` is ready after finishing ``step`` (never at the final step)."""
        if step >= self.total_steps:
            return False
        return bool(self.strategy.ready(replace(self.snapshot(member), step=step)))

    # --- training ---------------------------------------------------------------
    def start_member(self, member: MemberRecord) -> Trainable:
        """A live trainable for ``member``, restored from its resume checkpoint if it has one."""
        context = TrainContext(self.run.name, member.slot, member_seed(self.run.seed, member.slot), run_seed=self.run.seed, start_step=member.step)
        trainable = check_trainable(self._call(member.slot, member.step, "construct", self.trainable_factory), self.trainable_factory)
        self._call(member.slot, member.step, "setup", trainable.setup, dict(member.hparams), context)
        if member.resume_checkpoint_id is not None:
            record = self.storage.get_checkpoint(member.resume_checkpoint_id)
            try:
                state = self.checkpoints.load_member(record)
            except CheckpointError as exc:  # no use retrying: the member is replaced by a copy of a donor
                raise TrainableError(f"member {member.slot} cannot resume: {exc}", slot=member.slot, retry=False) from exc
            self._call(member.slot, member.step, "load_state_dict", trainable.load_state_dict, state)
            # The state may carry other hyperparameters (an optimizer's param_groups saved before a
            # decision): the member trains with those its lineage records, so they are set last.
            self._call(member.slot, member.step, "set_hparams", trainable.set_hparams, dict(member.hparams))
        self.storage.set_member_state(self.run.id, member.slot, "running")
        return trainable

    def train_step(self, member: MemberRecord, trainable: Trainable) -> tuple[MemberRecord, float]:
        """Train ``member`` one step, evaluate it and record the score."""
        step = member.step + 1
        value, metrics = train_one_step(trainable, member.slot, step, self.metric)
        return self.record_score(member, step, value, metrics), value

    def record_score(self, member: MemberRecord, step: int, value: float, metrics: dict[str, float]) -> MemberRecord:
        """Record ``member``'s evaluation after ``step`` (written at least every ``flush_seconds``)."""
        self._pending.append(ScoreRecord(member.slot, step, value, member.generation_id, metrics, time.time()))
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()
        self.progress.on_score(member.slot, step, value, member.hparams, member.generation)
        return replace(member, step=step, score=value)

    def collect_checkpoints(self, *, force: bool = False) -> int:
        """Delete checkpoint files no longer needed (see ``checkpoints.collectable``), at most
        every ``gc_seconds`` unless ``force``; return how many went."""
        if self.keep_checkpoints is None or (not force and time.monotonic() - self._collected_at < self.gc_seconds):
            return 0
        self._collected_at = time.monotonic()
        members = self.storage.get_members(self.run.id)
        ranked = rank([self.snapshot(m) for m in members])
        doomed = collectable(
            self.storage.get_checkpoints(self.run.id), members, self.storage.get_generations(self.run.id),
            keep=self.keep_checkpoints, best_slot=ranked[0].slot if ranked else None,
        )
        if doomed:
            self.storage.mark_checkpoints_deleted(self.run.id, [c.id for c in doomed])  # first: never a row without a file
            for ckpt in doomed:
                self.checkpoints.delete(ckpt.uri)
        return len(doomed)

    def train_until_ready(self, member: MemberRecord, trainable: Trainable) -> MemberRecord:
        """Train ``member`` step by step until it is ready or has done all its steps."""
        while member.step < self.total_steps:
            member, _ = self.train_step(member, trainable)
            if self.is_ready(member, member.step):
                break
        return member

    def flush(self) -> None:
        """Write the scores not yet written. Scores are written at least every ``flush_seconds``
        and with every ready point; the ones after a member's newest checkpoint would be trained
        again after a crash anyway."""
        pending, self._pending = self._pending, []
        self._flushed_at = time.monotonic()
        if pending:
            self.storage.record_scores(self.run.id, pending)

    def ready_points(
        self, entries: Sequence[tuple[MemberRecord, Trainable]], *, decide: bool
    ) -> list[tuple[MemberRecord, Decision | None]]:
        """Checkpoint members at their current step, plan their decisions against one population
        snapshot (a single member: asynchronous; many: a synchronous generation), record all
        of it in one transaction and apply the decisions to the live trainables."""
        points = []
        for member, trainable in entries:
            state = self._call(member.slot, member.step, "state_dict", trainable.state_dict)
            try:
                points.append((member, self.checkpoints.save(member.slot, member.step, state)))
            except CheckpointError as exc:  # e.g. a state no checkpoint can hold: retrying cannot help, the run stops
                self.storage.set_member_state(self.run.id, member.slot, "failed", error=str(exc))
                raise
        decisions: dict[int, Decision] = {}
        if decide:
            updated = {
                m.slot: replace(m, last_ready_step=m.step, ready_score=m.score, ready_hparams=dict(m.hparams)) for m, _ in points
            }
            ready = [self.snapshot(m) for m in updated.values()]
            population = [next((r for r in ready if r.slot == p.slot), p) for p in self.population()]
            planned = plan_generation(
                population, self.space, self.strategy,
                lambda m: decision_rng(self.run.seed, m.slot, m.step), members=ready,
                history=self.history([(m.slot, m.step, m.score) for m in updated.values()]),
            )
            decisions = {d.slot: d for d in planned}
        pending, self._pending = self._pending, []
        self._flushed_at = time.monotonic()
        records = self.storage.record_ready(
            self.run.id,
            [ReadyPoint(m.slot, m.step, ckpt, m.score, decisions.get(m.slot)) for m, ckpt in points],
            pending,
        )
        self._failures_in_a_row = 0
        self.collect_checkpoints()
        if self._population is not None:
            self._population.update({r.slot: r for r in records})
        results = []
        for (member, _), (_, trainable), record in zip(points, entries, records):
            decision = decisions.get(member.slot)
            if decision is not None:
                self.apply(record, decision, trainable)
                self.progress.on_decision(decision)
            results.append((record, decision))
        return results

    def ready_round(
        self, points: Sequence[tuple[MemberRecord, NewCheckpoint, bool]]
    ) -> list[tuple[MemberRecord, Decision | None]]:
        """Record members reaching ready points with checkpoints already written (the vectorized
        executor writes one for the whole population) and plan the decisions of those marked
        ``True``, in one transaction.

        Asynchronous PBT decides them in the order given, each against the population with the
        ready points before it (as the sequential executor would); synchronous PBT decides them
        as one generation. A member whose score is not finite and that would not copy anyone is
        replaced by a copy of the best member with a finite score.
        """
        updated = [(replace(m, last_ready_step=m.step, ready_score=m.score, ready_hparams=dict(m.hparams)), c, d) for m, c, d in points]
        population = {p.slot: p for p in self.population()}
        decisions: dict[int, Decision] = {}
        records = self.history_records() if any(decide for _, _, decide in updated) else None
        points = [(m.slot, m.step, m.score) for m, _, _ in updated]
        if self.strategy.synchronous:
            population.update({m.slot: self.snapshot(m) for m, _, _ in updated})
            frozen = [population[s] for s in sorted(population)]
            deciding = [population[m.slot] for m, _, decide in updated if decide]
            history = self.history(points, records) if records is not None else None
            for decision in plan_generation(
                frozen, self.space, self.strategy, lambda m: decision_rng(self.run.seed, m.slot, m.step), members=deciding,
                history=history,
            ):
                decisions[decision.slot] = decision
            if history is not None:  # a replacement sees the generation's decisions as pending
                history = replace(history, pending={**history.pending, **{d.slot: d.hparams for d in decisions.values()}})
            for snapshot in deciding:
                forced = self._replace_if_not_finite(snapshot, decisions.get(snapshot.slot), frozen, history)
                if forced is not None:
                    decisions[snapshot.slot] = forced
        else:
            for index, (member, _, decide) in enumerate(updated):
                me = population[member.slot] = self.snapshot(member)
                if not decide:
                    continue
                current = [population[s] for s in sorted(population)]
                history = None
                if records is not None:  # the ready points up to this one, and the decisions before it pending
                    history = self.history(points[: index + 1], records)
                    if history is not None:
                        history = replace(history, pending={**history.pending, **{d.slot: d.hparams for d in decisions.values()}})
                decision = plan_member(
                    me, current, self.space, self.strategy, decision_rng(self.run.seed, me.slot, me.step), history=history
                )
                decision = self._replace_if_not_finite(me, decision, current, history) or decision
                if decision is not None:
                    decisions[me.slot] = decision
                    population[me.slot] = replace(me, generation=me.generation + 1)
        pending, self._pending = self._pending, []
        self._flushed_at = time.monotonic()
        records = self.storage.record_ready(
            self.run.id, [ReadyPoint(m.slot, m.step, c, m.score, decisions.get(m.slot)) for m, c, _ in updated], pending,
            in_turn=not self.strategy.synchronous,
        )
        self._failures_in_a_row = 0
        self.collect_checkpoints()
        if self._population is not None:
            self._population.update({r.slot: r for r in records})
        for record in records:
            if record.slot in decisions:
                self.progress.on_decision(decisions[record.slot])
        return [(record, decisions.get(record.slot)) for record in records]

    def _replace_if_not_finite(
        self, me: MemberSnapshot, decision: Decision | None, population: Sequence[MemberSnapshot],
        history: History | None = None,
    ) -> Decision | None:
        """A replacement for a member ready with a non-finite score that would not copy anyone."""
        if me.fitness is None or math.isfinite(me.fitness) or (decision is not None and decision.kind == "exploit"):
            return None
        healthy = [p for p in rank(population) if p.slot != me.slot and p.fitness is not None and math.isfinite(p.fitness)]
        return self._replacement(me.slot, me.step, healthy[0], "score not finite", history) if healthy else None

    def _replacement(
        self, slot: int, step: int, donor: MemberSnapshot, reason: str, history: History | None = None
    ) -> Decision:
        """A decision copying ``donor`` (its hyperparameters explored) into member ``slot``."""
        rng = decision_rng(self.run.seed, slot, step)
        if history is None and self.strategy.explore is not None:
            history = self.history()
        if history is not None:
            history = replace(history, pending={s: h for s, h in history.pending.items() if s != slot}, step=step)
        explored = explore_hparams(self.strategy, dict(donor.hparams), self.space, rng, history) if self.strategy.explore else None
        hparams = explored.hparams if explored else dict(donor.hparams)
        operations = {"replaced": reason, **(explored.operations if explored else {})}
        return Decision(slot, step, "exploit", hparams, donor.slot, operations)

    def apply(self, member: MemberRecord, decision: Decision, trainable: Trainable) -> None:
        """Load the donor's checkpoint (exploit) and set the new hyperparameters in place."""
        if decision.kind == "exploit" and member.resume_checkpoint_id is not None:
            state = self.checkpoints.load_member(self.storage.get_checkpoint(member.resume_checkpoint_id))
            self._call(member.slot, member.step, "load_state_dict", trainable.load_state_dict, state)
        self._call(member.slot, member.step, "set_hparams", trainable.set_hparams, dict(decision.hparams))

    def finish_member(self, member: MemberRecord) -> None:
        self.storage.set_member_state(self.run.id, member.slot, "finished")

    def fail(self, member: MemberRecord, error: TrainableError, *, can_wait: bool = True) -> MemberRecord:
        """Record a failed attempt of ``member`` and return it ready to try again: rewound to its
        newest checkpoint, or, after ``max_retries`` failures in a row, replaced by a copy of the
        best healthy member. With nobody to copy yet, ``can_wait`` hands it back to be tried after
        the others reach a checkpoint. Raises when the run keeps failing with no ready point in
        between, or when a member must be replaced and cannot be."""
        self.flush()
        record = self.storage.record_failure(self.run.id, member.slot, f"{error}\n{error.detail}" if error.detail else str(error))
        self._failures_in_a_row += 1
        limit = int(self.run.spec.get("population_size", 1)) * (self.max_retries + 1)
        if self._failures_in_a_row > limit:
            raise TrainableError(
                f"every member keeps failing ({self._failures_in_a_row} failed attempts without a ready point in "
                f"between); the last: {error}"
            ) from error
        if record.failures <= self.max_retries and error.retry:
            return record
        members = {m.slot: m for m in self.members()}
        healthy = [p for p in rank(self.population()) if p.slot != member.slot and members[p.slot].failures == 0]
        if not healthy and can_wait and any(m.failures == 0 and m.slot != member.slot for m in members.values()):
            return record  # nobody to copy yet: try again after the others reach a checkpoint
        if not healthy:
            raise TrainableError(
                f"member {member.slot} failed {_times(record.failures)} and no healthy member with a checkpoint is "
                f"left to replace it; the last failure: {error}"
            ) from error
        decision = self._replacement(member.slot, record.step, healthy[0], f"after {record.failures} failures")
        replaced = self.storage.record_replacement(self.run.id, decision)
        if self._population is not None:
            self._population[replaced.slot] = replaced
        self.progress.on_decision(decision)
        return replaced

    def _call(self, slot: int, step: int, what: str, fn: Callable, *args: object) -> object:
        return call_user(slot, step, what, fn, *args)


def _times(count: int) -> str:
    """``once``, ``twice``, ``3 times``."""
    return {1: "once", 2: "twice"}.get(count, f"{count} times")
