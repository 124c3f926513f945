"""Asynchronous PBT in worker processes sharing one SQLite database: every step exactly once,
a consistent lineage, and a killed worker's member taken over after its lease expires."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import poptrain
from kill_target import POPULATION, STEPS, SlowToy, open_run
from poptrain.executors.processes import work
from worker_target import job

TESTS = Path(__file__).resolve().parent


def assert_complete_and_consistent(run: poptrain.Run, population: int, steps: int) -> None:
    counts = Counter((s.slot, s.step) for s in run.scores())
    assert set(counts.values()) == {1}, "a step was counted twice"
    assert len(counts) == population * steps, "a step is missing"
    assert all(m.state == "finished" and m.step == steps for m in run.members())
    generations = {g.id: g for g in run.lineage()}
    checkpoints = {c.id: c for c in run.storage.get_checkpoints(run.record.id)}
    for gen in generations.values():
        if gen.kind == "exploit":
            loaded = checkpoints[gen.loaded_checkpoint_id]  # the model the donor held: its own, or one it copied
            assert generations[gen.parent_id].slot == loaded.slot
            assert loaded.step >= 4  # a donor's checkpoint is one of its ready points
    best = run.best()
    assert best is not None and best.schedule[0].start_step == 0


@pytest.mark.slow
def test_two_worker_processes_train_every_step_once(tmp_path: Path) -> None:
    run = open_run(str(tmp_path), synchronous=False)
    run.optimize(SlowToy, steps=STEPS, executor="processes", workers=2)
    assert run.refresh().record.state == "finished"
    assert_complete_and_consistent(run, POPULATION, STEPS)
    assert any(g.kind == "exploit" for g in run.lineage())


@pytest.mark.slow
def test_killed_worker_member_is_taken_over(tmp_path: Path) -> None:
    open_run(str(tmp_path), synchronous=False)  # create it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, str(TESTS / "worker_target.py"), str(tmp_path), "1.0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "go"
    run = poptrain.load_run("killed", root=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it between two ready points of a member, past step 4
        members = run.members()
        if sum(m.step for m in members) > 6 and any(m.step != m.last_ready_step for m in members):
            break
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    leased = [m for m in run.members() if m.step != m.last_ready_step]
    points = work(job(str(tmp_path), 1.0))  # takes over once the dead worker's lease expires
    assert points > 0
    assert_complete_and_consistent(run, POPULATION, STEPS)
    assert leased, "the kill should have landed mid-segment (scores are written every step here)"


def test_processes_need_checkpoints_the_workers_share(tmp_path: Path) -> None:
    run = poptrain.create_run(
        name="m",
        space={"h0": poptrain.Float(0, 1), "h1": poptrain.Float(0, 1)},
        population_size=2,
        metric="Q",
        storage="memory",
    )
    with pytest.raises(poptrain.ConfigError, match="needs checkpoints in a folder or URL the workers share"):
        run.optimize(SlowToy, steps=4, executor="processes", workers=2)
    with pytest.raises(poptrain.ConfigError, match="workers=3 needs executor='processes'"):
        run.optimize(SlowToy, steps=4, workers=3)
