"""The whole population trained as one batched PyTorch program.

Members train in lockstep on shared batches: one step of every member is one pass of stacked
tensors through the model (see ``poptrain.vectorized``). When members become ready, one
checkpoint file holding the whole population is written, their decisions are planned by the
scheduler's one planning function as every other executor's (one snapshot per step) and
recorded in one transaction; exploit is then a row copy from the state kept at the donor's ready point, and
explore a write into the ``[P]`` hyperparameter tensors. Nothing else touches the disk.

A member whose score is not finite is not retried (it would compute the same thing again):
it keeps training with the others, ranks last at its next ready point and is replaced there
by a copy of the best member with a finite score, unless its strategy makes it copy one. When
the strategy does not replace failed members (random search), it is retired at once instead,
as on every other executor: its non-finite score is not recorded and it trains no more.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from poptrain.checkpoints.population import is_population_checkpoint, member_from_checkpoint
from poptrain.errors import CheckpointError, ConfigError, TrainableError
from poptrain.executors._base import Executor
from poptrain.records import CheckpointRecord, MemberRecord
from poptrain.scheduler import Scheduler
from poptrain.seeding import member_seed
from poptrain.strategy import Decision
from poptrain.trainable import read_score
from poptrain.vectorized.memory import MemoryPlan, plan_memory
from poptrain.vectorized.population import Population
from poptrain.vectorized.trainable import BatchSource, VectorizedTrainable, dropout_seed, resolve_device


class VectorizedExecutor(Executor):
    """Trains a ``VectorizedTrainable``'s whole population at once on ``device`` (``"auto"``:
    the GPU when there is one; default: the trainable's own setting)."""

    def __init__(
        self, *, device: str | None = None, chunk_size: int | None = None, memory_budget: int | None = None
    ) -> None:
        self.device = device
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget
        self.memory: MemoryPlan | None = None  # the plan of the last run, for reports and benchmarks
        self.path: str | None = None

    def check(self, trainable: object, *, synchronous: bool = False) -> None:
        if not isinstance(trainable, VectorizedTrainable):
            raise ConfigError(
                f"executor 'vectorized' trains a poptrain.VectorizedTrainable (a model factory, data, a loss and an "
                f"evaluation function); got {getattr(trainable, '__name__', type(trainable).__name__)}. Use "
                "executor='sequential' for a Trainable subclass"
            )

    def run(self, scheduler: Scheduler) -> None:
        spec = scheduler.trainable_factory
        self.check(spec)
        assert isinstance(spec, VectorizedTrainable)
        members = scheduler.resumable_members()
        if not members:
            return
        device = resolve_device(self.device or spec.device)
        batches = BatchSource(spec.data, spec.batch_size, spec.batches_per_step, scheduler.run.seed, device)
        population = self._build(scheduler, spec, members, device, batches)
        self.path = population.model.path
        with _frozen_heap():
            _Lockstep(scheduler, population, batches, members).run()

    def _build(
        self,
        scheduler: Scheduler,
        spec: VectorizedTrainable,
        members: list[MemberRecord],
        device: torch.device,
        batches: BatchSource,
    ) -> Population:
        seed = scheduler.run.seed
        template = _first_module(spec, member_seed(seed, members[0].slot))
        self.memory = plan_memory(
            template.to(device),
            batches.example(),
            len(members),
            len(spec.optimizer.SLOTS),
            device=device,
            budget_bytes=self.memory_budget or spec.memory_budget,
            chunk_size=self.chunk_size or spec.chunk_size,
        )
        population = Population(
            spec,
            [m.slot for m in members],
            [member_seed(seed, m.slot) for m in members],
            [m.hparams for m in members],
            device,
            self.memory,
            seed,
        )
        states: dict[str, object] = {}
        for row, member in enumerate(members):
            for checkpoint_id, ready in ((member.checkpoint_id, True), (member.resume_checkpoint_id, False)):
                if checkpoint_id is None:
                    continue
                record = scheduler.storage.get_checkpoint(checkpoint_id)
                try:
                    population.load_member(row, _member_state(scheduler, record, states), ready=ready)
                except CheckpointError as exc:
                    raise CheckpointError(f"member {member.slot} cannot resume: {exc}") from exc
            population.set_hparams(row, member.hparams)
        return population


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Leave the objects alive before training (torch's, the storage's, the population's) out of
    the garbage collector's full collections while it runs (``gc.freeze``): a step allocates a
    few records per member, and each full collection they trigger would walk the whole heap again
    (at 600 members, about a tenth of the run). Nothing is collected differently but the garbage
    already there, which waits until the run ends; a process that froze its heap itself keeps
    its own settings."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _first_module(spec: VectorizedTrainable, seed: int) -> torch.nn.Module:
    from poptrain.vectorized.trainable import seeded_module

    return seeded_module(spec.model, seed)


def _member_state(scheduler: Scheduler, record: CheckpointRecord, cache: dict[str, object]) -> dict:
    """A member's state from its checkpoint, each population file read once."""
    if record.uri not in cache:
        cache.clear()  # checkpoints of one resume share a file or two: keep the last
        cache[record.uri] = scheduler.checkpoints.load(record)
    state = cache[record.uri]
    return member_from_checkpoint(state, record.slot) if is_population_checkpoint(state) else state  # type: ignore[arg-type, return-value]


class _Lockstep:
    """The training loop: every unfinished member at the lowest step trains one more step."""

    def __init__(
        self, scheduler: Scheduler, population: Population, batches: BatchSource, members: list[MemberRecord]
    ) -> None:
        self.scheduler = scheduler
        self.population = population
        self.batches = batches
        self.members = {m.slot: m for m in members}
        self.ready_checkpoint = {m.slot: m.checkpoint_id for m in members}

    def run(self) -> None:
        scheduler, population = self.scheduler, self.population
        while self.members:
            step = min(m.step for m in self.members.values()) + 1
            active = [population.index(s) for s, m in self.members.items() if m.step == step - 1]
            # dropout draws from torch's generator: seeded per step, so a run does not depend on what
            # ran before it in the process, and a resumed run draws what the uninterrupted one did
            device = population.device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                seed = dropout_seed(scheduler.run.seed, step)
                torch.random.default_generator.manual_seed(seed)
                if device.type == "cuda":
                    torch.cuda.manual_seed(seed)
                population.train_step(self.batches.batches(step), active if len(active) < population.size else None)
            ready = self._record(step, population.evaluate(), active)
            if ready:
                self._round(ready)

    def _record(self, step: int, metrics: list[dict[str, float]], active: Sequence[int]) -> list[MemberRecord]:
        """Record the ``active`` rows' evaluations after ``step`` as one batch (``metrics``: every
        row's, each a dict of floats from ``metric_rows``), in row order, a member scoring a
        non-finite value under a strategy that does not replace failed members retired in its
        turn; return the members ready now."""
        scheduler, population, members = self.scheduler, self.population, self.members
        metric, retires = scheduler.metric, not scheduler.strategy.replaces_failed
        slots, isfinite = population.slots, math.isfinite
        batch: list[tuple[MemberRecord, int, float, dict[str, float]]] = []
        recorded: list[MemberRecord] = []
        for row in active:
            slot, values = slots[row], metrics[row]
            value = values.get(metric)
            if value is None:  # the run's metric is missing: read_score names it
                value, values = read_score(values, metric)
            if retires and not isfinite(value):
                recorded += scheduler.record_scores(batch)  # those before it, first
                batch = []
                self._retire(members.pop(slot), step, value)
                continue
            batch.append((members[slot], step, value, values))
        recorded += scheduler.record_scores(batch)
        ready: list[MemberRecord] = []
        total = scheduler.total_steps
        for member in recorded:
            members[member.slot] = member
            if step >= total or scheduler.is_ready(member, step):
                ready.append(member)
        return ready

    def _retire(self, member: MemberRecord, step: int, value: float) -> None:
        """Retire a member that scored ``value`` (not finite) under a strategy that does not
        replace failed members: recorded as failed at its newest checkpoint, trained no more."""
        error = TrainableError(
            f"member {member.slot} scored {value} at step {step}: a non-finite score counts as a failed step",
            slot=member.slot,
            retry=False,
        )
        self.scheduler.fail(member, error)
        if len(self.scheduler.retired) >= self.scheduler.run.settings.population_size:
            raise TrainableError(f"every member failed for good; the last: {error}") from error

    def _round(self, ready: Sequence[MemberRecord]) -> None:
        """Checkpoint the population once, record and apply the ready members' decisions."""
        scheduler, population = self.scheduler, self.population
        steps = [self.members[s].step if s in self.members else scheduler.total_steps for s in population.slots]
        checkpoint = scheduler.checkpoints.save_population(max(m.step for m in ready), population.checkpoint(steps))
        total = scheduler.total_steps
        ordered = sorted(ready, key=lambda m: (m.step, m.slot))
        results = scheduler.commit([(m, checkpoint, m.step < total) for m in ordered])
        # one round: every donor as of this step
        population.mark_ready([population.index(r.slot) for r, _ in results])
        self.ready_checkpoint.update({r.slot: r.checkpoint_id for r, _ in results})
        finished = []
        for record, decision in results:
            if decision is not None:
                self._apply(record, decision)
            if record.step >= total:
                finished.append(record)
                del self.members[record.slot]
            else:
                self.members[record.slot] = record
        if finished:
            scheduler.finish_members(finished)

    def _apply(self, record: MemberRecord, decision: Decision) -> None:
        population = self.population
        row = population.index(record.slot)
        if decision.copies and record.resume_checkpoint_id is not None:
            donor = decision.donor
            if donor in population.slots and self.ready_checkpoint.get(donor) == record.resume_checkpoint_id:
                population.copy_ready(row, population.index(donor))
            else:  # the donor's checkpoint predates this executor: read it
                loaded = self.scheduler.storage.get_checkpoint(record.resume_checkpoint_id)
                try:
                    population.load_member(row, self.scheduler.checkpoints.load_member(loaded))
                except CheckpointError as exc:
                    raise TrainableError(
                        f"member {record.slot} cannot copy member {donor}: {exc}", slot=record.slot
                    ) from exc
        population.set_hparams(row, decision.hparams)
