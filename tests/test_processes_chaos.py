"""Chaos on the processes executor (loopback only, bounded): the driver SIGKILLed mid-run and
resumed, a worker SIGKILLed every second or so, a worker paused (SIGSTOP) and continued.
Afterwards every (member, step) has exactly one score, no step is missing, the lineage is
consistent and no process of the run is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import poptrain
from kill_target import POPULATION, STEPS, SlowToy, open_run
from test_processes import assert_complete_and_consistent
from test_processes_orphans import alive, children

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent


def workers_of(pid: int) -> set[int]:
    return {p for p in children(pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")}


def test_driver_killed_then_resumed_loses_nothing_and_leaves_no_process(tmp_path: Path) -> None:
    open_run(str(tmp_path), synchronous=False)  # created here, trained by the driver below
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    script = (
        "import sys; from kill_target import open_run, SlowToy, STEPS; "
        "open_run(sys.argv[1], False).optimize(SlowToy, steps=STEPS, executor='processes', workers=2, flush_seconds=0.0)"
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    workers: set[int] = set()
    try:
        run = poptrain.load_run("killed", root=tmp_path) if (tmp_path / "killed").exists() else None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            workers |= workers_of(driver.pid)
            run = run or poptrain.load_run("killed", root=tmp_path)
            if sum(m.step for m in run.members()) > POPULATION * 10:
                break
            time.sleep(0.05)
        assert len(workers) == 2
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in workers):
            time.sleep(0.1)
        assert not any(alive(p) for p in workers), "a worker outlived its driver"
        assert run is not None and run.refresh().record.state == "running"  # killed: nobody could say otherwise
        poptrain.load_run("killed", root=tmp_path).optimize(SlowToy, steps=STEPS, executor="processes", workers=2)
        assert_complete_and_consistent(poptrain.load_run("killed", root=tmp_path), POPULATION, STEPS)
    finally:
        for pid in workers | {driver.pid}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _chaos(action, *, every: float, times: int, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        done = 0
        while done < times and not stop.wait(every):
            found = sorted(workers_of(os.getpid()))
            if found:
                action(found[done % len(found)])
                done += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_a_worker_killed_every_second_costs_only_its_segments(tmp_path: Path) -> None:
    run = open_run(str(tmp_path), synchronous=False)
    executor = poptrain.ProcessesExecutor(2)
    stop = threading.Event()
    thread = _chaos(lambda pid: os.kill(pid, signal.SIGKILL), every=1.0, times=4, stop=stop)
    try:
        run.optimize(SlowToy, steps=STEPS * 2, executor=executor)
    finally:
        stop.set()
        thread.join()
    assert executor.lost >= 1
    assert_complete_and_consistent(run, POPULATION, STEPS * 2)
    assert not workers_of(os.getpid())


def test_a_paused_worker_holds_up_only_its_member(tmp_path: Path) -> None:
    run = open_run(str(tmp_path), synchronous=False)
    stop = threading.Event()

    def pause(pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)
        time.sleep(2.0)
        os.kill(pid, signal.SIGCONT)

    thread = _chaos(pause, every=0.5, times=2, stop=stop)
    try:
        run.optimize(SlowToy, steps=STEPS, executor="processes", workers=2)
    finally:
        stop.set()
        thread.join()
    assert_complete_and_consistent(run, POPULATION, STEPS)


def test_a_lease_worker_paused_past_its_lease_is_fenced_off(tmp_path: Path) -> None:
    """Two `poptrain worker`s share a run through leases; one is paused (SIGSTOP) for longer than
    its lease, the other takes its member over, and when the paused one continues, its writes
    for that member are refused (a stale lease) instead of doubling the member's steps."""
    open_run(str(tmp_path), synchronous=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    workers = [
        subprocess.Popen(
            [sys.executable, str(TESTS / "worker_target.py"), str(tmp_path), "1.0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "go"
        run = poptrain.load_run("killed", root=tmp_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(m.step for m in run.members()) < POPULATION * 6:
            time.sleep(0.05)
        os.kill(workers[0].pid, signal.SIGSTOP)
        time.sleep(3.0)  # three lease lengths: its member is taken over
        os.kill(workers[0].pid, signal.SIGCONT)
        for worker in workers:
            _, err = worker.communicate(timeout=180)
            assert worker.returncode == 0, err[-2000:]
        assert_complete_and_consistent(poptrain.load_run("killed", root=tmp_path), POPULATION, STEPS)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
