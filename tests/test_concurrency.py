"""Eight worker processes training, reporting and deciding at once against one database
(SQLite and PostgreSQL): afterwards every score and decision is there exactly once and the
lineage is consistent."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import poptrain
from kill_target import SlowToy
from poptrain.experiments.toy import SPACE

POPULATION, STEPS, WORKERS = 10, 40, 8


def check_consistent(run: poptrain.Run) -> None:
    counts = Counter((s.slot, s.step) for s in run.scores())
    assert set(counts.values()) == {1}, "a score was written twice"
    assert len(counts) == POPULATION * STEPS, "a score is missing"
    members = run.members()
    assert all(m.state == "finished" and m.step == STEPS for m in members)
    generations = run.lineage()
    by_id = {g.id: g for g in generations}
    checkpoints = {c.id: c for c in run.storage.get_checkpoints(run.record.id)}
    assert len({(c.slot, c.step) for c in checkpoints.values()}) == len(checkpoints), "a ready point was recorded twice"
    for slot in range(POPULATION):
        numbers = [g.number for g in generations if g.slot == slot]
        assert numbers == list(range(len(numbers))), f"member {slot}'s generations are not 0..n once each"
        assert next(m for m in members if m.slot == slot).generation == numbers[-1]
    for gen in generations:
        if gen.kind == "exploit":
            loaded = checkpoints[gen.loaded_checkpoint_id]
            parent = by_id[gen.parent_id]
            assert loaded.slot == gen.donor == parent.slot
            assert parent.start_step < loaded.step or parent.number == 0
            # a decision is taken at one of the member's own ready points
            assert (gen.slot, gen.start_step) in {(c.slot, c.step) for c in checkpoints.values()}
    assert sum(g.kind == "exploit" for g in generations) > 0


def concurrent_run(tmp_path: Path, storage: str | None) -> poptrain.Run:
    run = poptrain.create_run(
        name="many",
        space=SPACE,
        population_size=POPULATION,
        metric="Q",
        ready=poptrain.every(2),
        exploit=poptrain.truncation(0.3),
        seed=3,
        storage=storage,
        root=tmp_path,
    )
    return run.optimize(SlowToy, steps=STEPS, executor="processes", workers=WORKERS, flush_seconds=0.0)


@pytest.mark.slow
def test_eight_workers_on_sqlite(tmp_path: Path) -> None:
    check_consistent(concurrent_run(tmp_path, None))


@pytest.mark.slow
def test_eight_workers_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    check_consistent(concurrent_run(tmp_path, postgres_url))
