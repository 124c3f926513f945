"""Which hyperparameters mattered: a random forest's impurity importance of each hyperparameter
for the score, over a run's evaluations (scikit-learn, imported only when this is called).

The forest also sees the training step (scores rise as training goes on, whatever the
hyperparameters) and a column of seeded random numbers: the step keeps training progress from
being credited to whichever hyperparameters happened to train longest, and the random column's
share is the noise level below which an importance means nothing. The forest's out-of-bag R²
says how much of the score's variation it explains at all."""

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
    noise: float = 0.0  # the random column's importance on the same scale as ``values``
    explained: float | None = None  # the forest's out-of-bag R² (None: too few rows to say)


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
    steps = list(evaluations.get("step") or [0] * len(scores))
    rows: list[tuple[float, ...]] = []
    targets: list[float] = []
    for i, score in enumerate(scores):
        values = [c["values"][i] for c in columns] + [steps[i]]
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

    x = np.asarray(rows, dtype=float)  # the hyperparameters, then the step
    y = np.asarray(targets, dtype=float)
    used = len(y)
    rng = np.random.default_rng(SEED)
    sample = ""
    if used > MAX_ROWS:
        keep = np.sort(rng.choice(used, size=MAX_ROWS, replace=False))
        x, y = x[keep], y[keep]
        sample = f" (a seeded sample of {MAX_ROWS})"
    x = np.column_stack([x, rng.uniform(size=len(y))])  # the noise column
    forest = RandomForestRegressor(
        n_estimators=TREES, random_state=SEED, min_samples_leaf=2, n_jobs=1, oob_score=len(y) >= 20
    )
    forest.fit(x, y)
    raw = [float(v) for v in forest.feature_importances_]
    share = raw[: len(names)]
    total = sum(share)
    if not total > 0:
        return None
    values = dict(sorted(((n, v / total) for n, v in zip(names, share)), key=lambda kv: (-kv[1], kv[0])))
    noise = raw[-1] / total
    explained = float(forest.oob_score_) if len(y) >= 20 else None
    fit = (
        ""
        if explained is None
        else f"; the forest explains {max(explained, 0.0):.0%} of the score's variation out of bag"
    )
    method = (
        f"random-forest impurity importance (scikit-learn RandomForestRegressor, {TREES} trees, seed {SEED}) "
        f"of each hyperparameter for the score, with the training step as a control, over {used} evaluations{sample}"
        f"{fit}; a column of random numbers scores {noise:.2f} on this scale, so shares near it mean nothing"
    )
    return Importance(method, values, used, noise, explained)
