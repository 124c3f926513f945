"""PBT on a Ray cluster: members train in Ray actors, the driver records and decides.

The driver keeps one actor per member that the cluster has room for (``cpus_per_member``,
``gpus_per_member``); with more members than actors, members take turns, least trained first.
Each turn trains a member to its next ready point in an actor, which saves the checkpoint to
the run's shared checkpoint store (a folder every node sees, or an fsspec URL) and returns the
scores and the checkpoint's address, never the weights. The driver records them and decides
with the same strategies as every other executor.

Decisions are taken in the order the sequential executor takes them (least-trained member
first, lowest slot on ties), whatever order the actors finish in, so a seeded run has the same
lineage as on one machine. A member whose actor dies (killed, or its node lost) loses only its
current segment: it is recorded as a failed attempt and trains again from its newest checkpoint
on another actor.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from poptrain.checkpoints import shared_location
from poptrain.controller import Controller
from poptrain.errors import ConfigError, PoptrainError, TrainableError
from poptrain.executors._base import Executor
from poptrain.executors.ray_member import MemberWorker, SegmentResult, SegmentTask
from poptrain.records import MemberRecord
from poptrain.seeding import member_seed
from poptrain.strategy import Decision
from poptrain.trainable import TrainContext

LOOPBACK = "127.0.0.1"
RAY_EXTRA = 'executor "ray" needs Ray: pip install "poptrain[ray]"'
_ACTOR_DIED = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError", "OwnerDiedError")


def import_ray() -> Any:
    """Ray, or a ``ConfigError`` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_EXTRA) from None
    return ray


def connect_ray(address: str | None, *, runtime_env: dict[str, Any] | None = None) -> None:
    """``ray.init`` for ``address`` (see ``RayExecutor``), with a clear ``ConfigError`` when the
    cluster cannot be reached. A cluster on 127.0.0.1 is joined on 127.0.0.1 too."""
    ray = import_ray()
    options: dict[str, Any] = {"configure_logging": False}
    if runtime_env:
        options["runtime_env"] = runtime_env
    if address is None:
        _stay_on_loopback()
        ray.init(_node_ip_address=LOOPBACK, include_dashboard=False, **options)
        return
    if probe_address(address) in (LOOPBACK, "localhost"):
        _stay_on_loopback()
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address}: {str(exc).strip().splitlines()[0]}") from None


def probe_address(address: str) -> str | None:
    """Check that a cluster answers at ``HOST:PORT`` (``"auto"`` is not checked); return HOST."""
    if address == "auto":
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"the Ray address {address!r} is not HOST:PORT (or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc}; start one with "
            "`ray start --head` and pass its HOST:PORT, or leave --address out for a private instance"
        ) from None
    return host


def _stay_on_loopback() -> None:
    """Ray swaps 127.0.0.1 for the machine's outward address unless told that this is a
    one-machine setup (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when Ray is imported)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray._private.ray_constants as constants

    constants.ENABLE_RAY_CLUSTER = False


def _cause(exc: BaseException) -> str:
    """The innermost error line of a Ray error (its text holds the remote traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if re.match(r"^\s*[\w.]*(Error|Exception): ", line)]
    return lines[-1] if lines else str(exc).strip().splitlines()[0]


def commit_order_key(member: MemberRecord) -> tuple[int, int, int]:
    """The sequential executor's turn order: least trained, fewest failures, lowest slot."""
    return (member.step, member.failures, member.slot)


@dataclass
class RayStats:
    """What the last run measured. ``decision_seconds``: for each ready point, from the segment's
    result reaching the driver to its decision being recorded (waiting for its turn included);
    ``commit_seconds``: the driver's own time to record it and decide."""

    decision_seconds: list[float] = field(default_factory=list)
    commit_seconds: list[float] = field(default_factory=list)
    actors: int = 0
    actors_lost: int = 0
    segments: int = 0


@dataclass
class _Member:
    record: MemberRecord
    holder: int | None = None  # the actor holding its live trainable, in step with its record
    decision: Decision | None = None  # applied to the live trainable at its next segment
    running_on: int | None = None
    result: SegmentResult | None = None
    arrived_at: float = 0.0
    trained: bool = False  # synchronous PBT: its segment is recorded, waiting for the generation


class RayExecutor(Executor):
    """Members trained by Ray actors across a cluster.

    ``address``: ``None`` starts a private Ray instance on this machine (bound to 127.0.0.1);
    ``"auto"`` joins the cluster this machine belongs to; ``"HOST:PORT"`` a cluster's head.
    ``actors`` caps how many members train at once (default: as many as the cluster has room
    for). ``runtime_env`` is passed to Ray, e.g. to ship your code to other machines. A run
    whose actors cannot start at all within ``start_timeout`` seconds (a busy or too small
    cluster) stops with an error instead of waiting forever.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus_per_member: float = 1.0,
        gpus_per_member: float = 0.0,
        actors: int | None = None,
        torch_threads: int | None = None,
        runtime_env: dict[str, Any] | None = None,
        poll_seconds: float = 1.0,
        start_timeout: float = 300.0,
    ) -> None:
        if not isinstance(cpus_per_member, (int, float)) or isinstance(cpus_per_member, bool) or cpus_per_member <= 0:
            raise ConfigError(f"cpus_per_member must be a positive number, got {cpus_per_member!r}")
        if not isinstance(gpus_per_member, (int, float)) or isinstance(gpus_per_member, bool) or gpus_per_member < 0:
            raise ConfigError(f"gpus_per_member must be a number >= 0, got {gpus_per_member!r}")
        if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
            raise ConfigError(f"actors must be a whole number >= 1, got {actors!r}")
        self.address = address
        self.cpus_per_member = float(cpus_per_member)
        self.gpus_per_member = float(gpus_per_member)
        self.max_actors = actors
        self.torch_threads = torch_threads if torch_threads is not None else max(1, int(cpus_per_member))
        self.runtime_env = runtime_env
        self.poll_seconds = poll_seconds
        self.start_timeout = start_timeout
        self.stats = RayStats()
        self.on_actors: Callable[[list[Any]], None] | None = None  # called with the actors when they change

    def check(self, trainable: object, *, synchronous: bool = False) -> None:
        import_ray()
        if self.address is not None:
            probe_address(self.address)

    # --- cluster ------------------------------------------------------------------
    def _connect(self, ray: Any) -> bool:
        """Connect to the cluster; return whether this call started Ray (and so stops it)."""
        if ray.is_initialized():
            return False
        connect_ray(self.address, runtime_env=self.runtime_env)
        return True

    def _capacity(self, ray: Any, wanted: int) -> int:
        """How many members fit at once: per live node, its CPUs (and GPUs) over a member's."""
        room = 0
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        for resources in nodes:
            fits = math.floor(resources.get("CPU", 0) / self.cpus_per_member + 1e-9)
            if self.gpus_per_member > 0:
                fits = min(fits, math.floor(resources.get("GPU", 0) / self.gpus_per_member + 1e-9))
            room += fits
        if room < 1:
            largest = max(nodes, key=lambda r: r.get("CPU", 0), default={})
            raise ConfigError(
                f"no node of the Ray cluster has room for one member ({self.cpus_per_member:g} CPUs, {self.gpus_per_member:g} "
                f"GPUs; the largest node has {largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs); "
                "lower cpus_per_member/gpus_per_member"
            )
        return max(1, min(wanted, room, self.max_actors or wanted))

    # --- the run ------------------------------------------------------------------
    def run(self, controller: Controller) -> None:
        ray = import_ray()
        target = shared_location(controller.checkpoints)
        if target is None:
            raise ConfigError("executor 'ray' needs checkpoints in a folder every node sees or an fsspec URL, not in memory")
        todo = controller.resumable_members()
        if not todo:
            return
        started = self._connect(ray)
        try:
            self._train(ray, controller, target, {m.slot: _Member(m) for m in todo})
        finally:
            if started:
                ray.shutdown()

    def _train(self, ray: Any, controller: Controller, target: str, members: dict[int, _Member]) -> None:
        self.stats = RayStats()
        remote = ray.remote(num_cpus=self.cpus_per_member, num_gpus=self.gpus_per_member, max_restarts=0)(MemberWorker)
        device = "cuda" if self.gpus_per_member > 0 else "cpu"
        keep_live = math.ceil(len(members) / self._capacity(ray, len(members))) + 1

        def new_actor() -> Any:
            return remote.remote(
                controller.trainable_factory, target, controller.metric, controller.total_steps,
                controller.strategy.ready, self.torch_threads, keep_live,
            )

        actors: list[Any] = [new_actor() for _ in range(self._capacity(ray, len(members)))]
        self.stats.actors = len(actors)
        if self.on_actors:
            self.on_actors(list(actors))
        # an actor takes work once it has started: one that cannot be placed (its node lost, the
        # cluster smaller than it was) waits, and its members take turns on the others
        pending: dict[Any, tuple[int, int | None]] = {actor.pid.remote(): (i, None) for i, actor in enumerate(actors)}
        started: set[int] = set()
        start_failures = 0
        synchronous = controller.strategy.synchronous
        try:
            idle_since = time.monotonic()
            while members:
                if started:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > self.start_timeout:
                    raise ConfigError(
                        f"no Ray actor could start in {self.start_timeout:g} s (each asks for {self.cpus_per_member:g} CPUs and "
                        f"{self.gpus_per_member:g} GPUs); the cluster may be busy or too small: free resources or lower them"
                    )
                self._dispatch(controller, members, actors, started, pending, device)
                done, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_seconds)
                for ref in done:
                    index, slot = pending.pop(ref)
                    try:
                        value = ray.get(ref)
                    except Exception as exc:
                        if isinstance(getattr(exc, "cause", None), PoptrainError):
                            raise exc.cause from None  # the member's own error (a state checkpoints cannot hold): one line
                        if type(exc).__name__ not in _ACTOR_DIED and not isinstance(exc, ray.exceptions.RayActorError):
                            raise
                        started.discard(index)
                        if slot is None:  # it did not start
                            start_failures += 1
                            if start_failures > len(actors) + 2:
                                raise ConfigError(
                                    f"the Ray actors cannot start: {_cause(exc)}; if your training code is not installed on "
                                    "the cluster, ship it with RayExecutor(runtime_env={'working_dir': ...}) or "
                                    "ray.cloudpickle.register_pickle_by_value(your_module)"
                                ) from None
                        else:
                            members[slot].running_on, members[slot].arrived_at = None, time.perf_counter()
                            message = (f"member {slot}: the Ray actor training it died ({type(exc).__name__}); it trains "
                                       "again from its newest checkpoint")
                            members[slot].result = SegmentResult(slot, error=(message, str(exc), True))
                        self._replace_actor(ray, actors, index, new_actor, members, pending)
                        continue
                    if slot is None:
                        started.add(index)
                        start_failures = 0
                        continue
                    member = members[slot]
                    member.running_on, member.result, member.holder = None, value, index
                    member.arrived_at = time.perf_counter()
                if synchronous:
                    self._commit_generation(controller, members)
                else:
                    self._commit_in_turn(controller, members)
        finally:  # also when the run stops with an error: actors hold the cluster's resources
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        controller.collect_checkpoints(force=True)

    def _replace_actor(
        self, ray: Any, actors: list[Any], index: int, new_actor: Callable[[], Any], members: dict[int, _Member],
        pending: dict[Any, tuple[int, int | None]],
    ) -> None:
        """A dead actor's members lose their live state; a new actor takes its place once started."""
        self.stats.actors_lost += 1
        for member in members.values():
            if member.holder == index:
                member.holder = None
        with contextlib.suppress(Exception):  # already gone
            ray.kill(actors[index], no_restart=True)
        actors[index] = new_actor()
        pending[actors[index].pid.remote()] = (index, None)
        if self.on_actors:
            self.on_actors(list(actors))

    def _dispatch(
        self, controller: Controller, members: dict[int, _Member], actors: list[Any], started: set[int],
        pending: dict[Any, tuple[int, int | None]], device: str,
    ) -> None:
        """Send segments to free actors: least-trained waiting member first, each preferably to
        the actor that holds its live trainable."""
        busy = {index for index, slot in pending.values() if slot is not None}
        free = [i for i in sorted(started) if i not in busy]
        waiting = sorted((m for m in members.values() if m.running_on is None and m.result is None), key=lambda m: commit_order_key(m.record))
        for member in waiting:
            if not free:
                return
            index = member.holder if member.holder in free else next((i for i in free if all(m.holder != i for m in waiting)), free[0])
            free.remove(index)
            task = self._task(controller, member, fresh=member.holder != index)
            member.running_on = index
            pending[actors[index].segment.remote(task)] = (index, member.record.slot)
            self.stats.segments += 1

    def _task(self, controller: Controller, member: _Member, *, fresh: bool) -> SegmentTask:
        record = member.record
        run = controller.run
        restore = controller.storage.get_checkpoint(record.resume_checkpoint_id) if record.resume_checkpoint_id is not None else None
        decision = member.decision
        load = restore if decision is not None and decision.kind == "exploit" else None
        device = "cuda" if self.gpus_per_member > 0 else "cpu"
        context = TrainContext(run.name, record.slot, member_seed(run.seed, record.slot), device, run.seed, record.step)
        member.decision = None
        return SegmentTask(
            record.slot, record.step, dict(record.hparams), context, controller.snapshot(record), fresh or member.holder is None,
            restore, load, dict(decision.hparams) if decision is not None else None,
        )

    def _record_segment(self, controller: Controller, member: _Member) -> bool:
        """Record a segment's scores; on failure record it and make the member train again.
        Return whether the segment reached its stop."""
        result, record = member.result, member.record
        assert result is not None
        member.result = None
        for step, value, metrics, _ in result.scores:
            record = controller.record_score(record, step, value, metrics)
        try:
            result.raise_error()
        except TrainableError as error:
            member.record, member.holder, member.decision = controller.fail(record, error, can_wait=not controller.strategy.synchronous), None, None
            return False
        member.record = record
        member.result = result  # keeps the checkpoint for the ready point
        return True

    def _timed(self, began: float, members: list[_Member]) -> None:
        now = time.perf_counter()
        self.stats.commit_seconds.append(now - began)
        self.stats.decision_seconds.extend(now - m.arrived_at for m in members)

    def _commit_in_turn(self, controller: Controller, members: dict[int, _Member]) -> None:
        """Asynchronous PBT: commit ready points in the sequential executor's order."""
        while members:
            slot = min(members, key=lambda s: commit_order_key(members[s].record))
            member = members[slot]
            if member.result is None:
                return
            if not self._record_segment(controller, member):
                continue
            assert member.result is not None and member.result.checkpoint is not None
            checkpoint, member.result = member.result.checkpoint, None
            done = member.record.step >= controller.total_steps
            began = time.perf_counter()
            [(record, decision)] = controller.ready_round([(member.record, checkpoint, not done)])
            self._timed(began, [member])
            if done:
                controller.finish_member(record)
                del members[slot]
            else:
                member.record, member.decision = record, decision

    def _commit_generation(self, controller: Controller, members: dict[int, _Member]) -> None:
        """Synchronous PBT: once every member has trained to the generation's step, record the
        segments in slot order (failed ones train again) and decide together."""
        if any(m.running_on is not None or (m.result is None and not m.trained) for m in members.values()):
            return
        for slot in sorted(members):
            member = members[slot]
            if member.result is not None and not member.trained:
                member.trained = self._record_segment(controller, member)
        if not all(m.trained for m in members.values()):
            return
        steps = {m.record.step for m in members.values()}
        if len(steps) != 1:
            raise RuntimeError(f"synchronous PBT needs members at one step, found steps {sorted(steps)}")
        done = steps.pop() >= controller.total_steps
        points = []
        for slot in sorted(members):
            result = members[slot].result
            assert result is not None and result.checkpoint is not None
            points.append((members[slot].record, result.checkpoint, not done))
        began = time.perf_counter()
        committed = controller.ready_round(points)
        self._timed(began, list(members.values()))
        for record, decision in committed:
            member = members[record.slot]
            member.record, member.decision, member.result, member.trained = record, decision, None, False
            if done:
                controller.finish_member(record)
                del members[record.slot]
