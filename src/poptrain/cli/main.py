"""``poptrain run | status | export | replay``: errors are one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poptrain.errors import ConfigError, PoptrainError

EXIT_ERROR = 2


def _add_storage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help="SQLAlchemy URL (default: SQLite in ROOT/NAME/poptrain.db)")
    parser.add_argument("--root", default="runs", help="folder that holds run folders (default: runs)")


def _add_executor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=["sequential", "processes", "vectorized", "ray"], default=None,
                        help="sequential (deterministic, one process), processes (asynchronous, --workers processes), vectorized "
                        "(the whole population as one batched program; needs a VectorizedTrainable) or ray (members in Ray "
                        "actors across a cluster, see --address); default: the experiment's")
    parser.add_argument("--device", help="for --executor vectorized: cpu, cuda or auto (default: the trainable's setting)")
    parser.add_argument("--workers", type=int, help="worker processes for --executor processes (default 2); "
                        "for --executor ray, at most this many members at once (default: as many as the cluster has CPUs)")
    parser.add_argument("--address", help="for --executor ray: auto (the cluster this machine belongs to) or HOST:PORT of "
                        "a cluster's head (default: a private Ray instance on this machine)")
    parser.add_argument("--cpus-per-member", type=float, help="for --executor ray: CPUs each member's actor takes (default 1)")
    parser.add_argument("--gpus-per-member", type=float, help="for --executor ray: GPUs (or a share of one) each member's actor takes (default 0)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poptrain", description="Population Based Training of neural networks.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="create a run from an experiment module or YAML config and train it")
    run.add_argument("target", help="a module (poptrain.experiments.digits), a .py file or a .yaml config")
    run.add_argument("--name", help="run name (default: the experiment's name)")
    run.add_argument("--steps", type=int, help="override the number of steps per member")
    run.add_argument("--population", type=int, help="override the population size")
    run.add_argument("--seed", type=int, help="override the seed")
    run.add_argument("--overwrite", action="store_true", help="delete an existing run folder of the same name first")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    _add_executor_args(run)
    _add_storage_args(run)

    resume = commands.add_parser("resume", help="continue a run that was stopped or killed, from its checkpoints")
    resume.add_argument("name")
    resume.add_argument("--steps", type=int, help="train to this many steps per member (default: the run's own)")
    resume.add_argument("--quiet", action="store_true", help="no progress display")
    _add_executor_args(resume)
    _add_storage_args(resume)

    worker = commands.add_parser("worker", help="join a running run and train its members until it is done")
    worker.add_argument("name")
    worker.add_argument("--lease", type=float, default=30.0, help="seconds a member stays leased without a heartbeat")
    _add_storage_args(worker)

    status = commands.add_parser("status", help="show a run's state, members and best member")
    status.add_argument("name")
    _add_storage_args(status)

    export = commands.add_parser("export", help="write a run's scores (csv), everything (json) or a member's schedule (--schedule)")
    export.add_argument("name")
    export.add_argument("--format", choices=["csv", "json"], help="csv: every score; json: everything")
    export.add_argument("--schedule", action="store_true",
                        help="write the best member's (or --member's) hyperparameter schedule as JSON (format poptrain.schedule/1)")
    export.add_argument("--member", type=int, help="with --schedule: this member's schedule (default: the best member's)")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    _add_storage_args(export)

    replay = commands.add_parser(
        "replay", help="retrain a fresh model along a member's hyperparameter schedule, no weights copied, and compare scores",
    )
    replay.add_argument("target", metavar="NAME", help="the run; with --schedule FILE: an experiment module, .py file or .yaml config")
    replay.add_argument("--member", type=int, help="the member whose schedule to replay (default: the best member)")
    replay.add_argument("--seed", type=int, help="seed handed to the trainable (default: that of the member the schedule starts from)")
    replay.add_argument("--steps", type=int, help="replay only the first STEPS steps of the schedule")
    replay.add_argument("--schedule", metavar="FILE", help="replay this schedule JSON (from `poptrain export NAME --schedule`)")
    replay.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_storage_args(replay)

    report = commands.add_parser("report", help="write report.html and PNGs (scores, schedules, family tree) for a run")
    report.add_argument("name")
    report.add_argument("--output", help="folder to write into (default: the run's folder, runs/NAME)")
    _add_storage_args(report)

    dashboard = commands.add_parser("dashboard", help="a local web page of the runs, updating live (127.0.0.1 by default)")
    dashboard.add_argument("name", nargs="?", help="open this run's page first")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    dashboard.add_argument("--port", type=int, default=8321)
    _add_storage_args(dashboard)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    import poptrain
    from poptrain.experiment import load_experiment

    spec = load_experiment(args.target)
    for attr, value in (("steps", args.steps), ("population_size", args.population), ("seed", args.seed)):
        if value is not None:
            setattr(spec, attr, value)
    if args.population is not None and spec.initial_hparams is not None and len(spec.initial_hparams) != args.population:
        raise ConfigError(f"this experiment fixes {len(spec.initial_hparams)} initial members; drop --population")
    if isinstance(spec.steps, bool) or not isinstance(spec.steps, int) or spec.steps < 1:
        raise ConfigError(f"steps must be a whole number >= 1, got {spec.steps!r}")
    if not callable(spec.trainable):
        raise ConfigError(f"trainable must be a Trainable subclass, got {spec.trainable!r}")
    _executor(args, spec)  # checked before anything is written
    if args.executor == "processes" and args.storage is not None and args.storage.startswith("memory"):
        raise ConfigError("--executor processes needs a database storage (the SQLite default or PostgreSQL)")
    name = args.name or spec.name
    folder = Path(args.root) / name
    if args.overwrite and folder.exists():
        if args.storage is not None:
            raise ConfigError("--overwrite deletes the run folder of the default SQLite storage; with --storage pick a new --name")
        shutil.rmtree(folder)
    target = str(Path(args.target).resolve()) if Path(args.target).is_file() else args.target
    meta = {"target": target, "steps": spec.steps}
    run = poptrain.create_run(name=name, storage=args.storage, root=args.root, meta=meta, **spec.run_kwargs())
    return _train_and_report(run, spec, spec.steps, args)


def _executor(args: argparse.Namespace, spec: Any) -> Any:
    """The executor the command line asks for, else the experiment's own."""
    from poptrain.executors import get_executor

    args.executor = args.executor or spec.executor
    if args.device is not None:
        if args.executor != "vectorized":
            raise ConfigError("--device is for --executor vectorized; other executors use the trainable's own device")
        from poptrain.executors.vectorized import VectorizedExecutor

        executor = VectorizedExecutor(device=args.device)
    elif args.executor == "ray":
        from poptrain.executors.ray_executor import RayExecutor

        resources = {k: v for k, v in (("cpus_per_member", args.cpus_per_member), ("gpus_per_member", args.gpus_per_member)) if v is not None}
        executor = RayExecutor(args.address, actors=args.workers, **resources)
    else:
        if args.cpus_per_member is not None or args.gpus_per_member is not None:
            raise ConfigError("--cpus-per-member and --gpus-per-member are for --executor ray")
        executor = get_executor(args.executor, workers=args.workers, address=args.address)
    executor.check(spec.trainable)
    return executor


def _train_and_report(run: Any, spec: Any, steps: int, args: argparse.Namespace) -> int:
    from poptrain.report.terminal import TerminalProgress, print_summary

    started = time.monotonic()
    progress = None if args.quiet else TerminalProgress(run.metric, run.mode)
    run.optimize(spec.trainable, steps=steps, progress=progress, executor=_executor(args, spec))
    extra = spec.summarize(run) if spec.summarize else {}
    print_summary(run.name, run.metric, run.best(), extra, wall_time=time.monotonic() - started)
    where = args.storage or str(Path(args.root) / run.name / "poptrain.db")
    print(f"Stored in {where}; see it again with: poptrain status {run.name}" + (f" --root {args.root}" if args.root != "runs" else ""))
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    import poptrain
    from poptrain.experiment import load_experiment

    run = poptrain.load_run(args.name, storage=args.storage, root=args.root)
    meta = run.record.spec.get("meta") or {}
    if "target" not in meta:
        raise ConfigError(
            f"run {args.name!r} was not started by `poptrain run`; resume it in Python with "
            f"load_run({args.name!r}).optimize(YourTrainable, steps=N)"
        )
    spec = load_experiment(meta["target"])
    steps = args.steps if args.steps is not None else int(meta["steps"])
    if steps < 1:
        raise ConfigError(f"steps must be a whole number >= 1, got {steps}")
    return _train_and_report(run, spec, steps, args)


def _cmd_worker(args: argparse.Namespace) -> int:
    import poptrain
    from poptrain.executors.processes import WorkerJob, work
    from poptrain.experiment import load_experiment

    run = poptrain.load_run(args.name, storage=args.storage, root=args.root)
    meta = run.record.spec.get("meta") or {}
    if "target" not in meta:
        raise ConfigError(f"run {args.name!r} was not started by `poptrain run`, so a worker cannot know its trainable")
    spec = load_experiment(meta["target"])
    url = args.storage or f"sqlite:///{Path(args.root) / args.name / 'poptrain.db'}"
    checkpoint_root = str((Path(args.root) / args.name / "checkpoints").resolve())
    points = work(WorkerJob(url, args.name, checkpoint_root, spec.trainable, int(meta["steps"]), None, args.lease), progress=None)
    print(f"worker done: {points} ready points trained for run {args.name}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    import poptrain

    run = poptrain.load_run(args.name, storage=args.storage, root=args.root)
    members = run.members()
    console = Console(width=160)
    console.print(f"[bold]Run {run.name}[/]: {run.record.state}, {len(members)} members, metric {run.metric} ({run.mode})")
    table = Table()
    for column in ("member", "state", "step", "generation", run.metric, *run.space):
        table.add_column(column)
    for m in members:
        score = "-" if m.score is None else f"{m.score:.4f}"
        table.add_row(str(m.slot), m.state, str(m.step), str(m.generation), score, *(f"{m.hparams[k]:.4g}" if isinstance(m.hparams[k], float) else str(m.hparams[k]) for k in run.space))
    console.print(table)
    best = run.best()
    if best is not None:
        console.print(f"Best: member {best.slot}, {run.metric} = {best.score:.4f} at step {best.step}")
    for m in members:
        if m.error and (m.state == "failed" or m.failures > 0):
            console.print(f"[red]member {m.slot} failed ({m.failures} in a row):[/]\n{m.error}")
        elif m.error:
            console.print(f"member {m.slot} recovered from an earlier failure: {m.error.splitlines()[0]}")
    return 0


def _export_payload(run: Any) -> dict[str, Any]:
    from dataclasses import asdict

    best = run.best()
    return {
        "run": asdict(run.record),
        "members": [asdict(m) for m in run.members()],
        "lineage": [asdict(g) for g in run.lineage()],
        "scores": [asdict(s) for s in run.scores()],
        "best": asdict(best) if best else None,
    }


def _cmd_report(args: argparse.Namespace) -> int:
    import poptrain

    from poptrain.experiment import load_experiment
    from poptrain.report.writer import write_report

    run = poptrain.load_run(args.name, storage=args.storage, root=args.root)
    folder = Path(args.output) if args.output else Path(args.root) / args.name
    extra: dict[str, Any] = {}
    target = (run.record.spec.get("meta") or {}).get("target")
    if target is not None:  # a run of `poptrain run`: its experiment's summary (test metrics) goes in too
        spec = load_experiment(target)
        if spec.summarize is not None and run.best() is not None:
            extra = dict(spec.summarize(run))
    paths = write_report(run, folder, summary=extra)
    print(f"Wrote {paths['html']} (open it in a browser; it needs no server) and "
          + ", ".join(str(paths[k].name) for k in ("scores", "schedules", "lineage")) + " beside it")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from poptrain.report.dashboard import make_server

    try:
        server = make_server(args.storage, args.root, args.host, args.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); choose another --port") from None
    url = f"http://{args.host}:{server.server_address[1]}/" + (f"runs/{args.name}" if args.name else "")
    print(f"poptrain dashboard at {url} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import poptrain

    if args.schedule == (args.format is not None):
        raise ConfigError("give one of --format csv|json (scores, everything) or --schedule (a member's schedule)")
    if args.member is not None and not args.schedule:
        raise ConfigError("--member goes with --schedule")
    run = poptrain.load_run(args.name, storage=args.storage, root=args.root)
    if args.schedule:
        text = json.dumps(run.export_schedule(args.member), indent=2, allow_nan=True) + "\n"
    elif args.format == "csv":
        text = run.to_dataframe().to_csv(index=False)
    else:
        text = json.dumps(_export_payload(run), indent=2, default=str, allow_nan=True)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    from poptrain.atomic import write_text_atomic

    target = write_text_atomic(Path(args.output), text)
    print(f"wrote {target}", file=sys.stderr)
    return 0


def _replay_progress(args: argparse.Namespace, total: int, metric: str) -> Any:
    """Prints ``replay: step k/N, metric = v`` on stderr about ten times in all."""
    if args.quiet:
        return None
    every = max(1, total // 10)

    def show(step: int, score: float) -> None:
        if step % every == 0 or step == total:
            print(f"replay: step {step}/{total}, {metric} = {score:.4f}", file=sys.stderr, flush=True)

    return show


def _cmd_replay(args: argparse.Namespace) -> int:
    import poptrain
    from poptrain.replay import replay

    if args.schedule is not None:
        from poptrain.experiment import load_experiment

        if args.member is not None:
            raise ConfigError("--member picks a member of a stored run; a --schedule file holds one member's schedule already")
        if args.storage is not None:
            raise ConfigError("--storage names a stored run; with --schedule FILE give the experiment or config instead")
        schedule = poptrain.load_schedule(args.schedule)
        spec = load_experiment(args.target)
        if args.steps is not None:
            schedule = schedule.truncate(args.steps)
        metric = schedule.metric or spec.metric
        result = replay(
            spec.trainable, schedule, metric=metric, mode=schedule.mode or spec.mode, seed=args.seed,
            run_seed=schedule.run_seed if schedule.run_seed is not None else spec.seed,
            progress=_replay_progress(args, schedule.total_steps, metric),
        )
        _print_replay(result, None)
        return 0
    run = poptrain.load_run(args.target, storage=args.storage, root=args.root)
    schedule = run.replay_schedule(args.member)
    total = schedule.total_steps if args.steps is None else args.steps
    result = run.replay(member=args.member, seed=args.seed, steps=args.steps, progress=_replay_progress(args, total, run.metric))
    saved = None
    if run.folder is not None:  # where Run.replay writes the result, when the run has a folder
        saved = run.folder / "replays" / f"member-{schedule.member}{'' if args.seed is None else f'-seed{args.seed}'}.json"
        saved = saved if saved.is_file() else None
    _print_replay(result, saved)
    return 0


def _print_replay(result: Any, saved: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    schedule = result.schedule
    source = f"run {schedule.run}" if schedule.run else "the schedule"
    who = f", member {schedule.member}" if schedule.member is not None else ""
    console = Console(width=160)
    console.print(
        f"[bold]Replay of {source}{who}[/]: {result.steps} steps from scratch along {len(schedule.segments)} "
        f"segment(s), seed {result.seed}, no weights copied"
    )
    table = Table()
    for column in ("member", "steps", f"original {result.metric}", f"replay {result.metric}", "difference"):
        table.add_column(column)
    original, difference = result.original_score, result.difference
    table.add_row(
        "-" if schedule.member is None else str(schedule.member), str(result.steps),
        "-" if original is None else f"{original:.4f}", f"{result.score:.4f}",
        "-" if difference is None else f"{difference:+.4f}",
    )
    console.print(table)
    better = "higher" if result.mode == "max" else "lower"
    console.print(f"Metric {result.metric} ({result.mode}: {better} is better)." + (f" Saved in {saved}" if saved else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poptrain`` command."""
    args = _parser().parse_args(argv)
    handlers = {
        "run": _cmd_run, "resume": _cmd_resume, "worker": _cmd_worker, "status": _cmd_status, "export": _cmd_export,
        "report": _cmd_report, "dashboard": _cmd_dashboard, "replay": _cmd_replay,
    }
    try:
        return handlers[args.command](args)
    except PoptrainError as exc:
        print(f"poptrain: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("poptrain: interrupted; the run is stored as far as it got", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
