"""Events a run emits while it trains; the terminal display and tests listen to them."""

from __future__ import annotations

from poptrain.strategy import Decision


class ProgressListener:
    """Override what you need; every method does nothing by default."""

    def on_start(self, run_name: str, population_size: int, total_steps: int, done_steps: int) -> None:
        """Training begins (``done_steps`` already done, when resuming)."""

    def on_score(self, slot: int, step: int, value: float, hparams: dict, generation: int) -> None:
        """Member ``slot`` finished ``step`` with score ``value``."""

    def on_checkpoint(self, slot: int, step: int, value: float) -> None:
        """Member ``slot`` saved its model at ``step`` with score ``value`` (a model ``best()`` can hand over)."""

    def on_decision(self, decision: Decision) -> None:
        """A ready member exploited or explored."""

    def on_finish(self) -> None:
        """Training ended (completed or not)."""
