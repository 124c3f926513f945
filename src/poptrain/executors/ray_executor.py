"""PBT on a Ray cluster: Ray actors are the transport, the scheduler records and decides.

The driver keeps one actor (a ``MemberRunner``) per member that the cluster has room for
(``cpus_per_member``, ``gpus_per_member``); with more members than actors, members take turns,
least trained first. Each turn trains a member to its next ready point in an actor, which saves
the checkpoint to the run's shared checkpoint store (a folder every node sees, or an fsspec
URL) and returns the scores and the checkpoint's address, never the weights. The scheduler
(``poptrain.scheduler``) decides exactly as for every other executor, whatever order the actors
finish in, so a seeded run has the same lineage and scores as on one machine. A member whose
actor dies (killed, or its node lost) loses only its current segment: it trains again from its
newest checkpoint on another actor.
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
from typing import TYPE_CHECKING, Any

from poptrain.checkpoints import shared_location
from poptrain.errors import ConfigError, PoptrainError
from poptrain.executors._base import Arrival, Transport
from poptrain.runner import MemberRunner, SegmentTask

if TYPE_CHECKING:
    from poptrain.scheduler import Scheduler

LOOPBACK = "127.0.0.1"
RAY_EXTRA = 'executor "ray" needs Ray: pip install "poptrain[ray]"'
_ACTOR_DIED = (
    "RayActorError",
    "ActorDiedError",
    "ActorUnavailableError",
    "WorkerCrashedError",
    "NodeDiedError",
    "OwnerDiedError",
)


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
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address}: {str(exc).strip().splitlines()[0]}"
        ) from None


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


@dataclass
class RayStats:
    """What the last run measured: actors started and lost, segments sent, and (from the
    scheduler) for each ready point the seconds from its result reaching the driver to its
    decision being recorded (``decision_seconds``) and the driver's own time to record and
    decide it (``commit_seconds``)."""

    decision_seconds: list[float] = field(default_factory=list)
    commit_seconds: list[float] = field(default_factory=list)
    actors: int = 0
    actors_lost: int = 0
    segments: int = 0


class RayExecutor(Transport):
    """Members trained by Ray actors across a cluster.

    ``address``: ``None`` starts a private Ray instance on this machine (bound to 127.0.0.1);
    ``"auto"`` joins the cluster this machine belongs to; ``"HOST:PORT"`` a cluster's head.
    ``actors`` caps how many members train at once (default: as many as the cluster has room
    for). ``runtime_env`` is passed to Ray, e.g. to ship your code to other machines. A run
    whose actors cannot start at all within ``start_timeout`` seconds (a busy or too small
    cluster) stops with an error instead of waiting forever.
    """

    worker_kind = "Ray actor"

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
        self._ray: Any = None
        self._started_ray = False
        self._actors: list[Any] = []
        self._new_actor: Callable[[], Any] = lambda: None
        self._pending: dict[Any, tuple[int, int | None]] = {}  # ref -> (actor, slot or None: its start)
        self._started: set[int] = set()
        self._start_failures = 0
        self._idle_since = 0.0

    def check(self, trainable: object, *, synchronous: bool = False) -> None:
        import_ray()
        if self.address is not None:
            probe_address(self.address)

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
            largest: dict[str, Any] = max(nodes, key=lambda r: r.get("CPU", 0), default={})
            raise ConfigError(
                f"no node of the Ray cluster has room for one member ({self.cpus_per_member:g} CPUs, {self.gpus_per_member:g} "
                f"GPUs; the largest node has {largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs); "
                "lower cpus_per_member/gpus_per_member"
            )
        return max(1, min(wanted, room, self.max_actors or wanted))

    # --- the transport --------------------------------------------------------------
    def run(self, scheduler: Scheduler) -> None:
        self.stats = RayStats()
        super().run(scheduler)
        self.stats.decision_seconds = list(scheduler.stats.decision_seconds)
        self.stats.commit_seconds = list(scheduler.stats.commit_seconds)

    def start(self, scheduler: Scheduler, members: int) -> None:
        ray = self._ray = import_ray()
        target = shared_location(scheduler.checkpoints)
        if target is None:
            raise ConfigError(
                "executor 'ray' needs checkpoints in a folder every node sees or an fsspec URL, not in memory"
            )
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            connect_ray(self.address, runtime_env=self.runtime_env)
        scheduler.device = "cuda" if self.gpus_per_member > 0 else "cpu"
        capacity = self._capacity(ray, members)
        spec = scheduler.runner_spec(
            target, torch_threads=self.torch_threads, max_live=math.ceil(members / capacity) + 1
        )
        remote = ray.remote(num_cpus=self.cpus_per_member, num_gpus=self.gpus_per_member, max_restarts=0)(MemberRunner)
        self._new_actor = lambda: remote.remote(spec)
        self._actors = [self._new_actor() for _ in range(capacity)]
        self.stats.actors = len(self._actors)
        if self.on_actors:
            self.on_actors(list(self._actors))
        # an actor takes work once it has started: one that cannot be placed (its node lost, the
        # cluster smaller than it was) waits, and its members take turns on the others
        self._pending = {actor.pid.remote(): (i, None) for i, actor in enumerate(self._actors)}
        self._started, self._start_failures, self._idle_since = set(), 0, time.monotonic()

    def idle(self) -> list[int]:
        busy = {index for index, slot in self._pending.values() if slot is not None}
        return [i for i in sorted(self._started) if i not in busy]

    def submit(self, worker: int, task: SegmentTask) -> None:
        self._pending[self._actors[worker].segment.remote(task)] = (worker, task.slot)
        self.stats.segments += 1

    def wait(self) -> list[Arrival]:
        ray = self._ray
        if self._started:
            self._idle_since = time.monotonic()
        elif time.monotonic() - self._idle_since > self.start_timeout:
            raise ConfigError(
                f"no Ray actor could start in {self.start_timeout:g} s (each asks for {self.cpus_per_member:g} CPUs and "
                f"{self.gpus_per_member:g} GPUs); the cluster may be busy or too small: free resources or lower them"
            )
        done, _ = ray.wait(list(self._pending), num_returns=1, timeout=self.poll_seconds)
        arrived: list[Arrival] = []
        for ref in done:
            index, slot = self._pending.pop(ref)
            try:
                value = ray.get(ref)
            except Exception as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, PoptrainError):
                    raise cause from None  # the member's own error (a state checkpoints cannot hold): one line
                if type(exc).__name__ not in _ACTOR_DIED and not isinstance(exc, ray.exceptions.RayActorError):
                    raise
                self._started.discard(index)
                if slot is None:  # it did not start
                    self._start_failures += 1
                    if self._start_failures > len(self._actors) + 2:
                        raise ConfigError(
                            f"the Ray actors cannot start: {_cause(exc)}; if your training code is not installed on "
                            "the cluster, ship it with RayExecutor(runtime_env={'working_dir': ...}) or "
                            "ray.cloudpickle.register_pickle_by_value(your_module)"
                        ) from None
                self._replace_actor(index)
                arrived.append((index, slot, None))
                continue
            if slot is None:
                self._started.add(index)
                self._start_failures = 0
                continue
            arrived.append((index, slot, value))
        return arrived

    def _replace_actor(self, index: int) -> None:
        """A dead actor's members lose their live state; a new actor takes its place once started."""
        self.stats.actors_lost += 1
        with contextlib.suppress(Exception):  # already gone
            self._ray.kill(self._actors[index], no_restart=True)
        self._actors[index] = self._new_actor()
        self._pending = {ref: v for ref, v in self._pending.items() if v[0] != index}
        self._pending[self._actors[index].pid.remote()] = (index, None)
        if self.on_actors:
            self.on_actors(list(self._actors))

    def close(self) -> None:  # also when the run stops with an error: actors hold the cluster's resources
        for actor in self._actors:
            with contextlib.suppress(Exception):
                self._ray.kill(actor, no_restart=True)
        self._actors, self._pending = [], {}
        if self._started_ray and self._ray is not None:
            self._ray.shutdown()
