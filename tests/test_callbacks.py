"""Callbacks: every evaluation (all metrics, hyperparameters, generation), every decision, the
run's start and end, on every executor; combined with the terminal view; the failure policy."""

from __future__ import annotations

import io
import threading
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.pbt_helpers import Tracer, make_run

import poptrain
from poptrain.report.terminal import TerminalProgress


class Recorder(poptrain.Callback):
    """Keeps every event it hears, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lock = threading.Lock()  # not picklable: callbacks stay in the driver process

    def on_run_start(self, info: poptrain.RunInfo) -> None:
        self.events.append(("start", info))

    def on_evaluation(
        self,
        slot: int,
        step: int,
        score: float,
        metrics: Mapping[str, float],
        hparams: Mapping[str, Any],
        generation: int,
    ) -> None:
        self.events.append(("evaluation", (slot, step, score, dict(metrics), dict(hparams), generation)))

    def on_checkpoint(self, slot: int, step: int, value: float) -> None:
        self.events.append(("checkpoint", (slot, step, value)))

    def on_decision(self, decision: poptrain.Decision) -> None:
        self.events.append(("decision", decision))

    def on_run_end(self, state: str, error: BaseException | None) -> None:
        self.events.append(("end", (state, error)))

    def of(self, kind: str) -> list[Any]:
        return [payload for name, payload in self.events if name == kind]


def check_against_storage(run: poptrain.Run, seen: Recorder, steps: int) -> None:
    """What the callback heard is what the run stored: every score with all its metrics, the
    generation and hyperparameters that trained it, and every decision of the lineage."""
    kinds = [name for name, _ in seen.events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("start") == kinds.count("end") == 1
    info = seen.of("start")[0]
    assert (info.name, info.population_size, info.steps, info.total_steps) == (
        run.name,
        len(run.members()),
        steps,
        steps * len(run.members()),
    )
    assert seen.of("end") == [("finished", None)]

    generations = {g.id: g for g in run.lineage()}
    stored = {(s.slot, s.step): s for s in run.scores()}
    heard = {(slot, step): rest for slot, step, *rest in seen.of("evaluation")}
    assert len(seen.of("evaluation")) == len(heard) == len(stored) == steps * len(run.members())
    for key, (score, metrics, hparams, generation) in heard.items():
        record = stored[key]
        assert metrics == record.metrics and set(metrics) >= {"score", "steps_trained"}
        assert score == record.value == metrics["score"]
        assert generation == generations[record.generation_id].number
        assert hparams == generations[record.generation_id].hparams

    decided = Counter(
        (d.slot, d.kind, d.donor, tuple(sorted(d.operations.items())), tuple(sorted(d.hparams.items())))
        for d in seen.of("decision")
    )
    lineage = Counter(
        (g.slot, g.kind, g.donor, tuple(sorted(g.operations.items())), tuple(sorted(g.hparams.items())))
        for g in generations.values()
        if g.kind != "init"
    )
    assert decided == lineage and any(d.kind == "exploit" for d in seen.of("decision"))
    assert all(d.operations for d in seen.of("decision"))  # what changed, e.g. {"rate": "* 1.2"}


def test_a_callback_hears_everything_on_the_sequential_executor(tmp_path: Path) -> None:
    seen = Recorder()
    run = make_run(population_size=4, tmp_path=tmp_path).optimize(Tracer, steps=9, callbacks=[seen])
    check_against_storage(run, seen, 9)
    assert seen.of("start")[0].executor == "sequential"
    assert len(seen.of("checkpoint")) >= 4 * 2  # every member at each ready point (3, 6)


def test_a_callback_hears_everything_on_the_processes_executor(tmp_path: Path) -> None:
    seen = Recorder()
    run = make_run("procs", population_size=4, storage="sqlite", tmp_path=tmp_path)
    run.optimize(Tracer, steps=9, executor="processes", workers=2, callbacks=[seen])
    check_against_storage(run, seen, 9)
    assert seen.of("start")[0].executor == "processes"


X = torch.linspace(-1, 1, 64).reshape(16, 4)
Y = (X.sum(dim=1) > 0).long()


def _evaluate(predict: Any) -> dict[str, torch.Tensor]:
    logits = predict(X)
    return {
        "acc": (logits.argmax(-1) == Y).float().mean(-1),
        "loss": torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), Y.expand(logits.shape[0], -1), reduction="none"
        ).mean(-1),
    }


def test_a_callback_hears_every_metric_on_the_vectorized_executor(tmp_path: Path) -> None:
    from poptrain.vectorized import VectorizedTrainable

    trainable = VectorizedTrainable(
        lambda: torch.nn.Sequential(torch.nn.Linear(4, 2)),
        optimizer="sgd",
        data=(X, Y),
        loss=torch.nn.functional.cross_entropy,
        evaluate=_evaluate,
        batch_size=8,
        device="cpu",
    )
    run = poptrain.create_run(
        name="vec",
        space={"lr": poptrain.Float(1e-3, 0.3, log=True)},
        population_size=4,
        metric="acc",
        storage="memory",
        root=tmp_path,
        ready=poptrain.every(2),
    )
    seen = Recorder()
    run.optimize(trainable, steps=4, executor="vectorized", callbacks=[seen])
    evaluations = seen.of("evaluation")
    assert len(evaluations) == 16 and all(set(metrics) == {"acc", "loss"} for *_, metrics, _, _ in evaluations)
    stored = {(s.slot, s.step): s.metrics for s in run.scores()}
    assert {(slot, step): metrics for slot, step, _, metrics, _, _ in evaluations} == stored
    assert len(seen.of("decision")) == len([g for g in run.lineage() if g.kind != "init"])
    assert seen.of("end") == [("finished", None)]


def test_callbacks_combine_with_the_terminal_view_and_the_old_listener(tmp_path: Path) -> None:
    class Scores(poptrain.ProgressListener):  # the first hook names keep working
        def __init__(self) -> None:
            self.calls: list[str] = []

        def on_start(self, run_name: str, population_size: int, total_steps: int, done_steps: int) -> None:
            self.calls.append(f"start {run_name} {population_size} {total_steps} {done_steps}")

        def on_score(self, slot: int, step: int, value: float, hparams: dict[str, Any], generation: int) -> None:
            self.calls.append("score")

        def on_finish(self) -> None:
            self.calls.append("finish")

    stream = io.StringIO()
    view = TerminalProgress("score", "max", stream=stream, live=False)
    seen, old = Recorder(), Scores()
    make_run(population_size=2, tmp_path=tmp_path).optimize(Tracer, steps=6, progress=view, callbacks=[seen, old])
    assert "[tracer] training 2 members, 12 steps in all" in stream.getvalue()
    assert "12/12 steps (100%)" in stream.getvalue()
    assert len(seen.of("evaluation")) == 12
    assert old.calls == ["start tracer 2 12 0", *["score"] * 12, "finish"]


def test_callbacks_given_by_name_and_by_mapping(tmp_path: Path) -> None:
    run = make_run(population_size=2, tmp_path=tmp_path)
    run.optimize(Tracer, steps=3, callbacks=["jsonl", {"type": "jsonl", "path": str(tmp_path / "mine.jsonl")}])
    assert (tmp_path / "tracer" / "logs" / "events.jsonl").is_file() and (tmp_path / "mine.jsonl").is_file()


def test_a_failing_callback_warns_once_and_training_goes_on(tmp_path: Path) -> None:
    class Broken(poptrain.Callback):
        def on_evaluation(self, *args: Any) -> None:
            raise RuntimeError("disk full")

    seen = Recorder()
    run = make_run(population_size=2, tmp_path=tmp_path)
    with pytest.warns(poptrain.CallbackWarning) as caught:
        run.optimize(Tracer, steps=6, callbacks=[Broken(), seen])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert (
        messages[0].startswith("callback ") and "Broken failed in on_evaluation: RuntimeError: disk full" in messages[0]
    )
    assert "training goes on" in messages[0]
    assert messages[1].endswith("Broken failed 12 times in this run")
    assert run.refresh().record.state == "finished" and len(run.scores()) == 12  # nothing lost
    assert len(seen.of("evaluation")) == 12  # the callbacks after it heard everything


def test_a_failing_callback_stops_the_run_when_its_warning_is_an_error(tmp_path: Path) -> None:
    class Broken(poptrain.Callback):
        def on_decision(self, decision: poptrain.Decision) -> None:
            raise RuntimeError("no")

    seen = Recorder()
    run = make_run(population_size=2, tmp_path=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", poptrain.CallbackWarning)
        with pytest.raises(poptrain.CallbackWarning, match="failed in on_decision"):
            run.optimize(Tracer, steps=6, callbacks=[Broken(), seen])
    assert run.refresh().record.state == "failed" and seen.of("end")[0][0] == "failed"
    assert len(run.scores()) >= 6  # the scores seen before it stopped are kept


def test_a_callback_that_cannot_start_fails_the_run_before_it_trains(tmp_path: Path) -> None:
    class NoStart(poptrain.Callback):
        def on_run_start(self, info: poptrain.RunInfo) -> None:
            raise OSError("cannot reach the server")

    first = Recorder()
    run = make_run(population_size=2, tmp_path=tmp_path)
    with pytest.raises(poptrain.ConfigError) as error:
        run.optimize(Tracer, steps=6, callbacks=[first, NoStart()])
    assert str(error.value) == (
        "callback test_a_callback_that_cannot_start_fails_the_run_before_it_trains.<locals>.NoStart could not "
        "start: OSError: cannot reach the server; fix it or leave it out, then run again"
    )
    assert run.scores() == [] and run.refresh().record.state == "failed"
    assert [name for name, _ in first.events] == ["start", "end"]  # what started is ended


def test_keyboard_interrupt_in_a_callback_stops_the_run_as_ctrl_c_does(tmp_path: Path) -> None:
    class Stop(poptrain.Callback):
        def on_evaluation(self, slot: int, step: int, *args: Any) -> None:
            if step == 4:
                raise KeyboardInterrupt

    seen = Recorder()
    run = make_run(population_size=2, tmp_path=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run.optimize(Tracer, steps=6, callbacks=[Stop(), seen])
    assert run.refresh().record.state == "interrupted"
    state, error = seen.of("end")[0]
    assert state == "interrupted" and isinstance(error, KeyboardInterrupt)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tensorbord", "callbacks: unknown callback 'tensorbord'; known ones are jsonl, mlflow, tensorboard, wandb"),
        ({"type": "jsonl", "colour": 1}, "callbacks: jsonl: JsonlLogger.__init__() got an unexpected keyword"),
        ("poptrain.nothing.Here", "callbacks: cannot import 'poptrain.nothing.Here'"),
        ("poptrain.Run", "callbacks: 'poptrain.Run' is the class poptrain.run.Run, not a poptrain.Callback subclass"),
        ("poptrain.loggers._base.describe", "callbacks: poptrain.loggers._base.describe: describe() missing 1"),
        (3, "callbacks: 3 is not a callback; give a poptrain.Callback, one of jsonl, mlflow, tensorboard, wandb"),
    ],
)
def test_bad_callbacks_are_one_line_before_anything_is_written(tmp_path: Path, spec: Any, message: str) -> None:
    run = make_run(population_size=2, tmp_path=tmp_path)
    with pytest.raises(poptrain.ConfigError) as error:
        run.optimize(Tracer, steps=3, callbacks=[spec])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert run.scores() == [] and run.refresh().record.state != "failed"


def test_an_import_path_makes_a_callback(tmp_path: Path) -> None:
    run = make_run(population_size=2, tmp_path=tmp_path)
    run.optimize(Tracer, steps=3, callbacks=["tests.test_callbacks.Recorder", "tests.test_callbacks:Recorder"])
    assert run.refresh().record.state == "finished"
