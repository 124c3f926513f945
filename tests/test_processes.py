"""Asynchronous PBT in worker processes sharing one SQLite database: every step exactly once,
a consistent lineage, and a killed worker's member taken over after its lease expires."""

from __future__ import annotations

import itertools
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
    # a member that copied an older model (one clock) trains those steps again as a new
    # generation: a step is scored once per generation, and the earlier one's scores stay
    counts = Counter((s.generation_id, s.step) for s in run.scores())
    assert set(counts.values()) == {1}, "a step was counted twice"
    assert all(m.state == "finished" and m.step == steps for m in run.members())
    # no gaps: each member's model was trained one step at a time from 0 to the end along its
    # lineage (a member that copied another continues from the copy's step: one clock), and
    # every step of it has its score, by the generation that trained it
    for member in run.members():
        segments = run.schedule(member.slot)
        assert segments[0].start_step == 0 and segments[-1].end_step == steps
        assert all(a.end_step == b.start_step for a, b in itertools.pairwise(segments)), "a step is missing"
        trained = [
            (seg.generation_id, step) for seg in segments for step in range(seg.start_step + 1, seg.end_step + 1)
        ]
        missing = [key for key in trained if counts[key] != 1]
        assert not missing, f"steps of the lineage have no score: {missing}"
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
    while time.monotonic() < deadline:  # kill it mid-run, past the first ready points
        if sum(m.step for m in run.members()) > 6:
            break
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    # the segment in flight wrote nothing (a segment's scores are written with its result); its
    # member stays leased to the dead worker until the lease expires, then is taken over
    points = work(job(str(tmp_path), 1.0))
    assert points > 0
    assert_complete_and_consistent(run, POPULATION, STEPS)


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


EXPERIMENT_FILE = '''
import poptrain


class Counter(poptrain.Trainable):
    """Defined in a file that is no importable module: worker processes must load it."""

    def setup(self, hparams, context):
        self.x, self.rate = 0.0, hparams["rate"]

    def step(self):
        self.x += self.rate

    def evaluate(self):
        return self.x

    def state_dict(self):
        return {"x": self.x}

    def load_state_dict(self, state):
        self.x = state["x"]

    def set_hparams(self, hparams):
        self.rate = hparams["rate"]


def experiment():
    return {"trainable": Counter, "space": {"rate": poptrain.Float(0.1, 1.0)}, "population_size": 4, "steps": 8,
            "ready": poptrain.every(2)}
'''


@pytest.mark.slow
def test_an_experiment_file_runs_in_worker_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from poptrain.cli.main import main

    (tmp_path / "my_counter.py").write_text(EXPERIMENT_FILE)
    code = main(
        [
            "run",
            str(tmp_path / "my_counter.py"),
            "--root",
            str(tmp_path / "runs"),
            "--executor",
            "processes",
            "--workers",
            "2",
            "--quiet",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in out + err
    run = poptrain.load_run("my_counter", root=tmp_path / "runs")
    assert run.record.state == "finished" and all(m.step == 8 for m in run.members())
