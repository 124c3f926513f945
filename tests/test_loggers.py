"""The loggers write what their own tools read back: JSONL lines, TensorBoard event files,
an MLflow store with a nested run per member, W&B offline runs; and the command line's --log."""

from __future__ import annotations

import glob
import json
import math
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.cli_helpers import cli, one_line_error
from tests.pbt_helpers import Tracer, make_run

import poptrain
from poptrain.callbacks import make_callbacks

STEPS = 6


def trained(tmp_path: Path, callbacks: list[Any], *, population: int = 3, steps: int = STEPS) -> poptrain.Run:
    run = make_run(population_size=population, storage="sqlite", tmp_path=tmp_path)
    return run.optimize(Tracer, steps=steps, callbacks=callbacks)


def scores_of(run: poptrain.Run, slot: int, metric: str = "score") -> list[tuple[int, float]]:
    return [(s.step, s.metrics[metric]) for s in run.scores() if s.slot == slot]


def assert_series(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    """The same steps, and the same values (TensorBoard keeps float32)."""
    assert [step for step, _ in got] == [step for step, _ in expected]
    assert [value for _, value in got] == pytest.approx([value for _, value in expected], rel=1e-6)


def decisions_of(run: poptrain.Run) -> list[poptrain.GenerationRecord]:
    return [g for g in run.lineage() if g.kind != "init"]


# --- JSONL -------------------------------------------------------------------------------------


def test_jsonl_holds_every_event(tmp_path: Path) -> None:
    run = trained(tmp_path, ["jsonl"])
    lines = [json.loads(line) for line in (tmp_path / "tracer" / "logs" / "events.jsonl").read_text().splitlines()]
    events = [line["event"] for line in lines]
    assert events[0] == "run_start" and events[-1] == "run_end" and lines[-1]["state"] == "finished"
    assert lines[0]["run"] == "tracer" and lines[0]["population_size"] == 3 and lines[0]["steps"] == STEPS
    evaluations = [line for line in lines if line["event"] == "evaluation"]
    assert len(evaluations) == 3 * STEPS
    stored = {(s.slot, s.step): s.metrics for s in run.scores()}
    assert {(e["slot"], e["step"]): e["metrics"] for e in evaluations} == stored
    assert all(set(e["hparams"]) == {"rate", "width"} and "generation" in e for e in evaluations)
    decisions = [line for line in lines if line["event"] == "decision"]
    assert len(decisions) == len(decisions_of(run)) > 0
    assert {(d["slot"], d["kind"], d["donor"]) for d in decisions} == {
        (g.slot, g.kind, g.donor) for g in decisions_of(run)
    }
    assert all(d["operations"] for d in decisions)


def test_jsonl_writes_non_finite_numbers_as_text_and_appends_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    run = trained(tmp_path, [{"type": "jsonl", "path": str(path)}], steps=3)
    logger = make_callbacks(["jsonl"])[0]
    info = poptrain.RunInfo("tracer", "score", "max", 3, 3, 9, 9, 0, "sequential", tmp_path / "x", run.record)
    logger.on_run_start(info)
    logger.on_evaluation(0, 4, math.nan, {"score": math.nan, "loss": math.inf}, {"rate": 0.5}, 0)
    logger.on_run_end("failed", RuntimeError("boom"))
    lines = [json.loads(line) for line in (tmp_path / "x" / "logs" / "events.jsonl").read_text().splitlines()]
    assert lines[1]["score"] == "NaN" and lines[1]["metrics"] == {"score": "NaN", "loss": "Infinity"}
    assert lines[-1] == {**lines[-1], "state": "failed", "error": "RuntimeError: boom"}

    poptrain.load_run("tracer", root=tmp_path).optimize(Tracer, steps=6, callbacks=[{"type": "jsonl", "path": path}])
    events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert events.count("run_start") == 2 and events.count("evaluation") == 3 * 6


# --- TensorBoard ---------------------------------------------------------------------------------


def test_tensorboard_writes_an_event_folder_per_member(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = trained(tmp_path, ["tensorboard"])
    root = tmp_path / "tracer" / "logs" / "tensorboard"
    assert sorted(p.name for p in root.iterdir()) == ["member-0", "member-1", "member-2"]
    texts = 0
    for slot in range(3):
        events = EventAccumulator(str(root / f"member-{slot}"))
        events.Reload()
        scalars = events.Tags()["scalars"]
        assert {"score", "steps_trained", "hparams/rate", "hparams/width", "pbt/generation"} <= set(scalars)
        got = [(e.step, e.value) for e in events.Scalars("score")]
        assert_series(got, scores_of(run, slot))
        rates = {e.step: e.value for e in events.Scalars("hparams/rate")}
        generations = {g.id: g for g in run.lineage()}
        for score in (s for s in run.scores() if s.slot == slot):
            assert rates[score.step] == pytest.approx(generations[score.generation_id].hparams["rate"])
        if any(g.slot == slot for g in decisions_of(run)):
            [tag] = [t for t in events.Tags()["tensors"] if t.startswith("pbt/decision")]
            words = [e.tensor_proto.string_val[0].decode() for e in events.Tensors(tag)]
            texts += len(words)
            assert all(w.startswith(("exploit of member", "explore")) and "hyperparameters now" in w for w in words)
    assert texts == len(decisions_of(run)) > 0


# --- MLflow --------------------------------------------------------------------------------------


@pytest.mark.slow  # MLflow creates its SQLite store (migrations) and imports for ~10 s
def test_mlflow_nests_a_run_per_member_under_the_pbt_run_and_resumes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the current folder (./mlruns)
    run = trained(tmp_path, ["mlflow"], steps=3)
    poptrain.load_run("tracer", root=tmp_path, storage=f"sqlite:///{tmp_path}/tracer/poptrain.db").optimize(
        Tracer, steps=STEPS, callbacks=["mlflow"]
    )
    store = tmp_path / "tracer" / "logs" / "mlflow"
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracer")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {int(r.data.tags["poptrain.slot"]): r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert parent.info.run_name == "tracer" and parent.info.status == "FINISHED"
    assert parent.data.params["population_size"] == "3" and parent.data.params["metric"] == "score"
    assert "best_score" in parent.data.metrics
    assert sorted(children) == [0, 1, 2]  # the resumed run continued the same runs
    run = poptrain.load_run("tracer", root=tmp_path)
    for slot, child in children.items():
        assert child.info.run_name == f"member-{slot}" and child.info.status == "FINISHED"
        assert set(child.data.params) == {"rate", "width"}
        history = sorted((m.step, m.value) for m in client.get_metric_history(child.info.run_id, "score"))
        assert_series(history, scores_of(run, slot))
        assert {"hparams/rate", "pbt/generation"} <= set(child.data.metrics)
    decided = {g.slot for g in decisions_of(run) if g.start_step > 3}
    for slot in decided:
        assert "poptrain.last_decision" in children[slot].data.tags
        text = (Path(client.download_artifacts(children[slot].info.run_id, "decisions.txt"))).read_text()
        assert text.startswith("step ")
    assert not (tmp_path / "mlruns").exists()


# --- Weights & Biases ------------------------------------------------------------------------------


def wandb_records(path: str) -> list[Any]:
    """The records of a W&B offline run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, chunk, records = Path(path).read_bytes(), 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:
            break
        chunk += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def complete_wandb_records(path: str, seconds: float = 20.0) -> list[Any]:
    """The records of a finished offline run; wandb's service process may still be writing the
    file for a moment after ``finish()`` returns, so wait (bounded) for its final ``exit`` record."""
    deadline = time.monotonic() + seconds
    while True:
        records = wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))  # no netrc with credentials


def test_wandb_writes_an_offline_run_per_member(tmp_path: Path, wandb_offline: None) -> None:
    run = trained(tmp_path, ["wandb"])
    files = sorted(glob.glob(str(tmp_path / "tracer" / "logs" / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len(files) == 3
    by_slot: dict[int, list[Any]] = {}
    for path in files:
        records = complete_wandb_records(path)
        [start] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        config = {u.key: json.loads(u.value_json) for u in start.config.update}
        assert start.run_group == "tracer" and start.display_name == f"tracer/member-{config['member']}"
        assert config["population_size"] == 3 and set(config["hparams"]) == {"rate", "width"}
        by_slot[config["member"]] = [
            {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records
            if r.WhichOneof("record_type") == "history"
        ]
    assert sorted(by_slot) == [0, 1, 2]
    for slot, rows in by_slot.items():
        scored = [(row["step"], row["score"]) for row in rows if "score" in row]
        assert_series(scored, scores_of(run, slot))
        assert all("hparams/rate" in row and "pbt/generation" in row for row in rows if "score" in row)
        decided = [row["pbt/decision"] for row in rows if "pbt/decision" in row]
        assert len(decided) == len([g for g in decisions_of(run) if g.slot == slot])
        assert (len(decided) > 0) == any("decisions/_type" in row for row in rows)  # the table at the end


def test_wandb_is_offline_without_credentials(
    tmp_path: Path, wandb_offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from poptrain.loggers.wandb import WandbLogger

    monkeypatch.delenv("WANDB_MODE")
    assert WandbLogger()._mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert WandbLogger()._mode() == "online"
    assert WandbLogger(mode="disabled")._mode() == "disabled"
    with pytest.raises(poptrain.ConfigError, match="wandb logger: mode must be one of online, offline, disabled"):
        WandbLogger(mode="on")


# --- missing packages and the command line -----------------------------------------------------


@pytest.mark.parametrize("name", ["tensorboard", "mlflow", "wandb"])
def test_a_missing_package_names_the_extra(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(poptrain.ConfigError) as error:
        make_callbacks([name])
    assert str(error.value) == f'the {name} logger needs {name}: pip install "poptrain[{name}]"'


def test_run_with_log_writes_jsonl_and_tensorboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorboard")
    root = tmp_path / "runs"
    code, _, err = cli(
        capsys, "run", "poptrain.experiments.toy", "--root", str(root), "--steps", "8", "--log", "jsonl,tensorboard"
    )
    assert code == 0, err
    assert "[toy] training 2 members, 16 steps in all" in err  # the terminal view, as well
    lines = (root / "toy" / "logs" / "events.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["event"] == "evaluation" for line in lines) == 16
    assert sorted(p.name for p in (root / "toy" / "logs" / "tensorboard").iterdir()) == ["member-0", "member-1"]


def test_yaml_callbacks_and_log_combine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "toy.yaml"
    config.write_text(
        "trainable: poptrain.experiments.toy:ToyQuadratic\n"
        "metric: Q\npopulation_size: 2\nsteps: 4\n"
        "space:\n  h0: {type: float, low: 0.0, high: 1.0}\n  h1: {type: float, low: 0.0, high: 1.0}\n"
        f"callbacks: [jsonl, {{type: jsonl, path: {tmp_path / 'second.jsonl'}}}]\n"
    )
    root = tmp_path / "runs"
    code, _, err = cli(capsys, "run", str(config), "--root", str(root), "--quiet", "--log", "jsonl")
    assert code == 0, err
    first = (root / "toy" / "logs" / "events.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["event"] == "run_start" for line in first) == 1  # jsonl in both is used once
    assert (tmp_path / "second.jsonl").is_file()


def test_bad_log_names_and_bad_yaml_callbacks_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "runs"
    line = one_line_error(capsys, "run", "poptrain.experiments.toy", "--root", str(root), "--log", "jsonl,tensorbord")
    assert line == (
        "poptrain: error: --log: unknown callback 'tensorbord'; known ones are jsonl, mlflow, tensorboard, wandb, "
        "or an import path mypkg.MyCallback"
    )
    assert "--log needs logger names" in one_line_error(
        capsys, "run", "poptrain.experiments.toy", "--root", str(root), "--log", ","
    )
    monkeypatch.setitem(sys.modules, "wandb", None)
    line = one_line_error(capsys, "run", "poptrain.experiments.toy", "--root", str(root), "--log", "wandb")
    assert line == 'poptrain: error: the wandb logger needs wandb: pip install "poptrain[wandb]"'
    config = tmp_path / "bad.yaml"
    config.write_text(
        "trainable: poptrain.experiments.toy:ToyQuadratic\nmetric: Q\npopulation_size: 2\nsteps: 4\n"
        "space:\n  h0: {type: float, low: 0.0, high: 1.0}\n  h1: {type: float, low: 0.0, high: 1.0}\n"
        "callbacks: [{dir: x}]\n"
    )
    assert "bad.yaml: callbacks must be a list of callbacks: logger names" in one_line_error(
        capsys, "run", str(config), "--root", str(root)
    )
    config.write_text(config.read_text().replace("[{dir: x}]", "[jsnl]"))
    assert f"{config}: callbacks: unknown callback 'jsnl'" in one_line_error(
        capsys, "run", str(config), "--root", str(root)
    )
    assert not root.exists() or not any(root.iterdir())  # nothing written
