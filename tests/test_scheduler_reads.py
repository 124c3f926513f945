"""What the scheduler reads from storage: a worker's ready point reads the scores its decision
compares (at its step, or its exploit's recent window), not every score of the run."""

from __future__ import annotations

from typing import Any

import poptrain
from pbt_helpers import Tracer, make_run
from poptrain.scheduler import Scheduler


class CountingStorage:
    """A storage that records each ``get_scores`` call: its filters and the steps it returned."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.reads: list[tuple[dict[str, Any], list[int]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def get_scores(self, run_id: int, **filters: Any) -> list[Any]:
        scores = self.storage.get_scores(run_id, **filters)
        self.reads.append((filters, [s.step for s in scores]))
        return scores


def scheduler_for(run: poptrain.Run) -> tuple[Scheduler, CountingStorage]:
    storage = CountingStorage(run.storage)
    scheduler = Scheduler(run.record, storage, run.checkpoints, run.space, run.strategy, Tracer, 10)  # type: ignore[arg-type]
    return scheduler, storage


def test_a_ready_point_reads_the_scores_at_its_step():
    run = make_run("at-step", population_size=4)
    run.optimize(Tracer, steps=10)
    scheduler, storage = scheduler_for(run)
    scheduler.learn_stored(6)
    [(filters, steps)] = storage.reads
    assert filters == {"step": 6} and steps == [6] * 4
    at_six = {s.generation_id: {6: s.value} for s in run.scores() if s.step == 6}
    assert len(at_six) == 4 and scheduler._scores == at_six  # by the generation that trained the step


def test_a_recent_window_reads_the_steps_it_covers():
    run = make_run("window", population_size=4, exploit=poptrain.ttest(window=3))
    run.optimize(Tracer, steps=10)
    scheduler, storage = scheduler_for(run)
    scheduler.learn_stored(6)
    [(filters, steps)] = storage.reads
    assert filters == {"since": 4}  # steps 4 to 6 are the window of a member ranked at step 6
    assert min(steps) == 4 and len(steps) < len(run.scores())
