"""The population's recent past, for explore strategies that learn from it (PB2).

An observation is one ready interval of one member: the hyperparameters in force, and the
change of fitness per step over the interval (higher is better). ``build_history`` derives
them from stored records alone (generations and checkpoints), so a resumed run or a worker
process sees the same history as the process that trained the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from poptrain.lineage import trained
from poptrain.records import CheckpointRecord, GenerationRecord, ScoreRecord
from poptrain.space import HParams

if TYPE_CHECKING:
    from typing_extensions import TypeIs

    from poptrain.strategy._types import HistoryExploreFn


@dataclass(frozen=True)
class Observation:
    """Member ``slot`` trained with ``hparams`` from ``start_step`` to ``end_step`` and its fitness
    changed by ``change`` per step (fitness-oriented: higher is better)."""

    slot: int
    start_step: int
    end_step: int
    hparams: HParams
    change: float


@dataclass(frozen=True)
class History:
    """What a history-using explore is given: recent ``observations``, the hyperparameters
    ``pending`` (by slot) that were assigned by decisions whose results are not in yet, and the
    ``step`` at which the deciding member continues."""

    observations: tuple[Observation, ...] = ()
    pending: Mapping[int, HParams] = field(default_factory=dict)
    step: int = 0


def uses_history(explore: object) -> TypeIs[HistoryExploreFn]:
    """Whether an explore strategy asks for a ``history=`` argument (``uses_history = True``)."""
    return explore is not None and bool(getattr(explore, "uses_history", False))


def _fitness(score: float | None, mode: str) -> float | None:
    if score is None or not math.isfinite(score):
        return None
    return float(score) if mode == "max" else -float(score)


def build_history(
    generations: Sequence[GenerationRecord],
    checkpoints: Sequence[CheckpointRecord],
    *,
    mode: str = "max",
    ready: Iterable[tuple[int, int, float | None]] = (),
    openings: Mapping[int, tuple[int, float | None]] | None = None,
    step: int = 0,
) -> History:
    """The history of a run from its records (pure).

    Each checkpoint is a ready point of the generation that trained it (``lineage.trained``: the
    one recorded with it, else the one of its slot that trained its step). ``ready`` adds ready
    points ``(slot, step, score)`` reached but not yet recorded (the ones being decided): they
    belong to the slot's current (newest) generation. Points are kept by generation, since a
    member that copied an older model trains some steps again as a new generation, and two of
    its ready points may then share a step.

    Each ready point gives an observation: the fitness change from the previous ready point of
    the same generation, or for a generation's first interval from the checkpoint it loaded
    (its own for an explore, the donor's for an exploit), divided by the steps trained. A
    member's first interval (generation 0's) starts from its first score (``openings``, see
    ``first_scores``), or gives none without it. A generation begun by a decision that has no
    ready point of its own since is ``pending``. Observations are sorted by ``(end_step, slot)``.
    """
    by_slot: dict[int, list[GenerationRecord]] = {}
    for gen in sorted(generations, key=lambda g: (g.slot, g.number)):
        by_slot.setdefault(gen.slot, []).append(gen)
    by_id = {g.id: g for g in generations}
    points: dict[tuple[int, int], float | None] = {}  # (generation id, step) -> score
    for checkpoint in checkpoints:
        generation = trained(by_slot.get(checkpoint.slot, ()), checkpoint, by_id=by_id)
        if generation is not None:
            points[(generation.id, checkpoint.step)] = checkpoint.score
    for slot, at, score in ready:
        if slot in by_slot:
            points[(by_slot[slot][-1].id, at)] = score
    steps_by_generation: dict[int, list[int]] = {}
    for generation_id, at in sorted(points):
        steps_by_generation.setdefault(generation_id, []).append(at)
    scores_by_id = {c.id: c.score for c in checkpoints}

    observations: list[Observation] = []
    for slot, lineage in by_slot.items():
        for generation in lineage:
            previous: int | None = None  # the generation's previous ready step
            for at in steps_by_generation.get(generation.id, ()):
                last, previous = previous, at
                if last is not None and last > generation.start_step:
                    before, since = _fitness(points[(generation.id, last)], mode), last
                elif generation.loaded_checkpoint_id is not None and generation.number > 0:
                    loaded = scores_by_id.get(generation.loaded_checkpoint_id)
                    before, since = _fitness(loaded, mode), generation.start_step
                elif generation.number == 0 and last is None and openings and slot in openings:
                    since, opening = openings[slot]
                    before = _fitness(opening, mode)
                else:
                    continue
                after = _fitness(points[(generation.id, at)], mode)
                if before is None or after is None or at <= since:
                    continue
                change = (after - before) / (at - since)
                observations.append(Observation(slot, since, at, dict(generation.hparams), change))

    pending: dict[int, HParams] = {}
    for slot, lineage in by_slot.items():
        newest = lineage[-1]
        reached = steps_by_generation.get(newest.id, ())
        if newest.number > 0 and not any(at > newest.start_step for at in reached):
            pending[slot] = dict(newest.hparams)
    observations.sort(key=lambda o: (o.end_step, o.slot))  # stable: a slot's older generation first
    return History(tuple(observations), pending, step)


def first_scores(
    scores: Iterable[ScoreRecord], generations: Sequence[GenerationRecord]
) -> dict[int, tuple[int, float | None]]:
    """Each member's first score, ``slot -> (step, value)``, from the scores of its generation 0
    (the start of its first interval, which has no checkpoint before it)."""
    initial = {g.id: g.slot for g in generations if g.number == 0}
    first: dict[int, tuple[int, float | None]] = {}
    for score in scores:
        slot = initial.get(score.generation_id)
        if slot is not None and (slot not in first or score.step < first[slot][0]):
            first[slot] = (score.step, score.value)
    return first
