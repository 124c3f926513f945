"""What a run reports: best member, its schedule, the score table, and the ask/tell API."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import poptrain
from pbt_helpers import SPACE, Tracer, lineage_signature, make_run


def expanded(schedule):
    """The hyperparameters of every step a schedule says the model was trained with."""
    return [seg.hparams for seg in schedule for _ in range(seg.end_step - seg.start_step)]


def final_scores(run, steps):
    return {s.slot: s.value for s in run.scores() if s.step == steps}


# --- best() ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["max", "min"])
def test_best_final_is_the_best_final_checkpoint(mode):
    run = make_run(seed=1, mode=mode).optimize(Tracer, steps=12)
    finals = final_scores(run, 12)
    assert len(finals) == 6
    pick = max if mode == "max" else min
    ever = run.best()  # Tracer's score only rises: the best-ever is final under max, the first under min
    assert ever.step == (12 if mode == "max" else 3) and ever.score == pick(
        c.score for c in run.storage.get_checkpoints(run.record.id)
    )
    best = run.best(final=True)
    assert best.score == pick(finals.values())
    assert best.slot == pick(sorted(finals), key=lambda slot: finals[slot])
    assert (best.step, best.checkpoint.slot, best.checkpoint.step) == (12, best.slot, 12)
    assert best.metrics == {"score": best.score, "steps_trained": pytest.approx(best.metrics["steps_trained"])}
    state = run.load_state(best.checkpoint)
    assert state["x"] == best.score
    assert best.hparams == state["trace"][-1]


def test_best_is_none_before_training():
    assert make_run().best() is None


@pytest.mark.parametrize(
    "exploit", [poptrain.truncation(0.25), poptrain.tournament()], ids=["truncation", "tournament"]
)
@pytest.mark.parametrize("seed", range(4))
def test_synchronous_schedule_is_contiguous_and_reproduces_the_model(seed, exploit):
    run = make_run(seed=seed, synchronous=True, exploit=exploit).optimize(Tracer, steps=15)
    best = run.best()
    schedule = best.schedule
    assert (schedule[0].start_step, schedule[0].kind, schedule[-1].end_step) == (0, "init", best.step)
    assert schedule[-1].slot == best.slot
    for before, after in itertools.pairwise(schedule):
        assert before.end_step == after.start_step
        if after.kind == "exploit":
            assert after.donor == before.slot != after.slot
        else:
            assert (after.kind, after.slot) == ("explore", before.slot)
    generations = {(g.slot, g.start_step, g.kind): g.hparams for g in run.lineage()}
    assert all(generations[(seg.slot, seg.start_step, seg.kind)] == seg.hparams for seg in schedule)
    # the trace saved in the checkpoint is what the model was really trained with
    assert expanded(schedule) == run.load_state(best.checkpoint)["trace"]
    for member in run.members():
        state = run.load_state(run.storage.get_checkpoint(member.checkpoint_id))
        assert expanded(run.schedule(member.slot)) == state["trace"]


def test_synchronous_schedules_do_follow_exploits():
    kinds = set()
    for seed in range(4):
        run = make_run(seed=seed, synchronous=True).optimize(Tracer, steps=15)
        kinds |= {seg.kind for seg in run.best().schedule}
    assert "exploit" in kinds


@pytest.mark.parametrize("seed", range(3))
def test_asynchronous_schedule_reproduces_the_model(seed):
    run = make_run(seed=seed, exploit=poptrain.tournament()).optimize(Tracer, steps=15)
    for slot in range(6):
        member = run.members()[slot]
        schedule = run.schedule(slot)
        assert schedule[0].start_step == 0 and schedule[-1].end_step == member.step == 15
        for before, after in itertools.pairwise(schedule):
            assert before.end_step <= after.start_step  # a copied checkpoint may be older than the copier
        state = run.load_state(run.storage.get_checkpoint(member.checkpoint_id))
        assert expanded(schedule) == state["trace"]


# --- to_dataframe() -------------------------------------------------------------------------
def test_dataframe_has_one_row_per_score_with_the_hparams_used():
    run = make_run(seed=2, synchronous=True).optimize(Tracer, steps=9)
    df = run.to_dataframe()
    assert len(df) == len(run.scores()) == 6 * 9
    assert {"slot", "step", "generation", "score", "metric.steps_trained", "hp.rate", "hp.width"} <= set(df.columns)
    assert "metric.score" not in df.columns  # the run's metric is the score column, not repeated
    assert len(set(df.columns)) == len(df.columns)
    kind = {(g.slot, g.number): g.kind for g in run.lineage()}
    assert "exploit" in kind.values()
    checked = 0
    for slot, rows in df.sort_values(["slot", "step"]).groupby("slot"):
        previous = None
        for row in rows.to_dict("records"):
            # Tracer adds the rate it trains with, so a step's score gain is the rate in its row
            if previous is None:
                assert (row["step"], row["score"]) == (1, pytest.approx(row["hp.rate"]))
            elif kind[(slot, row["generation"])] != "exploit" or row["generation"] == previous["generation"]:
                assert row["step"] == previous["step"] + 1
                assert row["score"] - previous["score"] == pytest.approx(row["hp.rate"])
                checked += 1
            previous = row
    assert checked > 6 * 6


# --- ask/tell: report() -----------------------------------------------------------------------
def ask_tell_run(**options):
    options.setdefault("exploit", poptrain.truncation(0.25))
    return make_run("asktell", population_size=4, ready=poptrain.every(2), **options)


def weights(slot, step):
    return {"w": torch.full((3,), float(10 * slot + step)), "step": step}


def test_report_refuses_a_synchronous_run_before_recording_anything():
    run = ask_tell_run(synchronous=True)
    with pytest.raises(poptrain.ConfigError, match=r"synchronous=True; train it with run.optimize\(\)"):
        run.report(0, 1, 0.5)
    assert run.scores() == [] and [m.step for m in run.members()] == [0, 0, 0, 0]


def test_report_continues_until_ready():
    run = ask_tell_run()
    action = run.report(0, 1, 0.5)
    assert action == poptrain.Action("continue", step=1)
    assert (action.hparams, action.donor, action.checkpoint) == ({}, None, None)
    member = run.members()[0]
    assert (member.step, member.score, member.checkpoint_id) == (1, 0.5, None)
    assert run.storage.get_checkpoints(run.record.id) == []


def test_report_exploit_for_a_bottom_member():
    run = ask_tell_run()
    for slot in range(4):
        assert run.report(slot, 1, 0.0).kind == "continue"
    # worst first: each newcomer is ranked above someone already there, so nobody copies yet
    for slot, value in [(3, 0.1), (1, 0.5), (2, 0.6), (0, 0.9)]:
        assert run.report(slot, 2, {"score": value}, state=weights(slot, 2)).kind == "continue"
    assert run.report(3, 3, 0.15).kind == "continue"
    action = run.report(3, 4, 0.2, state=lambda: weights(3, 4))
    assert (action.kind, action.donor) == ("exploit", 0)
    assert (action.checkpoint.slot, action.checkpoint.step) == (0, 2)
    loaded = action.load_state()
    assert torch.equal(loaded["w"], weights(0, 2)["w"]) and loaded["step"] == 2
    assert poptrain.SearchSpace(SPACE).validate(action.hparams) == action.hparams
    assert set(action.operations) == set(SPACE)
    member = run.members()[3]
    assert (member.hparams, member.generation, member.resume_checkpoint_id) == (action.hparams, 1, action.checkpoint.id)
    gen = run.lineage()[-1]
    # one clock: the member is now at the copied model's step, and the action says so
    assert (gen.slot, gen.kind, gen.donor, gen.start_step, gen.loaded_checkpoint_id) == (
        3,
        "exploit",
        0,
        2,
        action.checkpoint.id,
    )
    assert action.step == member.step == 2
    own = run.storage.get_checkpoint(member.checkpoint_id)
    assert torch.equal(run.load_state(own)["w"], weights(3, 4)["w"])


def test_report_explore_action():
    run = ask_tell_run(exploit=None, explore=poptrain.perturb())
    before = run.members()[1].hparams
    assert run.report(1, 1, 0.3).kind == "continue"
    action = run.report(1, 2, 0.4, state=weights(1, 2))
    assert action.kind == "explore" and action.donor is None
    assert action.hparams != before
    assert set(action.operations.values()) <= {
        "* 0.8",
        "* 1.2",
        "* 0.8 (clipped)",
        "* 1.2 (clipped)",
        "+ 1",
        "- 1",
        "+ 1 (at bound)",
        "- 1 (at bound)",
    }
    assert run.members()[1].hparams == action.hparams
    with pytest.raises(ValueError, match="no state"):
        action.load_state()
    # the only checkpoint was taken before the explore: it is credited to the old hyperparameters
    best = run.best()
    assert (best.slot, best.step, best.score, best.hparams) == (1, 2, 0.4, before)
    assert [(seg.start_step, seg.end_step, seg.kind, seg.hparams) for seg in best.schedule] == [(0, 2, "init", before)]


def test_report_without_state_at_a_ready_point():
    run = ask_tell_run()
    run.report(0, 1, 0.3)
    with pytest.raises(poptrain.ConfigError, match="pass state="):
        run.report(0, 2, 0.4)
    # the failed call recorded nothing: the same report with its state goes through
    assert [s.step for s in run.scores() if s.slot == 0] == [1]
    assert run.report(0, 2, 0.4, state=weights(0, 2)).kind == "continue"
    assert run.members()[0].last_ready_step == 2


def test_report_checks_slot_and_step():
    run = ask_tell_run()
    with pytest.raises(poptrain.ConfigError, match="slots 0..3"):
        run.report(4, 1, 0.1)
    run.report(0, 1, 0.1)
    with pytest.raises(poptrain.ConfigError, match="later step"):
        run.report(0, 1, 0.2)
    with pytest.raises(poptrain.MetricError, match="score"):
        run.report(0, 2, {"other": 1.0})


# --- a member whose score turns NaN -------------------------------------------------------------
class Diverges(Tracer):
    """Slot 0 scores NaN (a failed step) until it is replaced by a copy of a healthy member."""

    def setup(self, hparams, context):
        super().setup(hparams, context)
        self.broken = context.slot == 0

    def evaluate(self):
        return math.nan if self.broken else self.x

    def state_dict(self):
        return {**super().state_dict(), "broken": self.broken}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.broken = bool(state["broken"])


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_nan_member_ranks_last_and_is_replaced(storage, mode, tmp_path):
    run = make_run(
        f"nan-{mode}",
        population_size=4,
        storage=storage,
        tmp_path=tmp_path,
        mode=mode,
        exploit=poptrain.truncation(0.25),
    ).optimize(Diverges, steps=9)
    # slot 0 scores NaN at step 1 (not retried: it would again), waits for the others' first
    # checkpoints and is then replaced by a copy of the best of them, at that copy's step
    first_decision = next(g for g in run.lineage() if g.slot == 0 and g.number == 1)
    assert (first_decision.kind, first_decision.start_step) == ("replace", 3)
    assert "replaced" in first_decision.operations
    best_at_3 = max((m for m in run.lineage() if m.slot != 0 and m.number == 0), key=lambda g: 0)  # any
    assert first_decision.donor in {1, 2, 3} and best_at_3 is not None
    values = [s.value for s in run.scores() if s.slot == 0]
    assert [s.step for s in run.scores() if s.slot == 0] == list(range(4, 10)) and all(math.isfinite(v) for v in values)
    assert math.isfinite(run.best().score)


@pytest.mark.parametrize("synchronous", [False, True])
def test_nan_member_gets_the_same_decisions_in_memory_and_sqlite(synchronous, tmp_path):
    def run(storage):
        return make_run(
            f"nan-{storage}",
            population_size=5,
            storage=storage,
            tmp_path=tmp_path,
            seed=4,
            synchronous=synchronous,
            exploit=poptrain.tournament(),
        ).optimize(Diverges, steps=12)

    if synchronous:  # no checkpoint exists to replace slot 0 with before its generation ends
        for storage in ("memory", "sqlite"):
            with pytest.raises(poptrain.TrainableError, match="no healthy member with a checkpoint"):
                run(storage)
        return
    in_memory, on_disk = run("memory"), run("sqlite")
    assert lineage_signature(on_disk) == lineage_signature(in_memory)
