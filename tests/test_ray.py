"""The Ray executor on a real two-node Ray cluster bound to 127.0.0.1 (started and stopped here)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import poptrain
from pbt_helpers import SlowTracer, Tracer, lineage_signature, ray_or_skip
from poptrain.errors import ConfigError
from poptrain.experiments.toy import SPACE as TOY_SPACE
from poptrain.experiments.toy import ToyQuadratic

ray = ray_or_skip()

from poptrain.executors.ray_executor import RayExecutor, connect_ray
from poptrain.testing.ray_cluster import local_cluster, wait_for_nodes

pytestmark = pytest.mark.slow


def outward_listeners() -> set[str]:
    """Listening TCP sockets bound to anything but loopback, read from /proc/net."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address = local.split(":")[0]
            loopback = address.endswith("7F") and (len(address) == 8 or address.startswith("0000000000000000FFFF0000"))
            if state == "0A" and not loopback and address != "00000000000000000000000001000000":
                found.add(f"{table}:{local}")
    return found


BEFORE: set[str] = set()


@pytest.fixture(scope="module")
def cluster():
    BEFORE.update(outward_listeners())
    with local_cluster(workers=1, cpus_per_node=1) as running:
        connect_ray(running.address)
        # the test modules are not installed: send them to the actors with the trainables
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        ray.cloudpickle.register_pickle_by_value(sys.modules[Tracer.__module__])
        wait_for_nodes(2)
        yield running
        ray.shutdown()


def toy_run(tmp_path, name, *, synchronous, executor):
    run = poptrain.create_run(
        name=name,
        space=TOY_SPACE,
        population_size=4,
        metric="Q",
        seed=3,
        root=str(tmp_path),
        ready=poptrain.every(4),
        exploit=poptrain.truncation(0.25),
        explore=poptrain.perturb((0.8, 1.2)),
        synchronous=synchronous,
    )
    run.optimize(ToyQuadratic, steps=24, executor=executor)
    return run


def test_the_cluster_is_two_nodes_on_loopback_only(cluster):
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    assert outward_listeners() <= BEFORE  # every server the cluster started listens on loopback only


@pytest.mark.parametrize("synchronous", [False, True])
def test_a_seeded_run_has_the_sequential_lineage(cluster, tmp_path, synchronous):
    sequential = toy_run(tmp_path, "sequential", synchronous=synchronous, executor="sequential")
    executor = RayExecutor(cluster.address)
    on_ray = toy_run(tmp_path, "ray", synchronous=synchronous, executor=executor)
    assert lineage_signature(on_ray) == lineage_signature(sequential)
    assert any(g.number > 0 for g in on_ray.lineage())  # decisions were taken
    assert executor.stats.actors == 2 and executor.stats.segments == 4 * 6
    assert all(m.state == "finished" and m.step == 24 for m in on_ray.members())


def test_members_take_turns_when_the_population_is_larger_than_the_cluster(cluster, tmp_path):
    run = poptrain.create_run(
        name="turns",
        space=TOY_SPACE,
        population_size=6,
        metric="Q",
        seed=1,
        root=str(tmp_path),
        ready=poptrain.every(4),
    )
    executor = RayExecutor(cluster.address)
    run.optimize(ToyQuadratic, steps=16, executor=executor)
    assert executor.stats.actors == 2 and executor.stats.segments == 6 * 4
    assert sorted(m.step for m in run.members()) == [16] * 6
    final = [c for c in run.storage.get_checkpoints(run.record.id) if c.step == 16]
    assert len(final) == 6 and all(
        len(run.load_state(c)["theta"]) == 2 for c in final
    )  # written by the actors to the shared folder
    assert executor.stats.decision_seconds and max(executor.stats.decision_seconds) < 5


def test_a_killed_actor_costs_its_member_the_current_segment_only(cluster, tmp_path):
    run = poptrain.create_run(
        name="fault",
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
    actors: list = []
    executor.on_actors = lambda current: actors.append(current)
    killed = threading.Event()

    def kill_one_mid_run():
        deadline = time.monotonic() + 60
        while executor.stats.segments < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        ray.kill(actors[0][0], no_restart=True)
        killed.set()

    killer = threading.Thread(target=kill_one_mid_run, daemon=True)
    killer.start()
    run.optimize(SlowTracer, steps=15, executor=executor)
    killer.join(5)
    assert killed.is_set() and executor.stats.actors_lost == 1
    assert executor.stats.segments == 4 * 5 + 1  # every segment once, and the one that was lost again
    members = run.members()
    assert [m.step for m in members] == [15] * 4 and all(m.state == "finished" for m in members)
    hit = [m for m in members if m.error and "Ray actor" in m.error]
    assert len(hit) == 1
    # nothing lost: every member trained every step once, with its own rate
    final = {c.slot: run.load_state(c) for c in run.storage.get_checkpoints(run.record.id) if c.step == 15}
    for member in members:
        assert len(final[member.slot]["trace"]) == 15
        assert final[member.slot]["x"] == pytest.approx(15 * member.hparams["rate"])
    scores = [s for s in run.scores() if s.slot == hit[0].slot]
    assert [s.step for s in scores] == list(range(1, 16))  # the lost segment's scores were not kept twice


def test_the_command_line_runs_on_the_cluster(cluster, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "poptrain",
            "run",
            "poptrain.experiments.toy",
            "--name",
            "cli",
            "--root",
            str(tmp_path),
            "--executor",
            "ray",
            "--address",
            cluster.address,
            "--steps",
            "12",
            "--quiet",
            "--cpus-per-member",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run = poptrain.load_run("cli", root=str(tmp_path))
    assert [m.step for m in run.members()] == [12, 12] and run.best() is not None
    # three CPUs per member on 1-CPU nodes: no room for one member; refused with the fix named
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "poptrain",
            "run",
            "poptrain.experiments.toy",
            "--name",
            "big",
            "--root",
            str(tmp_path),
            "--executor",
            "ray",
            "--address",
            cluster.address,
            "--steps",
            "4",
            "--quiet",
            "--cpus-per-member",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 2 and "lower cpus_per_member" in done.stderr.strip().splitlines()[-1]


def test_an_unreachable_cluster_is_one_clear_error(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "poptrain",
            "run",
            "poptrain.experiments.toy",
            "--name",
            "nowhere",
            "--root",
            str(tmp_path),
            "--executor",
            "ray",
            "--address",
            "127.0.0.1:9",
            "--steps",
            "4",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("poptrain: error: cannot connect to the Ray cluster at 127.0.0.1:9")
    )
    assert not (tmp_path / "nowhere").exists()  # refused before anything was written


def test_without_ray_installed_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r'pip install "poptrain\[ray\]"'):
        poptrain.executors.get_executor("ray").check(Tracer)


def test_bad_ray_settings_are_refused():
    with pytest.raises(ConfigError, match="cpus_per_member"):
        RayExecutor(cpus_per_member=0)
    with pytest.raises(ConfigError, match="address"):
        poptrain.executors.get_executor("sequential", address="auto")


def test_without_an_address_a_private_instance_runs_and_stops(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "poptrain",
            "run",
            "poptrain.experiments.toy",
            "--name",
            "private",
            "--root",
            str(tmp_path),
            "--executor",
            "ray",
            "--steps",
            "8",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run = poptrain.load_run("private", root=str(tmp_path))
    assert [m.step for m in run.members()] == [8, 8]
