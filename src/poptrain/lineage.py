"""The lineage's rules as pure functions of records (no I/O): which generation trained a step or
a checkpoint, and how a decision starts the next generation of a member.

Both storages write what ``advance`` returns, and the readers of a run (``results``, the PB2
history) find the generation that trained a checkpoint with ``trained`` (``trained_at`` for a
step), so the rules are stated once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from poptrain.errors import StrategyError
from poptrain.records import CheckpointRecord, Decision, GenerationRecord, MemberRecord

if TYPE_CHECKING:
    from poptrain.space import HParams


def trained_at(generations: Iterable[GenerationRecord], slot: int, step: int) -> GenerationRecord | None:
    """The generation of member ``slot`` that trained its ``step``-th step: the newest one begun
    strictly before ``step`` (a decision at ``step`` starts training after it), or generation 0.
    ``None`` if the member has no generation."""
    active: GenerationRecord | None = None
    for gen in generations:
        trained = gen.slot == slot and (gen.start_step < step or gen.number == 0)
        if trained and (active is None or gen.number > active.number):
            active = gen
    return active


def trained(
    generations: Iterable[GenerationRecord],
    checkpoint: CheckpointRecord,
    *,
    by_id: Mapping[int, GenerationRecord] | None = None,
) -> GenerationRecord | None:
    """The generation whose training produced ``checkpoint`` (of any member): the one recorded
    with it, else (a checkpoint from before poptrain recorded it, or one whose generation is not
    among ``generations``) the one of the checkpoint's slot that trained the checkpoint's step
    (see ``trained_at``). A member that copied an older model trains some steps again as a new
    generation, so only the recorded one is right for a checkpoint of the earlier steps.
    ``by_id``: the same generations by id, for a caller asking about many checkpoints (the
    recorded one is then looked up, not searched for)."""
    listed = generations if isinstance(generations, (list, tuple)) else list(generations)
    if checkpoint.generation_id is not None:
        if by_id is not None:
            recorded = by_id.get(checkpoint.generation_id)
        else:
            recorded = next((g for g in listed if g.id == checkpoint.generation_id), None)
        if recorded is not None:
            return recorded
    return trained_at(listed, checkpoint.slot, checkpoint.step)


@dataclass(frozen=True)
class NextGeneration:
    """What a decision writes: the new generation (``number`` .. ``operations``) and what the
    member holds afterwards (``resume_checkpoint_id``, ``ready_score``, ``ready_hparams``)."""

    number: int
    start_step: int
    kind: str
    hparams: HParams
    parent_id: int
    donor: int | None
    loaded_checkpoint_id: int | None
    operations: dict[str, str] = field(default_factory=dict)
    ready_score: float | None = None
    ready_hparams: HParams | None = None

    @property
    def resume_checkpoint_id(self) -> int | None:
        """The checkpoint the member continues from: the one the new generation loaded."""
        return self.loaded_checkpoint_id


def held_by(member: MemberRecord | None, slot: int | None, copier: int) -> int:
    """The checkpoint id ``member`` (the donor in ``slot``) holds for ``copier`` to load;
    ``StrategyError`` (a ``ValueError``) if it holds none."""
    if member is None or member.resume_checkpoint_id is None:
        raise StrategyError(
            f"member {copier} cannot copy member {slot}: member {slot} holds no checkpoint yet; "
            "a decision may only copy a member that has reached a ready point"
        )
    return member.resume_checkpoint_id


def advance(
    decision: Decision,
    member: MemberRecord,
    start_step: int,
    *,
    donor: MemberRecord | None = None,
    loaded: CheckpointRecord | None = None,
    generations: Iterable[GenerationRecord] = (),
) -> NextGeneration:
    """The generation ``decision`` starts for ``member`` at ``start_step`` (an exploit: at the
    loaded checkpoint's step, since a member's step counts the steps its model has trained).

    An explore continues from the member's own newest checkpoint and descends from its current
    generation. An exploit loads the model ``donor`` holds (its ``resume_checkpoint_id``; pass
    that checkpoint as ``loaded``, and ``generations`` holding those of its slot): it descends
    from the generation that trained that checkpoint, and the member takes the copied model's
    score and the hyperparameters that trained it as its ``ready_score`` and ``ready_hparams``.
    ``StrategyError`` (a ``ValueError``) if the donor holds no checkpoint.
    """
    number = member.generation + 1
    operations = dict(decision.operations)
    if not decision.copies:
        return NextGeneration(
            number,
            start_step,
            decision.kind,
            dict(decision.hparams),
            member.generation_id,
            decision.donor,
            member.checkpoint_id,
            operations,
            member.ready_score,
            member.ready_hparams,
        )
    checkpoint_id = held_by(donor, decision.donor, member.slot)
    if loaded is None or loaded.id != checkpoint_id:
        raise ValueError(f"advance() needs the checkpoint member {decision.donor} holds (id {checkpoint_id}) as loaded")
    parent = trained(generations, loaded)
    if parent is None:
        raise ValueError(f"no generation of member {loaded.slot} trained checkpoint {loaded.id}; pass its generations")
    hparams = donor.ready_hparams if donor is not None and donor.ready_hparams is not None else parent.hparams
    # one clock: a member's step is how many steps its model has trained, so after a copy it is
    # the copied checkpoint's step (the same step in a fair round; a replacement may move it)
    return NextGeneration(
        number,
        loaded.step,
        decision.kind,
        dict(decision.hparams),
        parent.id,
        decision.donor,
        loaded.id,
        operations,
        loaded.score,
        dict(hparams),
    )
