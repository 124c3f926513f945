"""Checkpoint files stay bounded, the ones still needed are never deleted, and a corrupt
checkpoint makes its member fall back to a donor instead of stopping the run."""

from __future__ import annotations

from pathlib import Path

import pytest

import poptrain
from pbt_helpers import SPACE, Tracer
from poptrain.checkpoints import collectable
from poptrain.records import CheckpointRecord, GenerationRecord, MemberRecord


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.pt")}


def test_collectable_keeps_what_members_and_the_best_lineage_need() -> None:
    ckpts = [
        CheckpointRecord(i, slot, step, f"m{slot}/{step}", "0" * 64, 1)
        for i, (slot, step) in enumerate([(0, 2), (0, 4), (0, 6), (1, 2), (1, 4), (1, 6)], start=1)
    ]
    gens = [
        GenerationRecord(10, 0, 0, 0, {}),
        GenerationRecord(11, 1, 0, 0, {}),
        GenerationRecord(12, 1, 1, 4, {}, "exploit", 10, 0, 1),
    ]  # member 1 copied member 0's step-2 checkpoint
    members = [
        MemberRecord(20, 0, "running", 6, {}, 10, 0, 6, checkpoint_id=3, resume_checkpoint_id=3),
        MemberRecord(21, 1, "running", 6, {}, 12, 1, 6, checkpoint_id=6, resume_checkpoint_id=2),
    ]
    doomed = {c.id for c in collectable(ckpts, members, gens, keep=1, best_slot=1)}
    # kept: newest of each (3, 6), member 1's pending resume (2), best lineage's loaded (1)
    assert doomed == {4, 5}
    assert {c.id for c in collectable(ckpts, members, gens, keep=3, best_slot=1)} == set()
    already = [CheckpointRecord(5, 1, 4, "m1/4", "0" * 64, 1, deleted=True)]
    assert collectable(already, members, gens, keep=0, best_slot=None) == []


def test_a_population_file_goes_only_when_no_record_sharing_it_is_needed() -> None:
    # rounds at steps 2 and 4 each wrote one file for both members; member 1 still resumes from step 2
    ckpts = [
        CheckpointRecord(i, slot, step, f"population/{step}", "0" * 64, 1)
        for i, (slot, step) in enumerate([(0, 2), (1, 2), (0, 4), (1, 4)], start=1)
    ]
    gens = [GenerationRecord(10, 0, 0, 0, {}), GenerationRecord(11, 1, 0, 0, {})]
    members = [
        MemberRecord(20, 0, "running", 4, {}, 10, 0, 4, checkpoint_id=3, resume_checkpoint_id=3),
        MemberRecord(21, 1, "running", 4, {}, 11, 0, 4, checkpoint_id=4, resume_checkpoint_id=2),
    ]
    assert collectable(ckpts, members, gens, keep=1, best_slot=0) == []  # record 1 is free, its file is not
    members[1] = MemberRecord(21, 1, "running", 4, {}, 11, 0, 4, checkpoint_id=4, resume_checkpoint_id=4)
    assert {c.id for c in collectable(ckpts, members, gens, keep=1, best_slot=0)} == {1, 2}


def test_run_keeps_disk_bounded_and_needed_checkpoints(tmp_path: Path) -> None:
    run = poptrain.create_run(
        name="gc",
        space=SPACE,
        population_size=6,
        metric="score",
        root=tmp_path,
        ready=poptrain.every(2),
        exploit=poptrain.truncation(0.34),
        seed=1,
    )
    run.optimize(Tracer, steps=30, keep_checkpoints=1)
    folder = tmp_path / "gc" / "checkpoints"
    on_disk = files(folder)
    records = run.storage.get_checkpoints(run.record.id)
    assert len(records) == 6 * 15  # a ready point every 2 steps
    assert {c.uri for c in records if not c.deleted} == on_disk  # rows and files agree
    assert len(on_disk) <= 6 * 2 + 6  # newest per member + resume points + the best lineage's
    for member in run.members():
        assert run.storage.get_checkpoint(member.checkpoint_id).uri in on_disk
    best = run.best()
    assert best is not None and best.checkpoint is not None and best.checkpoint.uri in on_disk
    run.load_state(best.checkpoint)
    # continuing the run after collection works
    run.optimize(Tracer, steps=34, keep_checkpoints=1)
    assert all(m.step == 34 for m in run.members())


def test_corrupt_checkpoint_falls_back_to_a_donor(tmp_path: Path) -> None:
    run = poptrain.create_run(
        name="c", space=SPACE, population_size=4, metric="score", root=tmp_path, ready=poptrain.every(2), seed=2
    )
    run.optimize(Tracer, steps=6)
    victim = run.members()[3]
    ckpt = run.storage.get_checkpoint(victim.resume_checkpoint_id)
    path = tmp_path / "c" / "checkpoints" / ckpt.uri
    path.write_bytes(path.read_bytes()[:10])  # truncated
    resumed = poptrain.load_run("c", root=tmp_path).optimize(Tracer, steps=10)
    member = resumed.members()[3]
    assert member.state == "finished" and member.step == 10
    assert ckpt.uri in (member.error or "") and "corrupt" in (member.error or "")
    replaced = [g for g in resumed.lineage() if g.slot == 3 and "replaced" in g.operations]
    assert len(replaced) == 1 and replaced[0].donor != 3
    assert "after 1 failures" in replaced[0].operations["replaced"]  # no retries of a corrupt file


@pytest.mark.parametrize("keep", [0, 2])
def test_keep_policy_is_respected(tmp_path: Path, keep: int) -> None:
    run = poptrain.create_run(
        name="k",
        space=SPACE,
        population_size=3,
        metric="score",
        root=tmp_path,
        ready=poptrain.every(1),
        exploit=None,
        explore=None,
        seed=0,
    )
    run.optimize(Tracer, steps=12, keep_checkpoints=keep, keep_best=1)
    on_disk = files(tmp_path / "k" / "checkpoints")
    # with no exploits, each member needs only its newest (the best-ever model is one: Tracer
    # only improves): keep more, and more stay
    assert len(on_disk) == 3 * max(keep, 1)
