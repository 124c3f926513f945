"""The ``Run`` facade: create or load a run, train it, ask it what happened."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any

from poptrain.callbacks import Callback, Callbacks, CallbackSpec, RunInfo, make_callbacks
from poptrain.checkpoints import CheckpointStore, LocalCheckpointStore
from poptrain.errors import ConfigError, RunExistsError, RunNotFoundError
from poptrain.executors import Executor, get_executor
from poptrain.limits import MAX_POPULATION, MAX_SEED
from poptrain.records import CheckpointRecord, GenerationRecord, MemberRecord, RunRecord, RunSpec, ScoreRecord
from poptrain.replay import ReplayResult, Schedule
from poptrain.results import (
    BestMember,
    ScheduleSegment,
    best_at,
    ranked_checkpoints,
    schedule,
    score_rows,
)
from poptrain.run_folders import DATABASE, check_checkpoint_folder, check_free, check_name, delete_run, run_folder
from poptrain.scheduler import Scheduler
from poptrain.seeding import initial_rng
from poptrain.space import HParams, SearchSpace
from poptrain.stopping import RunStopped, StopRule, check_rules
from poptrain.storage import Storage, open_storage
from poptrain.strategy import (
    DEFAULT_STRATEGY,
    ExploitFn,
    ExploreFn,
    HistoryExploreFn,
    ReadyFn,
    Strategy,
    strategy_from_spec,
    strategy_to_spec,
)
from poptrain.trainable import Trainable, call_user, read_score

DEFAULT_ROOT = "runs"
IF_EXISTS = ("error", "load", "overwrite")


@dataclass(frozen=True)
class Action:
    """What ask/tell code should do after ``Run.report``.

    ``kind`` is ``"continue"`` (nothing changes), ``"explore"`` (set ``hparams``) or
    ``"exploit"`` (load ``load_state()``, the donor's checkpoint, then set ``hparams``).
    ``step`` is the member's step after the action: after an exploit, the copied model's
    (a member's step counts the steps its model has trained); report the next step after it.
    """

    kind: str
    hparams: HParams = field(default_factory=dict)
    donor: int | None = None
    operations: Mapping[str, str] = field(default_factory=dict)
    checkpoint: CheckpointRecord | None = None
    step: int | None = None
    _loader: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def load_state(self) -> Any:
        """The donor's state to load (exploit only)."""
        if self._loader is None:
            raise ValueError(f"a {self.kind!r} action has no state to load")
        return self._loader()


def _executor_name(executor: Executor) -> str:
    """``"processes"`` for a ``ProcessesExecutor``: an executor's short name."""
    name = type(executor).__name__
    return name.removesuffix("Executor").lower() or name


def _run_paths(name: str, root: str | Path, storage: str | Storage | None, *, create: bool) -> tuple[Storage, Path]:
    folder = run_folder(root, name)
    return open_storage(storage, default_path=str(folder / DATABASE), create=create), folder


class Run:
    """A PBT run: its configuration, its storage and checkpoints, and what it has produced."""

    def __init__(
        self,
        record: RunRecord,
        storage: Storage,
        checkpoints: CheckpointStore,
        space: SearchSpace,
        strategy: Strategy | Callable[[], Strategy],
        folder: Path | None = None,
    ) -> None:
        self.folder = folder  # where the default storage keeps the run (and its report)
        self.record = record
        self.storage = storage
        self.checkpoints = checkpoints
        self.space = space
        # A stored run's strategy is built when first needed, so reading a run whose custom
        # strategy cannot be imported here (status, export, report) still works.
        self._strategy = strategy if isinstance(strategy, Strategy) else None
        self._build_strategy = None if isinstance(strategy, Strategy) else strategy

    @property
    def strategy(self) -> Strategy:
        """The run's ready/exploit/explore recipe."""
        if self._strategy is None:
            assert self._build_strategy is not None
            self._strategy = self._build_strategy()
        return self._strategy

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def metric(self) -> str:
        return self.record.metric

    @property
    def mode(self) -> str:
        return self.record.mode

    def refresh(self) -> Run:
        """Re-read the run record (its state) from storage."""
        self.record = self.storage.get_run(self.name)
        return self

    # --- training ---------------------------------------------------------------
    def optimize(
        self,
        trainable: Callable[[], Trainable],
        *,
        steps: int,
        executor: str | Executor = "sequential",
        workers: int | None = None,
        progress: Callback | None = None,
        callbacks: Iterable[CallbackSpec] | None = None,
        flush_seconds: float = 1.0,
        max_retries: int = 2,
        keep_checkpoints: int | None = 2,
        keep_best: int = 3,
        stop: StopRule | Sequence[StopRule] | None = None,
    ) -> Run:
        """Train every member to ``steps`` steps with PBT. ``trainable`` is a ``Trainable``
        subclass (or any zero-argument factory of one).

        ``executor="processes"`` trains with ``workers`` processes sharing the run's database.
        A run that was stopped or killed continues from each member's newest checkpoint.
        Scores are written with every ready point and at least every ``flush_seconds``.
        A step that raises or scores NaN/inf is tried again from the member's newest checkpoint;
        after ``max_retries`` failures in a row the member is replaced by a copy of the best
        healthy member, and a run whose members all keep failing stops with ``TrainableError``.
        A member that cannot load its checkpoint (corrupt or missing) is replaced at once.
        Checkpoint files are collected as the run goes: each member's newest ``keep_checkpoints``
        stay, and so does every one a member, a pending exploit or the best model's lineage needs
        (``None`` keeps all), and the ``keep_best`` best-scored checkpoints of the run (so the
        best-ever model, ``best()``, is never collected).

        ``callbacks`` watch the run (``poptrain.Callback`` objects, logger names such as
        ``"jsonl"``, ``"tensorboard"``, ``"mlflow"``, ``"wandb"``, or ``{"type": name, ...}``;
        see ``docs/callbacks.md``); they hear every evaluation, checkpoint and decision, in this
        process whatever the executor. ``progress`` is the older name for one more callback
        (the terminal view, say), called first.

        ``stop`` ends the run early: ``poptrain.time_budget(hours=2)``, ``poptrain.target(0.98)``,
        ``poptrain.plateau(steps=20)`` or a list of them (see ``poptrain.stopping``). A stopped
        run is left ``stopped`` with the reason (``run.record.reason``), every member at its
        newest checkpoint, and continues when ``optimize`` is called again with a larger budget.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be a whole number >= 1, got {steps!r}")
        if isinstance(keep_best, bool) or not isinstance(keep_best, int) or keep_best < 1:
            raise ConfigError(f"keep_best must be a whole number >= 1 (the best-ever model is kept), got {keep_best!r}")
        if not callable(trainable):
            raise ConfigError(f"trainable must be a Trainable subclass or a factory of one, got {trainable!r}")
        stop_rules = check_rules(stop)
        chosen = get_executor(executor, workers=workers)
        chosen.check(trainable, synchronous=self.strategy.synchronous)
        listeners = Callbacks([progress, *make_callbacks(callbacks)])
        scheduler = Scheduler(
            self.record,
            self.storage,
            self.checkpoints,
            self.space,
            self.strategy,
            trainable,
            steps,
            listeners,
            flush_seconds,
            max_retries,
            keep_checkpoints,
            keep_best=keep_best,
            stop=stop_rules,
        )
        members = self.members()  # read once (nothing changes them before training starts)
        self._check_resumable(members, steps)
        done = sum(min(m.step, steps) for m in members)
        info = RunInfo(
            self.name,
            self.metric,
            self.mode,
            len(members),
            steps,
            steps * len(members),
            done,
            self.record.seed,
            executor if isinstance(executor, str) else _executor_name(chosen),
            self.folder,
            self.record,
        )
        state, error, reason = "finished", None, None
        if self.record.settings.steps != steps:  # the plan that progress and ETA are measured against
            self.storage.set_run_steps(self.record.id, steps)
        self.storage.set_run_state(self.record.id, "running")
        try:
            listeners.on_run_start(info)  # a callback that cannot start fails the run before it trains
            chosen.run(scheduler)
            scheduler.flush()
            scheduler.collect_checkpoints(force=True)
        except RunStopped as stopped:  # a stop rule fired: not a failure, the run continues when asked
            with contextlib.suppress(Exception):
                scheduler.flush()
            scheduler.collect_checkpoints(force=True)
            state, reason = "stopped", stopped.reason
        except BaseException as exc:
            with contextlib.suppress(Exception):
                scheduler.flush()  # keep the scores seen before the failure
            # Ctrl-C is the user's choice, not a failure: the run continues from its checkpoints.
            state, error = ("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"), exc
            self.storage.set_run_state(self.record.id, state)
            raise
        finally:
            listeners.on_run_end(state, error)
        self.storage.set_run_state(self.record.id, state, reason=reason)
        self.refresh()
        return self

    def _check_resumable(self, members: list[MemberRecord], steps: int) -> None:
        """Refuse, before anything is written, to continue a run none of whose members can start:
        each one left to train must load its checkpoint, so if none loads (all damaged, say),
        training could only fail. One member that can start is enough: the others are replaced
        by copies of healthy members as they fail."""
        from poptrain.errors import CheckpointError

        todo = [m for m in members if m.step < steps]
        if not todo or any(m.resume_checkpoint_id is None for m in todo):
            return
        first: CheckpointError | None = None
        for member in todo:
            try:
                self.checkpoints.load_member(self.storage.get_checkpoint(member.resume_checkpoint_id))  # type: ignore[arg-type]
                return
            except CheckpointError as exc:
                first = first or exc
        raise CheckpointError(
            f"run {self.name!r} cannot continue: no member's checkpoint can be loaded ({first})"
        ) from first

    def report(self, slot: int, step: int, score: float | Mapping[str, float], *, state: Any = None) -> Action:
        """Ask/tell: record that member ``slot`` reached ``step`` with ``score`` and say what to do.

        ``state`` (the member's state, or a zero-argument callable returning it) is saved as a
        checkpoint when the member is ready; it is required then. Ask/tell is asynchronous PBT
        (each member decides as it reports); a run created with ``synchronous=True`` is refused.
        """
        if self.strategy.synchronous:
            raise ConfigError(
                "report() decides for each member as it reports (asynchronous PBT), but this run was created with "
                "synchronous=True; train it with run.optimize(), or create it with synchronous=False"
            )
        members = {m.slot: m for m in self.members()}
        if slot not in members:
            raise ConfigError(f"no member in slot {slot}; this run has slots 0..{len(members) - 1}")
        member = members[slot]
        if isinstance(step, bool) or not isinstance(step, int) or step <= member.step:
            raise ConfigError(f"member {slot} is at step {member.step}; report a later step, got {step!r}")
        value, metrics = read_score(score, self.metric)
        scored = ScoreRecord(slot, step, value, member.generation_id, metrics, time.time())
        member = replace(member, step=step, score=value)
        scheduler = Scheduler.for_ask_tell(self.record, self.storage, self.checkpoints, self.space, self.strategy)
        ready = scheduler.is_ready(member, step)
        if ready and state is None:  # checked before recording anything, so the call can be repeated
            raise ConfigError(f"member {slot} is ready at step {step}: pass state= (its state_dict) to report()")
        if not ready:
            self.storage.record_scores(self.record.id, [scored])
            return Action("continue", step=step)
        ckpt = self.checkpoints.save(slot, step, state() if callable(state) else state)
        scheduler.members()
        scheduler.learn(self.storage.get_scores(self.record.id), pending=[scored])  # for a fair comparison at this step
        [(record, decision)] = scheduler.commit([(member, ckpt, True)])
        if decision is None:
            return Action("continue", step=record.step)
        if decision.kind == "explore":
            return Action("explore", dict(decision.hparams), None, dict(decision.operations), step=record.step)
        loaded = self.storage.get_checkpoint(record.resume_checkpoint_id)  # type: ignore[arg-type]
        return Action(
            "exploit",
            dict(decision.hparams),
            decision.donor,
            dict(decision.operations),
            loaded,
            record.step,
            lambda: self.checkpoints.load_member(loaded),
        )

    # --- results ------------------------------------------------------------------
    def members(self) -> list[MemberRecord]:
        """The population as it stands now."""
        return self.storage.get_members(self.record.id)

    def scores(self) -> list[ScoreRecord]:
        """Every score recorded, in order."""
        return self.storage.get_scores(self.record.id)

    def lineage(self) -> list[GenerationRecord]:
        """Every generation of every member: who copied whom, when, and what changed."""
        return self.storage.get_generations(self.record.id)

    def best(
        self,
        *,
        final: bool = False,
        window: int = 1,
        select: Callable[[Trainable], float] | None = None,
        candidates: int = 5,
        trainable: Callable[[], Trainable] | None = None,
    ) -> BestMember | None:
        """The best-ever model: the best-scored checkpoint of the run (kept by collection), the
        member and step that scored it, its metrics, hyperparameters and schedule up to that
        step; ``None`` before any checkpoint.

        - ``final=True``: the best of the final population (each member's newest checkpoint).
        - ``window=k``: ranked by the mean of the last ``k`` evaluations along each model's
          lineage instead of its single score at the checkpoint, so one lucky evaluation cannot
          pick the model.
        - ``select=fn``: the top ``candidates`` (by the ranking above) are loaded as live
          trainables (built with ``trainable``, default the one ``poptrain run`` trained with)
          and ``fn(trainable)`` scores each on a selection split that training never ranked on
          (a number, or metrics holding the run's metric, read in the run's mode); the best of
          those is returned.

        ``selection_score`` is what the model was chosen by (the window's mean or ``fn``'s score).
        """
        chosen = self._choose_best(final, window, select, candidates, trainable)
        return chosen[0] if chosen is not None else None

    def load_best(
        self,
        trainable: Callable[[], Trainable] | None = None,
        *,
        final: bool = False,
        window: int = 1,
        select: Callable[[Trainable], float] | None = None,
        candidates: int = 5,
    ) -> Trainable:
        """The best model (``best()`` with the same arguments) as a live trainable, in one call:
        built with ``trainable`` (default: the one ``poptrain run`` trained it with), set up with
        its hyperparameters, its checkpoint loaded and ``set_hparams`` applied. Its model is e.g.
        ``.model``."""
        chosen = self._choose_best(final, window, select, candidates, trainable)
        if chosen is None:
            raise ConfigError(f"run {self.name!r} has no checkpoint yet; train it before loading its best model")
        best, live = chosen
        return live if live is not None else self._live(best, trainable or self._stored_trainable("load_best"))

    def _choose_best(
        self,
        final: bool,
        window: int,
        select: Callable[[Trainable], float] | None,
        candidates: int,
        trainable: Callable[[], Trainable] | None,
    ) -> tuple[BestMember, Trainable | None] | None:
        """The best model by ``best()``'s rules, and with ``select`` its live trainable."""
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"window must be a whole number >= 1 (evaluations averaged), got {window!r}")
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ConfigError(
                f"candidates must be a whole number >= 1 (models re-scored by select), got {candidates!r}"
            )
        if select is not None and not callable(select):
            raise ConfigError(f"select must be a function scoring a loaded trainable, got {select!r}")
        generations = self.lineage()
        checkpoints = self.storage.get_checkpoints(self.record.id)
        scores = self.scores()
        ranked = ranked_checkpoints(
            self.record, self.members(), generations, checkpoints, scores, final=final, window=window
        )
        if not ranked:
            return None
        if select is None:
            checkpoint, by = ranked[0]
            return best_at(checkpoint, generations, checkpoints, scores, by), None
        factory = trainable or self._stored_trainable("best")
        chosen: tuple[BestMember, Trainable, float] | None = None
        for checkpoint, _ in ranked[:candidates]:
            member = best_at(checkpoint, generations, checkpoints, scores)
            live = self._live(member, factory)
            value, _ = read_score(call_user(member.slot, member.step, "select", select, live), self.metric)
            fitness = self.record.fitness(value)
            fitness = fitness if fitness is not None and not math.isnan(fitness) else -math.inf
            if chosen is None or fitness > chosen[2]:
                chosen = (replace(member, selection_score=value), live, fitness)
        assert chosen is not None
        return chosen[0], chosen[1]

    def _live(self, best: BestMember, factory: Callable[[], Trainable]) -> Trainable:
        """``best``'s model as a live trainable built by ``factory``."""
        from poptrain.seeding import member_seed
        from poptrain.trainable import TrainContext, check_trainable

        assert best.checkpoint is not None
        made = check_trainable(call_user(best.slot, best.step, "construct", factory), factory)
        context = TrainContext(
            self.name,
            best.slot,
            member_seed(self.record.seed, best.slot),
            run_seed=self.record.seed,
            start_step=best.step,
        )
        call_user(best.slot, best.step, "setup", made.setup, dict(best.hparams), context)
        call_user(best.slot, best.step, "load_state_dict", made.load_state_dict, self.load_state(best.checkpoint))
        call_user(best.slot, best.step, "set_hparams", made.set_hparams, dict(best.hparams))
        return made

    def schedule(self, slot: int) -> list[ScheduleSegment]:
        """Member ``slot``'s hyperparameter schedule, through its ancestry back to step 0."""
        members = {m.slot: m for m in self.members()}
        if slot not in members:
            raise ConfigError(f"no member in slot {slot}")
        generations = self.lineage()
        member = members[slot]
        by_id = {g.id: g for g in generations}
        gen = by_id[member.generation_id]
        if member.step and gen.start_step >= member.step and gen.parent_id is not None:
            # a decision at its step, not trained since: the model it holds is the parent's
            # (a donor's after a copy, its own before an explore)
            gen = by_id[gen.parent_id]
        return schedule(generations, self.storage.get_checkpoints(self.record.id), gen.id, member.step)

    # --- replay ---------------------------------------------------------------------
    def replay_schedule(self, member: int | None = None) -> Schedule:
        """Member ``member``'s (default: the best's) schedule along its ancestry, its steps back
        to back from 0, with the seed a replay uses and the original model's score after each step."""
        from poptrain.replay import contiguous, original_scores
        from poptrain.seeding import member_seed

        if member is None:
            best = self.best()
            if best is None:
                raise ConfigError(f"run {self.name!r} has no trained member yet; train it before replaying a schedule")
            slot, segments = best.slot, best.schedule
        else:
            slots = sorted(m.slot for m in self.members())
            if isinstance(member, bool) or not isinstance(member, int) or member not in slots:
                raise ConfigError(f"no member {member!r} in run {self.name!r}; its members are {slots[0]}..{slots[-1]}")
            slot, segments = member, self.schedule(member)
        if not contiguous(segments):
            raise ConfigError(f"member {slot} of run {self.name!r} has not trained any step yet; nothing to replay")
        original = original_scores(segments, self.lineage(), self.scores())
        root = segments[0].slot
        return Schedule(
            contiguous(segments),
            self.name,
            slot,
            self.metric,
            self.mode,
            member_seed(self.record.seed, root),
            self.record.seed,
            original,
        )

    def export_schedule(self, member: int | None = None, path: str | Path | None = None) -> dict[str, Any]:
        """Member ``member``'s (default: the best's) schedule in the ``poptrain.schedule/1`` JSON
        format (see ``docs/replay.md``), also written to ``path`` when given."""
        from poptrain.replay import write_json

        data = self.replay_schedule(member).to_dict()
        if path is not None:
            write_json(Path(path), data)
        return data

    def replay(
        self,
        trainable: Callable[[], Trainable] | None = None,
        member: int | None = None,
        *,
        seed: int | None = None,
        steps: int | None = None,
        progress: Callable[[int, float], None] | None = None,
        save: bool = True,
    ) -> ReplayResult:
        """Retrain a fresh model from scratch along member ``member``'s (default: the best's)
        schedule, copying no weights, and score it beside the original after every step.

        ``trainable`` defaults to the run's own when ``poptrain run`` created it. The replay's
        ``TrainContext.seed`` is, unless ``seed`` is given, the seed of the member at the root of
        the ancestry (whose initial model the schedule started from), so it differs from the
        original only in not inheriting weights mid-run. ``steps`` replays only the first steps.
        ``save`` writes the result to ``<run folder>/replays/member-<slot>.json`` when the run
        has a folder on disk.
        """
        from poptrain.replay import replay, write_json

        if trainable is None:
            trainable = self._stored_trainable("replay")
        schedule = self.replay_schedule(member)
        if steps is not None:
            schedule = schedule.truncate(steps)
        result = replay(
            trainable,
            schedule,
            metric=self.metric,
            mode=self.mode,
            seed=seed,
            run_seed=self.record.seed,
            run_name=self.name,
            progress=progress,
        )
        from poptrain.storage import InMemoryStorage

        if save and self.folder is not None and self.folder.is_dir() and not isinstance(self.storage, InMemoryStorage):
            (self.folder / "replays").mkdir(exist_ok=True)
            suffix = "" if seed is None else f"-seed{seed}"
            write_json(self.folder / "replays" / f"member-{schedule.member}{suffix}.json", result.to_dict())
        return result

    def _stored_trainable(self, method: str) -> Callable[[], Trainable]:
        """The trainable of the experiment ``poptrain run`` created this run from (``method``:
        the call that needs it, named in the fix)."""
        from poptrain.experiment import load_experiment

        target = self.record.settings.target
        fix = f"pass it: load_run({self.name!r}).{method}(YourTrainable)"
        if target is None:
            raise ConfigError(
                f"run {self.name!r} was not started by `poptrain run`, so its trainable is unknown; {fix}"
            )
        try:
            return load_experiment(target).trainable
        except ConfigError as exc:
            raise ConfigError(f"cannot load the experiment of run {self.name!r} ({exc}); {fix}") from None

    def load_state(self, checkpoint: CheckpointRecord) -> Any:
        """A checkpoint's state, its sha256 checked."""
        return self.checkpoints.load_member(checkpoint)

    def to_dataframe(self) -> Any:
        """Every score as a pandas DataFrame: slot, step, generation, score (the run's metric), the
        other metrics as metric.*, the hyperparameters as hp.*, and wall_time (seconds since the epoch)."""
        import pandas as pd

        return pd.DataFrame(score_rows(self.scores(), self.lineage(), self.metric))

    # --- pictures -------------------------------------------------------------------
    def report_data(self) -> Any:
        """Everything the report shows, as plain data (``poptrain.report.data.ReportData``)."""
        from poptrain.report.writer import run_report_data

        return run_report_data(self)

    def plot_scores(self) -> Any:
        """A matplotlib figure: every member's score over its steps, the best so far, exploits marked."""
        from poptrain.report.figures import plot_scores

        return plot_scores(self.report_data())

    def plot_schedules(self) -> Any:
        """A matplotlib figure: each hyperparameter per member, the best model's schedule thick."""
        from poptrain.report.figures import plot_schedules

        return plot_schedules(self.report_data())

    def plot_lineage(self) -> Any:
        """A matplotlib figure: the family tree, who copied whom and when, coloured by score."""
        from poptrain.report.figures import plot_lineage

        return plot_lineage(self.report_data())

    def write_report(self, folder: str | Path | None = None) -> dict[str, Path]:
        """Write ``report.html`` and PNGs (default: the run's folder); return their paths."""
        from poptrain.report.writer import stored_summary, write_report

        if folder is None and self.folder is None:
            raise ConfigError("this run has no folder (in-memory storage); pass write_report(folder)")
        return write_report(self, folder if folder is not None else self.folder, summary=stored_summary(self.folder))  # type: ignore[arg-type]

    def close(self) -> None:
        self.storage.close()


def create_run(
    *,
    name: str,
    space: Mapping[str, Any] | SearchSpace,
    population_size: int,
    metric: str = "score",
    mode: str = "max",
    ready: ReadyFn = DEFAULT_STRATEGY.ready,
    exploit: ExploitFn | None = DEFAULT_STRATEGY.exploit,
    explore: ExploreFn | HistoryExploreFn | None = DEFAULT_STRATEGY.explore,
    inherit_hparams: bool = True,
    replace_failed: bool | None = None,
    synchronous: bool = False,
    seed: int = 0,
    storage: str | Storage | None = None,
    checkpoints: CheckpointStore | str | Path | None = None,
    root: str | Path = DEFAULT_ROOT,
    initial_hparams: list[HParams] | None = None,
    meta: Mapping[str, Any] | None = None,
    if_exists: str = "error",
) -> Run:
    """Create a run and its population (hyperparameters drawn from ``space`` with ``seed``).

    ``storage=None`` keeps everything in ``<root>/<name>/poptrain.db`` (SQLite) and
    checkpoints in ``<root>/<name>/checkpoints``. ``storage="memory"`` keeps it in memory.
    ``meta`` is stored with the run (the CLI keeps what ``poptrain resume`` needs there).
    ``replace_failed`` (see ``poptrain.Strategy``): replace a member that keeps failing by a
    copy of the best healthy one, or retire it; by default replaced under PBT and retired in
    random search (``exploit=None, explore=None``).

    ``if_exists`` says what to do when a run of that name exists: ``"error"`` (the default,
    ``RunExistsError``), ``"load"`` (return it, as ``load_run``, when it was created with the
    same settings; ``ConfigError`` otherwise), or ``"overwrite"`` (delete it, then create a new
    one; see ``poptrain.run_folders`` for what may be deleted). Every argument is checked
    before anything is read, written or deleted.
    """
    check_name(name)
    if if_exists not in IF_EXISTS:
        raise ConfigError(f"if_exists must be one of {', '.join(map(repr, IF_EXISTS))}, got {if_exists!r}")
    search_space = SearchSpace(space)
    if (
        isinstance(population_size, bool)
        or not isinstance(population_size, int)
        or not 1 <= population_size <= MAX_POPULATION
    ):
        raise ConfigError(f"population_size must be a whole number from 1 to {MAX_POPULATION}, got {population_size!r}")
    if mode not in ("max", "min"):
        raise ConfigError(f"mode must be 'max' or 'min', got {mode!r}")
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"metric must be a non-empty string naming what evaluate() returns, got {metric!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    if replace_failed is not None and not isinstance(replace_failed, bool):
        raise ConfigError(f"replace_failed must be None, True or False, got {replace_failed!r}")
    strategy = Strategy(ready, exploit, explore, inherit_hparams, synchronous, replace_failed)
    strategy.check(search_space)
    if initial_hparams is not None:
        if len(initial_hparams) != population_size:
            raise ConfigError(
                f"initial_hparams has {len(initial_hparams)} entries for a population of {population_size}"
            )
        first = [search_space.validate(h) for h in initial_hparams]
    else:
        first = [search_space.sample(initial_rng(seed, slot)) for slot in range(population_size)]
    spec = RunSpec(
        space=search_space.to_dict(),
        population_size=population_size,
        metric=metric,
        mode=mode,
        strategy=strategy_to_spec(strategy),
        checkpoints=checkpoints if isinstance(checkpoints, str) and "://" in checkpoints else None,
        meta=dict(meta or {}),
    ).to_stored()
    if storage is None:
        check_free(root, name)
    exists = _run_exists(name, root, storage)
    if if_exists == "load" and exists:
        return _load_same(name, root, storage, checkpoints, spec, seed)
    folder = run_folder(root, name)
    files = checkpoint_store(checkpoints, folder, _in_memory(storage))  # an unusable checkpoints= is refused here
    if isinstance(files, LocalCheckpointStore) and not exists:  # a new run writes into a folder of its own
        check_checkpoint_folder(files.root, set())
    elif isinstance(files, LocalCheckpointStore) and if_exists == "overwrite" and storage is not None:
        check_checkpoint_folder(files.root, _own_checkpoints(name, root, storage))  # only the replaced run wrote there
    if if_exists == "overwrite" and exists:
        delete_run(name, root=root, storage=storage, checkpoints=checkpoints)
    store, folder = _run_paths(name, root, storage, create=True)
    try:
        record = store.create_run(name, spec=spec, seed=seed, initial_hparams=first)
    except RunExistsError:
        if not isinstance(storage, Storage):
            store.close()
        raise RunExistsError(
            f"a run named {name!r} exists already in {_where(name, root, storage)}; pass if_exists='load' to continue it, "
            "if_exists='overwrite' to replace it, or choose another name"
        ) from None
    return Run(record, store, files, search_space, strategy, folder)


def _where(name: str, root: str | Path, storage: str | Storage | None) -> str:
    if storage is None:
        return str(run_folder(root, name) / DATABASE)
    from poptrain.storage._sql import display_url

    return "this storage" if isinstance(storage, Storage) else display_url(storage)


def _run_exists(name: str, root: str | Path, storage: str | Storage | None) -> bool:
    """Whether run ``name`` exists, found without creating anything."""
    if storage is None and not (run_folder(root, name) / DATABASE).exists():
        return False
    try:
        store, _ = _run_paths(name, root, storage, create=False)
    except RunNotFoundError:
        return False
    try:
        store.get_run(name)
    except RunNotFoundError:
        return False
    finally:
        if not isinstance(storage, Storage):
            store.close()
    return True


_SAME_SETTINGS = ("space", "population_size", "metric", "mode", "strategy")


def _load_same(
    name: str,
    root: str | Path,
    storage: str | Storage | None,
    checkpoints: CheckpointStore | str | Path | None,
    spec: dict[str, Any],
    seed: int,
) -> Run:
    """The existing run ``name`` (``if_exists="load"``), refused if its settings differ from ``spec``."""
    run = load_run(name, storage=storage, root=root, checkpoints=checkpoints)
    stored = run.record.spec
    differ = [key for key in _SAME_SETTINGS if stored.get(key) != spec[key]] + (
        ["seed"] if run.record.seed != seed else []
    )
    if differ:
        run.close()
        raise ConfigError(
            f"run {name!r} exists with other settings ({', '.join(differ)} differ); use if_exists='overwrite' to replace "
            "it, or choose another name"
        )
    return run


def _in_memory(storage: str | Storage | None) -> bool:
    from poptrain.storage import InMemoryStorage

    return isinstance(storage, InMemoryStorage) or storage in ("memory", ":memory:")


def _own_checkpoints(name: str, root: str | Path, storage: str | Storage | None) -> set[str]:
    """The checkpoint files the stored run ``name`` recorded (relative to its checkpoint folder)."""
    store, _ = _run_paths(name, root, storage, create=False)
    try:
        record = store.get_run(name)
        return {c.uri for c in store.get_checkpoints(record.id)}
    finally:
        if not isinstance(storage, Storage):
            store.close()


def checkpoint_store(
    checkpoints: CheckpointStore | str | Path | None, folder: Path, in_memory: bool
) -> CheckpointStore:
    """The store named by ``checkpoints``: a store, a folder, an fsspec URL (``s3://...``), or
    ``None``: ``<folder>/checkpoints`` (in memory with an in-memory storage)."""
    if isinstance(checkpoints, CheckpointStore):
        return checkpoints
    if checkpoints is not None and not isinstance(checkpoints, (str, PathLike)):
        raise ConfigError(
            f"checkpoints must be a folder, an fsspec URL (s3://bucket/run) or a CheckpointStore, got {checkpoints!r}"
        )
    if checkpoints is None and in_memory:
        from poptrain.checkpoints import InMemoryCheckpointStore

        return InMemoryCheckpointStore()
    if isinstance(checkpoints, str) and "://" in checkpoints and not checkpoints.startswith("file://"):
        from poptrain.checkpoints import FsspecCheckpointStore

        return FsspecCheckpointStore(checkpoints)
    if isinstance(checkpoints, str) and checkpoints.startswith("file://"):
        checkpoints = checkpoints[len("file://") :]
    return LocalCheckpointStore(Path(checkpoints) if checkpoints is not None else folder / "checkpoints")


def load_run(
    name: str,
    *,
    storage: str | Storage | None = None,
    checkpoints: CheckpointStore | str | Path | None = None,
    root: str | Path = DEFAULT_ROOT,
    **strategy_overrides: Any,
) -> Run:
    """Open an existing run. A run that used custom strategies that cannot be imported needs
    them passed again (``ready=``, ``exploit=``, ``explore=``)."""
    for key in strategy_overrides:
        if key not in ("ready", "exploit", "explore"):
            raise ConfigError(f"load_run() got an unexpected argument {key!r}; it takes ready=, exploit= and explore=")
    folder = run_folder(root, name)
    if storage is None and not (folder / DATABASE).exists():
        raise RunNotFoundError(f"no run named {name!r}: {folder / DATABASE} does not exist; check the name and root=")
    store, folder = _run_paths(name, root, storage, create=False)
    try:
        record = store.get_run(name)
    except RunNotFoundError:
        if not isinstance(storage, Storage):
            store.close()
        raise

    def strategy() -> Strategy:
        base = dict(record.settings.strategy)
        for key in strategy_overrides:  # placeholders, replaced below
            base[key] = {"type": "every", "steps": 1} if key == "ready" else None
        return replace(strategy_from_spec(base), **strategy_overrides)

    if checkpoints is None:
        checkpoints = record.settings.checkpoints  # a URL given when the run was created
    return Run(
        record,
        store,
        checkpoint_store(checkpoints, folder, _in_memory(store)),
        SearchSpace(record.settings.space),
        strategy,
        folder,
    )
