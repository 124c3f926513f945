"""What a report shows, computed as plain data from a run's records (no drawing here).

``report_data(run)`` gathers score curves, the best-so-far curve, the copies, every
hyperparameter's schedule per member, the best model (the winner) with its rivals and its
story, the family tree of generations, the table of decisions, the settings, the members,
every evaluation with its hyperparameters, their importance, the progress and a summary. The
PNG, HTML, dashboard and terminal views draw exactly this, and the tests check it.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from poptrain.lineage import trained, trained_at
from poptrain.records import (
    COPY_KINDS,
    CheckpointRecord,
    GenerationRecord,
    MemberRecord,
    RunRecord,
    ScoreRecord,
)
from poptrain.report.importance import MISSING, Importance, hparam_importance, sklearn_available
from poptrain.results import BestMember

__all__ = [
    "CopyMark",
    "Curve",
    "DecisionRow",
    "Importance",
    "MemberRow",
    "ParamInfo",
    "Progress",
    "ReportData",
    "Rival",
    "Segment",
    "TreeNode",
    "Winner",
    "report_data",
    "run_progress",
]


@dataclass(frozen=True)
class Curve:
    """One member's scores in the order they were made, with the generation of each point: a
    line breaks where the generation changes by a copy (steps may go back after a copy of an
    older checkpoint). The best-so-far curve has ``slot`` -1."""

    slot: int
    steps: list[int]
    values: list[float]
    generations: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Segment:
    """A stretch of steps with one value of a hyperparameter."""

    slot: int
    start: int
    end: int
    value: Any


@dataclass(frozen=True)
class TreeNode:
    """One generation in the family tree: its member, its steps, how it began and its last score.

    ``on_winner_path``: the winner's weights passed through it. ``survives``: it is (an ancestor
    of) some member's current generation, so its lineage lives on."""

    id: int
    slot: int
    number: int
    start: int
    end: int
    parent: int | None
    donor: int | None
    kind: str
    score: float | None
    on_winner_path: bool = False
    survives: bool = False


@dataclass(frozen=True)
class DecisionRow:
    """A decision: at ``step`` member ``slot`` copied ``donor`` (exploit) or only explored.
    ``old``/``new``: the member's hyperparameters that changed, before and after."""

    step: int
    slot: int
    kind: str
    donor: int | None
    changes: dict[str, str]
    score_before: float | None  # the member's last score before the decision
    score_after: float | None  # its first score after it
    old: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParamInfo:
    """A search-space parameter: its type (``float``, ``int``, ``choice``, ``widths``...), whether
    it is drawn on a log scale (plots use log axes exactly there), its bounds or options."""

    name: str
    kind: str
    log: bool
    low: float | None
    high: float | None
    options: list[Any] | None


@dataclass(frozen=True)
class Rival:
    """Another model the winner is compared with; ``margin``: how much better the winner is, in
    the metric's units (positive when the winner is better, whatever the mode)."""

    slot: int
    score: float
    margin: float


@dataclass(frozen=True)
class Winner:
    """The best-ever model (``run.best()``): where it was scored, its rivals and its story.

    ``runner_up``: the best checkpointed score of any other member. ``untouched``: the best
    member that PBT never touched (only its first generation: the random-search equivalent
    inside the same run; it may be the winner's own member), ``None`` when every member was
    touched. ``story``: one sentence per generation of its ancestry, then its score."""

    slot: int
    step: int
    score: float
    generation_id: int
    runner_up: Rival | None
    untouched: Rival | None
    story: list[str]
    checkpoint: str | None
    export_command: str
    replay_command: str


@dataclass(frozen=True)
class CopyMark:
    """A copy (exploit or replacement): member ``slot`` loaded ``donor``'s checkpoint of ``step``
    (where its new generation starts). ``previous_step``: the member's own last step before,
    which differs from ``step`` when an older checkpoint was copied; the scores just before
    and just after the copy."""

    slot: int
    step: int
    donor: int
    previous_step: int | None
    score_before: float | None
    score_after: float | None


@dataclass(frozen=True)
class MemberRow:
    """A member as it stands: its state, step, generation number, newest and best scores and
    hyperparameters."""

    slot: int
    state: str
    step: int
    generation: int
    last_score: float | None
    best_score: float | None
    hparams: dict[str, Any]


@dataclass(frozen=True)
class Progress:
    """How far a run is: the steps its members have trained, the steps planned (population ×
    steps per member, when known), the estimated seconds left while it runs, and the time of
    the newest score."""

    steps_done: int
    steps_planned: int | None
    eta_seconds: float | None
    last_update: float | None


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
    params: list[ParamInfo] = field(default_factory=list)
    winner: Winner | None = None
    ancestry_generations: list[int] = field(default_factory=list)
    copies: list[CopyMark] = field(default_factory=list)
    y_range: list[float] | None = None
    settings_rows: list[list[str]] = field(default_factory=list)
    members: list[MemberRow] = field(default_factory=list)
    evaluations: dict[str, Any] = field(default_factory=dict)
    importance: Importance | None = None
    progress: Progress = field(default_factory=lambda: Progress(0, None, None, None))

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
    checkpoints: Sequence[CheckpointRecord] | None = None,
    importance: bool = True,
    now: float | None = None,
) -> ReportData:
    """The report of a run from its records (pure: nothing is read or written).

    ``best`` is the winner (``run.best()``); ``checkpoints`` (the run's checkpoint records) are
    the candidates it was ranked among, so the best-so-far curve, the rivals and the members'
    best scores are the scores of checkpointed models and agree with it (without them, every
    score counts). ``importance=False`` skips fitting the importance model; ``now`` is the
    clock for the progress estimate."""
    ordered = sorted(generations, key=lambda g: g.id)
    by_id = {g.id: g for g in ordered}
    slot_gens: dict[int, list[GenerationRecord]] = {}
    for g in ordered:
        slot_gens.setdefault(g.slot, []).append(g)
    for gens in slot_gens.values():
        gens.sort(key=lambda g: g.number)
    number_of = {g.id: g.number for g in ordered}

    curves = _curves(scores, number_of)
    by_gen: dict[int, list[ScoreRecord]] = {}
    for score in scores:
        by_gen.setdefault(score.generation_id, []).append(score)
    for gen_scores in by_gen.values():
        gen_scores.sort(key=lambda s: s.step)

    scored = _scored_models(scores, checkpoints, generations)
    best_so_far = _best_so_far(scored, run)
    own_checkpoints: dict[int, list[CheckpointRecord]] = {}
    for c in sorted(checkpoints or (), key=lambda c: c.id):
        own_checkpoints.setdefault(c.slot, []).append(c)
    before_of = {
        g.id: _before(slot_gens[g.slot], g, by_gen, None if checkpoints is None else own_checkpoints.get(g.slot, []))
        for g in ordered
        if g.kind != "init"
    }
    ends = _generation_ends(slot_gens, by_gen, members, before_of)
    last_score = {gid: s[-1].value for gid, s in by_gen.items() if s}
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

    winner_gen = None
    if best is not None:  # the generation that trained the winning checkpoint (recorded with it)
        winner_gen = trained(ordered, best.checkpoint) if best.checkpoint else trained_at(ordered, best.slot, best.step)
    path = _ancestors(by_id, [winner_gen.id]) if winner_gen else set()
    alive = _ancestors(by_id, [m.generation_id for m in members])
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
            g.id in path,
            g.id in alive,
        )
        for g in ordered
    ]

    copies: list[CopyMark] = []
    decisions: list[DecisionRow] = []
    for g in ordered:
        if g.kind == "init":
            continue
        previous = before_of[g.id]
        after = by_gen.get(g.id, [])
        before_value = _finite(previous[1]) if previous else None
        after_value = _finite(after[0].value) if after else None
        own = _previous_generation(slot_gens.get(g.slot, []), g)
        old_hp = dict(own.hparams) if own else {}
        keys = sorted(
            {k for k in set(old_hp) | set(g.hparams) if old_hp.get(k) != g.hparams.get(k)} | set(g.operations)
        )
        decisions.append(
            DecisionRow(
                g.start_step,
                g.slot,
                g.kind,
                g.donor,
                dict(g.operations),
                before_value,
                after_value,
                {k: old_hp.get(k) for k in keys},
                {k: g.hparams.get(k) for k in keys},
            )
        )
        if g.kind in COPY_KINDS and g.donor is not None:
            copies.append(
                CopyMark(g.slot, g.start_step, g.donor, previous[0] if previous else None, before_value, after_value)
            )
    decisions.sort(key=lambda d: (d.step, d.slot))
    copies.sort(key=lambda c: (c.step, c.slot))

    params = _params(run, ordered)
    winner = _winner(run, best, winner_gen, scored, slot_gens) if best and winner_gen else None
    evaluations = _evaluations(params, scores, by_id)
    notes: list[str] = []
    found: Importance | None = None
    if importance:
        if sklearn_available():
            found = hparam_importance(evaluations)
        else:
            notes.append(MISSING)
    progress = run_progress(run, members, scores, now=now)
    best_by_slot = _best_by_slot(scored, run)
    member_rows = [
        MemberRow(
            m.slot,
            m.state,
            m.step,
            m.generation,
            _finite(m.score),
            best_by_slot.get(m.slot),
            dict(m.hparams),
        )
        for m in sorted(members, key=lambda m: m.slot)
    ]
    info: dict[str, Any] = {
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
    if notes:
        info["notes"] = [*notes, *(info.get("notes") or [])]
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
        params,
        winner,
        sorted(path),
        copies,
        _y_range(run, scores, best_so_far, best),
        settings_rows(run, params),
        member_rows,
        evaluations,
        found,
        progress,
    )


def _curves(scores: Sequence[ScoreRecord], number_of: Mapping[int, int]) -> list[Curve]:
    """Each member's scores in the order its generations made them (one point per generation
    and step: a score recorded twice keeps the newest)."""
    points: dict[int, dict[tuple[int, int], ScoreRecord]] = {}
    for score in scores:
        points.setdefault(score.slot, {})[(score.generation_id, score.step)] = score
    curves = []
    for slot, found in sorted(points.items()):
        ordered = sorted(found.values(), key=lambda s: (number_of.get(s.generation_id, 0), s.generation_id, s.step))
        curves.append(
            Curve(slot, [s.step for s in ordered], [s.value for s in ordered], [s.generation_id for s in ordered])
        )
    return curves


# a scored model: (slot, step, score, the id of the generation that trained it, -1 if unknown)
Scored = tuple[int, int, float, int]


def _scored_models(
    scores: Sequence[ScoreRecord],
    checkpoints: Sequence[CheckpointRecord] | None,
    generations: Sequence[GenerationRecord],
) -> list[Scored]:
    """The scored models the winner is chosen among: the checkpoints with a finite score (also
    those collected since: they were scored models and never beat the kept best), or every
    finite score when no checkpoints are given. Each with the generation that trained it (a
    member that copied an older model trains some steps again as another generation)."""
    if checkpoints is None:
        return [(s.slot, s.step, s.value, s.generation_id) for s in scores if math.isfinite(s.value)]
    by_slot: dict[int, list[GenerationRecord]] = {}
    for generation in generations:
        by_slot.setdefault(generation.slot, []).append(generation)
    by_id = {g.id: g for g in generations}
    scored: list[Scored] = []
    for c in checkpoints:
        if c.score is not None and math.isfinite(c.score):
            trainer = trained(by_slot.get(c.slot, ()), c, by_id=by_id)
            scored.append((c.slot, c.step, c.score, trainer.id if trainer else -1))
    return scored


def _better(run: RunRecord, a: float, b: float | None) -> bool:
    """Whether score ``a`` beats ``b`` in the run's mode (``None`` is beaten by anything)."""
    return b is None or (a > b if run.mode == "max" else a < b)


def _best_so_far(scored: Sequence[Scored], run: RunRecord) -> Curve:
    """The best score of a scored model by each step (earliest step, then lowest slot, wins ties)."""
    best: Scored | None = None
    steps: list[int] = []
    values: list[float] = []
    gens: list[int] = []
    for model in sorted(scored, key=lambda x: (x[1], x[0])):
        if best is None or _better(run, model[2], best[2]):
            best = model
        step = model[1]
        if steps and steps[-1] == step:
            values[-1], gens[-1] = best[2], best[3]
        else:
            steps.append(step)
            values.append(best[2])
            gens.append(best[3])
    return Curve(-1, steps, values, gens)


def _best_by_slot(scored: Sequence[Scored], run: RunRecord) -> dict[int, float]:
    best: dict[int, float] = {}
    for slot, _, value, _ in scored:
        if _better(run, value, best.get(slot)):
            best[slot] = value
    return best


def _generation_ends(
    slot_gens: Mapping[int, Sequence[GenerationRecord]],
    by_gen: Mapping[int, Sequence[ScoreRecord]],
    members: Sequence[MemberRecord],
    before_of: Mapping[int, tuple[int, float | None] | None],
) -> dict[int, int]:
    """The last step each generation trained: the member's step where the next generation of
    its member began (a member copying an older checkpoint trained past the copy's step), else
    its last scored step, else where the next generation begins; the newest generation ends at
    the member's step."""
    current = {m.slot: m.step for m in members}
    ends: dict[int, int] = {}
    for slot, gens in slot_gens.items():
        for i, g in enumerate(gens):
            own = by_gen.get(g.id)
            if i + 1 < len(gens):
                known = before_of.get(gens[i + 1].id)
                end = known[0] if known else own[-1].step if own else gens[i + 1].start_step
            else:
                end = max(current.get(slot, g.start_step), own[-1].step if own else 0)
            ends[g.id] = max(end, g.start_step)
    return ends


def _ancestors(by_id: Mapping[int, GenerationRecord], starts: Sequence[int]) -> set[int]:
    """``starts`` and every generation they descend from (through parents and donors)."""
    found: set[int] = set()
    for gid in starts:
        current: int | None = gid
        while current is not None and current not in found and current in by_id:
            found.add(current)
            current = by_id[current].parent_id
    return found


def _previous_generation(gens: Sequence[GenerationRecord], g: GenerationRecord) -> GenerationRecord | None:
    """The member's own generation before ``g``."""
    before = [x for x in gens if x.number < g.number]
    return before[-1] if before else None


def _before(
    gens: Sequence[GenerationRecord],
    g: GenerationRecord,
    by_gen: Mapping[int, Sequence[ScoreRecord]],
    checkpoints: Sequence[CheckpointRecord] | None,
) -> tuple[int, float | None] | None:
    """The member's own last step and score before generation ``g`` began. A copy's new
    generation starts at the copied checkpoint's step and the member's scores after it are
    replaced, so for an exploit this is the checkpoint the member wrote at the decision: the
    newest of its own (``checkpoints``, oldest first) written after the loaded one, at or after
    the new generation's start, before the first one the new generation (or a later one) trained
    (which a score of that generation at its step shows)."""
    previous: tuple[int, float | None] | None = None
    for x in reversed([x for x in gens if x.number < g.number]):
        if by_gen.get(x.id):
            last = by_gen[x.id][-1]
            previous = (last.step, last.value)
            break
    if g.kind == "exploit" and checkpoints is not None and g.loaded_checkpoint_id is not None:
        later = {(s.step, s.value) for x in gens if x.number >= g.number for s in by_gen.get(x.id, ())}
        own = None
        for c in checkpoints:
            if c.id <= g.loaded_checkpoint_id or c.step < g.start_step:
                continue
            if (c.step, c.score) in later:
                break
            own = c
        if own is not None and (previous is None or own.step > previous[0]):
            previous = (own.step, own.score)
    return previous


def _params(run: RunRecord, generations: Sequence[GenerationRecord]) -> list[ParamInfo]:
    """The search space's parameters (as stored with the run); a run stored without its space
    gets them from the hyperparameters its generations hold, on linear scales."""
    space = run.settings.space
    params = []
    for name, spec in space.items():
        spec = spec if isinstance(spec, Mapping) else {}
        low, high = spec.get("low"), spec.get("high")
        options = spec.get("options")
        params.append(
            ParamInfo(
                str(name),
                str(spec.get("type", "unknown")),
                bool(spec.get("log", False)),
                float(low) if isinstance(low, (int, float)) and not isinstance(low, bool) else None,
                float(high) if isinstance(high, (int, float)) and not isinstance(high, bool) else None,
                list(options) if isinstance(options, list) else None,
            )
        )
    known = {p.name for p in params}
    seen: dict[str, list[Any]] = {}
    for g in generations:
        for k, v in g.hparams.items():
            if k not in known:
                seen.setdefault(k, []).append(v)
    for name, values in sorted(seen.items()):
        params.append(ParamInfo(name, _kind_of(values), False, None, None, None))
    return params


def _kind_of(values: Sequence[Any]) -> str:
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "float"
    if all(isinstance(v, list) for v in values):
        return "widths"
    return "choice"


def _fmt(value: Any) -> str:
    """A hyperparameter or score as a reader sees it (4 significant digits)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _story(run: RunRecord, best: BestMember) -> list[str]:
    """One sentence per generation of the winner's ancestry, then the score it reached."""
    lines = []
    for i, seg in enumerate(best.schedule):
        values = ", ".join(f"{k} {_fmt(v)}" for k, v in seg.hparams.items())
        if i == 0 or seg.kind == "init":
            lines.append(f"Started as member {seg.slot} with {values}." if values else f"Started as member {seg.slot}.")
            continue
        moves = []
        for name, op in seg.operations.items():
            value = _fmt(seg.hparams.get(name))
            if op.startswith("resample"):
                moves.append((f"resampled {name} to {value}", f"{name} resampled to {value}"))
            elif "->" in op:
                moves.append((f"changed {name} to {value}", f"{name} changed to {value}"))
            else:
                moves.append((f"perturbed {name} to {value} ({op})", f"{name} perturbed to {value} ({op})"))
        if seg.kind in COPY_KINDS:
            verb = "copied it" if seg.kind == "exploit" else "copied it to replace its failed model"
            tail = " and " + " and ".join(m[0] for m in moves) if moves else ""
            lines.append(f"At step {seg.start_step} member {seg.slot} {verb}{tail}.")
        else:
            tail = ": " + ", ".join(m[1] for m in moves) if moves else ""
            lines.append(f"At step {seg.start_step} member {seg.slot} explored{tail}.")
    lines.append(f"Reached {run.metric} = {_fmt(float(best.score))} at step {best.step}.")
    return lines


def _winner(
    run: RunRecord,
    best: BestMember,
    gen: GenerationRecord,
    scored: Sequence[Scored],
    slot_gens: Mapping[int, Sequence[GenerationRecord]],
) -> Winner:
    best_by_slot = _best_by_slot(scored, run)
    sign = 1.0 if run.mode == "max" else -1.0

    def rival(slots: Sequence[int]) -> Rival | None:
        found = [(best_by_slot[s], s) for s in slots if s in best_by_slot]
        if not found:
            return None
        value, slot = min(found, key=lambda x: (-sign * x[0], x[1]))
        return Rival(slot, value, sign * (float(best.score) - value))

    others = [s for s in best_by_slot if s != best.slot]
    untouched = [s for s, gens in slot_gens.items() if all(g.kind == "init" for g in gens)]
    name = shlex.quote(run.name)
    return Winner(
        best.slot,
        best.step,
        float(best.score),
        gen.id,
        rival(others),
        rival(untouched),
        _story(run, best),
        best.checkpoint.uri if best.checkpoint else None,
        f"poptrain export {name} --best-model best.pt",
        f"poptrain replay {name} --member {best.slot}",
    )


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return float(sum(value))  # widths: the total number of hidden units
    return None


def _evaluations(
    params: Sequence[ParamInfo], scores: Sequence[ScoreRecord], by_id: Mapping[int, GenerationRecord]
) -> dict[str, Any]:
    """One row per evaluation with the hyperparameters that trained it (its generation's):
    numbers as they are, a choice as the index of its label, layer widths as their total."""
    columns = []
    for p in params:
        labels: list[str] | None = None
        index: dict[str, int] = {}
        if p.kind == "choice":
            labels = [_fmt(o) for o in (p.options or [])]
            index = {repr(o): i for i, o in enumerate(p.options or [])}
        values: list[float | None] = []
        for s in scores:
            gen = by_id.get(s.generation_id)
            value = gen.hparams.get(p.name) if gen else None
            if labels is not None:
                if value is None and (gen is None or p.name not in gen.hparams):
                    values.append(None)
                    continue
                if repr(value) not in index:
                    index[repr(value)] = len(labels)
                    labels.append(_fmt(value))
                values.append(float(index[repr(value)]))
            else:
                number = _numeric(value)
                values.append(number if number is not None and math.isfinite(number) else None)
        columns.append({"name": p.name, "log": p.log, "labels": labels, "values": values})
    return {
        "columns": columns,
        "score": [_finite(s.value) for s in scores],
        "slot": [s.slot for s in scores],
        "step": [s.step for s in scores],
    }


def _quantile(values: Sequence[float], q: float) -> float:
    """The lower nearest-rank ``q`` quantile of ``values`` (sorted ascending)."""
    return values[int(q * (len(values) - 1))]


def _y_range(
    run: RunRecord, scores: Sequence[ScoreRecord], best_so_far: Curve, best: BestMember | None
) -> list[float] | None:
    """The default y-range that shows the top of the population: from the 10% quantile (in the
    mode's sense) of the scores of the second half of training, or lower if the best-so-far
    curve is lower there, to the best score, padded 5% each side; ``None`` with fewer than two
    finite scores."""
    finite = [s for s in scores if math.isfinite(s.value)]
    if len(finite) < 2:
        return None
    sign = 1.0 if run.mode == "max" else -1.0
    last = max(s.step for s in finite)
    late = sorted(sign * s.value for s in finite if 2 * s.step >= last)
    low = _quantile(late, 0.1)
    shown = [sign * v for step, v in zip(best_so_far.steps, best_so_far.values) if 2 * step >= last]
    tops = [sign * s.value for s in finite] + [sign * v for v in best_so_far.values]
    if best is not None and math.isfinite(best.score):
        tops.append(sign * float(best.score))
    low = min([low, *shown])
    high = max(tops)
    span = high - low if high > low else (abs(high) * 0.1 or 1.0)
    low, high = low - 0.05 * span, high + 0.05 * span
    return [low, high] if sign > 0 else [-high, -low]


def _describe(role: str, spec: Any) -> str:
    """A strategy callable's stored form in words."""
    if spec is None:
        return {"exploit": "none (members never copy: random search)", "explore": "none"}.get(role, "none")
    if not isinstance(spec, Mapping):
        return str(spec)
    kind = spec.get("type")
    a = {k: v for k, v in spec.items() if k != "type"}

    def listed(values: Any) -> str:
        return ", ".join(_fmt(v) for v in values) if isinstance(values, (list, tuple)) else _fmt(values)

    if kind == "every":
        burn = f", after {a['burn_in']} burn-in steps" if a.get("burn_in") else ""
        return f"every {a.get('steps')} steps{burn}"
    if kind == "truncation":
        pct = f"{100 * float(a.get('fraction', 0.2)):g}%"
        gap = f", if better by at least {_fmt(a['min_gap'])}" if a.get("min_gap") else ""
        return f"truncation: a member in the bottom {pct} copies one from the top {pct}{gap}"
    if kind == "tournament":
        return "tournament: a member copies a randomly met member that is strictly better"
    if kind == "ttest":
        return (
            f"t-test: a member copies a randomly met member whose last {a.get('window')} scores are "
            f"significantly better (alpha {_fmt(a.get('alpha'))})"
        )
    if kind == "replace_worst":
        return f"the {a.get('count')} worst members copy the {a.get('count')} best"
    if kind == "perturb":
        factors = " or ".join(f"× {_fmt(f)}" for f in a.get("factors") or [])
        resample = a.get("resample_probability") or 0
        extra = f", or resample it with probability {_fmt(resample)}" if resample else ""
        return f"perturb each hyperparameter by {factors}{extra}"
    if kind == "resample":
        return "resample every hyperparameter from its prior"
    if kind == "gaussian":
        names = listed(a["names"]) if a.get("names") else "every Float and Int"
        return f"add Gaussian noise (scale {_fmt(a.get('scale'))}) to {names}"
    if kind == "pb2":
        return "PB2: new values from a time-varying GP bandit fitted to the population's history"
    if kind == "mf_ready":
        return f"member s is ready every {a.get('base')} × factor steps, factors {listed(a.get('factors'))} by member"
    if kind == "mf_exploit":
        pct = f"{100 * float(a.get('fraction', 0.25)):g}%"
        return f"MF-PBT: truncation ({pct}) within each group of ready rates, with migration between groups"
    if kind == "custom":
        return f"custom: {a.get('path') or a.get('repr')}"
    args = ", ".join(f"{k}={_fmt(v)}" for k, v in a.items())
    return f"{kind}({args})"


def _describe_param(p: ParamInfo) -> str:
    if p.kind in ("float", "int") and p.low is not None and p.high is not None:
        low = f"{int(p.low)}" if p.kind == "int" else f"{p.low:g}"
        high = f"{int(p.high)}" if p.kind == "int" else f"{p.high:g}"
        return f"{p.kind.capitalize()} {low} … {high}, {'log' if p.log else 'linear'} scale"
    if p.kind == "choice" and p.options is not None:
        return "Choice of " + ", ".join(_fmt(o) for o in p.options)
    if p.kind == "widths" and p.low is not None and p.high is not None:
        return f"Widths {int(p.low)} … {int(p.high)} units per layer"
    return p.kind


def settings_rows(run: RunRecord, params: Sequence[ParamInfo]) -> list[list[str]]:
    """The run's settings as readable ``[name, value]`` rows."""
    spec = run.settings
    strategy = spec.strategy
    rows = [
        ["population", str(spec.population_size)],
        ["metric", f"{spec.metric} ({'higher' if spec.mode == 'max' else 'lower'} is better)"],
    ]
    if strategy:
        rows += [[role, _describe(role, strategy.get(role))] for role in ("ready", "exploit", "explore")]
        if strategy.get("synchronous"):
            rows.append(["rounds", "synchronous: every member decides at the same step"])
    rows += [[p.name, _describe_param(p)] for p in params]
    rows.append(["seed", str(run.seed)])
    rows.append(["steps planned", f"{spec.steps} per member" if spec.steps is not None else "not recorded"])
    return rows


def run_progress(
    run: RunRecord, members: Sequence[MemberRecord], scores: Sequence[ScoreRecord], now: float | None = None
) -> Progress:
    """How far ``run`` is: the steps its members have trained, the steps planned (population ×
    the steps ``poptrain run`` planned per member), and while it runs, the seconds left at the
    rate scores arrived over the newest (up to 200) of them, less the time since the newest."""
    done = sum(m.step for m in members)
    per_member = run.settings.steps
    planned = per_member * len(members) if per_member is not None else None
    times = sorted(s.wall_time for s in scores if s.wall_time)
    last = times[-1] if times else None
    eta: float | None = None
    if run.state == "running" and planned is not None and len(times) >= 2:
        recent = times[-200:]
        elapsed = recent[-1] - recent[0]
        if elapsed > 0:
            rate = (len(recent) - 1) / elapsed
            clock = time.time() if now is None else now
            eta = max(0.0, max(0, planned - done) / rate - max(0.0, clock - recent[-1]))
    return Progress(done, planned, eta, last)


def _wall_seconds(scores: Sequence[ScoreRecord], run: RunRecord) -> float | None:
    times = [s.wall_time for s in scores if s.wall_time]
    return (max(times) - run.created_at) if times else None
