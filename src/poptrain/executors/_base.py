"""What an executor is: something that drives a ``Controller`` until every member is done."""

from __future__ import annotations

from abc import ABC, abstractmethod

from poptrain.controller import Controller


class Executor(ABC):
    """Trains the members of a run; all decisions come from the controller's strategy."""

    def check(self, trainable: object, *, synchronous: bool = False) -> None:  # noqa: B027 - optional hook
        """Refuse, before anything is written, training code (or synchronous PBT) this executor cannot run."""

    @abstractmethod
    def run(self, controller: Controller) -> None:
        """Train every member to ``controller.total_steps``."""
