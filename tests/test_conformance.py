"""Every executor trains the PBT the user asked for: the same decisions, the same scores, the
hyperparameters the lineage records, fair comparisons. Run over sequential, processes (2
warm workers), Ray (a 2-node loopback cluster, slow) and kill + resume."""

from __future__ import annotations

from pathlib import Path

import pytest

import poptrain
from conformance_helpers import LrProbe, RisingCurve
from pbt_helpers import lineage_signature

LR_SPACE = {"lr": poptrain.Float(0.001, 0.2, log=True)}


def lr_run(root: Path, name: str = "conf", *, synchronous: bool = False) -> poptrain.Run:
    return poptrain.create_run(
        name=name,
        space=LR_SPACE,
        population_size=4,
        metric="loss",
        mode="min",
        ready=poptrain.every(3),
        exploit=poptrain.truncation(0.25),
        explore=poptrain.perturb((0.5, 2.0)),
        seed=7,
        root=root,
        synchronous=synchronous,
    )


def mismatches(run: poptrain.Run) -> list[tuple[int, int, float, float]]:
    """(slot, step, lr used, lr recorded) of every step trained with another lr than the lineage records."""
    recorded = {g.id: g.hparams["lr"] for g in run.lineage()}
    return [
        (s.slot, s.step, s.metrics["lr_used"], recorded[s.generation_id])
        for s in run.scores()
        if s.metrics["lr_used"] != pytest.approx(recorded[s.generation_id], rel=1e-12)
    ]


def unreadable(run: poptrain.Run) -> list[str]:
    """The kept checkpoints that do not load as recorded (each save its own file, written whole
    before it was recorded), and any file two records share."""
    kept = [c for c in run.storage.get_checkpoints(run.record.id) if not c.deleted]
    shared = [c.uri for c in kept if [k.uri for k in kept].count(c.uri) > 1]
    failed = []
    for checkpoint in kept:
        try:
            run.load_state(checkpoint)
        except poptrain.CheckpointError as exc:
            failed.append(str(exc))
    return shared + failed


def signature(run: poptrain.Run) -> tuple:
    """The lineage, and every score (by step: workers report in any order)."""
    return lineage_signature(run)


def executors() -> list[pytest.param]:
    return [
        pytest.param(lambda: "sequential", id="sequential"),
        pytest.param(lambda: poptrain.SequentialExecutor(max_live=1), id="sequential-parked"),
        pytest.param(lambda: poptrain.ProcessesExecutor(2), id="processes"),
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    run = lr_run(tmp_path_factory.mktemp("reference")).optimize(LrProbe, steps=12)
    return signature(run), run


@pytest.mark.parametrize("make_executor", executors())
def test_every_step_trains_with_the_recorded_hyperparameters_and_matches_sequential(
    tmp_path: Path, make_executor, reference
) -> None:
    run = lr_run(tmp_path).optimize(LrProbe, steps=12, executor=make_executor())
    assert mismatches(run) == []
    assert any(g.kind == "exploit" for g in run.lineage())
    assert signature(run) == reference[0]
    assert unreadable(run) == []


def test_kill_and_resume_gives_the_uninterrupted_run(tmp_path: Path, reference) -> None:
    class Stop(poptrain.ProgressListener):
        seen = 0

        def on_score(self, *args: object) -> None:
            Stop.seen += 1
            if Stop.seen == 23:  # mid-segment, after some decisions
                raise KeyboardInterrupt

    run = lr_run(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run.optimize(LrProbe, steps=12, progress=Stop())
    resumed = poptrain.load_run("conf", root=tmp_path).optimize(LrProbe, steps=12)
    assert mismatches(resumed) == []
    assert signature(resumed) == reference[0]


def rising_run(root: Path, *, synchronous: bool, population: int = 4, fraction: float = 0.25) -> poptrain.Run:
    hs = [round(0.9 * i / (population - 1), 6) for i in range(population)]
    return poptrain.create_run(
        name="rising",
        space={"h": poptrain.Float(0.0, 1.0)},
        population_size=population,
        metric="score",
        mode="max",
        ready=poptrain.every(4),
        exploit=poptrain.truncation(fraction),
        explore=None,
        seed=0,
        root=root,
        initial_hparams=[{"h": h} for h in hs],
        synchronous=synchronous,
    )


@pytest.mark.parametrize("synchronous", [False, True], ids=["asynchronous", "synchronous"])
@pytest.mark.parametrize("executor", ["sequential", "processes"])
def test_worst_member_on_a_rising_curve_is_replaced_at_its_first_ready_point(
    tmp_path: Path, synchronous: bool, executor: str
) -> None:
    run = rising_run(tmp_path, synchronous=synchronous).optimize(RisingCurve, steps=20, executor=executor)
    first = [g for g in run.lineage() if g.slot == 0 and g.number == 1]
    assert first and first[0].kind == "exploit" and first[0].start_step == 4 and first[0].donor == 3
    # one exploiter per round of 4 with truncation(0.25): the rounds' decisions do not see each other
    at_four = [g for g in run.lineage() if g.start_step == 4 and g.kind == "exploit"]
    assert [g.slot for g in at_four] == [0]


@pytest.mark.parametrize("synchronous", [False, True], ids=["asynchronous", "synchronous"])
def test_truncation_of_eight_at_one_fifth_exploits_two(tmp_path: Path, synchronous: bool) -> None:
    run = rising_run(tmp_path, synchronous=synchronous, population=8, fraction=0.2).optimize(RisingCurve, steps=8)
    at_four = sorted(g.slot for g in run.lineage() if g.start_step == 4 and g.kind == "exploit")
    assert at_four == [0, 1]


def test_an_exploiter_is_ranked_by_the_model_it_copied(tmp_path: Path) -> None:
    run = rising_run(tmp_path, synchronous=False).optimize(RisingCurve, steps=8)
    member = {m.slot: m for m in run.members()}[0]
    # member 0 copied member 3 at step 4 and trained on with its h: at step 8 it scores like member 3
    assert member.ready_score == pytest.approx(8.9)


@pytest.mark.slow
def test_ray_on_a_two_node_cluster_conforms(tmp_path: Path, reference) -> None:
    """Ray actors on a 2-node loopback cluster: the hyperparameters the lineage records, the
    sequential executor's lineage and scores, and the worst member replaced at once."""
    import sys

    from pbt_helpers import ray_or_skip

    ray = ray_or_skip()
    import conformance_helpers
    from poptrain.executors.ray_executor import RayExecutor, connect_ray
    from poptrain.testing.ray_cluster import local_cluster, wait_for_nodes

    with local_cluster(workers=1, cpus_per_node=1) as running:
        connect_ray(running.address)
        try:
            ray.cloudpickle.register_pickle_by_value(conformance_helpers)
            ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
            wait_for_nodes(2)
            run = lr_run(tmp_path / "lr").optimize(LrProbe, steps=12, executor=RayExecutor(running.address))
            assert mismatches(run) == [] and signature(run) == reference[0]
            for synchronous in (False, True):
                rising = rising_run(tmp_path / f"rising-{synchronous}", synchronous=synchronous)
                rising.optimize(RisingCurve, steps=12, executor=RayExecutor(running.address))
                first = [g for g in rising.lineage() if g.slot == 0 and g.number == 1]
                assert first and (first[0].kind, first[0].start_step, first[0].donor) == ("exploit", 4, 3)
        finally:
            ray.shutdown()


@pytest.mark.parametrize("synchronous", [False, True], ids=["asynchronous", "synchronous"])
def test_the_vectorized_executor_replaces_the_worst_member_at_once_as_sequential_does(
    tmp_path: Path, synchronous: bool
) -> None:
    from conformance_helpers import rising_vectorized

    runs = {}
    for executor in ("vectorized", "sequential"):  # the same VectorizedTrainable, trained member by member
        runs[executor] = rising_run(tmp_path / executor, synchronous=synchronous).optimize(
            rising_vectorized(), steps=12, executor=executor
        )
    first = [g for g in runs["vectorized"].lineage() if g.slot == 0 and g.number == 1]
    assert first and (first[0].kind, first[0].start_step, first[0].donor) == ("exploit", 4, 3)
    assert [g.slot for g in runs["vectorized"].lineage() if g.start_step == 4 and g.kind == "exploit"] == [0]
    lineage = {k: lineage_signature(r)[0] for k, r in runs.items()}
    assert lineage["vectorized"] == lineage["sequential"]
