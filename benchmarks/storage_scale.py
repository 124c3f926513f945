"""How far one database carries poptrain: N workers committing ready points to one SQLite file
or one PostgreSQL server, through the path ``poptrain worker`` takes.

    .venv/bin/python -m benchmarks.storage_scale [--quick] [--seconds 5] [--workers 1,2,4,8,16,32,64]
                                                 [--backends sqlite,postgresql]

Each worker is a separate process on this machine running ``poptrain.executors.processes.work``
(what ``poptrain worker`` runs): it leases the least-trained member, trains it to its next ready
point, commits the point (scores, checkpoint row, PBT decision and new generation: one
``record_ready`` transaction) and releases it. The trainable costs nothing (an instant step, a
one-number state), so the database and the client's own Python are all that is measured. For
each backend and N: ready points per second (and the speed-up over N = 1 in the same run),
p50/p95 of the commit (``record_ready``) latency, the storage time per ready point of every call
a turn makes, errors (storage calls that raised), and afterwards a check that every committed
ready point is in the database exactly once (checkpoint rows, generations, scores against what
the workers say they committed). PostgreSQL is a throwaway server on 127.0.0.1 (Debian's
binaries, as the tests start it); its processes' CPU share is reported, since with more worker
processes than cores the clients, not the server, are what runs out.

Workers start from a fork server that has imported torch and poptrain once (a fresh process
that holds no connection: each worker opens its own), so 64 workers start in seconds and share
their libraries' memory; ``--start spawn`` starts each from scratch instead.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from experiments.harness import markdown_table, parser

import poptrain

RUN = "scale"
TOTAL_STEPS = 10**9  # never reached: workers stop at the deadline
READY_EVERY = 4
LEASE_SECONDS = 30.0
FULL_WORKERS = (1, 2, 4, 8, 16, 32, 64)
QUICK_WORKERS = (1, 2, 4)
SATURATION_GAIN = 1.1  # throughput must grow by 10% from one N to the next to count as growing
P95_EXPLODES = 5.0  # or the p95 commit latency grows past 5x its value at N = 1
TESTS = Path(__file__).resolve().parent.parent / "tests"


class Instant(poptrain.Trainable):
    """A trainable with no training cost: a step moves one number, the state is that number."""

    def setup(self, hparams: dict[str, Any], context: poptrain.TrainContext) -> None:
        self.w = 0.0
        self.x = float(hparams["x"])

    def step(self) -> None:
        self.w += 0.01 * (1.0 - abs(self.x - 0.3))

    def evaluate(self) -> float:
        return self.w

    def state_dict(self) -> dict[str, float]:
        return {"w": self.w}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.w = float(state["w"])

    def set_hparams(self, hparams: dict[str, Any]) -> None:
        self.x = float(hparams["x"])


# --- a worker process ----------------------------------------------------------------------
class _TimeUp(Exception):
    """Raised in place of the next lease once the measurement's deadline has passed."""


class _Log:
    """What one worker did, as its storage calls saw it (the main thread and the heartbeat)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.commits: list[tuple[float, float]] = []  # (end time, seconds) of each record_ready
        self.points: list[tuple[int, int, bool]] = []  # (slot, step, decided) of each committed ready point
        self.scores: list[tuple[int, int, int]] = []  # (slot, step, generation_id) of each committed score
        self.errors: list[str] = []

    def result(self) -> dict[str, Any]:
        return {
            "seconds": dict(self.seconds),
            "calls": dict(self.calls),
            "commits": self.commits,
            "points": self.points,
            "scores": self.scores,
            "errors": self.errors,
        }


def _instrument(log: _Log, deadline: list[float]) -> None:
    """Time every public ``SQLStorage`` method in this process; note each committed ready point
    and score; refuse a new lease after ``deadline[0]``."""
    from poptrain.storage._sql import SQLStorage

    names = [n for n in vars(SQLStorage) if not n.startswith("_") and callable(getattr(SQLStorage, n))]
    for name in names:
        original = getattr(SQLStorage, name)

        def timed(self: Any, *args: Any, __name: str = name, __original: Any = original, **kwargs: Any) -> Any:
            if __name == "acquire_member" and time.time() >= deadline[0]:
                raise _TimeUp
            began = time.perf_counter()
            try:
                result = __original(self, *args, **kwargs)
            except Exception as exc:
                with log.lock:
                    log.errors.append(f"{__name}: {type(exc).__name__}: {exc}"[:500])
                raise
            spent = time.perf_counter() - began
            with log.lock:
                log.seconds[__name] += spent
                log.calls[__name] += 1
                if __name == "record_ready":
                    points = args[1] if len(args) > 1 else kwargs["points"]
                    scores = args[2] if len(args) > 2 else kwargs.get("scores", ())
                    log.commits.append((time.time(), spent))
                    log.points.extend((p.slot, p.step, p.decision is not None) for p in points)
                    log.scores.extend((s.slot, s.step, s.generation_id) for s in scores)
                elif __name == "record_scores":
                    scores = args[1] if len(args) > 1 else kwargs["scores"]
                    log.scores.extend((s.slot, s.step, s.generation_id) for s in scores)
            return result

        setattr(SQLStorage, name, timed)


def _die_with(parent: int) -> None:
    """End this worker as soon as the benchmark's main process is gone."""

    def watch() -> None:
        while True:
            try:
                os.kill(parent, 0)
            except OSError:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def _worker(index: int, url: str, checkpoints: str, parent: int, started: Any, go: Any, shared: Any, out: Any) -> None:
    """One simulated ``poptrain worker``: wait for ``go``, then train members until the deadline."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process ends the workers
    _die_with(parent)
    import torch

    from poptrain.executors.processes import WorkerJob, work

    torch.set_num_threads(1)
    log = _Log()
    deadline = [math.inf]
    _instrument(log, deadline)
    job = WorkerJob(url, RUN, checkpoints, Instant, TOTAL_STEPS, lease_seconds=LEASE_SECONDS, torch_threads=1)
    started.release()
    go.wait()
    deadline[0] = shared.value
    signal.alarm(int(max(1.0, shared.value - time.time())) + 120)  # a hard bound, whatever happens
    try:
        work(job, name=f"bench-{index}")
    except _TimeUp:
        pass
    except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
        log.errors.append(f"work: {type(exc).__name__}: {exc}"[:500])
    out.put((index, log.result()))


# imported once in the fork server, so that each worker starts with them
PRELOAD = ["torch", "scipy.special", "sqlalchemy", "psycopg", "poptrain.executors.processes", "poptrain.storage._sql"]


# --- PostgreSQL ------------------------------------------------------------------------------
@contextlib.contextmanager
def postgres() -> Iterator[tuple[str, Any] | None]:
    """A throwaway server (the tests' ``pg_helpers``): ``(url prefix, new_database)``, or
    ``None`` (with the reason printed) when it cannot start here."""
    import pytest

    sys.path.insert(0, str(TESTS))
    try:
        pg_helpers = importlib.import_module("pg_helpers")
    finally:
        sys.path.remove(str(TESTS))
    if pg_helpers.find_bin() is None:
        print(f"PostgreSQL skipped: {pg_helpers.MISSING}")
        yield None
        return
    try:
        with pg_helpers.postgres_server() as server:
            yield server, pg_helpers.new_database
    except pytest.skip.Exception as exc:
        print(f"PostgreSQL skipped: {exc}")
        yield None


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, or ``None`` (gone, or no ``/proc``)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _server_processes(port: int) -> list[int]:
    """The postmaster listening on ``port`` and its children (from ``/proc``; none without it)."""
    pids = [int(p.name) for p in Path("/proc").glob("[0-9]*")] if Path("/proc").is_dir() else []
    postmaster = None
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"/postgres") and f"-p {port} ".encode() in b" ".join(cmdline) + b" ":
            postmaster = pid
            break
    if postmaster is None:
        return []
    children = [pid for pid in pids if (fields := _stat(pid)) is not None and int(fields[1]) == postmaster]
    return [postmaster, *children]


def _cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds (user + system) each process has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            used[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return used


# --- one measurement ---------------------------------------------------------------------------
def _create(url: str, folder: Path, members: int) -> None:
    run = poptrain.create_run(
        name=RUN,
        space={"x": poptrain.Float(0.0, 1.0)},
        population_size=members,
        metric="score",
        ready=poptrain.every(READY_EVERY),
        seed=0,
        storage=url,
        checkpoints=str(folder / "checkpoints"),
        root=folder,
    )
    run.storage.close()


def measure(context: Any, url: str, folder: Path, workers: int, seconds: float, port: int | None) -> dict[str, Any]:
    """``workers`` processes against the database at ``url`` for ``seconds``: the figures and
    the check that nothing was lost or duplicated."""
    members = max(4, 2 * workers)
    _create(url, folder, members)
    started, go, out = context.Semaphore(0), context.Event(), context.Queue()
    shared = context.Value("d", 0.0)
    processes = [
        context.Process(
            target=_worker,
            args=(i, url, str(folder / "checkpoints"), os.getpid(), started, go, shared, out),
            name=f"storage-scale-{i}",
        )
        for i in range(workers)
    ]
    results: dict[int, dict[str, Any]] = {}
    try:
        for proc in processes:
            proc.start()
        for _ in processes:
            if not started.acquire(timeout=300):
                raise RuntimeError("a worker did not start within 300 s")
        server = _server_processes(port) if port is not None else []
        clients = [p.pid for p in processes if p.pid is not None]
        load_before = os.getloadavg()
        shared.value = time.time() + seconds
        began = time.time()
        server_before, clients_before = _cpu_seconds(server), _cpu_seconds(clients)
        go.set()
        time.sleep(max(0.0, shared.value - time.time()))
        server = _server_processes(port) if port is not None else []  # backends opened since count from 0
        server_cpu = sum(v - server_before.get(pid, 0.0) for pid, v in _cpu_seconds(server).items())
        client_cpu = sum(v - clients_before.get(pid, 0.0) for pid, v in _cpu_seconds(clients).items())
        ended = time.time()
        while len(results) < workers:
            index, result = out.get(timeout=180)
            results[index] = result
        for proc in processes:
            proc.join(timeout=30)
    finally:
        _stop(processes)
    window = ended - began
    return _figures(url, members, workers, window, began, results, server_cpu, client_cpu, port, load_before)


def _stop(processes: Sequence[Any]) -> None:
    """Terminate what is still alive, then kill what ignores it."""
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        if proc.pid is not None:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _figures(
    url: str,
    members: int,
    workers: int,
    window: float,
    began: float,
    results: dict[int, dict[str, Any]],
    server_cpu: float,
    client_cpu: float,
    port: int | None,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    commits = [c for r in results.values() for c in r["commits"]]
    in_window = [c for c in commits if c[0] <= began + window]
    points = [p for r in results.values() for p in r["points"]]
    latencies = [s for _, s in commits]
    seconds: defaultdict[str, float] = defaultdict(float)
    calls: Counter[str] = Counter()
    for r in results.values():
        for name, spent in r["seconds"].items():
            seconds[name] += spent
        calls.update(r["calls"])
    errors = [e for r in results.values() for e in r["errors"]]
    check = verify(url, members, results)
    in_window_points = sum(1 for r in results.values() for end, _ in r["commits"] if end <= began + window)
    return {
        "workers": workers,
        "members": members,
        "window_s": round(window, 3),
        "ready_points": len(points),
        "commits": len(commits),
        "ready_points_per_s": round(in_window_points / window, 1) if window > 0 else 0.0,
        "commits_in_window": len(in_window),
        "commit_p50_ms": round(1000 * _percentile(latencies, 0.5), 2),
        "commit_p95_ms": round(1000 * _percentile(latencies, 0.95), 2),
        "storage_ms_per_point": round(1000 * sum(seconds.values()) / max(1, len(points)), 2),
        "storage_ms_per_point_by_call": {
            name: round(1000 * s / max(1, len(points)), 3)
            for name, s in sorted(seconds.items(), key=lambda item: -item[1])
        },
        "calls_per_point": {name: round(n / max(1, len(points)), 2) for name, n in calls.most_common()},
        "errors": len(errors),
        "error_samples": errors[:5],
        "server_cpu_cores": round(server_cpu / window, 2) if port is not None and window > 0 else None,
        "server_cpu_ms_per_point": round(1000 * server_cpu / max(1, in_window_points), 2) if port is not None else None,
        "client_cpu_cores": round(client_cpu / window, 2) if window > 0 else None,
        "load_before": [round(x, 2) for x in load_before],
        **check,
    }


def verify(url: str, members: int, results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Every ready point the workers committed is in the database exactly once, and the database
    holds none they did not commit: checkpoint rows by (slot, step), one generation per decision,
    every stored score one a worker committed (scores past a copied checkpoint are deleted by
    design), no member left leased."""
    from poptrain.storage._sql import SQLStorage

    committed = Counter((slot, step) for r in results.values() for slot, step, _ in r["points"])
    decisions = sum(1 for r in results.values() for _, _, decided in r["points"] if decided)
    scores = Counter(tuple(s) for r in results.values() for s in r["scores"])
    storage = SQLStorage(url, create=False)
    try:
        run_id = storage.get_run(RUN).id
        stored = Counter((c.slot, c.step) for c in storage.get_checkpoints(run_id))
        generations = storage.get_generations(run_id)
        began = time.perf_counter()
        rows = storage.get_scores(run_id)
        read_seconds = time.perf_counter() - began
        stored_scores = Counter((s.slot, s.step, s.generation_id) for s in rows)
        leased = [m.slot for m in storage.get_members(run_id) if _leased(storage, run_id, m.slot)]
    finally:
        storage.close()
    lost = committed - stored
    extra = stored - committed
    return {
        "lost": sum(lost.values()),
        "duplicated": sum(extra.values()),
        "decisions": decisions,
        "generations_beyond_first": len(generations) - members,
        "generation_mismatch": abs(len(generations) - members - decisions),
        "scores_committed": sum(scores.values()),
        "scores_stored": sum(stored_scores.values()),
        "scores_unknown": sum((stored_scores - scores).values()),
        "scores_twice": sum(n - 1 for n in stored_scores.values() if n > 1),
        "left_leased": len(leased),
        "get_scores_ms_per_1000_rows": round(1e6 * read_seconds / max(1, len(rows)), 2),
        "ok": not lost
        and not extra
        and len(generations) - members == decisions
        and not (stored_scores - scores)
        and not leased,
    }


def _leased(storage: Any, run_id: int, slot: int) -> bool:
    from sqlalchemy import select

    from poptrain.storage import _schema as t

    with storage.engine.connect() as conn:
        row = conn.execute(
            select(t.leases.c.expires_at).where(t.leases.c.run_id == run_id, t.leases.c.slot == slot)
        ).first()
    return row is not None and row.expires_at > time.time()


# --- the sweep ---------------------------------------------------------------------------------
def saturation(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The N after which throughput stops growing (by less than ``SATURATION_GAIN``) or the p95
    commit latency passes ``P95_EXPLODES`` times its value at the smallest N."""
    growing_until = rows[-1]["workers"] if rows else None
    for a, b in itertools.pairwise(rows):
        if b["ready_points_per_s"] < SATURATION_GAIN * a["ready_points_per_s"]:
            growing_until = a["workers"]
            break
    exploded = next(
        (r["workers"] for r in rows if rows and r["commit_p95_ms"] > P95_EXPLODES * rows[0]["commit_p95_ms"]), None
    )
    peak = max(rows, key=lambda r: r["ready_points_per_s"]) if rows else None
    return {
        "throughput_stops_growing_after": growing_until,
        "p95_explodes_at": exploded,
        "peak_ready_points_per_s": peak["ready_points_per_s"] if peak else None,
        "peak_at_workers": peak["workers"] if peak else None,
    }


def capacity(rows: Sequence[dict[str, Any]], peak: float) -> dict[str, Any]:
    """Workers one database serves at a ready interval of T seconds (W = throughput x T), and
    whether it keeps up with 1,000 workers ready every 60 s and every 5 s; for a server, the
    rate its CPU would allow if the clients ran elsewhere (1 / server CPU per ready point); and
    what a worker's read of the scores its decision needs costs per ready point."""
    server_ms = [r["server_cpu_ms_per_point"] for r in rows if r.get("server_cpu_ms_per_point")]
    per_core = 1000 / statistics.median(server_ms) if server_ms else None
    reads = [r["storage_ms_per_point_by_call"].get("get_scores", 0.0) for r in rows]
    read_ms = statistics.median(reads) if reads else math.nan
    found: dict[str, Any] = {
        "workers_at_T60": int(peak * 60),
        "workers_at_T5": int(peak * 5),
        "cluster_1000_T60_ok": peak >= 1000 / 60,
        "cluster_1000_T5_ok": peak >= 200,
        "server_points_per_s_per_core": round(per_core, 1) if per_core else None,
    }
    found["score_read_ms_per_point"] = round(read_ms, 3)
    return found


def table(rows: Sequence[dict[str, Any]]) -> str:
    base = rows[0]["ready_points_per_s"] if rows else 0.0
    cores = os.cpu_count() or 1
    return markdown_table(
        [
            "workers",
            "ready points/s",
            "x N=1",
            "commit p50 ms",
            "commit p95 ms",
            "storage ms/point",
            "errors",
            "lost",
            "duplicated",
            "server CPU (cores)",
            "client CPU (cores)",
            "load before",
        ],
        [
            [
                f"{r['workers']}" + (" *" if r["workers"] > cores else ""),
                r["ready_points_per_s"],
                f"{r['ready_points_per_s'] / base:.2f}" if base else "-",
                r["commit_p50_ms"],
                r["commit_p95_ms"],
                r["storage_ms_per_point"],
                r["errors"],
                r["lost"],
                r["duplicated"],
                "-" if r["server_cpu_cores"] is None else r["server_cpu_cores"],
                r["client_cpu_cores"],
                r["load_before"][0],
            ]
            for r in rows
        ],
    )


def sweep(
    context: Any,
    backend: str,
    urls: Iterator[str],
    root: Path,
    workers: Sequence[int],
    seconds: float,
    port: int | None,
) -> list[dict[str, Any]]:
    rows = []
    for n in workers:
        folder = root / f"{backend}-{n}"
        folder.mkdir()
        row = measure(context, next(urls), folder, n, seconds, port)
        rows.append(row)
        print(
            f"  {backend} N={n}: {row['ready_points_per_s']} ready points/s, p95 {row['commit_p95_ms']} ms, "
            f"errors {row['errors']}, lost {row['lost']}, duplicated {row['duplicated']}",
            flush=True,
        )
    return rows


def _sqlite_urls(root: Path, workers: Sequence[int]) -> Iterator[str]:
    for n in workers:
        yield f"sqlite:///{root / f'sqlite-{n}' / 'poptrain.db'}"


def _postgres_urls(server: str, new_database: Any) -> Iterator[str]:
    while True:
        yield new_database(server)


def main() -> int:
    args_parser = parser(
        __doc__.splitlines()[0],
        quick="N = 1, 2, 4 for about a second each (SQLite, and PostgreSQL when it can start here)",
        out=Path(__file__).resolve().parent / "results" / "storage_scale.json",
    )
    args_parser.add_argument("--seconds", type=float, default=None, help="measured seconds per N (default 5)")
    args_parser.add_argument("--workers", default=None, help="comma-separated N (default 1,2,4,8,16,32,64)")
    args_parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both")
    args_parser.add_argument("--start", choices=("forkserver", "spawn"), default="forkserver")
    args = args_parser.parse_args()
    workers = (
        [int(n) for n in args.workers.split(",")]
        if args.workers
        else list(QUICK_WORKERS if args.quick else FULL_WORKERS)
    )
    if not workers or min(workers) < 1:
        print("error: --workers takes whole numbers >= 1, e.g. 1,2,4", file=sys.stderr)
        return 2
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 5.0)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - {"sqlite", "postgresql"}:
        print("error: --backends takes sqlite, postgresql or both (comma-separated)", file=sys.stderr)
        return 2
    context = multiprocessing.get_context(args.start)
    if args.start == "forkserver":
        context.set_forkserver_preload(PRELOAD)
    cores = os.cpu_count() or 1
    print(
        f"{cores} cores, load {os.getloadavg()[0]:.2f}; N = {workers}; {seconds} s per N"
        + (
            f"; N marked * above {cores} oversubscribe the CPU: workers then compete with the database for cores"
            if max(workers) > cores
            else ""
        ),
        flush=True,
    )
    result: dict[str, Any] = {
        "cores": cores,
        "seconds_per_n": seconds,
        "ready_every": READY_EVERY,
        "start": args.start,
        "load_start": list(os.getloadavg()),
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="poptrain-scale-") as tmp:
        root = Path(tmp)
        if "sqlite" in backends:
            print("SQLite (one file, WAL):", flush=True)
            rows = sweep(context, "sqlite", _sqlite_urls(root, workers), root, workers, seconds, None)
            result["backends"]["sqlite"] = {"rows": rows, **saturation(rows)}
        if "postgresql" in backends:
            with postgres() as pg:
                if pg is not None:
                    server, new_database = pg
                    port = int(server.rsplit(":", 1)[1])
                    print("PostgreSQL (127.0.0.1, fsync off):", flush=True)
                    rows = sweep(
                        context, "postgresql", _postgres_urls(server, new_database), root, workers, seconds, port
                    )
                    result["backends"]["postgresql"] = {"rows": rows, **saturation(rows)}
    result["load_end"] = list(os.getloadavg())
    for backend, found in result["backends"].items():
        found.update(capacity(found["rows"], found["peak_ready_points_per_s"] or 0.0))
        print(f"\n{backend}: ready points per second by workers (* = more worker processes than the {cores} cores)")
        print(table(found["rows"]))
        print(
            f"throughput stops growing after N = {found['throughput_stops_growing_after']}; p95 explodes at N = "
            f"{found['p95_explodes_at'] or '-'}; peak {found['peak_ready_points_per_s']}/s at N = "
            f"{found['peak_at_workers']}: one database serves {found['workers_at_T60']} workers ready every 60 s, "
            f"{found['workers_at_T5']} ready every 5 s (1,000 workers need 16.7/s at 60 s: "
            f"{'yes' if found['cluster_1000_T60_ok'] else 'no'}; 200/s at 5 s: "
            f"{'yes' if found['cluster_1000_T5_ok'] else 'no'})"
        )
        if found["server_points_per_s_per_core"]:
            print(
                f"server CPU per ready point {statistics.median(r['server_cpu_ms_per_point'] for r in found['rows']):.2f} "
                f"ms (median): one server core would commit {found['server_points_per_s_per_core']} ready points/s "
                "with the clients on other machines"
            )
        print(
            "a worker's turn reads only the scores its decision needs (those at its ready step, or a recent "
            f"window's): {found['score_read_ms_per_point']} ms per ready point (median over N), "
            "not growing with the run's length"
        )
    print(f"load {result['load_start'][0]:.2f} at the start, {result['load_end'][0]:.2f} at the end")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    failed = [
        f"{b} N={r['workers']}"
        for b, found in result["backends"].items()
        for r in found["rows"]
        if r["errors"] or not r["ok"]
    ]
    if failed:
        print(f"FAILED (errors, or ready points lost or duplicated): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
