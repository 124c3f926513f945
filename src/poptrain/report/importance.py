"""Which hyperparameters mattered: a random forest's impurity importance of each hyperparameter
for the score, over a run's evaluations (scikit-learn, imported only when this is called)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MIN_EVALUATIONS = 10  # fewer evaluations than this say nothing about importance
MAX_ROWS = 2000  # evaluations beyond this are subsampled (seeded) so a report stays quick
TREES = 200
SEED = 0
MISSING = "install scikit-learn for hyperparameter importance"


@dataclass(frozen=True)
class Importance:
    """How much each hyperparameter explains the score: ``values`` sum to 1, largest first;
    ``method`` says exactly what was computed, over how many ``evaluations``."""

    method: str
    values: dict[str, float]
    evaluations: int


def sklearn_available() -> bool:
    """Whether scikit-learn can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


_cache: dict[tuple[Any, ...], Importance | None] = {}


def hparam_importance(evaluations: Mapping[str, Any]) -> Importance | None:
    """The importance of each hyperparameter column of ``evaluations`` (``ReportData.evaluations``)
    for its score; ``None`` with fewer than ``MIN_EVALUATIONS`` complete evaluations, fewer than two
    hyperparameters, a constant score, or without scikit-learn. Deterministic (seed 0)."""
    columns = list(evaluations.get("columns") or [])
    scores = list(evaluations.get("score") or [])
    if len(columns) < 2 or not sklearn_available():
        return None
    names = [str(c["name"]) for c in columns]
    rows: list[tuple[float, ...]] = []
    targets: list[float] = []
    for i, score in enumerate(scores):
        values = [c["values"][i] for c in columns]
        if score is None or not math.isfinite(score) or any(v is None or not math.isfinite(v) for v in values):
            continue
        rows.append(tuple(float(v) for v in values))
        targets.append(float(score))
    if len(rows) < MIN_EVALUATIONS or max(targets) == min(targets):
        return None
    key = (tuple(names), tuple(rows), tuple(targets))
    if key not in _cache:
        if len(_cache) > 16:
            _cache.clear()
        _cache[key] = _fit(names, rows, targets)
    return _cache[key]


def _fit(names: list[str], rows: list[tuple[float, ...]], targets: list[float]) -> Importance | None:
    import numpy as np
    from sklearn.ensemble import RandomForestRegressor

    x = np.asarray(rows, dtype=float)
    y = np.asarray(targets, dtype=float)
    used = len(y)
    sample = ""
    if used > MAX_ROWS:
        keep = np.sort(np.random.default_rng(SEED).choice(used, size=MAX_ROWS, replace=False))
        x, y = x[keep], y[keep]
        sample = f" (a seeded sample of {MAX_ROWS})"
    forest = RandomForestRegressor(n_estimators=TREES, random_state=SEED, min_samples_leaf=2, n_jobs=1)
    forest.fit(x, y)
    raw = [float(v) for v in forest.feature_importances_]
    total = sum(raw)
    if not total > 0:
        return None
    values = dict(sorted(((n, v / total) for n, v in zip(names, raw)), key=lambda kv: (-kv[1], kv[0])))
    method = (
        f"random-forest impurity importance (scikit-learn RandomForestRegressor, {TREES} trees, seed {SEED}) "
        f"of each hyperparameter for the score, over {used} evaluations{sample}"
    )
    return Importance(method, values, used)
