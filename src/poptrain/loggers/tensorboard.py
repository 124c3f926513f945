"""``TensorBoardLogger``: event files per member, for ``tensorboard --logdir runs/NAME/logs/tensorboard``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from poptrain.callbacks import Callback, RunInfo
from poptrain.loggers._base import describe, numbers, require
from poptrain.printable import printable
from poptrain.records import Decision


class TensorBoardLogger(Callback):
    """Writes one event folder per member, ``DIR/member-<slot>`` (default ``DIR``:
    ``runs/NAME/logs/tensorboard``), so TensorBoard draws the members as runs side by side:

    - every metric ``evaluate()`` returned, under its own name, at the member's step;
    - ``hparams/<name>``: each hyperparameter the step trained with, as a scalar (numbers and
      booleans; choices that are not numbers are in the decision texts);
    - ``pbt/generation``: the member's generation;
    - ``pbt/decision``: each decision as text (``exploit of member 3: lr * 0.8``, and the new
      hyperparameters), at the step it was taken.

    ``flush_secs`` is how often the files are written through. A resumed run adds files to
    the same folders.
    """

    def __init__(self, dir: str | Path | None = None, *, flush_secs: int = 10) -> None:
        require("tensorboard", "tensorboard", "the tensorboard logger")
        self._summary = require("torch.utils.tensorboard", "tensorboard", "the tensorboard logger")
        self.dir = None if dir is None else Path(dir)
        self.flush_secs = flush_secs
        self._writers: dict[int, Any] = {}

    def _writer(self, slot: int) -> Any:
        writer = self._writers.get(slot)
        if writer is None:
            assert self.dir is not None
            writer = self._writers[slot] = self._summary.SummaryWriter(
                str(self.dir / f"member-{slot}"), flush_secs=self.flush_secs
            )
        return writer

    def on_run_start(self, info: RunInfo) -> None:
        if self.dir is None:
            self.dir = info.log_dir("tensorboard")
        self.dir.mkdir(parents=True, exist_ok=True)

    def on_evaluation(
        self,
        slot: int,
        step: int,
        score: float,
        metrics: Mapping[str, float],
        hparams: Mapping[str, Any],
        generation: int,
    ) -> None:
        writer = self._writer(slot)
        for name, value in metrics.items():
            writer.add_scalar(name, value, step)
        for name, value in numbers(hparams).items():
            writer.add_scalar(f"hparams/{name}", value, step)
        writer.add_scalar("pbt/generation", generation, step)

    def on_decision(self, decision: Decision) -> None:
        hparams = ", ".join(f"{k}={v!r}" for k, v in decision.hparams.items())
        text = printable(f"{describe(decision)} (hyperparameters now {hparams})")
        self._writer(decision.slot).add_text("pbt/decision", text, decision.step)

    def on_run_end(self, state: str, error: BaseException | None) -> None:
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()
