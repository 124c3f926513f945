"""What a run produced, computed from its records by pure functions: the best member, a
member's hyperparameter schedule through its ancestry, and tables for export."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from poptrain.lineage import trained, trained_at
from poptrain.records import CheckpointRecord, GenerationRecord, MemberRecord, RunRecord, ScoreRecord
from poptrain.space import HParams
from poptrain.strategy.recent import lineage_scores


@dataclass(frozen=True)
class ScheduleSegment:
    """Training with fixed hyperparameters from ``start_step`` to ``end_step`` of member ``slot``.

    ``kind``/``donor``/``operations`` tell how the segment began (``"init"``, or the exploit or
    explore decision that started it). ``generation_id`` is the stored generation that trained it
    (``None`` for a schedule read from a file; not compared: two equal schedules may come from
    different runs).
    """

    slot: int
    start_step: int
    end_step: int
    hparams: HParams
    kind: str
    donor: int | None = None
    operations: dict[str, str] = field(default_factory=dict)
    generation_id: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class BestMember:
    """The best model (by default the best-ever scored checkpoint), the member and step that
    scored it, and the schedule that produced it up to that step."""

    slot: int
    score: float
    step: int
    metrics: dict[str, float]
    hparams: HParams
    checkpoint: CheckpointRecord | None
    schedule: list[ScheduleSegment]
    selection_score: float | None = None  # what it was chosen by: best(window=k)'s mean or best(select=...)'s score


def generation_at(generations: Sequence[GenerationRecord], slot: int, step: int) -> GenerationRecord:
    """The generation of ``slot`` that trained its ``step``-th step (see ``lineage.trained_at``);
    ``KeyError`` if the member has no generation."""
    active = trained_at(generations, slot, step)
    if active is None:
        raise KeyError(f"member {slot} has no generation")
    return active


def generation_of(generations: Sequence[GenerationRecord], checkpoint: CheckpointRecord) -> GenerationRecord:
    """The generation that trained ``checkpoint`` (see ``lineage.trained``); ``KeyError`` if
    its member has no generation."""
    active = trained(generations, checkpoint)
    if active is None:
        raise KeyError(f"member {checkpoint.slot} has no generation")
    return active


def schedule(
    generations: Sequence[GenerationRecord],
    checkpoints: Sequence[CheckpointRecord],
    generation_id: int,
    end_step: int,
) -> list[ScheduleSegment]:
    """The hyperparameter schedule that led to ``generation_id`` (ending at ``end_step``),
    following exploits back through donors to step 0, oldest segment first."""
    by_id = {g.id: g for g in generations}
    ckpt_step = {c.id: c.step for c in checkpoints}
    chain: list[GenerationRecord] = []
    gen: GenerationRecord | None = by_id[generation_id]
    while gen is not None:
        chain.append(gen)
        gen = by_id.get(gen.parent_id) if gen.parent_id is not None else None
    chain.reverse()
    segments = []
    for i, gen in enumerate(chain):
        if i + 1 < len(chain):
            child = chain[i + 1]
            end = (
                ckpt_step.get(child.loaded_checkpoint_id, child.start_step)
                if child.loaded_checkpoint_id
                else child.start_step
            )
        else:
            end = end_step
        segments.append(
            ScheduleSegment(
                gen.slot, gen.start_step, end, dict(gen.hparams), gen.kind, gen.donor, dict(gen.operations), gen.id
            )
        )
    return segments


def ranked_checkpoints(
    run: RunRecord,
    members: Sequence[MemberRecord],
    generations: Sequence[GenerationRecord],
    checkpoints: Sequence[CheckpointRecord],
    scores: Sequence[ScoreRecord],
    *,
    final: bool = False,
    window: int = 1,
) -> list[tuple[CheckpointRecord, float | None]]:
    """The candidate checkpoints for the best model, best first (earliest step, then lowest slot
    on ties), each with the value it was ranked by when that is not its own score (``window``).

    The candidates are the scored checkpoints whose files are kept (the collection always keeps
    the best ones), or with ``final`` the members' newest checkpoints (the final population).
    ``window`` > 1 ranks each by the mean of the last ``window`` evaluations of the model's
    lineage up to it (its own and, before a copy, its donor's), so one lucky evaluation does not
    pick the model."""
    by_id = {c.id: c for c in checkpoints}
    if final:
        pool = [by_id[m.checkpoint_id] for m in members if m.checkpoint_id is not None and m.checkpoint_id in by_id]
    else:
        pool = [c for c in checkpoints if not c.deleted]
    candidates = [c for c in pool if c.score is not None and not math.isnan(c.score)]
    selection: dict[int, float] = {}
    if window > 1:
        at: dict[int, dict[int, float | None]] = {}
        for score in scores:
            at.setdefault(score.generation_id, {})[score.step] = score.value
        generation_by_id = {g.id: g for g in generations}
        for c in candidates:
            values = lineage_scores(generation_by_id, at, generation_of(generations, c).id, c.step, window, run.fitness)
            mean = sum(values) / len(values) if values and all(math.isfinite(v) for v in values) else math.nan
            selection[c.id] = mean if run.mode == "max" else -mean  # back in the metric's own direction

    def rank_key(c: CheckpointRecord) -> tuple[float, int, int]:
        fitness = run.fitness(selection.get(c.id, c.score))
        return (-(fitness if fitness is not None and not math.isnan(fitness) else -math.inf), c.step, c.slot)

    return [(c, selection.get(c.id)) for c in sorted(candidates, key=rank_key)]


def best_at(
    checkpoint: CheckpointRecord,
    generations: Sequence[GenerationRecord],
    checkpoints: Sequence[CheckpointRecord],
    scores: Sequence[ScoreRecord],
    selection_score: float | None = None,
) -> BestMember:
    """The model of ``checkpoint`` as a ``BestMember``: its member, step, score, metrics,
    hyperparameters and schedule up to that step."""
    gen = generation_of(generations, checkpoint)
    metrics: dict[str, float] = {}
    for score in scores:
        if score.generation_id == gen.id and score.step == checkpoint.step:
            metrics = dict(score.metrics)
    return BestMember(
        checkpoint.slot,
        float(checkpoint.score or 0.0),
        checkpoint.step,
        metrics,
        dict(gen.hparams),
        checkpoint,
        schedule(generations, checkpoints, gen.id, checkpoint.step),
        selection_score,
    )


def best_member(
    run: RunRecord,
    members: Sequence[MemberRecord],
    generations: Sequence[GenerationRecord],
    checkpoints: Sequence[CheckpointRecord],
    scores: Sequence[ScoreRecord],
    *,
    final: bool = False,
    window: int = 1,
) -> BestMember | None:
    """The best-ever model: the first of ``ranked_checkpoints`` (see there for ``final`` and
    ``window``; the window's mean is ``selection_score``); ``None`` before any checkpoint."""
    ranked = ranked_checkpoints(run, members, generations, checkpoints, scores, final=final, window=window)
    if not ranked:
        return None
    checkpoint, selection_score = ranked[0]
    return best_at(checkpoint, generations, checkpoints, scores, selection_score)


def score_rows(
    scores: Sequence[ScoreRecord], generations: Sequence[GenerationRecord], metric: str | None = None
) -> list[dict[str, Any]]:
    """One flat row per score: slot, step, generation, value, every metric and hyperparameter.
    The run's own ``metric`` is the ``score`` column and is not repeated as ``metric.<name>``."""
    by_id = {g.id: g for g in generations}
    rows = []
    for s in scores:
        gen = by_id.get(s.generation_id)
        row: dict[str, Any] = {
            "slot": s.slot,
            "step": s.step,
            "generation": gen.number if gen else None,
            "score": s.value,
        }
        row.update({f"metric.{k}": v for k, v in s.metrics.items() if k != metric})
        if gen is not None:
            row.update({f"hp.{k}": v for k, v in gen.hparams.items()})
        row["wall_time"] = s.wall_time
        rows.append(row)
    return rows
