"""Ready strategies: when a member compares itself with the population."""

from __future__ import annotations

from dataclasses import dataclass

from poptrain.errors import StrategyError
from poptrain.strategy._types import MemberSnapshot


@dataclass(frozen=True)
class every:
    """Ready every ``steps`` steps since the member's last ready point, once ``burn_in`` steps are done."""

    steps: int
    burn_in: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise StrategyError(f"every(steps=...) needs a whole number >= 1, got {self.steps!r}")
        if isinstance(self.burn_in, bool) or not isinstance(self.burn_in, int) or self.burn_in < 0:
            raise StrategyError(f"every(burn_in=...) needs a whole number >= 0, got {self.burn_in!r}")

    def __call__(self, member: MemberSnapshot) -> bool:
        return self.due(member.step, member.last_ready_step)

    def due(self, step: int, last_ready_step: int) -> bool:
        """Whether a member at ``step`` whose last ready point was at ``last_ready_step`` is ready
        (what calling this on the member's snapshot answers, without making the snapshot)."""
        return step >= self.burn_in and step - last_ready_step >= self.steps
