"""Shared helpers: a tiny trainable whose state records the hyperparameters it was trained with."""

from __future__ import annotations

import math
import os
import time

import pytest

import poptrain

SPACE = {"rate": poptrain.Float(0.1, 1.0), "width": poptrain.Int(1, 8)}


class Tracer(poptrain.Trainable):
    """Adds ``rate`` to ``x`` each step and keeps a trace of the hyperparameters of every step
    it was trained with, so a checkpoint tells exactly which schedule produced it."""

    def setup(self, hparams, context):
        self.x = 0.0
        self.trace = []
        self.hparams = dict(hparams)

    def step(self):
        self.x += self.hparams["rate"]
        self.trace.append(dict(self.hparams))

    def evaluate(self):
        return {"score": self.x, "steps_trained": float(len(self.trace))}

    def state_dict(self):
        return {"x": self.x, "trace": [dict(h) for h in self.trace]}

    def load_state_dict(self, state):
        self.x = float(state["x"])
        self.trace = [dict(h) for h in state["trace"]]

    def set_hparams(self, hparams):
        self.hparams = dict(hparams)


class SlowTracer(Tracer):
    """A Tracer whose steps take a little time, so that a run can be interrupted mid-way."""

    def step(self):
        time.sleep(0.03)
        super().step()


def ray_or_skip():
    """Ray, or skip the module where it is not installed (CI installs it: a missing Ray fails there)."""
    if os.environ.get("CI"):
        import ray

        return ray
    return pytest.importorskip("ray")


def make_run(name="tracer", *, population_size=6, seed=0, storage="memory", tmp_path=None, **options):
    if storage == "sqlite":
        storage = f"sqlite:///{tmp_path}/{name}/poptrain.db"
    options.setdefault("ready", poptrain.every(3))
    # these runs exercise the machinery (lineage, copies, callbacks), so they use the exploit that
    # copies whenever a member is in the bottom quantile, not the default's noise-aware t-test
    options.setdefault("exploit", poptrain.truncation(0.2))
    return poptrain.create_run(
        name=name,
        space=SPACE,
        population_size=population_size,
        metric="score",
        seed=seed,
        storage=storage,
        root=str(tmp_path) if tmp_path else "runs",
        **options,
    )


def lineage_signature(run):
    """The lineage and scores (by step, then member) of a run without storage ids or wall-clock
    times, comparable across backends and executors."""
    generations = run.lineage()
    checkpoints = {c.id: (c.slot, c.step) for c in run.storage.get_checkpoints(run.record.id)}
    name = {g.id: (g.slot, g.number) for g in generations}
    lineage = [
        (
            g.slot,
            g.number,
            g.start_step,
            g.kind,
            g.donor,
            name.get(g.parent_id),
            checkpoints.get(g.loaded_checkpoint_id),
            g.hparams,
            g.operations,
        )
        for g in generations
    ]
    scores = [
        (s.slot, s.step, _comparable(s.value), name[s.generation_id], _comparable(s.metrics)) for s in run.scores()
    ]
    return lineage, sorted(scores, key=lambda s: (s[1], s[0]))  # workers report in any order


def _comparable(value):
    """NaN != NaN; spell it out so that signatures with NaN scores compare equal."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    return "nan" if isinstance(value, float) and math.isnan(value) else value
