"""The PB2 history keeps each generation's ready points apart: a member that copies an older
checkpoint (asynchronous PBT, one clock) trains some steps again as a new generation."""

from __future__ import annotations

from poptrain.records import CheckpointRecord, GenerationRecord
from poptrain.strategy import build_history

OPENINGS = {0: (1, 0.1), 1: (1, 0.1)}


def ckpt(id_, slot, step, score, generation_id):
    return CheckpointRecord(id_, slot, step, f"mem://{id_}", "x", 1, score, generation_id=generation_id)


def moved_back():
    """Member 0 (generation 1) is slow: its newest checkpoint is step 4. Member 1 (generation 2,
    lr 0.001) reaches step 12, then copies member 0's step-4 checkpoint (id 10) with lr 0.05 as
    generation 3, and trains steps 5..8 again."""
    return [
        GenerationRecord(1, 0, 0, 0, {"lr": 0.1}),
        GenerationRecord(2, 1, 0, 0, {"lr": 0.001}),
        GenerationRecord(3, 1, 1, 4, {"lr": 0.05}, "exploit", 1, 0, 10, {"lr": "pb2 ucb"}),
    ]


BEFORE_THE_COPY = [
    ckpt(10, 0, 4, 0.6, 1),
    ckpt(20, 1, 4, 0.2, 2),
    ckpt(21, 1, 8, 0.3, 2),
    ckpt(22, 1, 12, 0.35, 2),
]
AFTER_THE_COPY = ckpt(23, 1, 8, 0.8, 3)  # member 1's step 8 again, trained by generation 3


def summary(history):
    return [(o.slot, o.start_step, o.end_step, o.hparams["lr"], round(o.change, 9)) for o in history.observations]


EXPECTED = [
    (0, 1, 4, 0.1, round(0.5 / 3, 9)),
    (1, 1, 4, 0.001, round(0.1 / 3, 9)),
    (1, 4, 8, 0.001, 0.025),  # the abandoned generation, with its own lr and scores
    (1, 4, 8, 0.05, 0.05),  # the new generation: from the donor's checkpoint (0.6) to 0.8
    (1, 8, 12, 0.001, 0.0125),  # the abandoned generation's last interval
]


def test_a_generation_that_trains_steps_again_keeps_its_own_points():
    history = build_history(moved_back(), [*BEFORE_THE_COPY, AFTER_THE_COPY], openings=OPENINGS, step=8)
    assert summary(history) == EXPECTED
    assert history.pending == {} and history.step == 8


def test_the_points_being_decided_belong_to_the_current_generation():
    # member 1 reaches step 8 as generation 3 (not recorded yet), and so does member 0
    history = build_history(moved_back(), BEFORE_THE_COPY, ready=[(0, 8, 0.7), (1, 8, 0.8)], openings=OPENINGS)
    assert summary(history) == [*EXPECTED[:2], (0, 4, 8, 0.1, 0.025), *EXPECTED[2:]]
    assert history.pending == {}


def test_a_copy_without_a_ready_point_of_its_own_is_pending():
    # member 1 reached step 8 and 12 as generation 2, but not yet as generation 3
    history = build_history(moved_back(), BEFORE_THE_COPY, openings=OPENINGS)
    assert history.pending == {1: {"lr": 0.05}}
    assert summary(history) == [EXPECTED[0], EXPECTED[1], EXPECTED[2], EXPECTED[4]]


def test_pending_counts_only_the_newest_generations_own_points():
    # after its step 8 as generation 3, member 1 explores (lr 0.02) from its own checkpoint 23
    explored = [*moved_back(), GenerationRecord(4, 1, 2, 8, {"lr": 0.02}, "explore", 3, None, 23)]
    recorded = [*BEFORE_THE_COPY, AFTER_THE_COPY]
    history = build_history(explored, recorded, openings=OPENINGS)
    assert history.pending == {1: {"lr": 0.02}}  # generation 2's step 12 is not generation 4's
    assert summary(history) == EXPECTED
    # generation 4 reaches step 12, a step only the abandoned generation 2 had reached before
    later = build_history(explored, [*recorded, ckpt(24, 1, 12, 0.9, 4)], openings=OPENINGS)
    assert later.pending == {}
    assert summary(later) == [*EXPECTED, (1, 8, 12, 0.02, 0.025)]  # from its own checkpoint (0.8)
    assert [o.hparams["lr"] for o in later.observations if o.end_step == 12] == [0.001, 0.02]


def test_checkpoints_without_a_recorded_generation_fall_back_to_slot_and_step():
    """A database from before poptrain recorded ``generation_id`` (synchronous PBT: no step is
    trained twice): each checkpoint goes to the generation of its slot that trained its step."""
    generations = [
        GenerationRecord(1, 0, 0, 0, {"lr": 0.001}),
        GenerationRecord(2, 1, 0, 0, {"lr": 0.01}),
        GenerationRecord(3, 0, 1, 4, {"lr": 0.02}, "exploit", 2, 1, 11),
    ]
    layout = [(10, 0, 4, 0.4, 1), (11, 1, 4, 0.6, 2), (12, 0, 8, 0.9, 3), (13, 1, 8, 0.8, 2)]
    recorded = [ckpt(*row) for row in layout]
    legacy = [ckpt(*row[:4], None) for row in layout]
    unknown = [ckpt(*row[:4], 99) for row in layout]  # a generation not among those given
    openings = {0: (1, 0.1), 1: (1, 0.2)}
    history = build_history(generations, legacy, openings=openings)
    assert summary(history) == [
        (0, 1, 4, 0.001, 0.1),
        (1, 1, 4, 0.01, round(0.4 / 3, 9)),
        (0, 4, 8, 0.02, 0.075),
        (1, 4, 8, 0.01, 0.05),
    ]
    assert history == build_history(generations, recorded, openings=openings)
    assert history == build_history(generations, unknown, openings=openings)
