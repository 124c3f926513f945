"""The vectorized and APBT benchmarks run and print their ratio lines; gpu.sh is valid bash and
says clearly when there is no GPU. No timings are asserted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_vectorized_quick_prints_its_ratios(tmp_path: Path) -> None:
    out = tmp_path / "vectorized.json"
    done = run(["benchmarks.vectorized", "--quick", "--threads", "1", "--repeats", "1", "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "faster than the sequential executor" in done.stdout
    assert "% of the matmul peak measured now" in done.stdout
    assert "load average" in done.stdout
    assert "where a run's time goes" in done.stdout
    result = json.loads(out.read_text())
    headline = result["headline"]
    assert headline["speedup_vs_sequential"] > 0
    assert headline["matmul_peak_gflops"] > 0
    assert set(headline["seconds"]) == {"vectorized", "sequential", "plain loop"}
    assert [row["population"] for row in result["scaling_cpu"]] == [16, 64]


def test_apbt_quick_prints_its_ratio(tmp_path: Path) -> None:
    out = tmp_path / "apbt.json"
    done = run(["benchmarks.apbt", "--quick", "--threads", "1", "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "a per-member loop would take" in done.stdout
    assert "load average" in done.stdout
    result = json.loads(out.read_text())
    assert result["members"] == 30 and result["speedup"] > 0
    assert len(result["vectorized_runs"]) == 1  # --quick: one run
    assert "where a run's time goes" in done.stdout
    breakdown = result["breakdown_seconds"]
    assert 0 < breakdown["training"] < breakdown["run (with timers)"]
    assert breakdown["of which the storage commit"] <= breakdown["ready rounds (checkpoint, decisions, commit, copies)"]


@pytest.mark.slow
def test_compile_check_quick_reports_the_compile_cost_and_the_ratio(tmp_path: Path) -> None:
    out = tmp_path / "compile.json"
    done = run(["benchmarks.compile_check", "--quick", "--threads", "1", "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "compiling took" in done.stdout and "load average" in done.stdout
    result = json.loads(out.read_text())
    assert result["compile_seconds"] > 0 and result["ratio_compiled_to_plain"] > 0
    assert result["same_best_score"] is True  # compiling changes the speed, not the training


@pytest.mark.parametrize("module", ["benchmarks.apbt", "benchmarks.compile_check"])
def test_benchmark_refuses_no_repeats(module: str, tmp_path: Path) -> None:
    done = run([module, "--repeats", "0", "--out", str(tmp_path / "x.json")], tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--repeats must be at least 1, got 0")
    assert done.stdout == "" and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("scale", ["0", "1.5", "-0.1"])
def test_apbt_refuses_a_scale_outside_zero_to_one(scale: str, tmp_path: Path) -> None:
    out = tmp_path / "apbt.json"
    done = run(["benchmarks.apbt", "--scale", scale, "--out", str(out)], tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(f"--scale must be in (0, 1], got {float(scale)}")
    assert done.stdout == "" and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a CUDA GPU")
@pytest.mark.parametrize("module", ["benchmarks.vectorized", "benchmarks.apbt"])
def test_device_cuda_without_a_gpu_says_so(module: str, tmp_path: Path) -> None:
    done = run([module, "--device", "cuda", "--out", str(tmp_path / "x.json")], tmp_path, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0]
    assert not (tmp_path / "x.json").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_script_is_valid_bash() -> None:
    done = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a CUDA GPU")
def test_gpu_script_without_a_gpu_says_so() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert done.returncode == 2
    assert "no CUDA GPU here" in done.stderr
