"""A member's lineage under the one clock (asynchronous PBT): a member that copies a newer model
jumps to its step, one that copies an older model trains steps again as a new generation, and
every reader of the run (schedules, best, replay) follows the generation that trained each step."""

from __future__ import annotations

import poptrain
from poptrain.records import Decision, NewCheckpoint, ReadyPoint, ScoreRecord


def _ckpt(tag: str) -> NewCheckpoint:
    return NewCheckpoint(f"ckpt/{tag}.pt", tag.ljust(64, "0"), 100)


def _scores(slot: int, steps: range, generation_id: int, value: float) -> list[ScoreRecord]:
    return [ScoreRecord(slot, s, value + s / 100, generation_id) for s in steps]


def _run() -> poptrain.Run:
    return poptrain.create_run(
        name="clock",
        space={"lr": poptrain.Float(0.01, 0.1)},
        population_size=3,
        metric="acc",
        storage="memory",
        synchronous=False,
    )


def test_a_member_that_copied_a_newer_model_at_its_step_holds_the_donors_schedule() -> None:
    run = _run()
    storage, run_id = run.storage, run.record.id
    m0, m1, _ = run.members()
    storage.record_ready(run_id, [ReadyPoint(0, 8, _ckpt("0-8"), 0.9)], _scores(0, range(1, 9), m0.generation_id, 0.8))
    [copier] = storage.record_ready(
        run_id,
        [ReadyPoint(1, 4, _ckpt("1-4"), 0.1, Decision(1, 4, "exploit", {"lr": 0.05}, 0, {"lr": "* 1.2"}))],
        _scores(1, range(1, 5), m1.generation_id, 0.0),
    )
    assert copier.step == 8  # one clock: the copied model's step
    [segment] = run.schedule(1)  # member 1 has not trained since: it holds member 0's model
    assert (segment.slot, segment.start_step, segment.end_step, segment.generation_id) == (0, 0, 8, m0.generation_id)
    assert run.replay_schedule(1).original == tuple(0.8 + s / 100 for s in range(1, 9))


def test_a_member_that_copied_an_older_model_keeps_the_lineage_another_copied() -> None:
    run = _run()
    storage, run_id = run.storage, run.record.id
    m0, m1, m2 = run.members()
    storage.record_ready(run_id, [ReadyPoint(2, 4, _ckpt("2-4"), 0.95)], _scores(2, range(1, 5), m2.generation_id, 0.9))
    storage.record_ready(run_id, [ReadyPoint(0, 8, _ckpt("0-8"), 0.88)], _scores(0, range(1, 9), m0.generation_id, 0.8))
    exploit = Decision(1, 8, "exploit", {"lr": 0.05}, 0, {"lr": "* 1.2"})
    storage.record_ready(
        run_id, [ReadyPoint(1, 8, _ckpt("1-8"), 0.1, exploit)], _scores(1, range(1, 9), m1.generation_id, 0.0)
    )
    back = Decision(0, 12, "exploit", {"lr": 0.02}, 2, {"lr": "* 0.8"})
    [member0] = storage.record_ready(
        run_id, [ReadyPoint(0, 12, _ckpt("0-12"), 0.92, back)], _scores(0, range(9, 13), m0.generation_id, 0.8)
    )
    assert member0.step == 4  # member 2's model, at its step
    storage.record_scores(run_id, _scores(0, range(5, 9), member0.generation_id, 0.5))  # trained again
    storage.record_scores(run_id, _scores(1, range(9, 11), storage.get_members(run_id)[1].generation_id, 0.86))

    # member 1's model descends from member 0's first generation: its steps 1..8 and their scores
    first, second = run.schedule(1)
    assert (first.slot, first.end_step, first.generation_id) == (0, 8, m0.generation_id)
    assert (second.slot, second.start_step, second.end_step) == (1, 8, 10)
    replayed = run.replay_schedule(1).original
    assert replayed == (*(0.8 + s / 100 for s in range(1, 9)), 0.86 + 0.09, 0.86 + 0.10)
    # member 0's own schedule: member 2's model to step 4, then steps 5..8 trained again
    own = run.schedule(0)
    assert [(s.slot, s.start_step, s.end_step) for s in own] == [(2, 0, 4), (0, 4, 8)]
    assert run.replay_schedule(0).original == (
        *(0.9 + s / 100 for s in range(1, 5)),
        *(0.5 + s / 100 for s in range(5, 9)),
    )
    # the best model's lineage is read by generation: member 0's checkpoint at step 12 was
    # trained by its first generation, whatever it trains now
    best = run.best()
    assert best is not None and (best.slot, best.step) == (2, 4)
    checkpoints = {(c.slot, c.step): c for c in storage.get_checkpoints(run_id)}
    assert checkpoints[(0, 12)].generation_id == checkpoints[(0, 8)].generation_id == m0.generation_id
    windowed = run.best(window=4)
    assert windowed is not None and windowed.selection_score is not None


def test_a_step_trained_again_keeps_the_checkpoint_an_earlier_generation_recorded(tmp_path) -> None:
    """Member 1's first model scores best-ever (0.95) at step 8; later it copies member 0's
    step-4 model and reports step 8 again. Its new step-8 checkpoint is a new file: the best
    model's file is not replaced, and it still loads (it was refused as corrupt, sha256
    mismatch, when both were written to one name)."""
    import torch

    run = poptrain.create_run(
        name="again",
        space={"lr": poptrain.Float(0.1, 1.0)},
        population_size=2,
        metric="acc",
        ready=poptrain.every(4),
        exploit=poptrain.truncation(0.5),
        explore=poptrain.perturb((0.8, 1.2)),
        seed=0,
        root=tmp_path,
        synchronous=False,
    )

    def state(tag: int) -> dict[str, torch.Tensor]:
        return {"w": torch.full((3,), float(tag))}

    first = {8: 0.95, 9: 0.3}
    for step in range(1, 13):  # alone: no decision
        assert run.report(1, step, first.get(step, 0.2), state=state(100 + step)).kind == "continue"
    for step in range(1, 5):
        run.report(0, step, 0.9, state=state(step))
    actions = [run.report(1, step, 0.2, state=state(100 + step)) for step in range(13, 17)]
    copy = actions[-1]
    assert (copy.kind, copy.donor, copy.step) == ("exploit", 0, 4)  # back to the donor's step
    for step in range(5, 9):
        run.report(1, step, 0.5, state=state(200 + step))
    eights = [c for c in run.storage.get_checkpoints(run.record.id) if (c.slot, c.step) == (1, 8)]
    assert [c.score for c in eights] == [0.95, 0.5] and eights[0].uri != eights[1].uri
    best = run.best()
    assert best is not None and best.checkpoint is not None and (best.step, best.score) == (8, 0.95)
    assert torch.equal(run.load_state(best.checkpoint)["w"], torch.full((3,), 108.0))
    assert torch.equal(run.load_state(eights[1])["w"], torch.full((3,), 208.0))
    run.close()
