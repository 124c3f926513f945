"""``poptrain run | status | export | replay``: errors are one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from poptrain.cli._common import check_output_file, check_root, close_opened, iso_time, load, opened, where_flags
from poptrain.errors import ConfigError, MetricError, PoptrainError, RunExistsError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _add_storage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage", help="SQLAlchemy URL of a database holding runs (default: SQLite in ROOT/NAME/poptrain.db)"
    )
    parser.add_argument("--root", default="runs", help="folder that holds run folders (default: runs)")


def _add_log_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log",
        metavar="LOGGERS",
        help="comma-separated loggers to write the run to, besides the experiment's callbacks: jsonl, tensorboard, "
        "mlflow, wandb (under ROOT/NAME/logs; see docs/callbacks.md) (default: none)",
    )


def _add_stop_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="stop after this much training time (90s, 30m, 2h, 1h30m); continue later with poptrain resume "
        "(default: no budget)",
    )
    parser.add_argument(
        "--target-score",
        type=float,
        metavar="SCORE",
        help="stop once the best score reaches SCORE (default: no target)",
    )
    parser.add_argument(
        "--plateau",
        type=int,
        metavar="STEPS",
        help="stop when the best score has not improved for STEPS steps (default: never)",
    )


def _stop_rules(args: argparse.Namespace) -> list[Any]:
    """The stop rules the flags ask for (checked before anything is written)."""
    from poptrain.stopping import parse_duration, plateau, target, time_budget

    rules: list[Any] = []
    if args.time_budget is not None:
        rules.append(time_budget(seconds=parse_duration(args.time_budget)))
    if args.target_score is not None:
        rules.append(target(args.target_score))
    if args.plateau is not None:
        rules.append(plateau(args.plateau))
    return rules


def _callbacks(args: argparse.Namespace, spec: Any) -> list[Any]:
    """The experiment's callbacks and those ``--log`` names, made (and so checked) before anything is written."""
    from poptrain.callbacks import make_callbacks

    made = make_callbacks(spec.callbacks, where=f"{getattr(args, 'target', None) or 'the experiment'}: callbacks")
    names = {s.strip().lower() for s in spec.callbacks if isinstance(s, str)}
    wanted = [n.strip() for n in (args.log or "").split(",") if n.strip()]
    if args.log is not None and not wanted:
        raise ConfigError("--log needs logger names, e.g. --log jsonl,tensorboard")
    extra = [n for n in dict.fromkeys(wanted) if n.lower() not in names]
    return made + make_callbacks(extra, where="--log")


def _add_executor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        choices=["sequential", "processes", "vectorized", "ray"],
        default=None,
        help="sequential (deterministic, one process), processes (asynchronous, --workers processes), vectorized "
        "(the whole population as one batched program; needs a VectorizedTrainable) or ray (members in Ray "
        "actors across a cluster, see --address); default: the experiment's",
    )
    parser.add_argument(
        "--device", help="for --executor vectorized: cpu, cuda or auto (default: the trainable's setting)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes for --executor processes (default 2); "
        "for --executor ray, at most this many members at once (default: as many as the cluster has CPUs)",
    )
    parser.add_argument(
        "--devices",
        help="for --executor processes: one worker per device, e.g. cuda:0,cuda:1 "
        "(CUDA_VISIBLE_DEVICES set for each; replaces --workers; default: none, --workers processes)",
    )
    parser.add_argument(
        "--address",
        help="for --executor ray: auto (the cluster this machine belongs to) or HOST:PORT of "
        "a cluster's head (default: a private Ray instance on this machine)",
    )
    parser.add_argument(
        "--cpus-per-member", type=float, help="for --executor ray: CPUs each member's actor takes (default 1)"
    )
    parser.add_argument(
        "--gpus-per-member",
        type=float,
        help="for --executor ray: GPUs (or a share of one) each member's actor takes (default 0)",
    )


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (the usage is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"poptrain: error: {self.prog}: {message}; see `{self.prog} --help`\n")


def _parser() -> argparse.ArgumentParser:
    from poptrain._version import __version__

    parser = _Parser(prog="poptrain", description="Population Based Training of neural networks.")
    parser.add_argument("--version", action="version", version=f"poptrain {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="create a run from an experiment module or YAML config and train it")
    run.add_argument("target", help="a module (poptrain.experiments.digits), a .py file or a .yaml config")
    run.add_argument("--name", help="run name (default: the experiment's name)")
    run.add_argument("--steps", type=int, help="steps per member (default: the experiment's)")
    run.add_argument("--population", type=int, help="population size (default: the experiment's)")
    run.add_argument("--seed", type=int, help="the run's seed (default: the experiment's)")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run of the same name: its run folder under --root (or, with --storage, "
        "only its rows and checkpoints), after every other input is checked (default: refuse)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress display (default: progress on stderr)")
    _add_log_arg(run)
    _add_stop_args(run)
    _add_executor_args(run)
    _add_storage_args(run)

    resume = commands.add_parser("resume", help="continue a run that was stopped or killed, from its checkpoints")
    resume.add_argument("name")
    resume.add_argument("--steps", type=int, help="train to this many steps per member (default: the run's own)")
    resume.add_argument("--quiet", action="store_true", help="no progress display (default: progress on stderr)")
    _add_log_arg(resume)
    _add_stop_args(resume)
    _add_executor_args(resume)
    _add_storage_args(resume)

    worker = commands.add_parser("worker", help="join a running run and train its members until it is done")
    worker.add_argument("name")
    worker.add_argument(
        "--lease", type=float, default=30.0, help="seconds a member stays leased without a heartbeat (default: 30)"
    )
    _add_storage_args(worker)

    status = commands.add_parser("status", help="show a run's state, members and best member")
    status.add_argument("name")
    _add_storage_args(status)

    export = commands.add_parser(
        "export", help="write a run's scores (csv), everything (json) or a member's schedule (--schedule)"
    )
    export.add_argument("name")
    export.add_argument(
        "--format",
        choices=["csv", "json"],
        help="csv: every score; json: everything (default: none, give this or --schedule)",
    )
    export.add_argument(
        "--best-model",
        metavar="FILE",
        help="write the best-ever model's state (what its trainable's load_state_dict takes) to FILE with torch.save "
        "(default: none)",
    )
    export.add_argument(
        "--schedule",
        action="store_true",
        help="write the best member's (or --member's) hyperparameter schedule as JSON (format poptrain.schedule/1) "
        "(default: off)",
    )
    export.add_argument(
        "--member", type=int, help="with --schedule: this member's schedule (default: the best member's)"
    )
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    _add_storage_args(export)

    replay = commands.add_parser(
        "replay",
        help="retrain a fresh model along a member's hyperparameter schedule, no weights copied, and compare scores",
    )
    replay.add_argument(
        "target", metavar="NAME", help="the run; with --schedule FILE: an experiment module, .py file or .yaml config"
    )
    replay.add_argument("--member", type=int, help="the member whose schedule to replay (default: the best member)")
    replay.add_argument(
        "--seed", type=int, help="seed handed to the trainable (default: that of the member the schedule starts from)"
    )
    replay.add_argument(
        "--steps", type=int, help="replay only the first STEPS steps of the schedule (default: all of it)"
    )
    replay.add_argument(
        "--schedule",
        metavar="FILE",
        help="replay this schedule JSON (from `poptrain export NAME --schedule`) (default: the stored run's schedule)",
    )
    replay.add_argument("--quiet", action="store_true", help="no progress lines (default: progress on stderr)")
    _add_storage_args(replay)

    report = commands.add_parser("report", help="write report.html and PNGs (scores, schedules, family tree) for a run")
    report.add_argument("name")
    report.add_argument("--output", help="folder to write into (default: the run's folder, runs/NAME)")
    _add_storage_args(report)

    compare = commands.add_parser(
        "compare", help="draw several runs' best-so-far curves on one page and their results side by side"
    )
    compare.add_argument("names", nargs="+", metavar="NAME", help="two or more runs of one metric")
    compare.add_argument("--output", help="HTML file to write, a PNG beside it (default: ROOT/compare.html)")
    _add_storage_args(compare)

    dashboard = commands.add_parser(
        "dashboard", help="a local web page of the runs, updating live (127.0.0.1 by default)"
    )
    dashboard.add_argument("name", nargs="?", help="open this run's page first")
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    dashboard.add_argument(
        "--port", type=int, default=8321, help="port to listen on, 0 for any free one (default: 8321)"
    )
    _add_storage_args(dashboard)

    listing = commands.add_parser("ls", help="list the runs under --root (or in the --storage database)")
    _add_storage_args(listing)

    remove = commands.add_parser(
        "rm", help="delete a run: its run folder under --root, or with --storage only its rows and checkpoints"
    )
    remove.add_argument("name")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation (default: ask)")
    _add_storage_args(remove)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    import poptrain
    from poptrain.experiment import load_experiment
    from poptrain.run_folders import check_name

    spec = load_experiment(args.target)
    if args.workers is not None and (args.executor or spec.executor) not in ("processes", "ray"):
        raise ConfigError("--workers is for --executor processes or ray")
    for attr, value in (("steps", args.steps), ("population_size", args.population), ("seed", args.seed)):
        if value is not None:
            setattr(spec, attr, value)
    if (
        args.population is not None
        and spec.initial_hparams is not None
        and len(spec.initial_hparams) != args.population
    ):
        raise ConfigError(f"this experiment fixes {len(spec.initial_hparams)} initial members; drop --population")
    if isinstance(spec.steps, bool) or not isinstance(spec.steps, int) or spec.steps < 1:
        raise ConfigError(f"--steps must be a whole number >= 1, got {spec.steps!r}")
    if not callable(spec.trainable):
        raise ConfigError(f"trainable must be a Trainable subclass, got {spec.trainable!r}")
    _executor(args, spec)  # checked before anything is written
    callbacks = _callbacks(args, spec)
    stop = [*spec.stop, *_stop_rules(args)]
    _probe_factory(spec.trainable)
    if args.executor == "processes" and args.storage is not None and args.storage.startswith("memory"):
        raise ConfigError(
            "--executor processes needs checkpoints its workers share, which --storage memory keeps in "
            "memory; leave --storage out (SQLite and a checkpoint folder under --root)"
        )
    name = check_name(spec.name if args.name is None else args.name)
    check_root(args.root)
    target = str(Path(args.target).resolve()) if Path(args.target).is_file() else args.target
    meta = {"target": target, "steps": spec.steps}

    def create() -> Any:  # create_run checks every setting before it deletes (--overwrite) or writes anything
        return opened(
            poptrain.create_run(
                name=name,
                storage=args.storage,
                root=args.root,
                meta=meta,
                if_exists="overwrite" if args.overwrite else "error",
                **spec.run_kwargs(),
            )
        )

    try:
        run = create()
    except RunExistsError:
        _replace_unstarted(name, args)
        run = create()
    return _train_and_report(run, spec, spec.steps, args, callbacks, stop)


def _replace_unstarted(name: str, args: argparse.Namespace) -> None:
    """Delete run ``name`` if it stopped before its first score (a failed or interrupted start,
    such as a misspelled metric), so that the same command can start it again; otherwise refuse
    it, saying how to continue or replace it."""
    from poptrain.run_folders import delete_run

    run = load(args, name)
    try:
        state, scored = run.record.state, bool(run.scores())
        planned = run.record.settings.steps
        done = min((m.step for m in run.members()), default=0)
    finally:
        run.close()
    if scored or state not in ("failed", "interrupted"):
        where = f"{state}, {done}" + (f" of {planned}" if planned else "") + " steps per member"
        raise ConfigError(
            f"a run named {name!r} exists already ({where}); continue it with `poptrain resume {name}{where_flags(args)}`, "
            "replace it with --overwrite, or choose another --name"
        )
    delete_run(name, root=args.root, storage=args.storage)
    print(f"poptrain: replacing run {name}, which stopped before its first score", file=sys.stderr)


def _probe_factory(trainable: Any) -> None:
    """A trainable given as a function is called once, before anything is written, to see that it
    makes a Trainable (a class is checked when the experiment is loaded)."""
    from poptrain.trainable import call_user, check_trainable, trainable_bases

    if isinstance(trainable, (type, *trainable_bases()[1:])):  # a class, or a VectorizedTrainable
        return
    check_trainable(call_user(0, 0, "construct", trainable), trainable)


def _check_numbers(args: argparse.Namespace) -> None:
    """The command's own numbers, refused in the words of its flags."""
    from poptrain.limits import MAX_POPULATION, MAX_SEED, MAX_WORKERS

    bounds = {
        "steps": ("--steps", 1, None),
        "population": ("--population", 1, MAX_POPULATION),
        "seed": ("--seed", 0, MAX_SEED),
        "workers": ("--workers", 1, MAX_WORKERS),
    }
    for attr, (flag, low, high) in bounds.items():
        value = getattr(args, attr, None)
        if attr == "steps" and args.command == "replay":
            continue  # checked against the schedule's length, which the message names
        if value is not None and (value < low or (high is not None and value > high)):
            span = f">= {low}" if high is None else f"from {low} to {high}"
            raise ConfigError(f"{flag} must be a whole number {span}, got {value}")
    for attr in ("cpus_per_member", "gpus_per_member", "lease"):
        value = getattr(args, attr, None)
        if value is not None and not (math.isfinite(value) and value >= 0 and (value > 0 or attr == "gpus_per_member")):
            flag = "--" + attr.replace("_", "-")
            raise ConfigError(f"{flag} must be a positive number, got {value}")


def _executor(args: argparse.Namespace, spec: Any) -> Any:
    """The executor the command line asks for, else the experiment's own."""
    from poptrain.executors import Executor, get_executor

    executor: Executor
    args.executor = args.executor or spec.executor
    if args.device is not None:
        if args.executor != "vectorized":
            raise ConfigError("--device is for --executor vectorized; other executors use the trainable's own device")
        from poptrain.executors.vectorized import VectorizedExecutor

        executor = VectorizedExecutor(device=args.device)
    elif args.devices is not None:
        if args.executor != "processes" or args.workers is not None:
            raise ConfigError("--devices is for --executor processes (one worker per device), without --workers")
        from poptrain.executors.processes import ProcessesExecutor

        executor = ProcessesExecutor(devices=[d.strip() for d in args.devices.split(",") if d.strip()])
    elif args.executor == "ray":
        from poptrain.executors.ray_executor import RayExecutor

        resources = {
            k: v
            for k, v in (("cpus_per_member", args.cpus_per_member), ("gpus_per_member", args.gpus_per_member))
            if v is not None
        }
        executor = RayExecutor(args.address, actors=args.workers, **resources)
    else:
        if args.cpus_per_member is not None or args.gpus_per_member is not None:
            raise ConfigError("--cpus-per-member and --gpus-per-member are for --executor ray")
        executor = get_executor(args.executor, workers=args.workers, address=args.address)
    executor.check(spec.trainable, synchronous=spec.strategy.synchronous)
    return executor


def _train_and_report(
    run: Any, spec: Any, steps: int, args: argparse.Namespace, callbacks: list[Any], stop: list[Any]
) -> int:
    from poptrain.report.terminal import TerminalProgress, print_summary

    started = time.monotonic()
    progress = None if args.quiet else TerminalProgress(run.metric, run.mode)
    try:
        run.optimize(
            spec.trainable,
            steps=steps,
            progress=progress,
            callbacks=callbacks,
            executor=_executor(args, spec),
            stop=stop,
        )
    except KeyboardInterrupt:
        print(
            f"poptrain: interrupted; run {run.name} is kept as far as its checkpoints go; "
            f"continue it with: poptrain resume {run.name}{where_flags(args)}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except MetricError as exc:
        if exc.metric is None:
            raise
        where = args.target if args.command == "run" else "the run's experiment"
        raise ConfigError(
            f"evaluate() returned metrics {exc.available} without {exc.metric!r}; set metric to one of those in {where}"
            + (", then run the same command again" if args.command == "run" else "")
        ) from None
    extra = spec.summarize(run) if spec.summarize else {}
    if extra:
        from poptrain.report.writer import save_summary

        save_summary(run.folder, dict(extra))
    print_summary(run.name, run.metric, run.best(), extra, wall_time=time.monotonic() - started)
    if run.record.state == "stopped":
        print(
            f"Stopped: {run.record.reason}; continue it with: poptrain resume {run.name}{where_flags(args)} "
            "(with a larger --time-budget, a higher --target-score or a longer --plateau)"
        )
    where = args.storage or str(Path(args.root) / run.name / "poptrain.db")
    print(f"Stored in {where}; see it again with: poptrain status {run.name}{where_flags(args)}")
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from poptrain.experiment import load_experiment

    run = load(args, args.name)
    target = run.record.settings.target
    if target is None:
        raise ConfigError(
            f"run {args.name!r} was not started by `poptrain run`; resume it in Python with "
            f"load_run({args.name!r}).optimize(YourTrainable, steps=N)"
        )
    steps = args.steps if args.steps is not None else int(run.record.settings.steps or 0)
    if steps < 1:
        raise ConfigError(f"--steps must be a whole number >= 1, got {steps}")
    done = min((m.step for m in run.members()), default=0)
    if done >= steps:
        if args.steps is None:
            raise ConfigError(
                f"run {args.name!r} is {run.record.state}: every member has trained its {done} steps; "
                f"to train further give --steps above {done}"
            )
        raise ConfigError(
            f"--steps {steps} is not more than the {done} steps every member of run {args.name!r} has trained; "
            f"give --steps above {done}"
        )
    spec = load_experiment(target)
    return _train_and_report(run, spec, steps, args, _callbacks(args, spec), [*spec.stop, *_stop_rules(args)])


def _cmd_worker(args: argparse.Namespace) -> int:
    from poptrain.executors.processes import WorkerJob, work
    from poptrain.experiment import load_experiment

    run = load(args, args.name)
    target = run.record.settings.target
    if target is None:
        raise ConfigError(f"run {args.name!r} was not started by `poptrain run`, so a worker cannot know its trainable")
    spec = load_experiment(target)
    url = args.storage or f"sqlite:///{Path(args.root) / args.name / 'poptrain.db'}"
    checkpoint_root = str((Path(args.root) / args.name / "checkpoints").resolve())
    points = work(
        WorkerJob(
            url, args.name, checkpoint_root, spec.trainable, int(run.record.settings.steps or 0), None, args.lease
        ),
        progress=None,
    )
    print(f"worker done: {points} ready points trained for run {args.name}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from poptrain.report.terminal import text

    run = load(args, args.name)
    members = run.members()
    console = Console(width=160)
    console.print(
        Text.assemble(
            (f"Run {run.name}", "bold"),
            f": {run.record.state}, {len(members)} members, metric {run.metric} ({run.mode})",
        )
    )
    table = Table()
    for column in ("member", "state", "step", "generation", run.metric, *run.space):
        table.add_column(text(column))
    for m in members:
        score = "-" if m.score is None else f"{m.score:.4f}"
        values = (f"{m.hparams[k]:.4g}" if isinstance(m.hparams[k], float) else str(m.hparams[k]) for k in run.space)
        table.add_row(*(text(cell) for cell in (str(m.slot), m.state, str(m.step), str(m.generation), score, *values)))
    console.print(table)
    best = run.best()
    if best is not None:
        where = f"; checkpoint {best.checkpoint.uri}" if best.checkpoint is not None else ""
        console.print(
            text(
                f"Best model (best ever): member {best.slot}, {run.metric} = {best.score:.4f} at step {best.step}{where}"
            )
        )
    for m in members:
        if m.error and (m.state in ("failed", "retired") or m.failures > 0):
            console.print(Text.assemble((f"member {m.slot} failed ({m.failures} in a row):", "red"), "\n", m.error))
        elif m.error:
            console.print(text(f"member {m.slot} recovered from an earlier failure: {m.error.splitlines()[0]}"))
    if run.record.state == "interrupted":
        console.print(text(f"Interrupted; continue it with: poptrain resume {run.name}{where_flags(args)}"))
    if run.record.state == "stopped":
        console.print(
            text(f"Stopped: {run.record.reason}; continue it with: poptrain resume {run.name}{where_flags(args)}")
        )
    return 0


_TIME_FIELDS = ("created_at", "wall_time")


def _record(record: Any) -> dict[str, Any]:
    """A frozen record as a dict, its timestamps in ISO-8601."""
    from dataclasses import asdict

    row = asdict(record)
    for key in _TIME_FIELDS:
        if isinstance(row.get(key), (int, float)):
            row[key] = iso_time(row[key])
    return row


def _export_payload(run: Any) -> dict[str, Any]:
    best = run.best()
    return {
        "run": _record(run.record),
        "members": [_record(m) for m in run.members()],
        "lineage": [_record(g) for g in run.lineage()],
        "scores": [_record(s) for s in run.scores()],
        "best": _record(best) if best else None,
    }


def _cmd_report(args: argparse.Namespace) -> int:
    from poptrain.report.writer import stored_summary, write_report

    folder = Path(args.output) if args.output else Path(args.root) / args.name
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--output {folder} is a file; give a folder to write report.html and the PNGs into")
    run = load(args, args.name)
    try:  # with the experiment's summary (test metrics) that `poptrain run` kept: data, no code imported
        paths = write_report(run, folder, summary=stored_summary(run.folder))
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report into {folder} ({exc.strerror or exc}); give another --output"
        ) from None
    print(
        f"Wrote {paths['html']} (open it in a browser; it needs no server) and "
        + ", ".join(str(paths[k].name) for k in ("scores", "schedules", "lineage"))
        + " beside it"
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from poptrain.report.compare import write_comparison

    if len(args.names) < 2:
        raise ConfigError(f"compare needs at least two runs, got {len(args.names)}; name two or more runs")
    output = Path(args.output) if args.output else Path(args.root) / "compare.html"
    check_output_file(output)
    runs = [load(args, name) for name in args.names]  # every run is read before anything is written
    try:
        paths = write_comparison(runs, output)
    except OSError as exc:
        raise ConfigError(f"cannot write {output} ({exc.strerror or exc}); give another --output") from None
    print(f"Wrote {paths['html']} (open it in a browser; it needs no server) and {paths['png'].name} beside it")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from poptrain.report.dashboard import RunSource, make_server

    if args.storage is None:
        check_root(args.root)
    names = RunSource(args.storage, args.root).names()  # also refuses an unreadable --storage before serving
    if args.name is not None and args.name not in names:
        where = f"--storage {args.storage}" if args.storage else f"--root {args.root}"
        raise ConfigError(
            f"no run named {args.name!r} in {where}; `poptrain ls{where_flags(args)}` lists the runs there"
        )
    try:
        server = make_server(args.storage, args.root, args.host, args.port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); choose another --port or --host"
        ) from None
    host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address goes in brackets
    url = f"http://{host}:{server.server_address[1]}/" + (f"runs/{args.name}" if args.name else "")
    print(f"poptrain dashboard at {url} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.best_model is not None:
        if args.format is not None or args.schedule or args.output is not None or args.member is not None:
            raise ConfigError("--best-model FILE goes alone (not with --format, --schedule, --output or --member)")
        return _export_best_model(args)
    if args.member is not None and not args.schedule:
        raise ConfigError("--member goes with --schedule")
    if args.schedule == (args.format is not None):
        raise ConfigError("give one of --format csv|json (scores, everything) or --schedule (a member's schedule)")
    if args.output is not None:
        check_output_file(Path(args.output))
    run = load(args, args.name)
    if args.schedule:
        text = json.dumps(run.export_schedule(args.member), indent=2, allow_nan=True) + "\n"
    elif args.format == "csv":
        frame = run.to_dataframe()
        if "wall_time" in frame:
            frame["time"] = [iso_time(t) for t in frame.pop("wall_time")]
        text = frame.to_csv(index=False)
    else:
        text = json.dumps(_export_payload(run), indent=2, default=str, allow_nan=True)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    from poptrain.atomic import write_text_atomic

    target = write_text_atomic(Path(args.output), text)
    print(f"wrote {target}", file=sys.stderr)
    return 0


def _export_best_model(args: argparse.Namespace) -> int:
    """Write the best-ever model's state with ``torch.save`` (atomically)."""
    import torch

    from poptrain.atomic import write_bytes_atomic

    target = Path(args.best_model)
    check_output_file(target)
    run = load(args, args.name)
    best = run.best()
    if best is None or best.checkpoint is None:
        raise ConfigError(f"run {args.name!r} has no checkpoint yet; train it before exporting its best model")
    buffer = io.BytesIO()
    torch.save(run.load_state(best.checkpoint), buffer)
    written = write_bytes_atomic(target, buffer.getvalue())
    print(
        f"wrote {written}: member {best.slot}'s model at step {best.step} ({run.metric} = {best.score:.6g}); "
        "load it with torch.load(path, weights_only=True)",
        file=sys.stderr,
    )
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
            raise ConfigError(
                "--member picks a member of a stored run; a --schedule file holds one member's schedule already"
            )
        if args.storage is not None:
            raise ConfigError(
                "--storage names a stored run; with --schedule FILE give the experiment or config instead"
            )
        schedule = poptrain.load_schedule(args.schedule)
        spec = load_experiment(args.target)
        if args.steps is not None:
            schedule = schedule.truncate(args.steps)
        metric = schedule.metric or spec.metric
        result = replay(
            spec.trainable,
            schedule,
            metric=metric,
            mode=schedule.mode or spec.mode,
            seed=args.seed,
            run_seed=schedule.run_seed if schedule.run_seed is not None else spec.seed,
            progress=_replay_progress(args, schedule.total_steps, metric),
        )
        _print_replay(result, None)
        return 0
    run = load(args, args.target)
    schedule = run.replay_schedule(args.member)
    total = schedule.total_steps if args.steps is None else args.steps
    result = run.replay(
        member=args.member, seed=args.seed, steps=args.steps, progress=_replay_progress(args, total, run.metric)
    )
    saved = None
    if run.folder is not None:  # where Run.replay writes the result, when the run has a folder
        saved = (
            run.folder / "replays" / f"member-{schedule.member}{'' if args.seed is None else f'-seed{args.seed}'}.json"
        )
        saved = saved if saved.is_file() else None
    _print_replay(result, saved)
    return 0


def _print_replay(result: Any, saved: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from poptrain.report.terminal import text

    schedule = result.schedule
    source = f"run {schedule.run}" if schedule.run else "the schedule"
    who = f", member {schedule.member}" if schedule.member is not None else ""
    console = Console(width=160)
    console.print(
        Text.assemble(
            text(f"Replay of {source}{who}", "bold"),
            text(
                f": {result.steps} steps from scratch along {len(schedule.segments)} segment(s), seed {result.seed}, no weights copied"
            ),
        )
    )
    table = Table()
    for column in ("member", "steps", f"original {result.metric}", f"replay {result.metric}", "difference"):
        table.add_column(text(column))
    original, difference = result.original_score, result.difference
    table.add_row(
        *map(
            text,
            (
                "-" if schedule.member is None else str(schedule.member),
                str(result.steps),
                "-" if original is None else f"{original:.4f}",
                f"{result.score:.4f}",
                "-" if difference is None else f"{difference:+.4f}",
            ),
        )
    )
    console.print(table)
    better = "higher" if result.mode == "max" else "lower"
    console.print(
        text(f"Metric {result.metric} ({result.mode}: {better} is better)." + (f" Saved in {saved}" if saved else ""))
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poptrain`` command."""
    args = _parser().parse_args(argv)
    from poptrain.cli.manage import cmd_ls, cmd_rm

    handlers = {
        "run": _cmd_run,
        "resume": _cmd_resume,
        "worker": _cmd_worker,
        "status": _cmd_status,
        "export": _cmd_export,
        "report": _cmd_report,
        "compare": _cmd_compare,
        "dashboard": _cmd_dashboard,
        "replay": _cmd_replay,
        "ls": cmd_ls,
        "rm": cmd_rm,
    }
    try:
        _check_numbers(args)
        return handlers[args.command](args)
    except PoptrainError as exc:
        from poptrain.printable import printable

        print(f"poptrain: error: {printable(exc, lines=False)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("poptrain: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        close_opened()


if __name__ == "__main__":
    sys.exit(main())
