"""Resume after SIGKILL at random points: nothing lost, nothing counted twice, and the same
lineage and scores as a run that was never interrupted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import poptrain
from kill_target import POPULATION, STEPS, SlowToy, open_run
from pbt_helpers import lineage_signature

TESTS = Path(__file__).resolve().parent


def start(root: Path, synchronous: bool) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, str(TESTS / "kill_target.py"), str(root), "1" if synchronous else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def scores_of(run: poptrain.Run) -> list[tuple[int, int, float]]:
    return sorted((s.slot, s.step, round(s.value, 12)) for s in run.scores())


@pytest.mark.slow
@pytest.mark.parametrize("synchronous", [False, True], ids=["async", "sync"])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path: Path, synchronous: bool) -> None:
    reference = open_run(str(tmp_path / "reference"), synchronous).optimize(SlowToy, steps=STEPS)

    rng = random.Random(1 if synchronous else 2)
    kills = 0
    for _ in range(5):
        child = start(tmp_path / "killed", synchronous)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "go"
        time.sleep(rng.uniform(0.05, 0.8))  # import done; land somewhere in creation or training
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait(timeout=60)
    assert kills >= 3, "the run finished before it could be killed; slow it down"
    final = start(tmp_path / "killed", synchronous)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert "done" in out

    resumed = poptrain.load_run("killed", root=tmp_path / "killed")
    counts = Counter((slot, step) for slot, step, _ in scores_of(resumed))
    assert set(counts.values()) == {1}, "a step was counted twice"
    assert len(counts) == POPULATION * STEPS, "a step is missing"
    assert scores_of(resumed) == scores_of(reference)
    assert lineage_signature(resumed) == lineage_signature(reference)
    assert resumed.record.state == "finished"
    assert all(m.state == "finished" and m.step == STEPS for m in resumed.members())
    best, expected = resumed.best(), reference.best()
    assert best is not None and expected is not None
    assert (best.slot, best.score, best.schedule) == (expected.slot, expected.score, expected.schedule)


def test_cli_resume_continues_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from poptrain.cli.main import main

    root = str(tmp_path)
    assert main(["run", "poptrain.experiments.toy", "--root", root, "--steps", "12", "--quiet"]) == 0
    assert main(["resume", "toy", "--root", root, "--steps", "24", "--quiet"]) == 0
    run = poptrain.load_run("toy", root=root)
    assert all(m.step == 24 for m in run.members())
    assert Counter((s.slot, s.step) for s in run.scores()).most_common(1)[0][1] == 1
    capsys.readouterr()
    assert main(["resume", "toy", "--root", root, "--steps", "0"]) == 2
    assert "steps must be a whole number >= 1" in capsys.readouterr().err
