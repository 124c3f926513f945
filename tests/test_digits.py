"""The main job: PBT on the digits MLP improves on where the population started."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

import poptrain
from poptrain.experiments import digits


def make_run(tmp_path: Path, population: int, ready: int) -> poptrain.Run:
    settings = digits.experiment()
    return poptrain.create_run(
        name="digits",
        space=settings["space"],
        population_size=population,
        metric="val_acc",
        ready=poptrain.every(ready),
        exploit=poptrain.truncation(0.25),
        explore=settings["explore"],
        seed=0,
        root=tmp_path,
    )


def test_short_digits_run_beats_initial_median(tmp_path: Path) -> None:
    run = make_run(tmp_path, population=8, ready=3).optimize(digits.DigitsMLP, steps=9)
    first = [s.value for s in run.scores() if s.step == 1]
    best = run.best()
    assert best is not None and best.checkpoint is not None
    assert best.score > statistics.median(first)
    assert best.score > 0.85
    assert any(g.kind == "exploit" for g in run.lineage())
    summary = digits.summarize(run)
    assert summary["test_acc"] > 0.8
    # the best member's model is in its checkpoint: reloading it gives the recorded score
    model = digits.build_model(0.0)
    model.load_state_dict(run.load_state(best.checkpoint)["model"])
    data = digits.load_split()
    assert digits.accuracy(model, data["x_val"], data["y_val"])[0] == pytest.approx(best.score)


def test_set_hparams_keeps_optimizer_state() -> None:
    member = digits.DigitsMLP()
    member.setup({"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "dropout": 0.2}, poptrain.TrainContext("t", 0, 1))
    member.step()
    before = {k: v.clone() for k, v in member.optimizer.state[member.model[0].weight].items()}
    member.set_hparams({"lr": 0.05, "momentum": 0.5, "weight_decay": 1e-3, "dropout": 0.4})
    after = member.optimizer.state[member.model[0].weight]
    assert all(before[k].equal(after[k]) for k in before)
    assert member.optimizer.param_groups[0]["lr"] == 0.05
    assert member.model[2].p == 0.4


@pytest.mark.slow
def test_full_digits_experiment(tmp_path: Path) -> None:
    settings = digits.experiment()
    run = poptrain.create_run(
        name="digits",
        space=settings["space"],
        population_size=settings["population_size"],
        metric="val_acc",
        ready=settings["ready"],
        exploit=settings["exploit"],
        explore=settings["explore"],
        root=tmp_path,
    ).optimize(digits.DigitsMLP, steps=settings["steps"])
    best = run.best()
    assert best is not None and best.score >= 0.96
    assert digits.summarize(run)["test_acc"] >= 0.94
