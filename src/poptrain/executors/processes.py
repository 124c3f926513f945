"""Members trained in a pool of warm worker processes on this machine.

The processes start once per run (each imports torch and builds its data once) and each keeps
a ``MemberRunner`` with its members' trainables live between segments. The driver alone talks
to the database: workers get ``SegmentTask``s through a pipe, save checkpoints to the run's
folder and send ``SegmentResult``s back, and the scheduler decides. A worker that dies costs
its member only the segment in flight (it trains again from its newest checkpoint on a new
worker); workers end within a second of their driver's death, so a driver killed with SIGKILL
leaves no process writing behind it. ``devices=["cuda:0", "cuda:1"]`` runs one worker per GPU
(``CUDA_VISIBLE_DEVICES`` set for each).

``poptrain worker NAME --storage URL`` (``work``) joins a run from another machine instead:
it leases members from the database one at a time, with fenced leases.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import multiprocessing
import os
import pickle
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from typing import TYPE_CHECKING, Any

from poptrain.errors import ConfigError, PoptrainError, StaleWriteError, TrainableError
from poptrain.executors._base import Arrival, Transport
from poptrain.runner import MemberRunner, RunnerSpec, SegmentTask

if TYPE_CHECKING:
    from poptrain.progress import ProgressListener
    from poptrain.scheduler import Scheduler

ORPHAN_POLL_SECONDS = 0.5  # how often a worker checks that the process that started it is alive


def _die_with(parent: int) -> None:  # pragma: no cover - runs in a child process
    """End this process as soon as ``parent`` is gone (killed with SIGKILL, say)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="poptrain-orphan-watch", daemon=True).start()


def _modules_to_preload(obj: Any) -> list[tuple[str, str]]:
    """``(name, file)`` of the module defining ``obj`` when a child process could not import it
    by name (an experiment loaded from a ``.py`` file, or a script's ``__main__``)."""
    name = getattr(obj, "__module__", None)  # a class's, a function's, or an instance's class's
    path = getattr(sys.modules.get(name or ""), "__file__", None)
    if name is None or path is None:
        return []
    if name != "__main__":
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.origin == path:
            return []  # importable by name: nothing to preload
    return [(name, path)]


def _preload(modules: list[tuple[str, str]]) -> None:  # pragma: no cover - runs in a child process
    for name, path in modules:
        if name in sys.modules and name != "__main__":
            continue
        spec = importlib.util.spec_from_file_location(name if name != "__main__" else "__poptrain_main__", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        if name == "__main__":
            sys.modules["__poptrain_main__"] = module
        spec.loader.exec_module(module)


def _serve(
    spec_bytes: bytes, modules: list[tuple[str, str]], conn: Connection, parent: int, device: str | None
) -> None:  # pragma: no cover - child
    """A worker process: train the segments the driver sends until it sends ``None``."""
    _die_with(parent)
    if device is not None and device.startswith("cuda"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.partition(":")[2] or "0"
    _preload(modules)
    runner = MemberRunner(pickle.loads(spec_bytes))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        if device is not None:
            task = replace(task, context=replace(task.context, device="cuda" if device.startswith("cuda") else device))
        conn.send(runner.segment(task))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    slot: int | None = None  # the member whose segment is in flight
    served: bool = False  # it has sent a result back (so it started)


class ProcessesExecutor(Transport):
    """PBT with ``workers`` warm processes on this machine (or one per entry of ``devices``)."""

    worker_kind = "worker process"

    def __init__(
        self,
        workers: int = 2,
        *,
        torch_threads: int | None = 1,
        devices: list[str] | None = None,
        max_live: int | None = None,
        poll_seconds: float = 0.25,
    ) -> None:
        if devices is not None:
            if not devices or not all(isinstance(d, str) and (d == "cpu" or d.startswith("cuda")) for d in devices):
                raise ConfigError(f"devices must be a list such as ['cuda:0', 'cuda:1'], got {devices!r}")
            workers = len(devices)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
        self.workers = workers
        self.devices = devices
        self.torch_threads = torch_threads
        self.max_live = max_live
        self.poll_seconds = poll_seconds
        self.lost = 0  # workers that died during the last run
        self._pool: list[_Worker] = []
        self._start_failures = 0
        self._spec_bytes = b""
        self._modules: list[tuple[str, str]] = []

    def start(self, scheduler: Scheduler, members: int) -> None:
        from poptrain.checkpoints import shared_location

        target = shared_location(scheduler.checkpoints)
        if target is None:
            raise ConfigError(
                "executor 'processes' needs checkpoints in a folder or URL the workers share, not in memory"
            )
        max_live = self.max_live or math.ceil(members / self.workers) + 1
        spec: RunnerSpec = scheduler.runner_spec(target, torch_threads=self.torch_threads, max_live=max_live)
        try:
            self._spec_bytes = pickle.dumps(spec)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"executor 'processes' sends the trainable to worker processes, but it cannot be pickled ({exc}); "
                "define it at the top level of a module or file"
            ) from None
        self._modules = _modules_to_preload(scheduler.trainable_factory)
        self._pool = [self._spawn(i) for i in range(self.workers)]
        self.lost = self._start_failures = 0

    def _spawn(self, index: int) -> _Worker:
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe()
        device = self.devices[index] if self.devices else None
        process = context.Process(
            target=_serve,
            args=(self._spec_bytes, self._modules, theirs, os.getpid(), device),
            daemon=True,
            name=f"poptrain-worker-{index}",
        )
        process.start()
        theirs.close()
        return _Worker(process, mine)

    def idle(self) -> list[int]:
        return [i for i, w in enumerate(self._pool) if w.slot is None]

    def submit(self, worker: int, task: SegmentTask) -> None:
        self._pool[worker].slot = task.slot
        try:
            self._pool[worker].conn.send(task)
        except (BrokenPipeError, OSError):
            pass  # the worker died: ``wait`` notices its sentinel

    def wait(self) -> list[Arrival]:
        ready = wait_any(
            [w.conn for w in self._pool] + [w.process.sentinel for w in self._pool], timeout=self.poll_seconds
        )
        arrived: list[Arrival] = []
        for index, worker in enumerate(self._pool):
            if worker.conn in ready:
                try:
                    result = worker.conn.recv()
                except (EOFError, OSError):
                    result = None
                if result is not None:
                    arrived.append((index, worker.slot, result))
                    worker.slot, worker.served = None, True
                    continue
            if not worker.process.is_alive():
                if not worker.served:
                    self._start_failures += 1
                    if self._start_failures > self.workers + 2:
                        raise ConfigError(
                            f"the worker processes cannot start (exit code {worker.process.exitcode}); a script that "
                            "trains with executor='processes' must start its run under `if __name__ == \"__main__\":` "
                            "(each worker imports the script), and its trainable must be importable"
                        )
                arrived.append((index, worker.slot, None))
                self.lost += 1
                worker.conn.close()
                self._pool[index] = self._spawn(index)
        return arrived

    def close(self) -> None:
        for worker in self._pool:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 5
        for worker in self._pool:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)
            worker.conn.close()
        self._pool = []


# --- poptrain worker: joining a run from another machine ------------------------------------
@dataclass(frozen=True)
class WorkerJob:
    """What ``poptrain worker`` needs to join a run."""

    storage_url: str
    run_name: str
    checkpoint_root: str
    trainable: Any
    total_steps: int
    strategy: Any = None
    lease_seconds: float = 30.0
    flush_seconds: float = 1.0
    torch_threads: int | None = 1
    max_retries: int = 2
    keep_checkpoints: int | None = 2


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 10000}"


class _Heartbeat:
    """Renews a lease every third of its length until stopped."""

    def __init__(self, storage: Any, run_id: int, slot: int, worker: str, seconds: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, run_id, slot, worker, seconds), daemon=True)
        self._thread.start()

    def _beat(self, storage: Any, run_id: int, slot: int, worker: str, seconds: float) -> None:
        while not self._stop.wait(seconds / 3):
            with contextlib.suppress(PoptrainError):  # the next beat tries again; an expired lease is taken over
                storage.renew_lease(run_id, slot, worker, seconds)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def work(job: WorkerJob, name: str | None = None, progress: ProgressListener | None = None) -> int:
    """Train members of a run until none is left, leasing one at a time from the database;
    return how many ready points this worker committed."""
    from poptrain.checkpoints import open_shared
    from poptrain.scheduler import Scheduler
    from poptrain.space import SearchSpace
    from poptrain.storage import open_storage
    from poptrain.strategy import strategy_from_spec

    name = name or worker_name()
    storage = open_storage(job.storage_url, create=False)
    record = storage.get_run(job.run_name)
    checkpoints = open_shared(job.checkpoint_root)
    strategy = job.strategy or strategy_from_spec(dict(record.settings.strategy))
    scheduler = Scheduler(
        record,
        storage,
        checkpoints,
        SearchSpace(record.settings.space),
        strategy,
        job.trainable,
        job.total_steps,
        progress,
        job.flush_seconds,
        job.max_retries,
        job.keep_checkpoints,
    )
    runner = MemberRunner(scheduler.runner_spec(checkpoints, torch_threads=job.torch_threads, max_live=4))
    points = 0
    while True:
        member = storage.acquire_member(
            scheduler.run.id, name, total_steps=job.total_steps, lease_seconds=job.lease_seconds
        )
        if member is None:
            members = storage.get_members(scheduler.run.id)
            if all(m.state == "retired" or (m.state == "finished" and m.step >= job.total_steps) for m in members):
                return points
            time.sleep(0.05)  # every remaining member is leased by another worker
            continue
        heartbeat = _Heartbeat(storage, scheduler.run.id, member.slot, name, job.lease_seconds)
        scheduler.lease = member.lease  # every write of this turn is refused once the lease is lost
        try:
            points += _leased_turn(scheduler, runner, member)
        except TrainableError as error:  # recorded; the member is tried again on a later turn
            runner.drop(member.slot)
            with contextlib.suppress(StaleWriteError):
                scheduler.fail(member, error)
        except StaleWriteError:  # the lease expired (this worker stalled) and another worker took the member
            runner.drop(member.slot)
            scheduler.discard_pending()
        finally:
            scheduler.lease = None
            heartbeat.stop()
            storage.release_member(scheduler.run.id, member.slot, name)


def _leased_turn(scheduler: Scheduler, runner: MemberRunner, member: Any) -> int:
    """One turn of a leased member: to its next ready point (or its end), then decide against
    the population as stored."""
    if member.step != member.last_ready_step:  # its last holder died mid-segment
        member = scheduler.storage.rewind_member(scheduler.run.id, member.slot, lease=scheduler.lease)
    if member.step >= scheduler.total_steps:
        scheduler.finish_member(member)
        return 0
    scheduler.members()
    result = runner.segment(scheduler.task_for(member))  # rebuilt: another worker may have trained it since
    record = member
    for step, value, metrics, _ in result.scores:
        record = scheduler.record_score(record, step, value, metrics)
    result.raise_error()
    assert result.checkpoint is not None
    done = record.step >= scheduler.total_steps
    scheduler.learn_stored(record.step)  # the scores this decision compares, not every score of the run
    [(committed, _)] = scheduler.commit([(record, result.checkpoint, not done)])
    if done:
        scheduler.finish_member(committed)
    return 1
