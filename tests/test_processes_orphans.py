"""A SIGKILLed driver leaves no worker process training behind (they would go on writing a run
that may be resumed meanwhile)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CONFIG = (
    "trainable: poptrain.experiments.toy:ToyQuadratic\nmetric: Q\npopulation_size: 4\nsteps: 10000000\n"
    "space: {h0: {type: float, low: 0.0, high: 1.0}, h1: {type: float, low: 0.0, high: 1.0}}\n"
)


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_end_when_their_driver_is_killed(tmp_path: Path) -> None:
    (tmp_path / "long.yaml").write_text(CONFIG)
    workers: set[int] = set()
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poptrain",
            "run",
            str(tmp_path / "long.yaml"),
            "--root",
            str(tmp_path / "runs"),
            "--executor",
            "processes",
            "--workers",
            "2",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # two spawned workers training (the resource tracker is a child too)
            workers = {p for p in children(driver.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()}
            db = tmp_path / "runs" / "long" / "poptrain.db"
            if len(workers) == 2 and db.exists() and any((tmp_path / "runs" / "long" / "checkpoints").rglob("*.pt")):
                break
            time.sleep(0.2)
        assert len(workers) == 2, "the workers did not start"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in workers):
            time.sleep(0.1)
        assert not any(alive(p) for p in workers)
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in workers | children(driver.pid):  # nothing of this test outlives it, even when it fails
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_worker_processes_keep_every_checkpoint_when_told_to(tmp_path: Path) -> None:
    import poptrain
    from pbt_helpers import SPACE, SlowTracer

    run = poptrain.create_run(
        name="keep", space=SPACE, population_size=2, metric="score", root=tmp_path, ready=poptrain.every(2)
    )
    started = time.monotonic()
    run.optimize(SlowTracer, steps=260, executor="processes", workers=2, keep_checkpoints=None)
    assert time.monotonic() - started > 10  # long enough for a worker to collect (every 5 s)
    records = run.storage.get_checkpoints(run.record.id)
    assert len(records) >= 2 * 129 and not any(c.deleted for c in records)
    assert all((tmp_path / "keep" / "checkpoints" / c.uri).is_file() for c in records)
