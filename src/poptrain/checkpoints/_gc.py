"""Which checkpoint files may go: a pure function of the run's records.

Kept, whatever the policy: every member's newest checkpoint (a donor's) and the one it resumes
from (a pending exploit), the best member's checkpoint, the ``keep_best`` best-scored
checkpoints of the run (the best-ever model first: ``run.best()`` hands it over), and the
checkpoints loaded along the ancestry of each of those (the lineage that produced them).
Besides those, the newest ``keep`` checkpoints of each member stay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from poptrain.lineage import trained
from poptrain.records import CheckpointRecord, GenerationRecord, MemberRecord


def collectable(
    checkpoints: Sequence[CheckpointRecord],
    members: Sequence[MemberRecord],
    generations: Sequence[GenerationRecord],
    *,
    keep: int,
    best_slot: int | None,
    keep_best: int = 0,
    mode: str = "max",
) -> list[CheckpointRecord]:
    """The checkpoints whose files can be deleted now (none of them already deleted)."""
    protected: set[int] = set()
    for member in members:
        protected.update(i for i in (member.checkpoint_id, member.resume_checkpoint_id) if i is not None)
    by_id = {g.id: g for g in generations}

    def keep_ancestry(gen: GenerationRecord | None) -> None:
        while gen is not None:  # the lineage that produced a kept model
            if gen.loaded_checkpoint_id is not None:
                protected.add(gen.loaded_checkpoint_id)
            gen = by_id.get(gen.parent_id) if gen.parent_id is not None else None

    best = next((m for m in members if m.slot == best_slot), None)
    keep_ancestry(by_id.get(best.generation_id) if best is not None else None)
    sign = 1.0 if mode == "max" else -1.0
    scored = [c for c in checkpoints if not c.deleted and c.score is not None and not math.isnan(c.score)]
    for ckpt in sorted(scored, key=lambda c: (-sign * (c.score or 0.0), c.step, c.slot))[: max(keep_best, 0)]:
        protected.add(ckpt.id)
        keep_ancestry(trained(generations, ckpt, by_id=by_id))
    newest: dict[int, list[CheckpointRecord]] = {}
    for ckpt in sorted(checkpoints, key=lambda c: (c.slot, -c.id)):  # newest written first
        newest.setdefault(ckpt.slot, []).append(ckpt)
    for own in newest.values():
        protected.update(c.id for c in own[: max(keep, 0)])
    # a population checkpoint is one file shared by many records: it goes when all of them may
    needed_files = {c.uri for c in checkpoints if c.id in protected}
    return [c for c in checkpoints if not c.deleted and c.id not in protected and c.uri not in needed_files]
