"""What a report shows, computed as plain data from a run's records (no drawing here).

``report_data(run)`` gathers score curves, the best-so-far curve, exploit events, every
hyperparameter's schedule per member, the best model's ancestry, the family tree of
generations, the table of decisions and a summary. The PNG, HTML and dashboard views draw
exactly this, and the tests check it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from poptrain.records import COPY_KINDS, GenerationRecord, MemberRecord, RunRecord, ScoreRecord
from poptrain.results import BestMember


@dataclass(frozen=True)
class Curve:
    """One member's score after each of its steps (the stretches it inherited are the donor's)."""

    slot: int
    steps: list[int]
    values: list[float]


@dataclass(frozen=True)
class Segment:
    """A stretch of steps with one value of a hyperparameter."""

    slot: int
    start: int
    end: int
    value: Any


@dataclass(frozen=True)
class TreeNode:
    """One generation in the family tree: its member, its steps, how it began and its last score."""

    id: int
    slot: int
    number: int
    start: int
    end: int
    parent: int | None
    donor: int | None
    kind: str
    score: float | None


@dataclass(frozen=True)
class DecisionRow:
    """A decision: at ``step`` member ``slot`` copied ``donor`` (exploit) or only explored."""

    step: int
    slot: int
    kind: str
    donor: int | None
    changes: dict[str, str]
    score_before: float | None  # the member's score at the decision
    score_after: float | None  # its score after the next step


@dataclass(frozen=True)
class ReportData:
    """Everything a report draws."""

    run: str
    metric: str
    mode: str
    state: str
    population: int
    curves: list[Curve]
    best_so_far: Curve
    exploits: list[tuple[int, int, int]]  # (slot, step, donor)
    schedules: dict[str, list[Segment]]
    best_ancestry: list[Segment]  # the best model's stretches (slot, steps), oldest first
    tree: list[TreeNode]
    decisions: list[DecisionRow]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the HTML report and the dashboard read)."""
        return asdict(self)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def report_data(
    run: RunRecord,
    members: Sequence[MemberRecord],
    generations: Sequence[GenerationRecord],
    scores: Sequence[ScoreRecord],
    best: BestMember | None,
    *,
    summary: dict[str, Any] | None = None,
) -> ReportData:
    """The report of a run from its records (pure: nothing is read or written)."""
    by_slot: dict[int, dict[int, float]] = {}
    for score in scores:
        by_slot.setdefault(score.slot, {})[score.step] = score.value
    curves = [
        Curve(slot, sorted(values), [values[s] for s in sorted(values)]) for slot, values in sorted(by_slot.items())
    ]
    best_so_far = _best_so_far(scores, run)
    ordered = sorted(generations, key=lambda g: g.id)
    ends = _generation_ends(ordered, members)
    last_score = _last_scores(scores)
    exploits = [(g.slot, g.start_step, g.donor) for g in ordered if g.kind in COPY_KINDS and g.donor is not None]
    names = sorted({k for g in ordered for k in g.hparams})
    schedules = {
        name: [
            Segment(g.slot, g.start_step, ends[g.id], g.hparams.get(name))
            for g in ordered
            if ends[g.id] > g.start_step or g.kind == "init"
        ]
        for name in names
    }
    ancestry = [Segment(s.slot, s.start_step, s.end_step, dict(s.hparams)) for s in best.schedule] if best else []
    tree = [
        TreeNode(
            g.id,
            g.slot,
            g.number,
            g.start_step,
            ends[g.id],
            g.parent_id,
            g.donor,
            g.kind,
            _finite(last_score.get(g.id)),
        )
        for g in ordered
    ]
    decisions = []
    for g in ordered:
        if g.kind == "init":
            continue
        before = by_slot.get(g.slot, {}).get(g.start_step)
        after = by_slot.get(g.slot, {}).get(g.start_step + 1)
        decisions.append(
            DecisionRow(g.start_step, g.slot, g.kind, g.donor, dict(g.operations), _finite(before), _finite(after))
        )
    decisions.sort(key=lambda d: (d.step, d.slot))
    info = {
        "best_slot": best.slot if best else None,
        "best_score": best.score if best else None,
        "best_step": best.step if best else None,
        "best_metrics": dict(best.metrics) if best else {},
        "best_hparams": dict(best.hparams) if best else {},
        "steps_trained": len(scores),
        "decisions": len(decisions),
        "exploits": len(exploits),
        "wall_seconds": _wall_seconds(scores, run),
        "settings": {
            k: v for k, v in run.spec.items() if k in ("population_size", "metric", "mode", "strategy", "space")
        },
        "seed": run.seed,
    }
    info.update(summary or {})
    return ReportData(
        run.name,
        run.metric,
        run.mode,
        run.state,
        len(members),
        curves,
        best_so_far,
        exploits,
        schedules,
        ancestry,
        tree,
        decisions,
        info,
    )


def _best_so_far(scores: Sequence[ScoreRecord], run: RunRecord) -> Curve:
    """The best score any member had reached by each step."""
    by_step: dict[int, float] = {}
    for score in scores:
        if not math.isfinite(score.value):
            continue
        fitness = run.fitness(score.value)
        current = by_step.get(score.step)
        if current is None or (fitness is not None and fitness > (run.fitness(current) or -math.inf)):
            by_step[score.step] = score.value
    steps, values, best = [], [], None
    for step in sorted(by_step):
        value = by_step[step]
        if best is None or (run.fitness(value) or -math.inf) > (run.fitness(best) or -math.inf):
            best = value
        steps.append(step)
        values.append(best)
    return Curve(-1, steps, values)


def _generation_ends(ordered: Sequence[GenerationRecord], members: Sequence[MemberRecord]) -> dict[int, int]:
    """Where each generation's stretch ends: the next generation of its member, or the member's step."""
    ends: dict[int, int] = {}
    current = {m.slot: m.step for m in members}
    following: dict[int, int] = {}
    for g in reversed(ordered):
        ends[g.id] = following.get(g.slot, current.get(g.slot, g.start_step))
        following[g.slot] = g.start_step
    return ends


def _last_scores(scores: Sequence[ScoreRecord]) -> dict[int, float]:
    """Each generation's newest score."""
    last: dict[int, tuple[int, float]] = {}
    for score in scores:
        seen = last.get(score.generation_id)
        if seen is None or score.step >= seen[0]:
            last[score.generation_id] = (score.step, score.value)
    return {gid: value for gid, (_, value) in last.items()}


def _wall_seconds(scores: Sequence[ScoreRecord], run: RunRecord) -> float | None:
    times = [s.wall_time for s in scores if s.wall_time]
    return (max(times) - run.created_at) if times else None
