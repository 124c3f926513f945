"""An exploit that copies only a donor better beyond the noise of the scores: the original PBT
paper's t-test selection."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from poptrain.errors import StrategyError
from poptrain.strategy._types import MemberSnapshot
from poptrain.strategy.exploit import rank


def _student_sf() -> Callable[[float, float], float]:
    """Student's t distribution's survival function ``sf(df, t) = P(T > t)`` (scipy's ``stdtr``
    ufunc: a microsecond, where ``scipy.stats.ttest_ind`` takes a millisecond per decision)."""
    from scipy.special import stdtr

    return lambda df, t: float(stdtr(df, -t))


def welch_p_greater(a: np.ndarray, b: np.ndarray) -> float:
    """The one-sided p-value of Welch's t-test that ``a``'s mean is greater than ``b``'s (what
    ``scipy.stats.ttest_ind(a, b, equal_var=False, alternative="greater")`` returns; NaN when
    both samples are constant)."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0.0:
        return math.nan
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return _student_sf()(df, t)


@dataclass(frozen=True)
class ttest:
    """T-test selection (Jaderberg et al., 2017, Section 3): a ready member meets one other member
    drawn uniformly at random and copies it when the other's last ``window`` evaluations are
    better than its own by a one-sided Welch's t-test at significance ``alpha``.

    Against noisy evaluations this resists greed: a donor that is better only within the noise
    of the scores is not copied, so a lucky evaluation does not overwrite a member as good as it.
    The evaluations are the models' along their lineage (``MemberSnapshot.recent``: a member that
    just copied another reads its donor's evaluations before the copy). Both sides need at least
    two evaluations; when neither varies, the better mean wins. A member whose recent evaluations
    are not all finite copies any opponent whose are; an opponent whose are not is never copied.
    Unlike ``truncation(min_gap=g)`` (a fixed gap in the metric's units), the noise is measured.
    """

    window: int = 10
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 2:
            raise StrategyError(
                f"ttest(window=...) needs a whole number >= 2 (evaluations compared), got {self.window!r}"
            )
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 < self.alpha < 1.0:
            raise StrategyError(
                f"ttest(alpha=...) must be a significance level in (0, 1), e.g. 0.05, got {self.alpha!r}"
            )

    @property
    def recent_window(self) -> int:
        """How many recent evaluations of each member the scheduler puts in its snapshot."""
        return self.window

    def __call__(
        self, member: MemberSnapshot, population: Sequence[MemberSnapshot], rng: np.random.Generator
    ) -> int | None:
        others = [m for m in rank(population) if m.slot != member.slot]
        if not others or not member.ranked:
            return None
        opponent = others[int(rng.integers(len(others)))]
        return opponent.slot if self.better(opponent.recent, member.recent) else None

    def better(self, donor: Sequence[float], member: Sequence[float]) -> bool:
        """Whether evaluations ``donor`` are significantly better (higher) than ``member``'s."""
        a, b = np.asarray(donor[-self.window :], float), np.asarray(member[-self.window :], float)
        if len(a) < 2 or len(b) < 2 or not np.isfinite(a).all():
            return False
        if not np.isfinite(b).all():
            return True
        if a.var() == 0.0 and b.var() == 0.0:
            return bool(a.mean() > b.mean())
        with np.errstate(all="ignore"):  # nearly identical samples
            p = welch_p_greater(a, b)
        return not math.isnan(p) and p < self.alpha
