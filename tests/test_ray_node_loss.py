"""Losing a whole node of a real two-node Ray cluster on 127.0.0.1 in the middle of a run."""

from __future__ import annotations

import sys
import threading
import time

import pytest

import poptrain
from pbt_helpers import SlowTracer, Tracer, ray_or_skip

ray = ray_or_skip()

from poptrain.executors.ray_executor import RayExecutor, connect_ray
from poptrain.testing.ray_cluster import local_cluster, wait_for_nodes

pytestmark = pytest.mark.slow


def test_a_lost_node_costs_its_members_the_current_segment_only(tmp_path):
    with local_cluster(workers=1, cpus_per_node=1) as cluster:
        connect_ray(cluster.address)
        try:
            wait_for_nodes(2)
            ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
            ray.cloudpickle.register_pickle_by_value(sys.modules[Tracer.__module__])
            run = poptrain.create_run(
                name="node",
                space=poptrain.SearchSpace({"rate": poptrain.Float(0.1, 1.0)}),
                population_size=4,
                metric="score",
                seed=0,
                root=str(tmp_path),
                ready=poptrain.every(3),
                exploit=None,
                explore=None,
            )
            executor = RayExecutor(cluster.address)
            killed = []

            def lose_the_second_node():
                deadline = time.monotonic() + 60
                while executor.stats.segments < 6 and time.monotonic() < deadline:
                    time.sleep(0.01)
                killed.append(cluster.kill_node(1))

            threading.Thread(target=lose_the_second_node, daemon=True).start()
            run.optimize(SlowTracer, steps=90, executor=executor)
        finally:
            ray.shutdown()
    assert killed and executor.stats.actors_lost >= 1
    assert executor.stats.segments == 4 * 30 + executor.stats.actors_lost  # only the segments in flight were lost
    members = run.members()
    assert [m.step for m in members] == [90] * 4 and all(m.state == "finished" for m in members)
    final = {c.slot: run.load_state(c) for c in run.storage.get_checkpoints(run.record.id) if c.step == 90}
    for member in members:  # every step trained exactly once, at the member's own rate
        assert len(final[member.slot]["trace"]) == 90
        assert final[member.slot]["x"] == pytest.approx(90 * member.hparams["rate"])
    assert any(m.error and "Ray actor" in m.error for m in members)
    run.close()
