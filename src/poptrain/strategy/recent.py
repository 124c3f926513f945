"""The recent evaluations of a member's model, for exploits that measure the scores' noise.

An exploit asks for them with an attribute ``recent_window`` (how many evaluations it reads);
the scheduler then fills ``MemberSnapshot.recent`` with ``lineage_scores``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from poptrain.records import GenerationRecord
from poptrain.strategy.plan import oriented


def recent_window(exploit: object) -> int:
    """How many recent evaluations ``exploit`` reads (its ``recent_window``; 0 when it reads none)."""
    window = getattr(exploit, "recent_window", 0)
    return window if isinstance(window, int) and not isinstance(window, bool) and window > 0 else 0


def lineage_scores(
    generations: Mapping[int, GenerationRecord],
    scores: Mapping[int, Mapping[int, float | None]],
    generation_id: int,
    step: int,
    window: int,
    fitness: Callable[[float | None], float | None],
) -> tuple[float, ...]:
    """The last ``window`` evaluations (oriented by ``fitness``, ``-inf`` when not finite) of the
    model that generation ``generation_id`` holds at ``step``, oldest first, up to and including
    ``step`` and never after it.

    Each step is read from the member that trained it along the model's lineage: a step at or
    before a generation's ``start_step`` was trained by its parent (after a copy, the donor's
    generation that trained the loaded checkpoint), so a member that copied another at step t
    reads its donor's evaluations up to t and its own after. ``generations``: by id;
    ``scores``: generation id -> step -> raw value (the generation that trained the step: a
    member that copied an older model trains some steps again as a new generation). Steps with
    no known score are passed over."""
    values: list[float] = []
    gen = generations.get(generation_id)
    s = step
    while gen is not None and s > 0 and len(values) < window:
        while gen is not None and gen.number > 0 and s <= gen.start_step:
            gen = generations.get(gen.parent_id) if gen.parent_id is not None else None
        if gen is None:
            break
        by_step = scores.get(gen.id, {})
        if s in by_step:
            values.append(oriented(by_step[s], fitness))
        s -= 1
    return tuple(reversed(values))
