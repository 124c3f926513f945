"""User code that misbehaves gets a clear error naming the member, and the run records it."""

from __future__ import annotations

from pathlib import Path

import pytest

import poptrain
from poptrain.experiments.toy import INITIAL_H, SPACE, ToyQuadratic


class NoMetric(ToyQuadratic):
    def evaluate(self) -> dict[str, float]:
        return {"loss": 1.0}


class Crashes(ToyQuadratic):
    def step(self) -> None:
        raise ValueError("diverged")


FLAKED: set[tuple[int, int]] = set()


class FlakyOnce(ToyQuadratic):
    """Fails once at step 6 of member 0: an exception, or (with ``nan``) a NaN score."""

    nan = False

    def setup(self, hparams, context) -> None:  # type: ignore[no-untyped-def]
        super().setup(hparams, context)
        self.slot, self.steps = context.slot, 0

    def load_state_dict(self, state) -> None:  # type: ignore[no-untyped-def]
        super().load_state_dict(state)
        self.steps = int(state["steps"])

    def state_dict(self) -> dict:
        return {**super().state_dict(), "steps": self.steps}

    def step(self) -> None:
        self.steps += 1
        super().step()
        if not self.nan and (self.slot, self.steps) == (0, 6) and (0, 6) not in FLAKED:
            FLAKED.add((0, 6))
            raise RuntimeError("out of memory (once)")

    def evaluate(self) -> dict[str, float]:
        if self.nan and (self.slot, self.steps) == (0, 6) and (0, 6) not in FLAKED:
            FLAKED.add((0, 6))
            return {"Q": float("nan")}
        return super().evaluate()


class FlakyNaN(FlakyOnce):
    nan = True


def toy_run(tmp_path: Path, name: str = "t", **kwargs: object) -> poptrain.Run:
    return poptrain.create_run(
        name=name, space=SPACE, population_size=2, metric="Q", root=tmp_path, initial_hparams=INITIAL_H, **kwargs
    )  # type: ignore[arg-type]


def test_missing_metric_is_named(tmp_path: Path) -> None:
    with pytest.raises(poptrain.MetricError, match=r"evaluate\(\) returned metrics \['loss'\] without 'Q'"):
        toy_run(tmp_path).optimize(NoMetric, steps=4)


def test_run_where_every_member_fails_stops_with_a_clear_error(tmp_path: Path) -> None:
    run = toy_run(tmp_path)
    with pytest.raises(poptrain.TrainableError, match=r"every member keeps failing|no healthy member") as info:
        run.optimize(Crashes, steps=20)
    assert "ValueError: diverged" in str(info.value)
    reloaded = poptrain.load_run("t", root=tmp_path)
    assert reloaded.record.state == "failed"
    failed = [m for m in reloaded.members() if m.state == "failed"]
    assert failed and "Traceback" in (failed[0].error or "") and "ValueError: diverged" in (failed[0].error or "")
    assert max(m.failures for m in reloaded.members()) == 3  # the first try and 2 retries


def test_a_failed_step_is_retried_from_the_checkpoint_and_changes_nothing(tmp_path: Path) -> None:
    FLAKED.clear()
    clean = toy_run(tmp_path, "clean", synchronous=True, exploit=poptrain.truncation(0.5)).optimize(
        FlakyOnce.__base__, steps=16
    )
    FLAKED.clear()
    retried = toy_run(tmp_path, "flaky", synchronous=True, exploit=poptrain.truncation(0.5)).optimize(
        FlakyOnce, steps=16
    )
    assert FLAKED == {(0, 6)}
    member0 = retried.members()[0]
    assert member0.state == "finished" and member0.failures == 0  # a ready point since
    assert "step 6" in (member0.error or "")  # the last failure stays visible
    key = lambda r: sorted((s.slot, s.step, s.value) for s in r.scores())
    assert key(retried) == key(clean)
    assert [(g.slot, g.number, g.kind, g.donor, g.start_step) for g in retried.lineage()] == [
        (g.slot, g.number, g.kind, g.donor, g.start_step) for g in clean.lineage()
    ]


def test_a_non_finite_score_is_not_retried_but_replaced_by_a_copy(tmp_path: Path) -> None:
    """A retry would draw the same random numbers and score NaN again: the member is replaced at
    once by a copy of the best member with a checkpoint (as the vectorized executor does)."""
    FLAKED.clear()
    run = toy_run(tmp_path, "nan", synchronous=True, exploit=poptrain.truncation(0.5)).optimize(FlakyNaN, steps=16)
    assert FLAKED == {(0, 6)}
    replaced = [g for g in run.lineage() if g.slot == 0 and "replaced" in g.operations]
    assert (
        len(replaced) == 1 and replaced[0].donor == 1 and "retrying cannot help" in replaced[0].operations["replaced"]
    )
    assert replaced[0].start_step == 4  # from member 1's step-4 checkpoint: step 5 kept nothing
    assert all(m.state == "finished" and m.step == 16 for m in run.members())


class BadRate(ToyQuadratic):
    """Fails whenever h0 is above 0.9: a member starting there must be replaced."""

    def step(self) -> None:
        if self.h[0] > 0.9:
            raise FloatingPointError("diverged at this learning rate")
        super().step()


def test_member_failing_too_often_is_replaced_by_a_copy_of_the_best(tmp_path: Path) -> None:
    run = poptrain.create_run(
        name="r",
        space=SPACE,
        population_size=3,
        metric="Q",
        root=tmp_path,
        explore=None,
        initial_hparams=[{"h0": 1.0, "h1": 0.0}, {"h0": 0.5, "h1": 0.5}, {"h0": 0.3, "h1": 0.2}],
    ).optimize(BadRate, steps=12, max_retries=2)
    member0 = run.members()[0]
    assert member0.state == "finished" and member0.hparams == {"h0": 0.5, "h1": 0.5}
    replacement = [g for g in run.lineage() if g.slot == 0 and "replaced" in g.operations]
    assert len(replacement) == 1 and replacement[0].donor == 1 and replacement[0].kind == "replace"
    assert "after 3 failures" in replacement[0].operations["replaced"]
    steps = sorted(s.step for s in run.scores() if s.slot == 0)
    start = replacement[0].start_step  # one clock: it continues from the copied checkpoint's step
    assert start == 4 and steps == list(range(start + 1, 13))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population_size": 0}, "population_size must be a whole number from 1 to 1000000"),
        ({"mode": "maximise"}, "mode must be 'max' or 'min'"),
        ({"name": "bad/name"}, "not usable as a folder name"),
        ({"seed": -1}, "seed must be a whole number from 0 to 9223372036854775807"),
    ],
)
def test_bad_run_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"name": "ok", "space": SPACE, "population_size": 2, "root": tmp_path, **kwargs}
    with pytest.raises(poptrain.ConfigError, match=message):
        poptrain.create_run(**args)
    assert not any(tmp_path.iterdir())


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    run = toy_run(tmp_path).optimize(ToyQuadratic, steps=8)
    best = run.best()
    assert best is not None and best.checkpoint is not None
    path = tmp_path / "t" / "checkpoints" / best.checkpoint.uri
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(poptrain.CheckpointError, match="corrupt"):
        run.load_state(best.checkpoint)


def test_status_shows_a_stored_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from poptrain.cli.main import main

    with pytest.raises(poptrain.TrainableError):
        toy_run(tmp_path).optimize(Crashes, steps=8)
    capsys.readouterr()
    assert main(["status", "t", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "member 0 failed (3 in a row)" in out and "ValueError: diverged" in out and "Traceback" in out


def test_full_disk_stops_with_a_clear_error_and_the_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = {"n": 0}
    monkeypatch.setattr("os.fdopen", _failing_fdopen(writes))  # the disk fills after 5 checkpoint files
    run = toy_run(tmp_path, "disk", synchronous=True, exploit=poptrain.truncation(0.5))
    with pytest.raises(poptrain.CheckpointError, match="No space left on device.*free disk space"):
        run.optimize(ToyQuadratic, steps=40)
    monkeypatch.undo()
    assert not list((tmp_path / "disk" / "checkpoints").rglob("*.tmp")), "a half-written file was left"
    resumed = poptrain.load_run("disk", root=tmp_path).optimize(ToyQuadratic, steps=40)
    steps = sorted((s.slot, s.step) for s in resumed.scores())
    assert steps == sorted((slot, step) for slot in (0, 1) for step in range(1, 41))


def _failing_fdopen(writes: dict):  # type: ignore[no-untyped-def]
    import errno
    import os

    real = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if "w" in mode:
            writes["n"] += 1
            if writes["n"] > 5:
                os.close(fd)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, mode, *args, **kwargs)

    return fdopen


def test_worker_command_trains_a_run_to_its_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from poptrain.cli.main import main

    root = str(tmp_path)
    poptrain.create_run(
        name="joined",
        space=SPACE,
        population_size=2,
        metric="Q",
        root=root,
        initial_hparams=INITIAL_H,
        meta={"target": "poptrain.experiments.toy", "steps": 12},
    )
    assert main(["worker", "joined", "--root", root]) == 0
    assert "worker done: 6 ready points" in capsys.readouterr().out
    run = poptrain.load_run("joined", root=root)
    assert all(m.state == "finished" and m.step == 12 for m in run.members())
    assert main(["worker", "joined", "--root", root]) == 0  # nothing left: returns at once
    assert "worker done: 0 ready points" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("replace_failed", "executor"),
    [
        (None, "sequential"),
        pytest.param(None, "processes", marks=pytest.mark.slow),  # the same policy in worker processes
        (True, "sequential"),
    ],
)
def test_random_search_retires_a_failed_member_unless_told_to_replace_it(
    tmp_path: Path, replace_failed: object, executor: str
) -> None:
    """Random search (no exploit, no explore) stays random search: a member that scores NaN is
    retired, not replaced by a copy of the best (which would make it PBT); replace_failed=True
    asks for the copy, recorded as a "replace", never as an exploit."""
    FLAKED.clear()
    run = toy_run(tmp_path, f"random-{replace_failed}", exploit=None, explore=None, replace_failed=replace_failed)
    run.optimize(FlakyNaN, steps=16, executor=executor)
    member0 = run.members()[0]
    kinds = [g.kind for g in run.lineage() if g.number > 0]
    if replace_failed is None:
        assert kinds == [] and member0.state == "retired" and member0.step == 4  # retired at its last checkpoint
        assert run.members()[1].state == "finished" and run.members()[1].step == 16
        assert run.refresh().record.state == "finished"
    else:
        assert kinds == ["replace"] and member0.state == "finished" and member0.step == 16


def test_a_retired_member_stays_retired_when_the_run_continues(tmp_path: Path) -> None:
    """A resume does not bring a retired member back (its NaN would not recur here: FlakyNaN
    fails once, so a retrained member would reach the end)."""
    FLAKED.clear()
    run = toy_run(tmp_path, "random-resume", exploit=None, explore=None)
    run.optimize(FlakyNaN, steps=8)
    assert run.members()[0].state == "retired"
    run.optimize(FlakyNaN, steps=16)
    member0, member1 = run.members()[:2]
    assert (member0.state, member0.step) == ("retired", 4) and member1.step == 16
    assert max(s.step for s in run.scores() if s.slot == 0) == 4


def test_pbt_replacements_are_their_own_kind(tmp_path: Path) -> None:
    FLAKED.clear()
    run = toy_run(tmp_path, "pbt-nan", synchronous=True, exploit=poptrain.truncation(0.5)).optimize(FlakyNaN, steps=16)
    assert [g.kind for g in run.lineage() if "replaced" in g.operations] == ["replace"]
    assert run.schedule(0)[1].kind == "replace"
