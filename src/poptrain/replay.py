"""Schedule replay: train a fresh model from scratch along a member's hyperparameter schedule,
copying no weights, and compare its scores with the original's.

The pure part turns a schedule into the hyperparameters in force at each step, reads and
checks the schedule JSON format (``poptrain.schedule/1``) and lines up the original member's
scores; ``replay()`` does the training.

Steps count the training the model itself received, 1-based: the score at step ``k`` is
measured after the ``k``-th ``step()``. In an asynchronous run a member may copy a checkpoint
older than its own step; a schedule skips the steps the copied model never saw, so its
segments always run back to back from step 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from poptrain.errors import ConfigError
from poptrain.records import GenerationRecord, ScoreRecord
from poptrain.results import ScheduleSegment, generation_at
from poptrain.space import HParams
from poptrain.trainable import Trainable, TrainContext, call_user, check_trainable, read_score

FORMAT = "poptrain.schedule/1"

ProgressFn = Callable[[int, float], None]


@dataclass(frozen=True)
class Schedule:
    """A hyperparameter schedule for one model: segments back to back from step 0.

    ``run``, ``member``, ``metric``, ``mode``, ``seed`` (the ``TrainContext.seed`` a replay uses
    by default), ``run_seed`` and ``original`` (the original model's score after each step,
    ``None`` where unknown) describe where it came from; all may be ``None``.
    """

    segments: tuple[ScheduleSegment, ...]
    run: str | None = None
    member: int | None = None
    metric: str | None = None
    mode: str | None = None
    seed: int | None = None
    run_seed: int | None = None
    original: tuple[float | None, ...] | None = None

    @property
    def total_steps(self) -> int:
        """How many training steps the schedule covers."""
        return self.segments[-1].end_step if self.segments else 0

    @property
    def initial(self) -> HParams:
        """The hyperparameters to set the model up with (the first segment's)."""
        return dict(self.segments[0].hparams)

    @property
    def root(self) -> int:
        """The member whose initial model the schedule starts from (its first segment's slot)."""
        return self.segments[0].slot

    def hparams_at(self, step: int) -> HParams:
        """The hyperparameters that train step ``step`` (1 to ``total_steps``)."""
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= self.total_steps:
            raise ConfigError(f"step must be a whole number from 1 to {self.total_steps}, got {step!r}")
        for segment in self.segments:
            if segment.start_step < step <= segment.end_step:
                return dict(segment.hparams)
        raise AssertionError("segments are back to back")  # pragma: no cover

    def changes(self) -> list[tuple[int, HParams]]:
        """``(step, hparams)`` for each segment after the first: after ``step`` steps, call
        ``set_hparams(hparams)``."""
        return [(s.start_step, dict(s.hparams)) for s in self.segments[1:]]

    def __iter__(self) -> Iterator[tuple[int, HParams]]:
        """``(step, hparams)`` for every step, 1 to ``total_steps``."""
        for segment in self.segments:
            for step in range(segment.start_step + 1, segment.end_step + 1):
                yield step, dict(segment.hparams)

    def __len__(self) -> int:
        return self.total_steps

    def truncate(self, steps: int) -> Schedule:
        """The first ``steps`` steps of this schedule."""
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= self.total_steps:
            raise ConfigError(
                f"steps must be a whole number from 1 to {self.total_steps} (the schedule's length), got {steps!r}"
            )
        kept = [replace(s, end_step=min(s.end_step, steps)) for s in self.segments if s.start_step < steps]
        original = self.original[:steps] if self.original is not None else None
        return replace(self, segments=tuple(kept), original=original)

    def to_dict(self) -> dict[str, Any]:
        """The schedule in the ``poptrain.schedule/1`` JSON format."""
        return {
            "format": FORMAT,
            "run": self.run,
            "member": self.member,
            "metric": self.metric,
            "mode": self.mode,
            "seed": self.seed,
            "run_seed": self.run_seed,
            "total_steps": self.total_steps,
            "segments": [
                {
                    "start_step": s.start_step,
                    "end_step": s.end_step,
                    "hparams": dict(s.hparams),
                    "slot": s.slot,
                    "kind": s.kind,
                    "donor": s.donor,
                    "operations": dict(s.operations),
                }
                for s in self.segments
            ],
            "original_scores": list(self.original) if self.original is not None else None,
        }


def contiguous(segments: Sequence[ScheduleSegment]) -> tuple[ScheduleSegment, ...]:
    """Segments renumbered to run back to back from step 0 (empty ones dropped): the steps a
    model trained along an asynchronous member's ancestry really received."""
    out: list[ScheduleSegment] = []
    position = 0
    for segment in segments:
        length = segment.end_step - segment.start_step
        if length <= 0:
            continue
        out.append(replace(segment, start_step=position, end_step=position + length, hparams=dict(segment.hparams)))
        position += length
    return tuple(out)


def per_step(segments: Sequence[ScheduleSegment]) -> list[HParams]:
    """The hyperparameters in force at each training step, in order (entry ``k - 1`` trains step ``k``)."""
    return [dict(s.hparams) for s in contiguous(segments) for _ in range(s.end_step - s.start_step)]


def original_scores(
    segments: Sequence[ScheduleSegment], generations: Sequence[GenerationRecord], scores: Sequence[ScoreRecord]
) -> tuple[float | None, ...]:
    """The original model's score after each step of ``segments`` (a stored schedule, with the
    run's own step numbers), read along its ancestry; ``None`` where no score was kept."""
    by_key = {(s.slot, s.step, s.generation_id): s.value for s in scores}
    out: list[float | None] = []
    for segment in segments:
        for step in range(segment.start_step + 1, segment.end_step + 1):
            if segment.generation_id is not None:  # a stored schedule: the generation that trained it
                out.append(by_key.get((segment.slot, step, segment.generation_id)))
                continue
            try:
                gen = generation_at(generations, segment.slot, step)
            except KeyError:
                out.append(None)
                continue
            out.append(by_key.get((segment.slot, step, gen.id)))
    return tuple(out)


# --- the JSON format -----------------------------------------------------------------------
def schedule_from_dict(data: Any, *, source: str = "schedule") -> Schedule:
    """A ``Schedule`` from the ``poptrain.schedule/1`` format; ``ConfigError`` naming the problem."""

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{source}: {message}")

    if not isinstance(data, Mapping):
        raise fail(f'expected a JSON object with "format": "{FORMAT}" and "segments"')
    if data.get("format") != FORMAT:
        raise fail(
            f"format is {data.get('format')!r}; expected {FORMAT!r} (write one with `poptrain export NAME --schedule`)"
        )
    raw = data.get("segments")
    if not isinstance(raw, list) or not raw:
        raise fail('segments must be a non-empty list of {"start_step", "end_step", "hparams"}')
    member = _optional_int(data.get("member"), "member", fail)
    segments: list[ScheduleSegment] = []
    position = 0
    for i, item in enumerate(raw):
        where = f"segments[{i}]"
        if not isinstance(item, Mapping):
            raise fail(f"{where} must be an object with start_step, end_step and hparams")
        start, end = item.get("start_step"), item.get("end_step")
        for label, value in (("start_step", start), ("end_step", end)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise fail(f"{where}.{label} must be a whole number, got {value!r}")
        assert isinstance(start, int) and isinstance(end, int)  # checked just above
        if start != position:
            raise fail(f"{where}.start_step is {start}, expected {position}: segments run back to back from step 0")
        if end <= start:
            raise fail(f"{where}.end_step ({end}) must be greater than its start_step ({start})")
        hparams = item.get("hparams")
        if not isinstance(hparams, Mapping) or not hparams:
            raise fail(f"{where}.hparams must be a non-empty object of hyperparameter values")
        for key, value in hparams.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise fail(f"{where}.hparams[{key!r}] is {value}; hyperparameter values must be finite")
        slot = _optional_int(item.get("slot"), f"{where}.slot", fail)
        kind = item.get("kind") or ("init" if i == 0 else "explore")
        donor = _optional_int(item.get("donor"), f"{where}.donor", fail)
        operations = item.get("operations") or {}
        if not isinstance(kind, str) or not isinstance(operations, Mapping):
            raise fail(f"{where}: kind must be a string and operations an object")
        segments.append(
            ScheduleSegment(
                slot if slot is not None else (member or 0),
                start,
                end,
                dict(hparams),
                kind,
                donor,
                {str(k): str(v) for k, v in operations.items()},
            )
        )
        position = end
    total = data.get("total_steps")
    if total is not None and total != position:
        raise fail(f"total_steps is {total!r} but the segments end at step {position}")
    mode = data.get("mode")
    if mode not in (None, "max", "min"):
        raise fail(f"mode must be 'max' or 'min', got {mode!r}")
    metric = data.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise fail(f"metric must be a string, got {metric!r}")
    run = data.get("run")
    original = data.get("original_scores")
    if original is not None:
        if not isinstance(original, list) or len(original) != position:
            raise fail(f"original_scores must be a list of {position} scores (null where unknown)")
        if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in original):
            raise fail("original_scores must hold numbers or null")
    return Schedule(
        tuple(segments),
        str(run) if run is not None else None,
        member,
        metric,
        mode,
        _optional_int(data.get("seed"), "seed", fail),
        _optional_int(data.get("run_seed"), "run_seed", fail),
        tuple(None if v is None else float(v) for v in original) if original is not None else None,
    )


def _optional_int(value: Any, label: str, fail: Callable[[str], ConfigError]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"{label} must be a whole number or null, got {value!r}")
    return value


def load_schedule(path: str | Path) -> Schedule:
    """Read a schedule written by ``poptrain export NAME --schedule`` or ``Run.export_schedule``.

    Drive your own training loop with it::

        schedule = poptrain.load_schedule("schedule.json")
        model = setup(schedule.initial)
        for step, hparams in schedule:   # step 1 .. schedule.total_steps
            apply(hparams); train_one_step(model)
    """
    target = Path(path)
    if not target.is_file():
        what = "is a folder, not a file" if target.is_dir() else "does not exist"
        raise ConfigError(f"schedule file {target} {what}")
    try:
        data = json.loads(target.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{target}: not valid JSON at line {exc.lineno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read schedule file {target}: {exc}") from None
    return schedule_from_dict(data, source=str(target))


# --- training ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayResult:
    """A model retrained from scratch along ``schedule``: its score after each step (``scores``),
    its final ``metrics``, and the original model's score after each step (``original``,
    ``None`` entries where unknown; ``None`` for a schedule without them)."""

    schedule: Schedule
    metric: str
    mode: str
    seed: int
    scores: tuple[float, ...]
    metrics: dict[str, float]
    original: tuple[float | None, ...] | None = None

    @property
    def steps(self) -> int:
        return len(self.scores)

    @property
    def score(self) -> float:
        """The replay's score after its last step."""
        return self.scores[-1]

    @property
    def original_score(self) -> float | None:
        """The original model's score at the same step, when known."""
        return self.original[len(self.scores) - 1] if self.original else None

    @property
    def difference(self) -> float | None:
        """``score - original_score`` (positive: the replay scored higher)."""
        return None if self.original_score is None else self.score - self.original_score

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what ``runs/NAME/replays/member-<slot>.json`` holds)."""
        return {
            "run": self.schedule.run,
            "member": self.schedule.member,
            "metric": self.metric,
            "mode": self.mode,
            "seed": self.seed,
            "steps": self.steps,
            "score": self.score,
            "original_score": self.original_score,
            "difference": self.difference,
            "metrics": dict(self.metrics),
            "scores": list(self.scores),
            "original_scores": list(self.original) if self.original is not None else None,
            "schedule": self.schedule.to_dict(),
        }


def replay(
    trainable: Callable[[], Trainable],
    schedule: Schedule,
    *,
    metric: str | None = None,
    mode: str | None = None,
    seed: int | None = None,
    run_seed: int | None = None,
    run_name: str | None = None,
    slot: int | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
) -> ReplayResult:
    """Train a fresh ``trainable()`` along ``schedule`` and evaluate it after every step.

    ``setup(schedule.initial, context)``, then ``step()`` and ``evaluate()`` for each step,
    with ``set_hparams()`` called exactly where a segment ends (after ``changes()``'s steps).
    No state is loaded from anywhere. ``metric``/``mode`` default to the schedule's. ``context.seed`` is ``seed``, else ``schedule.seed`` (the
    seed of the member whose initial model the schedule starts from), else 0; ``context.slot``
    is ``slot``, else that member's slot. ``progress(step, score)`` is called after each step.
    """
    if not schedule.segments:
        raise ConfigError("the schedule has no steps to replay")
    metric = metric or schedule.metric or "score"
    mode = mode or schedule.mode or "max"
    if not callable(trainable):
        raise ConfigError(f"trainable must be a Trainable subclass or a factory of one, got {trainable!r}")
    chosen = seed if seed is not None else (schedule.seed if schedule.seed is not None else 0)
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {chosen!r}")
    context = TrainContext(
        run_name or schedule.run or "replay",
        schedule.root if slot is None else slot,
        chosen,
        device=device,
        run_seed=run_seed if run_seed is not None else (schedule.run_seed or 0),
        start_step=0,
    )
    model = check_trainable(_call(0, "construct", trainable), trainable)
    for method in ("setup", "step", "evaluate", "set_hparams"):
        if not callable(getattr(model, method, None)):
            raise ConfigError(
                f"the trainable factory returned {type(model).__name__}, which has no {method}(); return a Trainable"
            )
    _call(0, "setup", model.setup, schedule.initial, context)
    boundaries = {step: hparams for step, hparams in schedule.changes()}
    scores: list[float] = []
    metrics: dict[str, float] = {}
    for step in range(1, schedule.total_steps + 1):
        if step - 1 in boundaries:
            _call(step, "set_hparams", model.set_hparams, boundaries[step - 1])
        _call(step, "step", model.step)
        value, metrics = read_score(_call(step, "evaluate", model.evaluate), metric)
        scores.append(value)
        if progress is not None:
            progress(step, value)
    return ReplayResult(schedule, metric, mode, chosen, tuple(scores), metrics, schedule.original)


def _call(step: int, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    return call_user(None, step, what, fn, *args, who="the replay")


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as JSON atomically (temp file, then rename)."""
    from poptrain.atomic import write_text_atomic

    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=True) + "\n")
