"""Asynchronous PBT in several worker processes sharing one database.

Each worker leases the least-trained free member, trains it to its next ready point, decides
against the population as stored, and gives the member back, so members take turns fairly
when there are more members than workers. A worker renews its lease while it trains; if it
dies, the lease expires and another worker takes the member over from its newest checkpoint.
``poptrain worker NAME --storage URL`` runs the same loop from another machine.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from poptrain.controller import Controller
from poptrain.errors import ConfigError, PoptrainError, TrainableError
from poptrain.executors._base import Executor
from poptrain.progress import ProgressListener
from poptrain.records import MemberRecord
from poptrain.trainable import Trainable


@dataclass(frozen=True)
class WorkerJob:
    """What a worker process needs to join a run (picklable: sent to spawned processes)."""

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
            try:
                storage.renew_lease(run_id, slot, worker, seconds)
            except Exception:  # the next beat tries again; an expired lease is taken over
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def work(job: WorkerJob, name: str | None = None, progress: ProgressListener | None = None) -> int:
    """Train members of a run until none is left; return how many ready points this worker did."""
    from poptrain.run import load_run

    if job.torch_threads is not None:
        import torch

        torch.set_num_threads(job.torch_threads)
    name = name or worker_name()
    overrides = {}
    if job.strategy is not None:
        overrides = {"ready": job.strategy.ready, "exploit": job.strategy.exploit, "explore": job.strategy.explore}
    run = load_run(job.run_name, storage=job.storage_url, checkpoints=job.checkpoint_root, **overrides)
    controller = Controller(
        run.record, run.storage, run.checkpoints, run.space, run.strategy, job.trainable, job.total_steps,
        progress, job.flush_seconds, job.max_retries, job.keep_checkpoints,
    )
    live: dict[int, tuple[tuple[int | None, int], Trainable]] = {}
    points = 0
    while True:
        member = run.storage.acquire_member(run.record.id, name, total_steps=job.total_steps, lease_seconds=job.lease_seconds)
        if member is None:
            if all(m.state == "finished" and m.step >= job.total_steps for m in run.storage.get_members(run.record.id)):
                return points
            time.sleep(0.02)  # every remaining member is leased by another worker
            continue
        heartbeat = _Heartbeat(run.storage, run.record.id, member.slot, name, job.lease_seconds)
        try:
            points += _turn(controller, member, live)
        except TrainableError as error:  # recorded; the member is tried again on a later turn
            live.pop(member.slot, None)
            controller.fail(member, error)
        finally:
            heartbeat.stop()
            run.storage.release_member(run.record.id, member.slot, name)


def _turn(controller: Controller, member: MemberRecord, live: dict[int, tuple[tuple[int | None, int], Trainable]]) -> int:
    """One turn of a leased member: to its next ready point (or its end), then decide."""
    if member.step != member.last_ready_step:  # its last holder died mid-segment
        member = controller.storage.rewind_member(controller.run.id, member.slot)
    if member.step >= controller.total_steps:
        controller.finish_member(member)
        return 0
    key = (member.resume_checkpoint_id, member.generation_id)
    cached = live.get(member.slot)
    trainable = cached[1] if cached is not None and cached[0] == key else controller.start_member(member)
    member = controller.train_until_ready(member, trainable)
    done = member.step >= controller.total_steps
    controller.members()  # decide against the population as stored now
    [(record, _)] = controller.ready_points([(member, trainable)], decide=not done)
    if done:
        controller.finish_member(record)
        live.pop(member.slot, None)
    else:
        live[member.slot] = ((record.resume_checkpoint_id, record.generation_id), trainable)
    return 1


ORPHAN_POLL_SECONDS = 0.5  # how often a spawned worker checks that the process that started it is alive


def _die_with(parent: int) -> None:  # pragma: no cover - runs in a child process
    """End this process as soon as ``parent`` is gone (killed with SIGKILL, say): a worker of a
    driver that no longer exists would go on writing a run that may be resumed meanwhile."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="poptrain-orphan-watch", daemon=True).start()


def _spawned(job: WorkerJob, parent: int) -> None:  # pragma: no cover - runs in a child process
    _die_with(parent)
    try:
        work(job)
    except PoptrainError:  # stored with the member; the parent reports it in one line
        raise SystemExit(1) from None


class ProcessesExecutor(Executor):
    """Asynchronous PBT with ``workers`` processes (spawned) sharing the run's database."""

    def __init__(self, workers: int = 2, *, lease_seconds: float = 30.0, torch_threads: int | None = 1, poll_seconds: float = 0.25) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
        self.workers = workers
        self.lease_seconds = lease_seconds
        self.torch_threads = torch_threads
        self.poll_seconds = poll_seconds

    def check(self, trainable: object, *, synchronous: bool = False) -> None:
        if synchronous:
            raise ConfigError("executor 'processes' runs asynchronous PBT; use executor='sequential' for synchronous=True")

    def run(self, controller: Controller) -> None:
        from poptrain.checkpoints import shared_location
        from poptrain.storage._sql import SQLStorage

        if not isinstance(controller.storage, SQLStorage):
            raise ConfigError("executor 'processes' needs a database storage (the SQLite default or PostgreSQL), not memory")
        checkpoint_root = shared_location(controller.checkpoints)
        if checkpoint_root is None:
            raise ConfigError("executor 'processes' needs checkpoints in a folder or URL the workers share")
        self.check(controller.trainable_factory, synchronous=controller.strategy.synchronous)
        controller.resumable_members()  # finish members whose final checkpoint is recorded
        job = WorkerJob(
            controller.storage.url, controller.run.name, checkpoint_root,
            controller.trainable_factory, controller.total_steps, controller.strategy, self.lease_seconds,
            controller.flush_seconds, self.torch_threads, controller.max_retries, controller.keep_checkpoints,
        )
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_spawned, args=(job, os.getpid()), daemon=True) for _ in range(self.workers)]
        for process in processes:
            process.start()
        try:
            self._watch(controller, processes)
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
                process.join(timeout=10)

    def _watch(self, controller: Controller, processes: list[Any]) -> None:
        """Relay progress from storage until the workers are done; fail if one fails."""
        seen = {m.slot: m.step for m in controller.storage.get_members(controller.run.id)}
        while True:
            alive = [p for p in processes if p.is_alive()]
            for member in controller.storage.get_members(controller.run.id):
                for step in range(seen.get(member.slot, 0) + 1, member.step + 1):
                    controller.progress.on_score(member.slot, step, member.score if member.score is not None else float("nan"), member.hparams, member.generation)
                seen[member.slot] = member.step
            failed = [p for p in processes if not p.is_alive() and p.exitcode not in (0, None)]
            if failed:
                errors = [m for m in controller.storage.get_members(controller.run.id) if m.state == "failed" and m.error]
                detail = errors[0].error.strip().splitlines()[-1] if errors and errors[0].error else f"exit code {failed[0].exitcode}"
                raise TrainableError(f"a worker process failed: {detail}")
            if not alive:
                return
            time.sleep(self.poll_seconds)
