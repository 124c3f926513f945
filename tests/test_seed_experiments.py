"""The seed's image-classification and GAN experiments: their strategies, data, scores and
quick runs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import poptrain
from poptrain.errors import ConfigError, StrategyError
from poptrain.strategy import MemberSnapshot, strategy_from_spec, strategy_to_spec
from poptrain.strategy.plan import Strategy


def population(fitness: list[float]) -> list[MemberSnapshot]:
    return [MemberSnapshot(slot, 4, {"lr": 0.1, "l1": 1e-4}, f, 4) for slot, f in enumerate(fitness)]


def test_replace_worst_pairs_the_kth_worst_with_the_kth_best() -> None:
    members = population([0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2])  # best: 1, 5, 3; worst: 2, 6, 4
    rule = poptrain.replace_worst(3)
    rng = np.random.default_rng(0)
    donors = {m.slot: rule(m, members, rng) for m in members}
    assert donors == {0: None, 1: None, 2: 1, 3: None, 4: 3, 5: None, 6: 5}
    assert rule(members[0], members[:2], rng) == 1  # two members: at most half are replaced
    assert rule(members[0], members[:1], rng) is None
    with pytest.raises(StrategyError, match="replace_worst\\(count=...\\) must be a whole number >= 1"):
        poptrain.replace_worst(0)


def test_gaussian_moves_only_the_named_hyperparameters_within_bounds() -> None:
    space = poptrain.SearchSpace(
        {"lr": poptrain.Float(1e-3, 0.5, log=True), "l1": poptrain.Float(1e-7, 1e-2, log=True)}
    )
    rng = np.random.default_rng(1)
    explore = poptrain.gaussian(0.1, names=["l1"])
    moved = [explore({"lr": 0.1, "l1": 1e-4}, space, rng) for _ in range(300)]
    assert all(m.hparams["lr"] == 0.1 and "lr" not in m.operations for m in moved)
    logs = np.log([m.hparams["l1"] for m in moved])
    assert all(1e-7 <= m.hparams["l1"] <= 1e-2 for m in moved)
    spread = 0.1 * (np.log(1e-2) - np.log(1e-7))
    assert abs(logs.mean() - np.log(1e-4)) < 0.2 * spread and 0.8 * spread < logs.std() < 1.2 * spread
    with pytest.raises(StrategyError, match="gaussian\\(names=...\\) names \\['momentum'\\]"):
        poptrain.gaussian(names=["momentum"])({"lr": 0.1, "l1": 1e-4}, space, rng)
    strategy = Strategy(poptrain.every(4), poptrain.replace_worst(3), explore)
    assert strategy_from_spec(strategy_to_spec(strategy)) == strategy  # stored with the run and read back


# --- image classification ---------------------------------------------------------------------
def write_cifar_fixture(folder: Path, rows: int = 12, width: int = 3072) -> None:
    """A tiny CIFAR-10 folder in the real format: pickled dicts with bytes keys."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, rows)]
        data = rng.integers(0, 256, (rows, width), dtype=np.uint8)
        data[:, 0] = np.array(labels, dtype=np.uint8) * 25  # a learnable signal in the first pixel
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, handle)


def test_cifar10_loader_reads_the_python_batches(tmp_path: Path) -> None:
    from experiments.classify import load_cifar10

    write_cifar_fixture(tmp_path / "cifar")
    data = load_cifar10(tmp_path / "cifar")
    assert (
        data["x_train"].shape == (54, 3072) and data["x_val"].shape == (6, 3072) and data["x_test"].shape == (12, 3072)
    )
    assert 0.0 <= float(data["x_train"].min()) and float(data["x_train"].max()) <= 1.0
    with open(tmp_path / "cifar" / "test_batch", "rb") as handle:
        raw = pickle.load(handle)
    assert data["y_test"].tolist() == raw[b"labels"]


@pytest.mark.parametrize("problem", ["missing folder", "missing batch", "not a batch", "wrong size"])
def test_cifar10_loader_errors_name_the_problem(tmp_path: Path, problem: str) -> None:
    from experiments.classify import load_cifar10

    folder = tmp_path / "cifar"
    if problem != "missing folder":
        write_cifar_fixture(folder, width=100 if problem == "wrong size" else 3072)
    if problem == "missing batch":
        (folder / "data_batch_3").unlink()
    if problem == "not a batch":
        (folder / "test_batch").write_bytes(b"not a pickle")
    expected = {
        "missing folder": "does not exist",
        "missing batch": "data_batch_3 missing",
        "not a batch": "is not a CIFAR-10 batch",
        "wrong size": "not 3072",
    }[problem]
    with pytest.raises(ConfigError, match=expected):
        load_cifar10(folder)


def test_classification_trains_on_cifar10_files(tmp_path: Path) -> None:
    from experiments.classify import compare, table

    write_cifar_fixture(tmp_path / "cifar")
    outcome = compare(1, tmp_path / "runs", steps=2, population=4, data=str(tmp_path / "cifar"), device="cpu")
    assert set(outcome["results"]) == {"pbt-seed", "pbt", "random search"}
    assert all(0.0 <= r[0]["test_acc"] <= 1.0 for r in outcome["results"].values())
    assert "| random search |" in table(outcome, "CIFAR-10")


def test_classification_quick_mode_writes_the_table_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.classify import main

    assert main(["--quick", "--root", str(tmp_path), "--device", "cpu"]) == 0
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {name} |" in table for name in ("pbt-seed", "pbt", "random search"))
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(len(rows) == 2 and rows[0]["test_acc"] > 0.5 for rows in results.values())  # 2 seeds, digits are learnt
    assert (tmp_path / "pbt-seed" / "schedules.png").stat().st_size > 10_000
    assert "lr and L1 schedules" in capsys.readouterr().out


# --- GAN ---------------------------------------------------------------------------------------
def test_scores_tell_digits_from_noise() -> None:
    from experiments import gan

    real = gan.real_images()[:500]
    noise = torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert gan.inception_score(real) > 9.0 and gan.inception_score(noise) < 5.0 and gan.inception_score(noise) >= 1.0
    assert gan.frechet_distance(real) < 1.0 and gan.frechet_distance(noise) > 10.0


def test_gan_trains_and_pbt_records_its_schedules(tmp_path: Path) -> None:
    from experiments import gan

    run = poptrain.create_run(
        name="gan",
        space=gan.SPACE,
        population_size=3,
        metric="score",
        root=tmp_path,
        ready=poptrain.every(1),
        **gan.VARIANTS["pbt"],
    )
    run.optimize(gan.DigitsGAN, steps=3, keep_checkpoints=None)
    best = run.best()
    assert best is not None and best.score > 1.5 and "frechet" in best.metrics
    assert any(g.kind == "exploit" for g in run.lineage())
    gan.sample_grid(run, tmp_path / "samples.png")
    assert (tmp_path / "samples.png").stat().st_size > 5_000


def test_gan_quick_mode_writes_the_table(tmp_path: Path) -> None:
    from experiments import gan

    assert gan.main(["--quick", "--root", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "not comparable with CIFAR-10 Inception scores" in table and "| fixed hyperparameters |" in table
    assert (tmp_path / "pbt" / "samples.png").is_file() and (tmp_path / "pbt" / "schedules.png").is_file()


@pytest.mark.parametrize("module", ["classify", "gan"])
def test_experiments_run_from_the_command_line(module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from poptrain.cli.main import main

    code = main(
        [
            "run",
            f"experiments.{module}",
            "--root",
            str(tmp_path),
            "--population",
            "3",
            "--steps",
            "2",
            "--quiet",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Best member" in out and ("test_acc" in out if module == "classify" else "frechet" in out)


def test_experiment_commands_report_bad_input_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.classify",
            "--data",
            str(tmp_path / "nope"),
            "--root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
