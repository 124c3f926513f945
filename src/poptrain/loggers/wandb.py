"""``WandbLogger``: one Weights & Biases run per member, grouped under the PBT run."""

from __future__ import annotations

import hashlib
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from poptrain.callbacks import Callback, RunInfo
from poptrain.loggers._base import describe, require
from poptrain.records import Decision

MODES = ("online", "offline", "disabled")


def _configured() -> bool:
    """Whether this machine has W&B credentials (``WANDB_API_KEY`` or a netrc entry for its host)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLogger(Callback):
    """Logs each member to a W&B run of its own (``NAME/member-<slot>``), grouped by the run's
    name, so W&B's grouping draws the population together:

    - every metric ``evaluate()`` returned, ``hparams/<name>`` for each hyperparameter (numbers,
      booleans and strings as W&B takes them) and ``pbt/generation``, against the member's
      ``step`` (the x-axis of every chart);
    - each decision: ``pbt/decision`` (in words) in the run's history at its step, and every
      decision as the table ``decisions`` when the run ends; the member's config holds the
      run's settings and its first hyperparameters.

    ``mode``: ``"online"``, ``"offline"`` or ``"disabled"``; by default ``WANDB_MODE`` when set,
    else online when this machine has W&B credentials (``wandb login``), else offline (files
    under ``DIR/wandb``, to upload later with ``wandb sync``). ``dir`` defaults to
    ``runs/NAME/logs``. A resumed run continues the same W&B runs (their ids come from the run's
    name and creation time).
    """

    def __init__(
        self,
        project: str = "poptrain",
        *,
        entity: str | None = None,
        dir: str | Path | None = None,
        mode: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        self._wandb = require("wandb", "wandb", "the wandb logger")
        if mode is not None and mode not in MODES:
            from poptrain.errors import ConfigError

            raise ConfigError(f"wandb logger: mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.project, self.entity, self.mode, self.tags = project, entity, mode, tags
        self.dir = None if dir is None else Path(dir)
        self._info: RunInfo | None = None
        self._runs: dict[int, Any] = {}
        self._decisions: dict[int, list[list[Any]]] = {}
        self._broken: Exception | None = None  # wandb.init failed: not tried again (it may wait on the network)

    def _mode(self) -> str:
        if self.mode is not None:
            return self.mode
        return os.environ.get("WANDB_MODE") or ("online" if _configured() else "offline")

    def on_run_start(self, info: RunInfo) -> None:
        self._info = info
        if self.dir is None:
            self.dir = info.log_dir("")
        self.dir.mkdir(parents=True, exist_ok=True)

    def _run(self, slot: int, hparams: Mapping[str, Any]) -> Any:
        run = self._runs.get(slot)
        if run is not None:
            return run
        if self._broken is not None:
            raise self._broken
        info = self._info
        assert info is not None, "on_run_start comes first"
        key = f"{info.name}\0{info.record.created_at}\0{slot}"
        config = {
            "run": info.name,
            "member": slot,
            "metric": info.metric,
            "mode": info.mode,
            "population_size": info.population_size,
            "steps": info.steps,
            "seed": info.seed,
            "executor": info.executor,
            "strategy": dict(info.record.settings.strategy),
            "hparams": dict(hparams),
        }
        wandb = self._wandb
        try:
            run = self._init(wandb, slot, key, config)
        except Exception as exc:
            self._broken = exc
            raise
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        self._runs[slot] = run
        return run

    def _init(self, wandb: Any, slot: int, key: str, config: dict[str, Any]) -> Any:
        info = self._info
        assert info is not None
        mode = self._mode()
        # one banner and one summary per member would bury the progress display: offline runs say
        # nothing (docs/callbacks.md tells where they are), online ones only what matters
        quiet = {"silent": True} if mode != "online" else {"quiet": True}
        return wandb.init(
            project=self.project,
            entity=self.entity,
            group=info.name,
            job_type="member",
            name=f"{info.name}/member-{slot}",
            id=hashlib.sha256(key.encode()).hexdigest()[:16],
            resume="allow",
            dir=str(self.dir),
            mode=mode,
            config=config,
            tags=self.tags,
            reinit="create_new",
            settings=wandb.Settings(console="off", x_disable_stats=True, **quiet),
        )

    def on_evaluation(
        self,
        slot: int,
        step: int,
        score: float,
        metrics: Mapping[str, float],
        hparams: Mapping[str, Any],
        generation: int,
    ) -> None:
        row: dict[str, Any] = {"step": step, **metrics, "pbt/generation": generation}
        row.update({f"hparams/{k}": v for k, v in hparams.items() if isinstance(v, (bool, int, float, str))})
        self._run(slot, hparams).log(row)

    def on_decision(self, decision: Decision) -> None:
        run = self._run(decision.slot, decision.hparams)
        run.log({"step": decision.step, "pbt/decision": describe(decision)})
        self._decisions.setdefault(decision.slot, []).append(
            [decision.step, decision.kind, decision.donor, dict(decision.operations), dict(decision.hparams)]
        )

    def on_run_end(self, state: str, error: BaseException | None) -> None:
        runs, self._runs = self._runs, {}
        for slot, run in runs.items():
            rows = [
                [step, kind, donor, str(ops), str(hp)] for step, kind, donor, ops, hp in self._decisions.get(slot, [])
            ]
            if rows:
                columns = ["step", "kind", "donor", "operations", "hparams"]
                run.log({"decisions": self._wandb.Table(columns=columns, data=rows)})
            run.summary["pbt/state"] = state
            run.finish(exit_code=0 if state == "finished" else 1)
        self._decisions = {}
