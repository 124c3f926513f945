"""The lineage's rules (poptrain.lineage), as pure functions of records."""

from __future__ import annotations

import pytest

from poptrain import lineage
from poptrain.errors import StrategyError
from poptrain.lineage import NextGeneration, advance, trained, trained_at
from poptrain.records import CheckpointRecord, Decision, GenerationRecord, MemberRecord
from poptrain.results import generation_at

# member 0: generation 0 from step 0, an explore at step 4, then a replacement at step 8
# member 1: generation 0, an exploit of member 0 at step 4
GENERATIONS = [
    GenerationRecord(1, 0, 0, 0, {"lr": 0.1}),
    GenerationRecord(2, 1, 0, 0, {"lr": 0.2}),
    GenerationRecord(3, 0, 1, 4, {"lr": 0.08}, "explore", 1, None, 11),
    GenerationRecord(4, 1, 1, 4, {"lr": 0.12}, "exploit", 1, 0, 11),
    GenerationRecord(5, 0, 2, 8, {"lr": 0.3}, "exploit", 3, 1, 13),
]


def _ckpt(checkpoint_id: int, slot: int, step: int, score: float | None = 0.5) -> CheckpointRecord:
    return CheckpointRecord(checkpoint_id, slot, step, f"ckpt/{checkpoint_id}", "0" * 64, 10, score)


def _member(slot: int, **changes: object) -> MemberRecord:
    values: dict = {
        "id": 100 + slot,
        "slot": slot,
        "state": "running",
        "step": 8,
        "hparams": {"lr": 0.1},
        "generation_id": 1,
        "generation": 0,
        "last_ready_step": 8,
    }
    values.update(changes)
    return MemberRecord(**values)


@pytest.mark.parametrize(
    ("slot", "step", "expected"),
    [
        (0, 0, 1),
        (0, 1, 1),
        (0, 4, 1),
        (0, 5, 3),
        (0, 8, 3),
        (0, 9, 5),
        (1, 4, 2),
        (1, 5, 4),
        (1, 100, 4),
    ],
)
def test_trained_at_is_the_newest_generation_begun_before_the_step(slot: int, step: int, expected: int) -> None:
    found = trained_at(GENERATIONS, slot, step)
    assert found is not None and found.id == expected
    assert generation_at(GENERATIONS, slot, step) == found  # results re-states it


def test_a_member_without_generations() -> None:
    assert trained_at(GENERATIONS, 7, 3) is None
    with pytest.raises(KeyError, match="member 7"):
        generation_at(GENERATIONS, 7, 3)


def test_trained_names_the_generation_of_a_checkpoint_of_any_member() -> None:
    taken_before_the_decision = _ckpt(11, 0, 4)  # the explore at step 4 came after it
    assert trained(GENERATIONS, taken_before_the_decision) == GENERATIONS[0]
    assert trained(GENERATIONS, _ckpt(13, 0, 8)) == GENERATIONS[2]
    assert trained(GENERATIONS, _ckpt(14, 1, 12)) == GENERATIONS[3]


def test_an_explore_continues_the_members_own_line() -> None:
    member = _member(
        0,
        generation_id=3,
        generation=1,
        checkpoint_id=13,
        resume_checkpoint_id=13,
        ready_score=0.7,
        ready_hparams={"lr": 0.08},
    )
    new = advance(Decision(0, 8, "explore", {"lr": 0.07}, None, {"lr": "* 0.9"}), member, 8)
    assert new == NextGeneration(2, 8, "explore", {"lr": 0.07}, 3, None, 13, {"lr": "* 0.9"}, 0.7, {"lr": 0.08})
    assert new.resume_checkpoint_id == 13


def test_an_exploit_loads_what_the_donor_holds() -> None:
    # member 1 copied member 0's step-4 checkpoint (id 11) and holds it still
    donor = _member(
        1,
        generation_id=4,
        generation=1,
        checkpoint_id=12,
        resume_checkpoint_id=11,
        ready_score=0.9,
        ready_hparams={"lr": 0.1},
    )
    member = _member(2, generation_id=6, generation=3, checkpoint_id=20, resume_checkpoint_id=20, ready_score=0.1)
    loaded = _ckpt(11, 0, 4, score=0.9)
    new = advance(
        Decision(2, 8, "exploit", {"lr": 0.11}, 1), member, 8, donor=donor, loaded=loaded, generations=GENERATIONS
    )
    assert (new.number, new.start_step, new.kind, new.donor) == (4, 4, "exploit", 1)  # one clock: the copy's step
    assert (new.parent_id, new.loaded_checkpoint_id, new.resume_checkpoint_id) == (1, 11, 11)
    assert (new.ready_score, new.ready_hparams, new.hparams) == (0.9, {"lr": 0.1}, {"lr": 0.11})


def test_an_exploit_of_a_donor_without_ready_hparams_takes_those_of_the_generation_that_trained_it() -> None:
    donor = _member(0, checkpoint_id=13, resume_checkpoint_id=13)
    new = advance(
        Decision(1, 8, "exploit", {"lr": 0.5}, 0),
        _member(1),
        8,
        donor=donor,
        loaded=_ckpt(13, 0, 8),
        generations=GENERATIONS,
    )
    assert (new.parent_id, new.ready_hparams) == (3, {"lr": 0.08})


def test_copying_a_member_that_holds_no_checkpoint_is_refused() -> None:
    donor = _member(4, checkpoint_id=None, resume_checkpoint_id=None)
    with pytest.raises(StrategyError, match=r"member 1 cannot copy member 4: member 4 holds no checkpoint") as info:
        advance(Decision(1, 8, "exploit", {"lr": 0.5}, 4), _member(1), 8, donor=donor)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="member 1 cannot copy member 4"):
        lineage.held_by(None, 4, 1)


def test_the_loaded_checkpoint_must_be_the_one_the_donor_holds() -> None:
    donor = _member(0, checkpoint_id=13, resume_checkpoint_id=13)
    with pytest.raises(ValueError, match="id 13"):
        advance(
            Decision(1, 8, "exploit", {"lr": 0.5}, 0),
            _member(1),
            8,
            donor=donor,
            loaded=_ckpt(11, 0, 4),
            generations=GENERATIONS,
        )
