"""The list of runs, as data: one row per run (state, best score, progress, ETA, last update).

``index_row`` computes a row from a run's records (pure, with the clock passed in);
``read_index_row`` reads just the records a row needs (members, checkpoints, scores: not the
whole report); ``row_cells`` is the row as the text of the dashboard's index table.
``poptrain ls`` prints the same rows. The best score is the best-ever model's, ranked as ``Run.best()`` ranks
it, so the index and the report show the same number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from poptrain.records import CheckpointRecord, MemberRecord, RunRecord, ScoreRecord
from poptrain.report.data import run_progress
from poptrain.results import ranked_checkpoints
from poptrain.storage import Storage

# A run stored as "running" whose newest score (or, before any, its creation) is older than this
# may have lost its process: the index says "running?" with how long it has been quiet.
QUIET_AFTER_SECONDS = 600.0

# How a state is marked in the index (a CSS class): a failed or interrupted run must not look finished.
FLAGS = {
    "running": "running",
    "finished": "finished",
    "failed": "failed",
    "interrupted": "interrupted",
    "stopped": "stopped",
    "created": "created",
}


@dataclass(frozen=True)
class IndexRow:
    """One run in the index. ``label`` is the state as shown (``state``, or ``"running? (no update
    for 12 min)"``, or ``"unreadable"``); ``flag`` its mark (``running``, ``finished``, ``failed``,
    ``interrupted``, ``stopped``, ``created``, ``quiet``, ``unreadable`` or ``other``)."""

    name: str
    state: str
    label: str
    flag: str
    metric: str | None = None
    mode: str | None = None
    best: float | None = None
    best_slot: int | None = None
    best_step: int | None = None
    steps_done: int = 0
    steps_planned: int | None = None
    slowest_step: int = 0  # the step of the member furthest behind
    eta_seconds: float | None = None
    last_update: float | None = None  # unix time of the newest score
    created_at: float | None = None
    error: str | None = None  # why an unreadable run could not be read

    @property
    def updated(self) -> float | None:
        """When the run last changed that the index can tell: its newest score, else its creation."""
        return self.last_update if self.last_update is not None else self.created_at

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (non-finite numbers as None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def index_row(
    run: RunRecord,
    members: Sequence[MemberRecord],
    checkpoints: Sequence[CheckpointRecord],
    scores: Sequence[ScoreRecord],
    *,
    now: float | None = None,
) -> IndexRow:
    """The index row of a run from its records (pure: nothing is read; ``now`` defaults to the clock)."""
    now = time.time() if now is None else now
    # Ranked by the checkpoint's own score (window 1, any kept checkpoint): the lineage is not needed.
    ranked = ranked_checkpoints(run, members, (), checkpoints, scores)
    best = ranked[0][0] if ranked else None
    progress = run_progress(run, members, scores, now=now)
    label, flag, eta = run.state, FLAGS.get(run.state, "other"), progress.eta_seconds
    last = progress.last_update if progress.last_update is not None else run.created_at
    if run.state == "running" and now - last > QUIET_AFTER_SECONDS:
        label, flag, eta = f"running? (no update for {duration(now - last)})", "quiet", None
    if run.state != "running":
        eta = None
    return IndexRow(
        name=run.name,
        state=run.state,
        label=label,
        flag=flag,
        metric=run.metric,
        mode=run.mode,
        best=None if best is None else best.score,
        best_slot=None if best is None else best.slot,
        best_step=None if best is None else best.step,
        steps_done=progress.steps_done,
        steps_planned=progress.steps_planned,
        slowest_step=min((m.step for m in members), default=0),
        eta_seconds=eta,
        last_update=progress.last_update,
        created_at=run.created_at,
    )


def unreadable_row(name: str, error: BaseException | str) -> IndexRow:
    """The row of a run that could not be read: its name and the first line of why."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return IndexRow(name, "unreadable", "unreadable", "unreadable", error=(text.strip().splitlines() or [""])[0])


def read_index_row(storage: Storage, run: RunRecord, *, now: float | None = None) -> IndexRow:
    """A run's index row, reading only its members, checkpoints and scores from ``storage``."""
    return index_row(
        run,
        storage.get_members(run.id),
        storage.get_checkpoints(run.id),
        storage.get_scores(run.id),
        now=now,
    )


def duration(seconds: float) -> str:
    """A length of time for people: ``8 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def utc(seconds: float) -> str:
    """Unix time as ISO-8601 in UTC, to the second: ``2026-11-30T11:40:19Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def row_cells(row: IndexRow, *, now: float | None = None) -> list[dict[str, str]]:
    """The row as table cells, each ``{"text": ..}`` with optionally ``"href"`` (a link),
    ``"title"`` (shown on hover) and ``"mark"`` (a CSS class): run, state, metric, best score,
    progress, ETA, last update. Text only: whoever draws them shows them as text."""
    now = time.time() if now is None else now
    name = {"text": row.name, "href": f"/runs/{quote(row.name, safe='')}"}
    if row.flag == "unreadable":
        return [name, {"text": "unreadable", "mark": "unreadable"}, {"text": row.error or ""}, *({"text": ""},) * 4]
    best = "-" if row.best is None else f"{row.best:.4g} (member {row.best_slot}, step {row.best_step})"
    steps = (
        f"{row.steps_done} of {row.steps_planned} steps"
        if row.steps_planned
        else f"{row.steps_done} step{'s' if row.steps_done != 1 else ''}"
    )
    eta = "-" if row.eta_seconds is None else f"about {duration(row.eta_seconds)}"
    updated = row.updated
    when = {"text": "-"} if updated is None else {"text": f"{duration(now - updated)} ago", "title": utc(updated)}
    return [
        name,
        {"text": row.label, "mark": row.flag},
        {"text": f"{row.metric} ({row.mode})"},
        {"text": best},
        {"text": steps},
        {"text": eta},
        when,
    ]


COLUMNS = ("run", "state", "metric", "best score", "progress", "ETA", "last update")
