"""``ProgressListener``: the callback hooks under their first names, kept for code written
against them. New code subclasses ``poptrain.Callback`` (see ``poptrain.callbacks``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from poptrain.callbacks import Callback, RunInfo


class ProgressListener(Callback):
    """A ``Callback`` whose hooks are ``on_start``, ``on_score`` (the run's metric only),
    ``on_checkpoint``, ``on_decision`` and ``on_finish``; override what you need."""

    def on_run_start(self, info: RunInfo) -> None:
        self.on_start(info.name, info.population_size, info.total_steps, info.done_steps)

    def on_evaluation(
        self,
        slot: int,
        step: int,
        score: float,
        metrics: Mapping[str, float],
        hparams: Mapping[str, Any],
        generation: int,
    ) -> None:
        self.on_score(slot, step, score, dict(hparams), generation)

    def on_run_end(self, state: str, error: BaseException | None) -> None:
        self.on_finish()

    def on_start(self, run_name: str, population_size: int, total_steps: int, done_steps: int) -> None:
        """Training begins (``done_steps`` already done, when resuming)."""

    def on_score(self, slot: int, step: int, value: float, hparams: dict[str, Any], generation: int) -> None:
        """Member ``slot`` finished ``step`` with score ``value``."""

    def on_finish(self) -> None:
        """Training ended (completed or not)."""
