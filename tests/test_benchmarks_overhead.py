"""The framework-cost benchmarks run and print their figures (their --quick modes; no timings asserted)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(module: str, *args: str, timeout: int = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_overhead_quick_prints_its_ratio_load_and_breakdown(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "overhead.json"
    stdout = _run("benchmarks.overhead", "--quick", "--threads", "1", "--out", str(out))
    assert re.search(r"^ratio poptrain/baseline\s+\d+\.\d{3}\s+\(goal <= 1.05", stdout, re.MULTILINE), stdout
    assert re.search(r"^baseline \(plain loop\)\s+median \d+\.\d{3} s", stdout, re.MULTILINE)
    assert "load average now [" in stdout
    assert "scores before the first ready point identical: True" in stdout  # the same work
    assert "where poptrain's time goes" in stdout and "storage record_ready" in stdout
    result = json.loads(out.read_text())
    assert result["ratio"] > 0 and result["baseline_s"] > 0
    assert result["same_work"]["scores_before_first_ready_point_identical"] is True
    assert result["breakdown"]["categories"]["storage record_ready"]["calls"] > 0


def test_small_run_quick_prints_its_ratio_and_load(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "small_run.json"
    stdout = _run("benchmarks.small_run", "--quick", "--out", str(out))
    assert re.search(r"^ratio sqlite/memory\s+\d+\.\d{3}\s+\(goal <= 1.2", stdout, re.MULTILINE), stdout
    assert re.search(r"^memory \(baseline\)\s+median \d+\.\d{3} s", stdout, re.MULTILINE)
    assert "same scores in both: True" in stdout  # SQLite and memory storage trained the same
    assert "load average at start [" in stdout
    result = json.loads(out.read_text())
    assert result["ratio"] > 0 and result["memory_s"] > 0 and result["same_scores"] is True
