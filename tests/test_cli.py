"""The command line: run, status, export, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from poptrain.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_status_export_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "runs")
    code, out, err = run_cli(capsys, "run", "poptrain.experiments.toy", "--root", root, "--steps", "40", "--quiet")
    assert code == 0, err
    assert "Best member" in out and "Hyperparameter schedule" in out
    assert (tmp_path / "runs" / "toy" / "poptrain.db").is_file()
    assert any((tmp_path / "runs" / "toy" / "checkpoints").rglob("*.pt"))

    code, out, _ = run_cli(capsys, "status", "toy", "--root", root)
    assert code == 0
    assert "finished" in out and "h0" in out and "Best model (best ever): member" in out

    code, out, _ = run_cli(capsys, "export", "toy", "--root", root, "--format", "csv")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("slot,step,generation,score")
    assert len(lines) == 1 + 2 * 40  # a row per member per step

    target = tmp_path / "toy.json"
    code, _, _ = run_cli(capsys, "export", "toy", "--root", root, "--format", "json", "--output", str(target))
    assert code == 0
    payload = json.loads(target.read_text())
    assert payload["run"]["name"] == "toy"
    assert len(payload["members"]) == 2
    assert payload["best"]["score"] == max(m["ready_score"] for m in payload["members"])
    assert {g["kind"] for g in payload["lineage"]} >= {"init", "exploit"}


def test_progress_lines_when_not_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "run", "poptrain.experiments.toy", "--root", str(tmp_path), "--steps", "20")
    assert code == 0
    assert "[toy] training 2 members, 40 steps in all" in err
    assert "40/40 steps (100%), best Q so far" in err


def test_yaml_config_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "toy.yaml"
    config.write_text(
        "trainable: poptrain.experiments.toy:ToyQuadratic\n"
        "metric: Q\npopulation_size: 3\nsteps: 8\n"
        "space:\n  h0: {type: float, low: 0.0, high: 1.0}\n  h1: {type: float, low: 0.0, high: 1.0}\n"
        "strategy:\n  ready: {type: every, steps: 2}\n  exploit: {type: tournament}\n"
    )
    code, out, err = run_cli(capsys, "run", str(config), "--root", str(tmp_path / "runs"), "--quiet")
    assert code == 0, err
    assert "Run toy" in out


def one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("poptrain: error: ")
    return lines[0]


def test_bad_yaml_search_space_names_parameter_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "trainable: poptrain.experiments.toy:ToyQuadratic\npopulation_size: 2\nsteps: 4\n"
        "space:\n  lr: {type: float, low: 0.1, high: 0.01}\n"
    )
    line = one_line_error(capsys, "run", str(config), "--root", str(tmp_path / "runs"))
    assert "'lr'" in line and "low (0.1) must be below high (0.01)" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("trainable: x:Y\npopulation_size: 0\nsteps: 4\nspace: {}\n", "population_size"),
        ("trainable: x:Y\npopulation_size: 2\nsteps: 4\nspace: {}\nbogus: 1\n", "bogus"),
        ("population_size: 2\nsteps: 4\nspace: {}\n", "trainable"),
        (
            "trainable: nosuchmodule:Thing\npopulation_size: 2\nsteps: 4\nspace: {a: {type: int, low: 1, high: 3}}\n",
            "cannot import",
        ),
        ("trainable: [unclosed\n", "not valid YAML"),
        (
            (
                "trainable: poptrain.experiments.toy:ToyQuadratic\npopulation_size: 2\nsteps: 4\n"
                "space: {a: {type: weird, low: 1, high: 3}}\n"
            ),
            "unknown type 'weird'",
        ),
    ],
)
def test_bad_config_gets_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    assert expected in one_line_error(capsys, "run", str(config), "--root", str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "does not exist" in one_line_error(capsys, "run", str(tmp_path / "nope.yaml"))
    assert "cannot find experiment" in one_line_error(capsys, "run", "no.such.module")
    assert "no run named 'ghost'" in one_line_error(capsys, "status", "ghost", "--root", str(tmp_path))
    assert "cannot read storage URL" in one_line_error(capsys, "status", "x", "--storage", "not a url")


def test_existing_run_name_is_refused_unless_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path)
    assert run_cli(capsys, "run", "poptrain.experiments.toy", "--root", root, "--steps", "8", "--quiet")[0] == 0
    assert "exists already" in one_line_error(capsys, "run", "poptrain.experiments.toy", "--root", root, "--steps", "8")
    assert (
        run_cli(capsys, "run", "poptrain.experiments.toy", "--root", root, "--steps", "8", "--quiet", "--overwrite")[0]
        == 0
    )


def test_installed_command_exits_2_on_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "poptrain", "status", "ghost", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"poptrain: error: no run named 'ghost': {tmp_path / 'ghost' / 'poptrain.db'} does not exist; check the name and --root"
    )


def test_broken_experiment_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import poptrain\n\ndef experiment(:\n    pass\n")
    line = one_line_error(capsys, "run", str(broken), "--root", str(tmp_path / "runs"))
    assert "cannot load experiment file" in line and "SyntaxError" in line and "line 3" in line
    raising = tmp_path / "raising.py"
    raising.write_text("raise RuntimeError('no GPU here')\n")
    assert "RuntimeError: no GPU here (line 1)" in one_line_error(capsys, "run", str(raising))
    assert not (tmp_path / "runs").exists()


def test_zero_steps_is_refused_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(capsys, "run", "poptrain.experiments.toy", "--root", str(tmp_path / "runs"), "--steps", "0")
    assert "steps must be a whole number >= 1, got 0" in line
    assert not (tmp_path / "runs").exists()


def test_experiment_module_file_with_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "mytoy.py"
    module.write_text(
        "import poptrain\n"
        "from poptrain.experiments.toy import ToyQuadratic, SPACE\n"
        "def experiment():\n"
        "    return {'trainable': ToyQuadratic, 'space': SPACE, 'population_size': 4, 'steps': 12, 'metric': 'Q',\n"
        "            'ready': poptrain.every(3), 'exploit': poptrain.tournament(), 'synchronous': True}\n"
        "def summarize(run):\n"
        "    return {'members_seen': len(run.members())}\n"
    )
    code, out, err = run_cli(capsys, "run", str(module), "--root", str(tmp_path / "runs"), "--quiet")
    assert code == 0, err
    assert "members_seen = 4" in out


def test_bad_executor_settings_are_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path / "runs")
    line = one_line_error(
        capsys, "run", "poptrain.experiments.toy", "--root", root, "--executor", "processes", "--workers", "0"
    )
    assert "--workers must be a whole number from 1 to 1024, got 0" in line
    assert "--workers is for --executor processes or ray" in one_line_error(
        capsys, "run", "poptrain.experiments.toy", "--root", root, "--workers", "3"
    )
    assert not (tmp_path / "runs").exists()


def test_resume_and_worker_need_a_run_started_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import poptrain
    from poptrain.experiments.toy import SPACE

    poptrain.create_run(name="api", space=SPACE, population_size=2, metric="Q", root=tmp_path)
    assert "was not started by `poptrain run`" in one_line_error(capsys, "resume", "api", "--root", str(tmp_path))
    assert "was not started by `poptrain run`" in one_line_error(capsys, "worker", "api", "--root", str(tmp_path))
    assert "no run named 'ghost'" in one_line_error(capsys, "worker", "ghost", "--root", str(tmp_path))


def test_vectorized_experiment_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path)
    code, out, err = run_cli(
        capsys,
        "run",
        "poptrain.experiments.digits_vectorized",
        "--root",
        root,
        "--population",
        "8",
        "--steps",
        "4",
        "--quiet",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert "Best member" in out and "test_acc" in out
    code, out, _ = run_cli(capsys, "status", "digits_vectorized", "--root", root)
    assert code == 0 and "finished" in out


def test_vectorized_executor_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys, "run", "poptrain.experiments.toy", "--root", str(tmp_path), "--executor", "vectorized", "--quiet"
    )
    assert code == 2
    assert err.strip().count("\n") == 0 and "executor 'vectorized' trains a poptrain.VectorizedTrainable" in err
    assert not (tmp_path / "toy").exists()  # refused before the run was created
    code, _, err = run_cli(
        capsys, "run", "poptrain.experiments.toy", "--root", str(tmp_path), "--device", "cuda", "--quiet"
    )
    assert code == 2 and "--device is for --executor vectorized" in err


def test_stop_flags_stop_the_run_and_resume_continues_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "runs")
    code, out, err = run_cli(
        capsys, "run", "poptrain.experiments.toy", "--root", root, "--steps", "100", "--target-score", "0.0", "--quiet"
    )
    assert code == 0, err
    assert "Stopped: the target 0 is reached" in out and "poptrain resume toy" in out
    code, out, _ = run_cli(capsys, "status", "toy", "--root", root)
    assert code == 0 and "stopped" in out and "Stopped: the target 0 is reached" in out
    code, out, err = run_cli(capsys, "resume", "toy", "--root", root, "--quiet")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "status", "toy", "--root", root)
    assert "finished" in out and "Stopped" not in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--time-budget", "2 days"], "cannot read the duration '2 days'; write e.g. 90s, 30m, 2h or 1h30m"),
        (["--time-budget", "0"], "time_budget needs a budget > 0"),
        (["--plateau", "0"], r"plateau\(steps=...\) must be a whole number >= 1, got 0"),
    ],
)
def test_bad_stop_flags_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    import re

    code, _, err = run_cli(capsys, "run", "poptrain.experiments.toy", "--root", str(tmp_path), *flags)
    assert code == 2 and re.search(message, err) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "toy").exists()


def test_a_yaml_config_names_its_stop_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = (
        "trainable: poptrain.experiments.toy:ToyQuadratic\n"
        "metric: Q\npopulation_size: 2\nsteps: 100\n"
        "space:\n  h0: {type: float, low: 0.0, high: 1.0}\n  h1: {type: float, low: 0.0, high: 1.0}\n"
    )
    config = tmp_path / "toy.yaml"
    config.write_text(body + "stop: {time_budget: 1h, target: 0.0}\n")
    code, out, err = run_cli(capsys, "run", str(config), "--root", str(tmp_path / "runs"), "--quiet")
    assert code == 0, err
    assert "Stopped: the target 0 is reached" in out
    config.write_text(body + "stop: {budget: 1h}\n")
    line = one_line_error(capsys, "run", str(config), "--root", str(tmp_path / "other"))
    assert "stop" in line and "time_budget" in line
    assert not (tmp_path / "other").exists()
