"""The quality suite's tasks (``python -m benchmarks.quality``): one function per task, each
returning a ``Task``, the trainable with what the suite needs to score it on data no decision saw.

- ``toy``: the PBT paper's Figure 2 toy; ``toy_plain``, ``toy_deceptive``: PBT-Zoo's two toys
  (``experiments.quality.toys``);
- ``digits``, ``classify``, ``apbt``: small classifiers (``experiments.quality.supervised``);
- ``gan``, ``translate``, ``rl``: the seed's other experiments, reduced
  (``experiments.quality.seeded``).
"""

from __future__ import annotations

from collections.abc import Callable

from experiments.quality.seeded import gan, rl, translate
from experiments.quality.supervised import apbt, classify, digits
from experiments.quality.task import Task
from experiments.quality.toys import toy, toy_deceptive, toy_plain

TASKS: dict[str, Callable[[bool], Task]] = {
    "toy": toy,
    "toy_plain": toy_plain,
    "toy_deceptive": toy_deceptive,
    "digits": digits,
    "classify": classify,
    "apbt": apbt,
    "gan": gan,
    "translate": translate,
    "rl": rl,
}

__all__ = ["TASKS", "Task"]
