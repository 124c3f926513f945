"""The toy tasks: the PBT paper's Figure 2 toy and PBT-Zoo's ToyPlain and ToyDeceptive.

PBT ranks on a noisy score (the objective plus Gaussian noise drawn per evaluation); the
held-out score is the noise-free objective, which no decision saw. The selection split is the
mean of ``SELECTION_DRAWS`` fresh noisy evaluations from a stream training never draws from.

PBT-Zoo's toys (Chebykin et al., "To Be Greedy, or Not to Be", TMLR 2025, section 5.2; code:
github.com/AwesomeLemon/PBT-Zoo, ``task/toy_plain.py`` and ``task/toy_deceptive.py``): one
weight ``θ`` starts at 0.9 and climbs ``Q(θ) = 1.2 - θ²`` by gradient steps of size 0.001 on
a surrogate whose gradient is ``-2·c·θ``:

- ToyPlain: ``c = 2 - h``; the best schedule drops ``h`` to its minimum at once (greedy is right).
- ToyDeceptive: ``c = max(2 - h - 0.2·D, 0)`` where ``D`` sums, over the ready intervals so far,
  ``|h_k - (1 - k·interval/T)|``: every deviation from a linear decay of ``h`` from 1 to 0
  is paid for the rest of the run. Dropping ``h`` early wins the next interval and stalls the
  run later (greedy is wrong).

As in PBT-Zoo: ``T = 1000`` gradient iterations, ready every 20, ``h`` in ``[1e-4, 1.1]`` and the
initial ``h`` uniform in ``[0.9, 1.1]`` (here drawn from the run's seed). One poptrain step is 10
iterations, so a run is 100 steps with ready points every 2. PBT-Zoo's population is 22.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

import poptrain
from experiments.quality.task import SELECTION, TEST, Task
from poptrain.experiments import toy as paper
from poptrain.space import HParams

SELECTION_DRAWS = 4
SELECTION_STREAM = 10**9  # seeds of the selection split's noise: far from every member seed

ZOO_T = 1000  # gradient iterations in a run
ZOO_INTERVAL = 20  # iterations between ready points
ZOO_PER_STEP = 10  # iterations in one poptrain step
ZOO_RATE = 0.001
ZOO_PENALTY = 0.2
ZOO_LOW, ZOO_HIGH = 1e-4, 1.1


class NoisyToy(paper.ToyQuadratic):
    """The paper's toy scored as ``Q(θ) + N(0, noise²)``; ``true_score`` is the noise-free ``Q``."""

    noise = 0.0

    def setup(self, hparams: HParams, context: poptrain.TrainContext) -> None:
        super().setup(hparams, context)
        self.rng = np.random.default_rng(context.seed)

    def true_score(self) -> float:
        return paper.true_objective((self.theta[0], self.theta[1]))

    def evaluate(self) -> dict[str, float]:
        return {"Q": self.true_score() + self.noise * float(self.rng.normal())}


class ZooToy(poptrain.Trainable):
    """PBT-Zoo's toys: ``deceptive`` switches the ToyDeceptive penalty on."""

    deceptive = False
    noise = 0.0

    def setup(self, hparams: HParams, context: poptrain.TrainContext) -> None:
        self.theta = 0.9
        self.iteration = 0
        self.deviation = 0.0  # D: the summed distance from the linear decay, one term per interval
        self.h = float(hparams["h"])
        self.rng = np.random.default_rng(context.seed)

    def step(self) -> None:
        self.theta, self.iteration, self.deviation = zoo_advance(
            self.theta, self.iteration, self.deviation, self.h, ZOO_PER_STEP, deceptive=self.deceptive
        )

    def true_score(self) -> float:
        return 1.2 - self.theta**2

    def evaluate(self) -> dict[str, float]:
        return {"Q": self.true_score() + self.noise * float(self.rng.normal())}

    def state_dict(self) -> dict[str, Any]:
        return {"theta": self.theta, "iteration": self.iteration, "deviation": self.deviation}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.theta = float(state["theta"])
        self.iteration = int(state["iteration"])
        self.deviation = float(state["deviation"])

    def set_hparams(self, hparams: HParams) -> None:
        self.h = float(hparams["h"])


def zoo_target(iteration: int) -> float:
    """ToyDeceptive's linear decay: ``h`` should be ``1 - k·interval/T`` in interval ``k``."""
    return (ZOO_T - (iteration // ZOO_INTERVAL) * ZOO_INTERVAL) / ZOO_T


def zoo_advance(
    theta: float, iteration: int, deviation: float, h: float, iterations: int, *, deceptive: bool
) -> tuple[float, int, float]:
    """``iterations`` gradient iterations with hyperparameter ``h`` (an interval's deviation is
    counted at its first iteration, with the ``h`` it starts with, as PBT-Zoo does)."""
    for _ in range(iterations):
        if deceptive and iteration % ZOO_INTERVAL == 0:
            deviation += abs(h - zoo_target(iteration))
        c = max(2.0 - h - ZOO_PENALTY * deviation, 0.0) if deceptive else 2.0 - h
        theta += ZOO_RATE * (-2.0 * c * theta)
        iteration += 1
    return theta, iteration, deviation


def zoo_schedule_q(schedule: list[float], *, deceptive: bool) -> float:
    """The noise-free final ``Q`` of a schedule: one ``h`` per ready interval."""
    theta, iteration, deviation = 0.9, 0, 0.0
    for h in schedule:
        theta, iteration, deviation = zoo_advance(theta, iteration, deviation, h, ZOO_INTERVAL, deceptive=deceptive)
    return 1.2 - theta**2


@functools.cache
def deceptive_reference() -> dict[str, float]:
    """ToyDeceptive's reference values: the optimum (the linear decay, with ``h`` at its minimum
    in the last intervals, where a deviation costs less than it gains), the linear decay alone,
    the greedy schedule (``h`` at its minimum throughout) and a fixed ``h = 1``."""
    intervals = ZOO_T // ZOO_INTERVAL
    linear = [zoo_target(k * ZOO_INTERVAL) for k in range(intervals)]
    # a deviation d in interval k gains d per iteration now and costs 0.2·d per iteration in every interval from k on
    best = max(
        zoo_schedule_q(linear[: intervals - tail] + [ZOO_LOW] * tail, deceptive=True) for tail in range(intervals + 1)
    )
    return {
        "optimum": best,
        "linear": zoo_schedule_q(linear, deceptive=True),
        "greedy": zoo_schedule_q([ZOO_LOW] * intervals, deceptive=True),
        "fixed_1": zoo_schedule_q([1.0] * intervals, deceptive=True),
    }


def toy_scorer(trainable: poptrain.Trainable, split: str) -> float:
    """``"test"``: the noise-free objective; ``"selection"``: the mean of fresh noisy draws."""
    true = float(trainable.true_score())  # type: ignore[attr-defined]
    if split == TEST:
        return true
    if split != SELECTION:
        raise ValueError(f"unknown split {split!r}")
    noise = float(trainable.noise)  # type: ignore[attr-defined]
    seed = SELECTION_STREAM + _theta_key(trainable)
    draws = np.random.default_rng(seed).normal(size=SELECTION_DRAWS)
    return true + noise * float(draws.mean())


def _theta_key(trainable: Any) -> int:
    """A stable integer from the weights: a model's selection noise is the same every time."""
    values = trainable.theta if isinstance(trainable.theta, list) else [trainable.theta]
    return abs(hash(tuple(round(float(v), 12) for v in values))) % (2**31)


TOY_SPLITS = {
    "validation": frozenset({"ranking noise: member seeds"}),
    SELECTION: frozenset({f"selection noise: seeds from {SELECTION_STREAM}"}),
    TEST: frozenset({"noise-free objective"}),
}


def toy(quick: bool = False) -> Task:
    """The paper's toy: population 2 from ``h = (1, 0)`` and ``(0, 1)``, 100 steps (quick: 40),
    ready every 4, synchronous; its Gaussian explore (σ 0.2). Ranked on ``Q + N(0, 0.01²)``."""
    trainable = type("PaperToy", (NoisyToy,), {"noise": 0.01})
    steps = 40 if quick else paper.STEPS
    return Task(
        name="toy",
        scale=f"population 2 (the paper's), {steps} steps, ready every {paper.READY_EVERY}, synchronous",
        held_out="the true Q(θ) = 1.2 - |θ|² (noise-free); PBT ranks on Q + N(0, 0.01²)",
        trainable=trainable,
        space=paper.SPACE,
        population=2,
        steps=steps,
        ready=paper.READY_EVERY,
        metric="Q",
        noise=0.01,
        score=toy_scorer,
        splits=TOY_SPLITS,
        explore=paper.gaussian_explore,
        synchronous=True,
        initial_hparams=lambda seed: [dict(h) for h in paper.INITIAL_H],
    )


def _zoo_initial(population: int, seed: int) -> list[HParams]:
    rng = np.random.default_rng([seed, 7])
    return [{"h": float(h)} for h in rng.uniform(0.9, 1.1, population)]


def _zoo(name: str, deceptive: bool, quick: bool) -> Task:
    noise = 0.002
    trainable = type(name, (ZooToy,), {"deceptive": deceptive, "noise": noise})
    population = 6 if quick else 22
    steps = ZOO_T // ZOO_PER_STEP
    optimum = deceptive_reference()["optimum"] - 0.01 if deceptive else None
    return Task(
        name=name,
        scale=f"population {population} (PBT-Zoo's 22), {steps} steps of {ZOO_PER_STEP} gradient iterations, "
        f"ready every {ZOO_INTERVAL // ZOO_PER_STEP} steps ({ZOO_INTERVAL} iterations)",
        held_out=f"the noise-free Q(θ) = 1.2 - θ²; PBT ranks on Q + N(0, {noise}²)",
        trainable=trainable,
        space={"h": poptrain.Float(ZOO_LOW, ZOO_HIGH)},
        population=population,
        steps=steps,
        ready=ZOO_INTERVAL // ZOO_PER_STEP,
        metric="Q",
        noise=noise,
        score=toy_scorer,
        splits=TOY_SPLITS,
        initial_hparams=functools.partial(_zoo_initial, population),
        optimum=optimum,
    )


def toy_plain(quick: bool = False) -> Task:
    """PBT-Zoo's ToyPlain (greedy is right)."""
    return _zoo("toy_plain", False, quick)


def toy_deceptive(quick: bool = False) -> Task:
    """PBT-Zoo's ToyDeceptive (greedy is a trap): reaching the optimum means a held-out Q within
    0.01 of the best schedule's."""
    return _zoo("toy_deceptive", True, quick)
