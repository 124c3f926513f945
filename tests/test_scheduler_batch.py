"""``Scheduler.record_scores``: a step's evaluations of the whole population recorded as one
batch (the vectorized executor's path) store what recording them one by one stores, and the
callbacks see every evaluation in the same order."""

from __future__ import annotations

import gc
import math
import time
from typing import Any

import pytest
import torch

import poptrain
from pbt_helpers import Tracer, make_run
from poptrain.errors import MetricError
from poptrain.scheduler import Scheduler
from poptrain.stopping import RunStopped
from poptrain.vectorized.trainable import metric_rows


class Seen(poptrain.Callback):
    def __init__(self) -> None:
        self.evaluations: list[tuple[Any, ...]] = []

    def on_evaluation(self, slot, step, score, metrics, hparams, generation):  # type: ignore[no-untyped-def]
        self.evaluations.append((slot, step, score, metrics, hparams, generation))


def evaluations(step: int, members: list[poptrain.MemberRecord]) -> list[tuple[Any, ...]]:
    """Each member's evaluation after ``step``: finite floats, and for two members a NaN score
    with an infinite metric and a ``None`` metric (stored as ``None``)."""
    batch = []
    for m in members:
        value = 0.5 * m.slot + step
        metrics: dict[str, Any] = {"score": value, "loss": 1.0 / (1 + value)}
        if m.slot == 2:
            value = math.nan
            metrics = {"score": value, "loss": math.inf}
        if m.slot == 3 and step == 2:
            metrics = {"score": value, "loss": None}
        batch.append((m, step, value, metrics))
    return batch


def record(tmp_path, storage: str, *, batched: bool, stop=()):  # type: ignore[no-untyped-def]
    run = make_run(f"batch-{batched}", population_size=5, storage=storage, tmp_path=tmp_path / f"b{batched}")
    seen = Seen()
    scheduler = Scheduler(
        run.record, run.storage, run.checkpoints, run.space, run.strategy, Tracer, 10, progress=seen, stop=stop
    )
    members = scheduler.members()
    times = []
    for step in (1, 2):
        batch = evaluations(step, members)
        began = time.time()
        if batched:
            members = scheduler.record_scores(batch)
        else:
            members = [scheduler.record_score(*evaluation) for evaluation in batch]
        times.append((began, time.time()))
    scheduler.flush()
    return run, scheduler, members, seen, times


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_a_batch_stores_what_recording_one_by_one_stores(tmp_path, storage):
    one_run, one, one_members, one_seen, _ = record(tmp_path, storage, batched=False)
    run, batch, members, seen, times = record(tmp_path, storage, batched=True)

    def stored(r: poptrain.Run) -> str:
        return repr([(s.slot, s.step, s.value, s.generation_id, s.metrics) for s in r.scores()])

    assert stored(run) == stored(one_run)
    assert len(run.scores()) == 10
    assert repr(members) == repr(one_members)  # each member with its new step and score
    assert [(m.step, m.slot) for m in members] == [(2, slot) for slot in range(5)]
    assert repr(run.members()) == repr(one_run.members())
    assert repr(batch._scores) == repr(one._scores)  # what fair comparisons read
    for score in run.scores():  # one wall time for each step's batch, taken while it was recorded
        began, ended = times[score.step - 1]
        assert began <= score.wall_time <= ended
    assert len({s.wall_time for s in run.scores() if s.step == 1}) == 1
    # every evaluation reaches the callbacks, member by member in the batch's order
    assert repr(seen.evaluations) == repr(one_seen.evaluations)
    assert [(e[0], e[1]) for e in seen.evaluations] == [(slot, step) for step in (1, 2) for slot in range(5)]


def test_callbacks_get_copies_of_the_metrics():
    run = make_run("copies", population_size=3)
    seen = Seen()
    scheduler = Scheduler(run.record, run.storage, run.checkpoints, run.space, run.strategy, Tracer, 10, progress=seen)
    batch = evaluations(1, scheduler.members())
    scheduler.record_scores(batch)
    for (_, _, _, metrics, hparams, _), (member, _, _, given) in zip(seen.evaluations, batch, strict=True):
        assert metrics == given and metrics is not given
        assert hparams == member.hparams and hparams is not member.hparams


def test_a_batch_under_a_time_budget_stops_after_the_score_that_spends_it():
    stored = []
    for batched in (True, False):
        run = make_run(f"budget-{batched}", population_size=4)
        stop = [poptrain.time_budget(seconds=1e-9)]
        scheduler = Scheduler(run.record, run.storage, run.checkpoints, run.space, run.strategy, Tracer, 10, stop=stop)
        batch = evaluations(1, scheduler.members())
        with pytest.raises(RunStopped):
            scheduler.record_scores(batch) if batched else [scheduler.record_score(*e) for e in batch]
        stored.append([(s.slot, s.step) for s in run.scores()])
    assert stored == [[(0, 1)], [(0, 1)]]


def test_metric_rows_are_one_dict_of_floats_per_member():
    rows = metric_rows({"a": torch.tensor([1.0, 2.5]), "b": [1, 2], "c": 3, "d": torch.tensor([1, 0])}, 2)
    assert rows == [{"a": 1.0, "b": 1.0, "c": 3.0, "d": 1.0}, {"a": 2.5, "b": 2.0, "c": 3.0, "d": 0.0}]
    assert all(type(v) is float for row in rows for v in row.values())
    assert rows[0] is not rows[1]
    assert metric_rows({}, 2) == [{}, {}]
    with pytest.raises(MetricError, match="returned 3 values for 'a' and a population of 2"):
        metric_rows({"a": [1.0, 2.0, 3.0]}, 2)


def test_the_vectorized_executor_gives_back_the_heap_it_froze():
    from poptrain.executors.vectorized import _frozen_heap

    before = gc.get_freeze_count()
    with pytest.raises(RuntimeError), _frozen_heap():  # training failed: the heap is unfrozen all the same
        assert gc.get_freeze_count() > before
        raise RuntimeError
    assert gc.get_freeze_count() == before
    gc.freeze()  # a process that froze its heap itself keeps it frozen
    try:
        frozen = gc.get_freeze_count()
        with _frozen_heap():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
