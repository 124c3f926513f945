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

import math
from collections.abc import Sequence

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
        total = scheduler.total_steps
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
            metrics = population.evaluate()
            ready: list[MemberRecord] = []
            for row in active:
                slot = population.slots[row]
                value, values = read_score(metrics[row], scheduler.metric)
                if not math.isfinite(value) and not scheduler.strategy.replaces_failed:
                    self._retire(self.members.pop(slot), step, value)
                    continue
                member = scheduler.record_score(self.members[slot], step, value, values)
                self.members[slot] = member
                if step >= total or scheduler.is_ready(member, step):
                    ready.append(member)
            if ready:
                self._round(ready)

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
        for record, decision in results:
            if decision is not None:
                self._apply(record, decision)
            if record.step >= total:
                scheduler.finish_member(record)
                del self.members[record.slot]
            else:
                self.members[record.slot] = record

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
