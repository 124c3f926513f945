"""``JsonlLogger``: every event of a run as one JSON object a line, in a file of its own."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from poptrain.callbacks import Callback, RunInfo
from poptrain.loggers._base import finite_or_text
from poptrain.records import Decision


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): finite_or_text(v) if isinstance(v, float) else v for k, v in values.items()}


class JsonlLogger(Callback):
    """Appends one JSON object a line to ``path`` (default ``runs/NAME/logs/events.jsonl``), each
    with ``event`` and ``time`` (seconds since the epoch):

    - ``run_start``: ``run``, ``metric``, ``mode``, ``population_size``, ``steps``, ``done_steps``, ``seed``, ``executor``
    - ``evaluation``: ``slot``, ``step``, ``score``, ``metrics``, ``hparams``, ``generation``
    - ``checkpoint``: ``slot``, ``step``, ``score``
    - ``decision``: ``slot``, ``step``, ``kind``, ``donor``, ``hparams``, ``operations``
    - ``run_end``: ``state``, ``error``

    A resumed run appends to the same file. Numbers that are not finite are written as the
    strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (JSON has no such numbers;
    ``float()`` reads them back); values JSON cannot hold are written as their ``str()``.
    Every line is written through at once, so ``tail -f`` follows the run.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._file: IO[str] | None = None

    def _write(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        line = json.dumps({"event": event, "time": time.time(), **fields}, default=str, allow_nan=False)
        self._file.write(line + "\n")

    def on_run_start(self, info: RunInfo) -> None:
        if self.path is None:
            self.path = info.log_dir("events.jsonl")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8", buffering=1)  # line-buffered
        self._write(
            "run_start",
            run=info.name,
            metric=info.metric,
            mode=info.mode,
            population_size=info.population_size,
            steps=info.steps,
            done_steps=info.done_steps,
            seed=info.seed,
            executor=info.executor,
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
        self._write(
            "evaluation",
            slot=slot,
            step=step,
            score=finite_or_text(score),
            metrics=_plain(metrics),
            hparams=_plain(hparams),
            generation=generation,
        )

    def on_checkpoint(self, slot: int, step: int, value: float) -> None:
        self._write("checkpoint", slot=slot, step=step, score=finite_or_text(value))

    def on_decision(self, decision: Decision) -> None:
        self._write(
            "decision",
            slot=decision.slot,
            step=decision.step,
            kind=decision.kind,
            donor=decision.donor,
            hparams=_plain(decision.hparams),
            operations=dict(decision.operations),
        )

    def on_run_end(self, state: str, error: BaseException | None) -> None:
        self._write("run_end", state=state, error=None if error is None else f"{type(error).__name__}: {error}")
        if self._file is not None:
            self._file.close()
            self._file = None
