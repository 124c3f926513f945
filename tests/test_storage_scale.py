"""The storage benchmark's quick mode: workers in separate processes committing ready points to
one SQLite file (and one PostgreSQL server where it can start) lose and duplicate nothing and
meet no error. Its figures are not asserted: only that the work it measures was done right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_mode_commits_every_ready_point_once_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "storage_scale.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.storage_scale", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "sqlite" in result["backends"]
    for backend, found in result["backends"].items():
        assert [row["workers"] for row in found["rows"]] == [1, 2, 4]
        for row in found["rows"]:
            where = f"{backend} with {row['workers']} workers"
            assert row["errors"] == 0, f"{where}: {row['error_samples']}"
            assert row["ready_points"] > 0, f"{where} committed nothing"
            assert row["lost"] == 0 and row["duplicated"] == 0, where
            assert row["generation_mismatch"] == 0, f"{where}: a decision without its generation, or one too many"
            assert row["scores_unknown"] == 0 and row["scores_twice"] == 0, where
            assert row["left_leased"] == 0, f"{where}: a member stayed leased after its worker stopped"
            assert row["ok"], where
    assert "ready points per second" in done.stdout


def test_the_check_finds_a_ready_point_the_database_does_not_hold(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.storage_scale import _create, verify
    finally:
        sys.path.remove(str(ROOT))
    url = f"sqlite:///{tmp_path / 'poptrain.db'}"
    _create(url, tmp_path, 4)
    claimed = {0: {"points": [(0, 4, True)], "scores": [(0, 4, 1)]}}
    found = verify(url, 4, claimed)
    assert found["lost"] == 1 and found["duplicated"] == 0
    assert found["generation_mismatch"] == 1
    assert found["scores_stored"] == 0 and not found["ok"]
    assert verify(url, 4, {})["ok"]  # nothing claimed, nothing stored
