"""``MLflowLogger``: the PBT run as an MLflow run, with one nested run per member."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from poptrain.callbacks import Callback, RunInfo
from poptrain.loggers._base import describe, numbers, require
from poptrain.records import Decision

RUN_KEY = (
    "poptrain.run_key"  # tag naming the poptrain run (name and creation time): a resumed run finds its MLflow runs
)
SLOT = "poptrain.slot"
PARENT = "mlflow.parentRunId"
ENDED = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MLflowLogger(Callback):
    """Logs the run to MLflow: a parent run named after the PBT run (its settings as params,
    ``best_<metric>`` over steps: the best saved model's score) and, nested under it, one run
    per member (``member-<slot>``) with

    - its first hyperparameters as params;
    - every metric ``evaluate()`` returned, ``hparams/<name>`` for each numeric hyperparameter
      and ``pbt/generation``, at the member's step;
    - each decision: the tag ``poptrain.last_decision``, ``pbt/donor`` (the copied member, -1
      for an explore) at its step, and all of them as the artifact ``decisions.txt`` when the
      run ends.

    ``tracking_uri``: where to log; default ``MLFLOW_TRACKING_URI`` when set, else a SQLite
    store in the run's folder, ``runs/NAME/logs/mlflow/mlflow.db`` (its artifacts beside it;
    see it with ``mlflow ui --backend-store-uri sqlite:///runs/NAME/logs/mlflow/mlflow.db``).
    ``experiment``: the MLflow experiment (default: the run's name). A resumed run continues
    the same MLflow runs.
    """

    def __init__(self, tracking_uri: str | None = None, *, experiment: str | None = None) -> None:
        require("mlflow", "mlflow", "the mlflow logger")
        self._tracking = require("mlflow.tracking", "mlflow", "the mlflow logger")
        self._entities = require("mlflow.entities", "mlflow", "the mlflow logger")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._client: Any = None
        self._parent: str | None = None
        self._children: dict[int, str] = {}
        self._decisions: dict[int, list[str]] = {}
        self._best: float | None = None
        self._info: RunInfo | None = None

    def on_run_start(self, info: RunInfo) -> None:
        self._info = info
        uri, artifacts = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), None
        if not uri:
            folder = info.log_dir("mlflow").resolve()
            folder.mkdir(parents=True, exist_ok=True)
            uri, artifacts = f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()
        self.tracking_uri = uri
        schema_log = logging.getLogger("mlflow.store.db.utils")  # "Creating initial MLflow database tables..."
        level = schema_log.level
        schema_log.setLevel(logging.WARNING)
        try:
            client = self._client = self._tracking.MlflowClient(tracking_uri=uri)
        finally:
            schema_log.setLevel(level)
        name = self.experiment or info.name
        found = client.get_experiment_by_name(name)
        experiment = found.experiment_id if found is not None else client.create_experiment(name, artifacts)
        key = f"{info.name}@{info.record.created_at!r}"
        runs = client.search_runs([experiment], filter_string=f"tags.`{RUN_KEY}` = {_quoted(key)}")
        parents = [r for r in runs if PARENT not in r.data.tags]
        if parents:  # a resumed run
            self._parent = parents[0].info.run_id
            client.update_run(self._parent, status="RUNNING")
            for r in runs:
                if r.data.tags.get(PARENT) == self._parent and SLOT in r.data.tags:
                    self._children[int(r.data.tags[SLOT])] = r.info.run_id
                    client.update_run(r.info.run_id, status="RUNNING")
            return
        parent = client.create_run(experiment, run_name=info.name, tags={RUN_KEY: key, "poptrain.run": info.name})
        self._parent = parent.info.run_id
        settings = {
            "population_size": info.population_size,
            "metric": info.metric,
            "mode": info.mode,
            "steps": info.steps,
            "seed": info.seed,
            "executor": info.executor,
            "strategy": json.dumps(dict(info.record.settings.strategy), default=str)[:6000],
            "space": json.dumps(dict(info.record.settings.space), default=str)[:6000],
        }
        Param = self._entities.Param
        client.log_batch(self._parent, params=[Param(k, str(v)) for k, v in settings.items()])

    def _child(self, slot: int, hparams: Mapping[str, Any]) -> str:
        run_id = self._children.get(slot)
        if run_id is not None:
            return run_id
        assert self._info is not None and self._parent is not None, "on_run_start comes first"
        client = self._client
        parent = client.get_run(self._parent)
        tags = {PARENT: self._parent, SLOT: str(slot), RUN_KEY: parent.data.tags[RUN_KEY]}
        run = client.create_run(parent.info.experiment_id, run_name=f"member-{slot}", tags=tags)
        Param = self._entities.Param
        client.log_batch(run.info.run_id, params=[Param(str(k), str(v)[:6000]) for k, v in hparams.items()])
        self._children[slot] = run.info.run_id
        return run.info.run_id

    def on_evaluation(
        self,
        slot: int,
        step: int,
        score: float,
        metrics: Mapping[str, float],
        hparams: Mapping[str, Any],
        generation: int,
    ) -> None:
        run_id = self._child(slot, hparams)
        now, Metric = int(time.time() * 1000), self._entities.Metric
        values = {**metrics, **{f"hparams/{k}": v for k, v in numbers(hparams).items()}, "pbt/generation": generation}
        self._client.log_batch(run_id, metrics=[Metric(str(k), float(v), now, step) for k, v in values.items()])

    def on_checkpoint(self, slot: int, step: int, value: float) -> None:
        info = self._info
        if info is None or self._parent is None or not math.isfinite(value):
            return
        if self._best is None or (value > self._best if info.mode == "max" else value < self._best):
            self._best = value
            self._client.log_metric(self._parent, f"best_{info.metric}", value, step=step)

    def on_decision(self, decision: Decision) -> None:
        run_id = self._child(decision.slot, decision.hparams)
        words = describe(decision)
        self._client.set_tag(run_id, "poptrain.last_decision", words[:5000])
        donor = -1 if decision.donor is None else decision.donor
        self._client.log_metric(run_id, "pbt/donor", donor, step=decision.step)
        hparams = ", ".join(f"{k}={v!r}" for k, v in decision.hparams.items())
        self._decisions.setdefault(decision.slot, []).append(f"step {decision.step}: {words} -> {hparams}")

    def on_run_end(self, state: str, error: BaseException | None) -> None:
        if self._client is None or self._parent is None:
            return
        status = ENDED.get(state, "FAILED")
        for slot, run_id in self._children.items():
            lines = self._decisions.get(slot)
            if lines:
                self._client.log_text(run_id, "\n".join(lines) + "\n", "decisions.txt")
            self._client.set_terminated(run_id, status=status)
        self._client.set_terminated(self._parent, status=status)
        self._children, self._decisions, self._parent = {}, {}, None
