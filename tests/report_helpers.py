"""Runs for report and dashboard tests: a known synthetic history and a small toy run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import poptrain
from poptrain.experiments.toy import ToyQuadratic
from poptrain.records import NewCheckpoint, ReadyPoint, ScoreRecord
from poptrain.storage import InMemoryStorage
from poptrain.strategy import Decision

SPACE = {"h0": poptrain.Float(0.0, 1.0), "h1": poptrain.Float(0.0, 1.0)}


def _ckpt(tag: str) -> NewCheckpoint:
    return NewCheckpoint(f"ckpt/{tag}.pt", "0" * 64, 10)


def synthetic() -> tuple[Any, InMemoryStorage]:
    """Two members, four steps; member 1 copies member 0 at step 2 (and explores h0)."""
    storage = InMemoryStorage()
    run = storage.create_run(
        "tiny",
        spec={"metric": "acc", "mode": "max", "population_size": 2},
        seed=0,
        initial_hparams=[{"h0": 0.5, "h1": 0.1}, {"h0": 0.2, "h1": 0.9}],
    )
    g0, g1 = (m.generation_id for m in storage.get_members(run.id))
    storage.record_scores(run.id, [ScoreRecord(0, 1, 0.3, g0), ScoreRecord(1, 1, 0.1, g1)])
    storage.record_ready(
        run.id,
        [
            ReadyPoint(0, 2, _ckpt("0-2"), 0.6),
            ReadyPoint(1, 2, _ckpt("1-2"), 0.2, Decision(1, 2, "exploit", {"h0": 0.6, "h1": 0.1}, 0, {"h0": "* 1.2"})),
        ],
        [ScoreRecord(0, 2, 0.6, g0), ScoreRecord(1, 2, 0.2, g1)],
    )
    g1b = {m.slot: m for m in storage.get_members(run.id)}[1].generation_id
    storage.record_scores(
        run.id,
        [
            ScoreRecord(0, 3, 0.5, g0),
            ScoreRecord(1, 3, 0.7, g1b),
            ScoreRecord(0, 4, 0.55, g0),
            ScoreRecord(1, 4, 0.8, g1b),
        ],
    )
    return storage.get_run("tiny"), storage


def toy_run(root: Path, name: str = "toy", population: int = 2, **kwargs: Any) -> poptrain.Run:
    run = poptrain.create_run(
        name=name, space=SPACE, population_size=population, metric="Q", root=root, ready=poptrain.every(4), **kwargs
    )
    return run.optimize(ToyQuadratic, steps=16)
