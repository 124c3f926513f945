"""Every script in examples/ runs in its quick mode and names a best model."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "needs"),
    [
        pytest.param("ask_tell.py", None, id="ask_tell"),
        pytest.param("lightning_example.py", "lightning", id="lightning", marks=pytest.mark.slow),
        pytest.param("huggingface_example.py", "transformers", id="huggingface", marks=pytest.mark.slow),
    ],
)
def test_an_example_runs_quickly_and_reports_its_best_model(tmp_path: Path, script: str, needs: str | None) -> None:
    if needs is not None and importlib.util.find_spec(needs) is None:
        pytest.skip(f"{needs} is not installed")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best model: member " in result.stdout
    assert (tmp_path / next(tmp_path.iterdir()).name / "poptrain.db").is_file()
