"""The report's data checked exactly on known histories: the winner and its rivals, its story,
the lineage flags, copies (also of an older checkpoint), decisions, settings, the y-range,
evaluations, hyperparameter importance and progress."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.report_helpers import toy_run

from poptrain.records import NewCheckpoint, ReadyPoint, ScoreRecord
from poptrain.report.data import (
    CopyMark,
    Curve,
    DecisionRow,
    MemberRow,
    ParamInfo,
    Progress,
    ReportData,
    Rival,
    Segment,
    report_data,
    run_progress,
)
from poptrain.results import best_member
from poptrain.storage import InMemoryStorage
from poptrain.strategy import Decision

SPACE = {
    "lr": {"type": "float", "low": 0.0001, "high": 0.1, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 1.0, "log": False},
}
STRATEGY = {
    "ready": {"type": "every", "steps": 2, "burn_in": 0},
    "exploit": {"type": "truncation", "fraction": 0.2, "min_gap": 0.0},
    "explore": {"type": "perturb", "factors": [0.8, 1.2], "resample_probability": 0.25},
}


def _ckpt(tag: str) -> NewCheckpoint:
    return NewCheckpoint(f"ckpt/{tag}.pt", "0" * 64, 10)


def history(mode: str = "max") -> tuple[Any, InMemoryStorage]:
    """Three members, six steps, ready every 2. At step 2 member 2 copies member 0 (lr * 0.8);
    at step 4 member 0 explores lr (* 1.2) and member 2 resamples momentum; member 1 is never
    touched. Member 2 ends best. With mode="min" every score is 1 - the max-mode score."""
    f = (lambda v: v) if mode == "max" else (lambda v: round(1 - v, 10))
    storage = InMemoryStorage()
    run = storage.create_run(
        "three",
        spec={
            "metric": "acc",
            "mode": mode,
            "population_size": 3,
            "space": SPACE,
            "strategy": STRATEGY,
            "meta": {"steps": 6},
        },
        seed=7,
        initial_hparams=[
            {"lr": 0.01, "momentum": 0.9},
            {"lr": 0.001, "momentum": 0.5},
            {"lr": 0.05, "momentum": 0.1},
        ],
    )
    g = {m.slot: m.generation_id for m in storage.get_members(run.id)}

    def s(slot: int, step: int, value: float) -> ScoreRecord:
        return ScoreRecord(slot, step, f(value), g[slot], wall_time=1000.0 + 3 * step + slot)

    storage.record_scores(run.id, [s(0, 1, 0.2), s(1, 1, 0.1), s(2, 1, 0.05)])
    storage.record_ready(
        run.id,
        [
            ReadyPoint(0, 2, _ckpt("0-2"), f(0.4)),
            ReadyPoint(1, 2, _ckpt("1-2"), f(0.3)),
            ReadyPoint(
                2,
                2,
                _ckpt("2-2"),
                f(0.1),
                Decision(2, 2, "exploit", {"lr": 0.008, "momentum": 0.9}, 0, {"lr": "* 0.8"}),
            ),
        ],
        [s(0, 2, 0.4), s(1, 2, 0.3), s(2, 2, 0.1)],
    )
    g = {m.slot: m.generation_id for m in storage.get_members(run.id)}
    storage.record_scores(run.id, [s(0, 3, 0.5), s(1, 3, 0.35), s(2, 3, 0.55)])
    storage.record_ready(
        run.id,
        [
            ReadyPoint(
                0,
                4,
                _ckpt("0-4"),
                f(0.6),
                Decision(0, 4, "explore", {"lr": 0.012, "momentum": 0.9}, None, {"lr": "* 1.2"}),
            ),
            ReadyPoint(1, 4, _ckpt("1-4"), f(0.45)),
            ReadyPoint(
                2,
                4,
                _ckpt("2-4"),
                f(0.7),
                Decision(2, 4, "explore", {"lr": 0.008, "momentum": 0.95}, None, {"momentum": "resample"}),
            ),
        ],
        [s(0, 4, 0.6), s(1, 4, 0.45), s(2, 4, 0.7)],
    )
    g = {m.slot: m.generation_id for m in storage.get_members(run.id)}
    storage.record_scores(run.id, [s(0, 5, 0.62), s(1, 5, 0.5), s(2, 5, 0.75)])
    storage.record_ready(
        run.id,
        [
            ReadyPoint(0, 6, _ckpt("0-6"), f(0.65)),
            ReadyPoint(1, 6, _ckpt("1-6"), f(0.52)),
            ReadyPoint(2, 6, _ckpt("2-6"), f(0.8)),
        ],
        [s(0, 6, 0.65), s(1, 6, 0.52), s(2, 6, 0.8)],
    )
    return storage.get_run("three"), storage


def data_of(run: Any, storage: InMemoryStorage, **kwargs: Any) -> ReportData:
    members, generations = storage.get_members(run.id), storage.get_generations(run.id)
    checkpoints, scores = storage.get_checkpoints(run.id), storage.get_scores(run.id)
    best = best_member(run, members, generations, checkpoints, scores)
    return report_data(run, members, generations, scores, best, checkpoints=checkpoints, **kwargs)


def _gens(storage: InMemoryStorage, run: Any) -> dict[tuple[int, int], int]:
    """Generation ids by (slot, number)."""
    return {(g.slot, g.number): g.id for g in storage.get_generations(run.id)}


def test_the_winner_its_rivals_and_its_story() -> None:
    run, storage = history()
    data = data_of(run, storage)
    gen = _gens(storage, run)
    winner = data.winner
    assert winner is not None
    assert (winner.slot, winner.step, winner.score, winner.generation_id) == (2, 6, 0.8, gen[(2, 2)])
    assert winner.runner_up == Rival(0, 0.65, pytest.approx(0.15))
    assert winner.untouched == Rival(1, 0.52, pytest.approx(0.28))
    assert winner.story == [
        "Started as member 0 with lr 0.01, momentum 0.9.",
        "At step 2 member 2 copied it and perturbed lr to 0.008 (* 0.8).",
        "At step 4 member 2 explored: momentum resampled to 0.95.",
        "Reached acc = 0.8 at step 6.",
    ]
    assert winner.checkpoint == "ckpt/2-6.pt"
    assert winner.export_command == "poptrain export three --best-model best.pt"
    assert winner.replay_command == "poptrain replay three --member 2"
    # the numbers agree: best so far is over the checkpointed models the winner was chosen among
    assert data.best_so_far == Curve(-1, [2, 4, 6], [0.4, 0.7, 0.8], [gen[(0, 0)], gen[(2, 1)], gen[(2, 2)]])
    assert data.summary["best_score"] == winner.score == max(data.best_so_far.values)
    assert [(m.slot, m.best_score, m.last_score, m.generation) for m in data.members] == [
        (0, 0.65, 0.65, 1),
        (1, 0.52, 0.52, 0),
        (2, 0.8, 0.8, 2),
    ]
    assert data.members[2] == MemberRow(2, "pending", 6, 2, 0.8, 0.8, {"lr": 0.008, "momentum": 0.95})


def test_margins_are_positive_for_the_better_winner_in_min_mode() -> None:
    run, storage = history("min")
    winner = data_of(run, storage).winner
    assert winner is not None and (winner.slot, winner.score) == (2, pytest.approx(0.2))
    assert winner.runner_up == Rival(0, pytest.approx(0.35), pytest.approx(0.15))
    assert winner.untouched == Rival(1, pytest.approx(0.48), pytest.approx(0.28))
    assert winner.story[-1] == "Reached acc = 0.2 at step 6."


def test_every_member_touched_has_no_untouched_rival_and_a_shell_quoted_name() -> None:
    storage = InMemoryStorage()
    run = storage.create_run("a b", spec={"population_size": 2}, seed=0, initial_hparams=[{"h": 0.5}, {"h": 0.2}])
    g = {m.slot: m.generation_id for m in storage.get_members(run.id)}
    storage.record_ready(
        run.id,
        [
            ReadyPoint(0, 1, _ckpt("0-1"), 0.6, Decision(0, 1, "explore", {"h": 0.4}, None, {"h": "* 0.8"})),
            ReadyPoint(1, 1, _ckpt("1-1"), 0.2, Decision(1, 1, "exploit", {"h": 0.6}, 0, {"h": "* 1.2"})),
        ],
        [ScoreRecord(0, 1, 0.6, g[0]), ScoreRecord(1, 1, 0.2, g[1])],
    )
    data = data_of(storage.get_run("a b"), storage)
    assert data.winner is not None and data.winner.untouched is None
    assert data.winner.replay_command == "poptrain replay 'a b' --member 0"


def test_ancestry_path_and_surviving_lineages() -> None:
    run, storage = history()
    data = data_of(run, storage)
    gen = _gens(storage, run)
    assert data.ancestry_generations == sorted([gen[(0, 0)], gen[(2, 1)], gen[(2, 2)]])
    on_path = {n.id for n in data.tree if n.on_winner_path}
    assert on_path == set(data.ancestry_generations)
    # member 2's first generation was overwritten by a copy: its lineage died; every other lives on
    assert {n.id for n in data.tree if not n.survives} == {gen[(2, 0)]}


def test_copies_decisions_and_schedules() -> None:
    run, storage = history()
    data = data_of(run, storage)
    assert data.copies == [CopyMark(2, 2, 0, 2, 0.1, 0.55)]
    assert data.decisions == [
        DecisionRow(
            2,
            2,
            "exploit",
            0,
            {"lr": "* 0.8"},
            0.1,
            0.55,
            {"lr": 0.05, "momentum": 0.1},
            {"lr": 0.008, "momentum": 0.9},
        ),
        DecisionRow(4, 0, "explore", None, {"lr": "* 1.2"}, 0.6, 0.62, {"lr": 0.01}, {"lr": 0.012}),
        DecisionRow(4, 2, "explore", None, {"momentum": "resample"}, 0.7, 0.75, {"momentum": 0.9}, {"momentum": 0.95}),
    ]
    assert data.schedules["lr"] == [
        Segment(0, 0, 4, 0.01),
        Segment(1, 0, 6, 0.001),
        Segment(2, 0, 2, 0.05),
        Segment(2, 2, 4, 0.008),
        Segment(0, 4, 6, 0.012),
        Segment(2, 4, 6, 0.008),
    ]


def test_a_copy_of_an_older_checkpoint_is_marked_as_a_gap() -> None:
    """Member 1 reaches step 4 and copies the checkpoint member 0 wrote at step 2: its new
    generation starts at step 2, its own line ended at step 4."""
    storage = InMemoryStorage()
    run = storage.create_run("async", spec={"population_size": 2}, seed=0, initial_hparams=[{"h": 0.5}, {"h": 0.2}])
    g0, g1 = (m.generation_id for m in storage.get_members(run.id))
    storage.record_scores(run.id, [ScoreRecord(0, 1, 0.3, g0), ScoreRecord(1, 1, 0.1, g1)])
    storage.record_ready(
        run.id,
        [ReadyPoint(0, 2, _ckpt("0-2"), 0.6), ReadyPoint(1, 2, _ckpt("1-2"), 0.2)],
        [ScoreRecord(0, 2, 0.6, g0), ScoreRecord(1, 2, 0.2, g1)],
    )
    storage.record_scores(run.id, [ScoreRecord(1, 3, 0.25, g1), ScoreRecord(0, 3, 0.65, g0)])
    decision = Decision(1, 4, "exploit", {"h": 0.6}, 0, {"h": "* 1.2"})
    storage.record_ready(run.id, [ReadyPoint(1, 4, _ckpt("1-4"), 0.3, decision)], [ScoreRecord(1, 4, 0.3, g1)])
    g1b = {m.slot: m for m in storage.get_members(run.id)}[1].generation_id
    storage.record_scores(run.id, [ScoreRecord(1, 3, 0.7, g1b), ScoreRecord(1, 4, 0.75, g1b)])
    data = data_of(storage.get_run("async"), storage)
    assert data.copies == [CopyMark(1, 2, 0, 4, 0.3, 0.7)]
    assert data.decisions[0].score_before == 0.3 and data.decisions[0].step == 2
    assert data.schedules["h"] == [Segment(0, 0, 3, 0.5), Segment(1, 0, 4, 0.2), Segment(1, 2, 4, 0.6)]
    # its first model's steps 3 and 4 stay (another member may descend from them), then the
    # copied model's steps 3 and 4: a curve per generation, in the order they were made
    assert data.curves[1] == Curve(1, [1, 2, 3, 4, 3, 4], [0.1, 0.2, 0.25, 0.3, 0.7, 0.75], [g1, g1, g1, g1, g1b, g1b])


def test_the_best_so_far_curve_names_the_generation_that_trained_the_best_model() -> None:
    """Member 1's first model scores 0.9 at step 4, then the member copies member 0's step-2
    checkpoint and trains steps 3 and 4 again as a new generation (0.5 at step 4): the best so
    far at step 4 is the first model's, which the new generation did not train."""
    storage = InMemoryStorage()
    run = storage.create_run("again", spec={"population_size": 2}, seed=0, initial_hparams=[{"h": 0.5}, {"h": 0.2}])
    g0, g1 = (m.generation_id for m in storage.get_members(run.id))
    storage.record_ready(
        run.id,
        [ReadyPoint(0, 2, _ckpt("0-2"), 0.6), ReadyPoint(1, 2, _ckpt("1-2"), 0.2)],
        [ScoreRecord(0, 2, 0.6, g0), ScoreRecord(1, 2, 0.2, g1)],
    )
    decision = Decision(1, 4, "exploit", {"h": 0.6}, 0, {"h": "* 1.2"})
    storage.record_ready(run.id, [ReadyPoint(1, 4, _ckpt("1-4"), 0.9, decision)], [ScoreRecord(1, 4, 0.9, g1)])
    g1b = {m.slot: m for m in storage.get_members(run.id)}[1].generation_id
    storage.record_ready(run.id, [ReadyPoint(1, 4, _ckpt("1-4b"), 0.5)], [ScoreRecord(1, 4, 0.5, g1b)])
    data = data_of(storage.get_run("again"), storage)
    assert data.best_so_far == Curve(-1, [2, 4], [0.6, 0.9], [g0, g1])


def test_settings_rows_and_params() -> None:
    run, storage = history()
    data = data_of(run, storage)
    assert data.params == [
        ParamInfo("lr", "float", True, 0.0001, 0.1, None),
        ParamInfo("momentum", "float", False, 0.0, 1.0, None),
    ]
    assert data.settings_rows == [
        ["population", "3"],
        ["metric", "acc (higher is better)"],
        ["ready", "every 2 steps"],
        ["exploit", "truncation: a member in the bottom 20% copies one from the top 20%"],
        ["explore", "perturb each hyperparameter by × 0.8 or × 1.2, or resample it with probability 0.25"],
        ["lr", "Float 0.0001 … 0.1, log scale"],
        ["momentum", "Float 0 … 1, linear scale"],
        ["seed", "7"],
        ["steps planned", "6 per member"],
    ]


def test_y_range_shows_the_top_of_the_population() -> None:
    # second half (steps 3..6): 12 scores, their 10% quantile 0.45; best 0.8; padded 5% of 0.35
    run, storage = history()
    assert data_of(run, storage).y_range == pytest.approx([0.45 - 0.0175, 0.8 + 0.0175])
    run, storage = history("min")
    assert data_of(run, storage).y_range == pytest.approx([0.2 - 0.0175, 0.55 + 0.0175])
    empty = InMemoryStorage()
    one = empty.create_run("one", spec={"population_size": 1}, seed=0, initial_hparams=[{"h": 0.5}])
    gid = empty.get_members(one.id)[0].generation_id
    empty.record_scores(one.id, [ScoreRecord(0, 1, 0.5, gid), ScoreRecord(0, 2, math.nan, gid)])
    assert data_of(empty.get_run("one"), empty).y_range is None


def test_y_range_never_hides_the_best_so_far_curve() -> None:
    run, storage = history()
    data = data_of(run, storage)
    assert data.y_range is not None
    low, high = data.y_range
    late = [v for s, v in zip(data.best_so_far.steps, data.best_so_far.values) if 2 * s >= 6]
    assert all(low <= v <= high for v in late) and data.winner is not None and low < data.winner.score < high


def test_evaluations_rows_carry_the_hyperparameters_that_trained_them() -> None:
    run, storage = history()
    ev = data_of(run, storage).evaluations
    assert [c["name"] for c in ev["columns"]] == ["lr", "momentum"]
    assert [c["log"] for c in ev["columns"]] == [True, False]
    rows = {(slot, step): i for i, (slot, step) in enumerate(zip(ev["slot"], ev["step"]))}
    assert len(rows) == len(ev["score"]) == 18
    i = rows[(2, 3)]  # trained by the copy (lr 0.008, momentum 0.9)
    assert (ev["columns"][0]["values"][i], ev["columns"][1]["values"][i], ev["score"][i]) == (0.008, 0.9, 0.55)
    i = rows[(2, 2)]  # still its own first generation
    assert (ev["columns"][0]["values"][i], ev["columns"][1]["values"][i]) == (0.05, 0.1)


def test_evaluations_encode_choices_and_layers() -> None:
    storage = InMemoryStorage()
    space = {
        "opt": {"type": "choice", "options": ["sgd", "adam"], "ordered": False},
        "widths": {"type": "widths", "low": 8, "high": 64, "layers": 2, "step": 8},
    }
    run = storage.create_run(
        "c",
        spec={"population_size": 2, "space": space},
        seed=0,
        initial_hparams=[{"opt": "adam", "widths": [16, 32]}, {"opt": "sgd", "widths": [8, 8]}],
    )
    g = [m.generation_id for m in storage.get_members(run.id)]
    storage.record_scores(run.id, [ScoreRecord(0, 1, 0.5, g[0]), ScoreRecord(1, 1, math.inf, g[1])])
    data = data_of(storage.get_run("c"), storage, importance=False)
    ev = data.evaluations
    assert ev["columns"] == [
        {"name": "opt", "log": False, "labels": ["sgd", "adam"], "values": [1.0, 0.0]},
        {"name": "widths", "log": False, "labels": None, "values": [48.0, 16.0]},
    ]
    assert ev["score"] == [0.5, None]
    assert data.params[0] == ParamInfo("opt", "choice", False, None, None, ["sgd", "adam"])
    assert ["opt", "Choice of sgd, adam"] in data.settings_rows


def _random_search(count: int, params: tuple[str, ...] = ("x", "y")) -> tuple[Any, InMemoryStorage]:
    """``count`` members, two steps each, whose score depends on ``x`` alone."""
    rng = np.random.default_rng(3)
    storage = InMemoryStorage()
    space = {p: {"type": "float", "low": 0.0, "high": 1.0, "log": False} for p in params}
    hparams = [{p: float(rng.uniform()) for p in params} for _ in range(count)]
    run = storage.create_run("rs", spec={"population_size": count, "space": space}, seed=0, initial_hparams=hparams)
    members = storage.get_members(run.id)
    storage.record_scores(
        run.id,
        [
            ScoreRecord(m.slot, step, hparams[m.slot]["x"] ** 2 + 0.01 * step, m.generation_id)
            for m in members
            for step in (1, 2)
        ],
    )
    return storage.get_run("rs"), storage


def test_importance_finds_the_parameter_the_score_depends_on() -> None:
    run, storage = _random_search(20)
    found = data_of(run, storage).importance
    assert found is not None and found.evaluations == 40
    assert list(found.values) == ["x", "y"] and found.values["x"] > 0.7
    assert sum(found.values.values()) == pytest.approx(1.0)
    assert found.method.startswith("random-forest impurity importance (scikit-learn RandomForestRegressor, 200 trees")
    assert "with the training step as a control, over 40 evaluations" in found.method
    assert found.noise < found.values["x"] and found.explained is not None and found.explained > 0.5


def test_importance_needs_ten_evaluations_and_two_parameters() -> None:
    run, storage = _random_search(4)  # 8 evaluations
    assert data_of(run, storage).importance is None
    run, storage = _random_search(20, params=("x",))
    assert data_of(run, storage).importance is None


def test_progress_with_a_fixed_clock() -> None:
    run, storage = history()
    members, scores = storage.get_members(run.id), storage.get_scores(run.id)
    # finished: 18 of 18 steps, no estimate; the newest score at 1000 + 3 * 6 + 2
    assert run_progress(run, members, scores, now=2000.0) == Progress(18, 18, None, 1020.0)
    storage.set_run_state(run.id, "running")
    running = storage.get_run("three")
    half = [s for s in scores if s.step <= 3]  # 9 scores from 1003 to 1011: 1 per second
    half_members = [m for m in members]
    progress = run_progress(running, [_at(m, 3) for m in half_members], half, now=1013.0)
    # 9 of 18 steps done, 9 left at 1 per second, 2 seconds since the newest score
    assert progress == Progress(9, 18, 7.0, 1011.0)


def _at(member: Any, step: int) -> Any:
    from dataclasses import replace

    return replace(member, step=step)


def test_best_so_far_agrees_with_the_winner_on_a_real_run(tmp_path: Path) -> None:
    run = toy_run(tmp_path, population=4)
    checkpoints = run.storage.get_checkpoints(run.record.id)
    best = run.best()
    data = report_data(run.record, run.members(), run.lineage(), run.scores(), best, checkpoints=checkpoints)
    assert data.winner is not None and best is not None
    assert max(data.best_so_far.values) == data.winner.score == data.summary["best_score"] == best.score
    assert data.best_so_far.steps == sorted({c.step for c in checkpoints})
    assert data.winner.story[-1] == f"Reached Q = {best.score:.4g} at step {best.step}."
