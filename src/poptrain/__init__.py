"""poptrain: Population Based Training of neural networks.

import poptrain
run = poptrain.create_run(name="demo", space={"lr": poptrain.Float(1e-4, 1e-1, log=True)},
                          population_size=8, metric="val_acc")
run.optimize(MyTrainable, steps=40)
print(run.best())
"""

from poptrain._version import __version__
from poptrain.callbacks import Callback, Callbacks, CallbackWarning, RunInfo
from poptrain.errors import (
    CheckpointError,
    ConfigError,
    MetricError,
    PoptrainError,
    RunExistsError,
    RunNotFoundError,
    SearchSpaceError,
    StaleWriteError,
    StorageError,
    StrategyError,
    TrainableError,
)
from poptrain.executors import Executor, ProcessesExecutor, SequentialExecutor
from poptrain.progress import ProgressListener
from poptrain.records import CheckpointRecord, GenerationRecord, MemberRecord, RunRecord, ScoreRecord
from poptrain.replay import ReplayResult, Schedule, load_schedule
from poptrain.results import BestMember, ScheduleSegment
from poptrain.run import Action, Run, create_run, load_run
from poptrain.space import Choice, Float, Int, SearchSpace, Widths
from poptrain.stopping import StopRule, StopState, plateau, target, time_budget
from poptrain.strategy import (
    Decision,
    Donor,
    Explored,
    History,
    MemberSnapshot,
    Observation,
    Strategy,
    every,
    gaussian,
    mf_exploit,
    mf_ready,
    mfpbt,
    pb2,
    perturb,
    plan_generation,
    plan_member,
    replace_worst,
    resample,
    tournament,
    truncation,
    ttest,
)
from poptrain.trainable import Trainable, TrainContext


def __getattr__(name: str) -> object:
    """``VectorizedTrainable`` loads PyTorch, so it is imported when first used."""
    if name == "VectorizedTrainable":
        from poptrain.vectorized import VectorizedTrainable

        return VectorizedTrainable
    raise AttributeError(f"module 'poptrain' has no attribute {name!r}")


__all__ = [
    "Action",
    "BestMember",
    "Callback",
    "CallbackWarning",
    "Callbacks",
    "CheckpointError",
    "CheckpointRecord",
    "Choice",
    "ConfigError",
    "Decision",
    "Donor",
    "Executor",
    "Explored",
    "Float",
    "GenerationRecord",
    "History",
    "Int",
    "MemberRecord",
    "MemberSnapshot",
    "MetricError",
    "Observation",
    "PoptrainError",
    "ProcessesExecutor",
    "ProgressListener",
    "ReplayResult",
    "Run",
    "RunExistsError",
    "RunInfo",
    "RunNotFoundError",
    "RunRecord",
    "Schedule",
    "ScheduleSegment",
    "ScoreRecord",
    "SearchSpace",
    "SearchSpaceError",
    "SequentialExecutor",
    "StaleWriteError",
    "StopRule",
    "StopState",
    "StorageError",
    "Strategy",
    "StrategyError",
    "TrainContext",
    "Trainable",
    "TrainableError",
    "VectorizedTrainable",
    "Widths",
    "__version__",
    "create_run",
    "every",
    "gaussian",
    "load_run",
    "load_schedule",
    "mf_exploit",
    "mf_ready",
    "mfpbt",
    "pb2",
    "perturb",
    "plan_generation",
    "plan_member",
    "plateau",
    "replace_worst",
    "resample",
    "target",
    "time_budget",
    "tournament",
    "truncation",
    "ttest",
]
