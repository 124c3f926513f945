"""The report's PNGs for populations of 64 and 256 members: a fixed page size, log axes
exactly where the space declares them, a colour bar on the family tree. The PNGs are kept in
test-artifacts/ to be looked at."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.browser_helpers import ARTIFACTS

from poptrain.records import NewCheckpoint, ReadyPoint, ScoreRecord
from poptrain.report.data import ReportData, report_data
from poptrain.results import best_member
from poptrain.storage import InMemoryStorage
from poptrain.strategy import Decision

SPACE = {
    "lr": {"type": "float", "low": 0.0001, "high": 0.3, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": False},
    "optimizer": {"type": "choice", "options": ["sgd", "adam"], "ordered": False},
}
STEPS, READY = 40, 5


def population_history(population: int, mode: str = "max", seed: int = 0) -> tuple[Any, InMemoryStorage]:
    """``population`` members trained ``STEPS`` steps without any model: the score rises with
    the step and is best near lr 0.01 and low dropout. Every ``READY`` steps the bottom quarter
    copies a random member of the top quarter and perturbs lr (an eighth only explore)."""
    rng = np.random.default_rng(seed)
    storage = InMemoryStorage()
    hparams = [
        {
            "lr": float(math.exp(rng.uniform(math.log(1e-4), math.log(0.3)))),
            "dropout": float(rng.uniform(0, 0.5)),
            "optimizer": str(rng.choice(["sgd", "adam"])),
        }
        for _ in range(population)
    ]
    spec = {"metric": "accuracy" if mode == "max" else "loss", "mode": mode, "population_size": population}
    spec |= {"space": SPACE, "meta": {"steps": STEPS}}
    spec["strategy"] = {
        "ready": {"type": "every", "steps": READY, "burn_in": 0},
        "exploit": {"type": "truncation", "fraction": 0.25, "min_gap": 0.0},
        "explore": {"type": "perturb", "factors": [0.8, 1.2], "resample_probability": 0.25},
    }
    run = storage.create_run(f"pop{population}", spec=spec, seed=seed, initial_hparams=hparams)
    model = [0.0] * population

    def quality(h: dict[str, Any]) -> float:
        return -abs(math.log10(h["lr"]) + 2.0) - 1.5 * h["dropout"] + (0.2 if h["optimizer"] == "adam" else 0.0)

    sign = 1.0 if mode == "max" else -1.0
    for start in range(0, STEPS, READY):
        members = {m.slot: m for m in storage.get_members(run.id)}
        scores = []
        for slot, m in members.items():
            for step in range(start + 1, start + READY + 1):
                model[slot] += 0.05 * math.exp(quality(m.hparams)) + float(rng.normal(0, 0.004))
                scores.append(ScoreRecord(slot, step, sign * model[slot], m.generation_id, wall_time=1000.0 + step))
        end = start + READY
        ranked = sorted(members, key=lambda s: -model[s])
        quarter = max(1, population // 4)
        points = []
        for slot, member in members.items():
            decision = None
            if end < STEPS and slot in ranked[-quarter:]:
                donor = int(rng.choice(ranked[:quarter]))
                h = dict(members[donor].hparams)
                factor = float(rng.choice([0.8, 1.2]))
                h["lr"] = min(0.3, max(1e-4, h["lr"] * factor))
                decision = Decision(slot, end, "exploit", h, donor, {"lr": f"* {factor:g}"})
            elif end < STEPS and slot % 8 == 0:
                h = dict(member.hparams)
                h["dropout"] = float(rng.uniform(0, 0.5))
                decision = Decision(slot, end, "explore", h, None, {"dropout": "resample"})
            ckpt = NewCheckpoint(f"ckpt/{slot}-{end}.pt", "0" * 64, 10)
            points.append(ReadyPoint(slot, end, ckpt, sign * model[slot], decision))
        copied = {p.slot: model[p.decision.donor] for p in points if p.decision and p.decision.donor is not None}
        storage.record_ready(run.id, points, scores)
        for slot, value in copied.items():
            model[slot] = value
    return storage.get_run(run.name), storage


def data_of(run: Any, storage: InMemoryStorage) -> ReportData:
    members, generations = storage.get_members(run.id), storage.get_generations(run.id)
    checkpoints, scores = storage.get_checkpoints(run.id), storage.get_scores(run.id)
    best = best_member(run, members, generations, checkpoints, scores)
    return report_data(run, members, generations, scores, best, checkpoints=checkpoints, importance=False)


def _save(figure: Any, name: str) -> Path:
    import matplotlib.pyplot as plt

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)
    return path


def _size(path: Path) -> tuple[int, int]:
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    return width, height


@pytest.mark.parametrize(("population", "mode"), [(64, "max"), (256, "min")])
def test_figures_keep_a_fixed_page_size(population: int, mode: str) -> None:
    from poptrain.report.figures import plot_lineage, plot_schedules, plot_scores

    data = data_of(*population_history(population, mode))
    assert data.winner is not None and len(data.copies) > population // 2
    sizes = {}
    for name, draw in (("scores", plot_scores), ("schedules", plot_schedules), ("lineage", plot_lineage)):
        figure = draw(data)
        if name == "lineage":
            assert len(figure.axes) == 2  # the tree and its colour bar
            assert "is better" in figure.axes[1].get_ylabel()
            assert len(figure.axes[0].get_yticks()) <= 20  # thinned: a label for every member would not read
            assert figure.axes[1].yaxis_inverted() == (mode == "min")  # the best at the top either way
        if name == "scores":
            assert list(figure.axes[0].get_ylim()) == pytest.approx(data.y_range)
        sizes[name] = _size(_save(figure, f"report-{name}-{population}"))
    assert all(width == 1100 for width, _ in sizes.values())
    assert all(height <= 1000 for _, height in sizes.values())


def test_schedule_axes_are_log_exactly_where_the_space_says() -> None:
    from poptrain.report.figures import plot_schedules

    data = data_of(*population_history(16))
    figure = plot_schedules(data)
    scales = {axis.get_ylabel(): axis.get_yscale() for axis in figure.axes}
    assert scales == {"lr (log)": "log", "dropout": "linear", "optimizer": "linear"}
    labels = [t.get_text() for t in figure.axes[2].get_yticklabels()]
    assert labels == ["sgd", "adam"]
    _save(figure, "report-schedules-16")
