"""Schedule replay: a fresh model trained along a member's schedule, no weights copied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

import poptrain
from cli_helpers import cli, one_line_error
from pbt_helpers import Tracer, make_run
from poptrain.replay import Schedule, contiguous, per_step, schedule_from_dict
from poptrain.results import ScheduleSegment
from poptrain.seeding import member_seed


def seg(start: int, end: int, rate: float, slot: int = 0, kind: str = "explore") -> ScheduleSegment:
    return ScheduleSegment(slot, start, end, {"rate": rate, "width": 2}, kind)


class SeededTracer(Tracer):
    """A Tracer whose initial ``x`` comes from its seed: the model remembers where it started."""

    def setup(self, hparams, context):
        super().setup(hparams, context)
        self.x = (context.seed % 1000) / 1000.0


class Recorder(SeededTracer):
    """Records each ``set_hparams`` call (steps trained so far, values) and refuses to load state."""

    made: ClassVar[list[Recorder]] = []

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict]] = []
        Recorder.made.append(self)

    def set_hparams(self, hparams):
        self.calls.append((len(self.trace), dict(hparams)))
        super().set_hparams(hparams)

    def load_state_dict(self, state):
        raise AssertionError("a replay must not load any state")


# --- the pure part ----------------------------------------------------------------------------
def test_per_step_hparams_and_schedule_views() -> None:
    segments = (seg(0, 2, 0.1, kind="init"), seg(2, 5, 0.2), seg(5, 6, 0.3))
    assert [h["rate"] for h in per_step(segments)] == [0.1, 0.1, 0.2, 0.2, 0.2, 0.3]
    schedule = Schedule(segments)
    assert (schedule.total_steps, len(schedule), schedule.initial["rate"]) == (6, 6, 0.1)
    assert [(step, h["rate"]) for step, h in schedule] == [(1, 0.1), (2, 0.1), (3, 0.2), (4, 0.2), (5, 0.2), (6, 0.3)]
    assert [schedule.hparams_at(k)["rate"] for k in (1, 2, 3, 5, 6)] == [0.1, 0.1, 0.2, 0.2, 0.3]
    assert [(step, h["rate"]) for step, h in schedule.changes()] == [(2, 0.2), (5, 0.3)]
    with pytest.raises(poptrain.ConfigError, match="from 1 to 6"):
        schedule.hparams_at(0)
    short = schedule.truncate(3)
    assert [(s.start_step, s.end_step) for s in short.segments] == [(0, 2), (2, 3)]


def test_a_copied_older_checkpoint_leaves_a_gap_that_is_closed() -> None:
    # member 1 copied member 0's checkpoint of step 4 when it was at step 6 itself
    segments = [seg(0, 4, 0.1, slot=0, kind="init"), seg(6, 9, 0.5, slot=1, kind="exploit"), seg(9, 9, 0.7, slot=1)]
    assert [(s.slot, s.start_step, s.end_step) for s in contiguous(segments)] == [(0, 0, 4), (1, 4, 7)]
    assert [h["rate"] for h in per_step(segments)] == [0.1] * 4 + [0.5] * 3


# --- replaying a stored run ---------------------------------------------------------------------
def exploited_run(tmp_path: Path) -> poptrain.Run:
    """A synchronous run whose best member's model started in another slot."""
    run = make_run("traced", seed=18, synchronous=True, storage="sqlite", tmp_path=tmp_path).optimize(
        SeededTracer, steps=12
    )
    best = run.best()
    assert best.schedule[0].slot != best.slot and any(s.kind == "exploit" for s in best.schedule)
    return run


def test_replay_follows_the_best_schedule_without_copying_weights(tmp_path: Path) -> None:
    run = exploited_run(tmp_path)
    best = run.best()
    Recorder.made.clear()
    result = run.replay(Recorder)
    [model] = Recorder.made
    # set_hparams exactly at each segment boundary, with that segment's values; nothing loaded
    assert model.calls == [(s.start_step, s.hparams) for s in best.schedule[1:]]
    assert model.trace == run.load_state(best.checkpoint)["trace"]  # trained with the same hparams each step
    stored = {(s.slot, s.step): s.value for s in run.scores()}
    assert result.original_score == best.score == stored[(best.slot, best.step)]
    assert (result.steps, result.metric, result.mode) == (12, "score", "max")
    # started from the root member's seed, the deterministic replay is the original, step for step
    assert result.seed == member_seed(18, best.schedule[0].slot)
    assert result.scores == result.original and result.score == best.score and result.difference == 0.0
    # ... and from the replayed member's own seed, it is not
    other = run.replay(SeededTracer, seed=member_seed(18, best.slot), save=False)
    assert other.score != best.score
    saved = json.loads((tmp_path / "traced" / "replays" / f"member-{best.slot}.json").read_text())
    assert (saved["member"], saved["score"], saved["original_score"]) == (best.slot, best.score, best.score)
    assert saved["scores"] == list(result.scores) and saved["schedule"]["format"] == "poptrain.schedule/1"


def test_every_member_of_an_asynchronous_run_replays_its_curve(tmp_path: Path) -> None:
    run = make_run("async", seed=2, exploit=poptrain.tournament(), storage="sqlite", tmp_path=tmp_path)
    run.optimize(SeededTracer, steps=15)
    gaps = 0
    for member in run.members():
        gaps += any(a.end_step < b.start_step for a, b in zip(run.schedule(member.slot), run.schedule(member.slot)[1:]))
        result = run.replay(SeededTracer, member.slot, save=False)
        state = run.load_state(run.storage.get_checkpoint(member.checkpoint_id))
        assert result.steps == len(state["trace"]) and result.score == state["x"] == result.original_score
        assert result.scores == result.original
    assert gaps == 0  # comparisons are fair: a member copies a donor's checkpoint from its own step


def test_replay_steps_and_errors(tmp_path: Path) -> None:
    run = exploited_run(tmp_path)
    result = run.replay(SeededTracer, 2, steps=5, save=False)
    assert result.steps == 5 and result.original_score == result.original[4] == result.scores[4]
    with pytest.raises(poptrain.ConfigError, match=r"no member 9 in run 'traced'; its members are 0..5"):
        run.replay(SeededTracer, 9)
    with pytest.raises(poptrain.ConfigError, match="was not started by `poptrain run`.*replay\\(YourTrainable\\)"):
        run.replay()
    with pytest.raises(poptrain.ConfigError, match="from 1 to 12"):
        run.replay(SeededTracer, steps=13)
    with pytest.raises(poptrain.ConfigError, match="no trained member yet"):
        make_run("fresh").replay(SeededTracer)


def test_a_vectorized_trainable_replays_one_member_alone() -> None:
    import torch
    import torch.nn.functional as F
    from torch import nn

    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    y = 2 * x

    def evaluate(predict):
        return {"neg_mse": -((predict(x) - y) ** 2).mean(dim=(1, 2))}

    spec = poptrain.VectorizedTrainable(
        lambda: nn.Linear(1, 1), (x, y), F.mse_loss, evaluate, batch_size=8, device="cpu"
    )
    run = poptrain.create_run(
        name="vec",
        space={"lr": poptrain.Float(0.01, 0.3, log=True)},
        population_size=2,
        metric="neg_mse",
        ready=poptrain.every(2),
        exploit=None,
        storage="memory",
    )
    run.optimize(spec, steps=4, executor="vectorized")
    result = run.replay(spec, 0)
    assert result.steps == 4 and result.score == pytest.approx(result.original_score, rel=1e-4, abs=1e-6)


# --- the JSON format -----------------------------------------------------------------------------
def test_schedule_json_round_trip_drives_an_own_loop(tmp_path: Path) -> None:
    run = exploited_run(tmp_path)
    path = tmp_path / "schedule.json"
    data = run.export_schedule(path=path)
    assert json.loads(path.read_text()) == data
    assert (data["format"], data["run"], data["member"], data["total_steps"]) == (
        "poptrain.schedule/1",
        "traced",
        run.best().slot,
        12,
    )
    schedule = poptrain.load_schedule(path)
    assert schedule == run.replay_schedule()
    x, trace = (schedule.seed % 1000) / 1000.0, []  # an own training loop: SeededTracer by hand
    for _, hparams in schedule:
        x += hparams["rate"]
        trace.append(hparams)
    assert x == run.best().score and trace == run.load_state(run.best().checkpoint)["trace"]
    result = poptrain.replay.replay(SeededTracer, schedule)
    assert result.scores == schedule.original


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON at line 1"),
        ('{"format": "other/2", "segments": []}', "format is 'other/2'; expected 'poptrain.schedule/1'"),
        ('{"format": "poptrain.schedule/1", "segments": []}', "segments must be a non-empty list"),
        (
            (
                '{"format": "poptrain.schedule/1", "segments": [{"start_step": 0, "end_step": 2, "hparams": {"a": 1}}, '
                '{"start_step": 3, "end_step": 4, "hparams": {"a": 2}}]}'
            ),
            "segments[1].start_step is 3, expected 2",
        ),
        (
            '{"format": "poptrain.schedule/1", "segments": [{"start_step": 0, "end_step": 0, "hparams": {"a": 1}}]}',
            "end_step (0) must be greater than its start_step (0)",
        ),
        (
            '{"format": "poptrain.schedule/1", "total_steps": 5, "segments": [{"start_step": 0, "end_step": 2, "hparams": {"a": 1}}]}',
            "total_steps is 5 but the segments end at step 2",
        ),
    ],
)
def test_a_bad_schedule_file_gets_a_clear_error(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(poptrain.ConfigError) as info:
        poptrain.load_schedule(path)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value)
    with pytest.raises(poptrain.ConfigError, match="does not exist"):
        poptrain.load_schedule(tmp_path / "missing.json")


def test_a_minimal_hand_written_schedule_is_accepted() -> None:
    schedule = schedule_from_dict(
        {
            "format": "poptrain.schedule/1",
            "segments": [
                {"start_step": 0, "end_step": 1, "hparams": {"rate": 0.5}},
                {"start_step": 1, "end_step": 3, "hparams": {"rate": 0.25}},
            ],
        }
    )
    assert [h["rate"] for _, h in schedule] == [0.5, 0.25, 0.25] and schedule.seed is None
    assert [s.kind for s in schedule.segments] == ["init", "explore"]


# --- the command line ----------------------------------------------------------------------------
def test_cli_replay_export_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "runs")
    assert cli(capsys, "run", "poptrain.experiments.toy", "--root", root, "--steps", "12", "--quiet")[0] == 0
    best = poptrain.load_run("toy", root=root).best()
    code, out, err = cli(capsys, "replay", "toy", "--root", root)
    assert code == 0, err
    assert f"Replay of run toy, member {best.slot}: 12 steps" in out and "original Q" in out and "replay Q" in out
    row = next(line for line in out.splitlines() if line.startswith("│"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert (
        cells[:3] == [str(best.slot), "12", f"{best.score:.4f}"] and cells[4] == "+0.0000"
    )  # the toy is deterministic
    assert (
        "replay: step 12/12" in err and (tmp_path / "runs" / "toy" / "replays" / f"member-{best.slot}.json").is_file()
    )

    code, out, _ = cli(capsys, "replay", "toy", "--root", root, "--member", "0", "--seed", "7", "--quiet")
    assert code == 0 and "member 0: 12 steps" in out and "seed 7" in out

    target = tmp_path / "schedule.json"
    assert cli(capsys, "export", "toy", "--root", root, "--schedule", "--member", "1", "-o", str(target))[0] == 0
    assert json.loads(target.read_text())["member"] == 1
    code, out, err = cli(capsys, "replay", "--schedule", str(target), "poptrain.experiments.toy", "--quiet")
    assert code == 0, err
    assert "Replay of run toy, member 1: 12 steps" in out

    assert "no member 5 in run 'toy'" in one_line_error(capsys, "replay", "toy", "--root", root, "--member", "5")
    assert "no run named 'ghost'" in one_line_error(capsys, "replay", "ghost", "--root", root)
    assert "--schedule" in one_line_error(capsys, "export", "toy", "--root", root)
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert "expected a JSON object" in one_line_error(
        capsys, "replay", "--schedule", str(bad), "poptrain.experiments.toy"
    )


def test_cli_replay_of_a_run_made_in_python_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run("python", storage=None, tmp_path=tmp_path).optimize(Tracer, steps=3).close()
    line = one_line_error(capsys, "replay", "python", "--root", str(tmp_path))
    assert "was not started by `poptrain run`" in line and "replay(YourTrainable)" in line
