"""Deep Double SARSA with PBT at the project seed's scale, the population trained as one batched
program: population 8, 20 rounds of 100 training and 20 evaluation episodes, epsilon annealed
from 1.0 to 0.1 over the run's 2,000 training episodes; the 4 worst copy one of the 4 best, then
the learning rate and the discount are perturbed. Compared with the same population trained
without exploit or explore.

The algorithm is ``experiments.rl``'s: each member has two Q-networks; on every transition one
of them, drawn at random, takes an Adam step (its own step count) toward the reward plus the
discounted value the other network gives the next state and the action actually taken next.
Here the members' networks are rows of the stacked tensors of ``poptrain.vectorized.Population``
(so exploit is a row copy, explore a write into ``[P]`` hyperparameter tensors, a checkpoint
one file): all members' Q-values come from one batched matrix product, and all members' updates
are one batched Adam step with the gradient written out. That arithmetic runs in NumPy on the
tensors' own memory: on arrays this small a NumPy call costs about a quarter of a PyTorch call
(one batched update, 8 members: 0.10 ms against 0.41 ms), and the environments cost the rest.

Each member plays its own stream of episodes on its own gymnasium environment, with its own
random stream (environment seeds, exploration, which network learns), so its result does not
depend on the others; a member whose episodes are done waits while the others finish theirs.
The environments are stepped one by one, only while their member plays: a gymnasium
``SyncVectorEnv`` steps all of them on every call (and its default next-step autoreset spends
a call on each reset), so it would step the finished members' environments for nothing.

    python -m experiments.rl_vector --seeds 5    # LunarLander, PBT against no PBT, two processes
    python -m experiments.rl_vector --quick      # CartPole, tiny: what the tests run
    poptrain run experiments.rl_vector           # one PBT run; each member trains alone
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

import poptrain
from experiments.harness import median_range, parser, save_table, slug
from experiments.rl import SPACE, VARIANTS, make_env
from poptrain.errors import ConfigError
from poptrain.executors.vectorized import VectorizedExecutor
from poptrain.scheduler import Scheduler
from poptrain.seeding import member_seed
from poptrain.space import HParams
from poptrain.trainable import Trainable, TrainContext
from poptrain.vectorized import Adam, MemoryPlan, Population, VectorizedTrainable

EVALUATION_SEED = 10_000  # evaluation episode k starts from seed EVALUATION_SEED + k, for every member
MIN_EPSILON = 0.1
Array = TypeVar("Array", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Layout:
    """Where one Q-network's weights lie in its flat row: input -> hidden -> ReLU -> actions,
    in the order of ``nn.Sequential(nn.Linear, nn.ReLU, nn.Linear).parameters()``."""

    inputs: int
    hidden: int
    actions: int

    @property
    def size(self) -> int:
        return self.hidden * (self.inputs + 1) + self.actions * (self.hidden + 1)

    def split(self, flat: Array) -> tuple[Array, Array, Array, Array]:
        """Views ``w1 [..., H, in]``, ``b1 [..., H]``, ``w2 [..., A, H]``, ``b2 [..., A]`` of ``flat [..., size]``."""
        lead = flat.shape[:-1]
        a, b, c = self.hidden * self.inputs, self.hidden * (self.inputs + 1), self.size - self.actions
        return (
            flat[..., :a].reshape(*lead, self.hidden, self.inputs),
            flat[..., a:b],
            flat[..., b:c].reshape(*lead, self.actions, self.hidden),
            flat[..., c:],
        )

    def forward(self, flat: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Networks ``flat [N, size]`` on inputs ``x [N, in]`` (one input each), as batched
        matrix products: the hidden pre-activations, the hidden units and the Q-values ``[N, A]``."""
        w1, b1, w2, b2 = self.split(flat)
        pre = np.matmul(w1, x[..., None])[..., 0] + b1
        hidden = np.maximum(pre, 0)
        return pre, hidden, np.matmul(w2, hidden[..., None])[..., 0] + b2


class TwinQ(nn.Module):
    """A member's two Q-networks, each one row of ``theta [2, size]``. Its buffers travel with
    the weights (copied on exploit, saved in checkpoints): ``updates``, the Adam steps each
    network has taken, and ``episodes``, the training episodes the member has played."""

    updates: torch.Tensor
    episodes: torch.Tensor

    def __init__(self, inputs: int, actions: int, hidden: int) -> None:
        super().__init__()
        self.layout = Layout(inputs, hidden, actions)
        nets = [nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, actions)) for _ in range(2)]
        rows = [nn.utils.parameters_to_vector(net.parameters()).detach() for net in nets]
        self.theta = nn.Parameter(torch.stack(rows))  # the same initial weights as two nn.Linear pairs
        self.register_buffer("updates", torch.zeros(2))
        self.register_buffer("episodes", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``Q_0(x) + Q_1(x)`` for a batch ``x [B, inputs]`` (what the greedy action maximises)."""
        w1, b1, w2, b2 = self.layout.split(self.theta)
        hidden = torch.relu(torch.einsum("khi,bi->kbh", w1, x) + b1.unsqueeze(1))
        return (torch.einsum("kah,kbh->kba", w2, hidden) + b2.unsqueeze(1)).sum(0)


def _supervised_only(*_: Any) -> Any:
    raise ConfigError(
        "a SarsaTrainable plays episodes: train it with executor=experiments.rl_vector.SarsaExecutor(), "
        "or per member with executor='sequential'"
    )


class SarsaTrainable(VectorizedTrainable):
    """Double SARSA on ``env_name`` for a whole population: ``rounds`` PBT steps, each
    ``episodes`` training episodes per member, then ``evaluations`` greedy episodes whose mean
    return is the score; ``max_steps`` cuts episodes (``None``: the environment's own limit).
    Hyperparameters: ``lr`` (Adam's) and ``gamma`` (the discount)."""

    eps = 1e-8  # Adam's

    def __init__(
        self,
        env_name: str = "LunarLander-v3",
        *,
        rounds: int = 20,
        episodes: int = 100,
        evaluations: int = 20,
        max_steps: int | None = None,
        hidden: int = 64,
        lr: float = 1e-3,
        gamma: float = 0.99,
    ) -> None:
        for label, value in (("rounds", rounds), ("episodes", episodes), ("evaluations", evaluations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be a whole number >= 1, got {value!r}")
        env = make_env(env_name, max_steps)
        inputs, actions = int(env.observation_space.shape[0]), int(env.action_space.n)
        env.close()
        super().__init__(
            model=partial(TwinQ, inputs, actions, hidden),
            data=(torch.zeros(1, inputs), torch.zeros(1)),  # sizes the memory plan; episodes are the data
            loss=_supervised_only,
            evaluate=_supervised_only,
            optimizer=Adam(lr=lr, eps=self.eps),
            batch_size=1,
            hparams={"gamma": gamma},
            device="cpu",
        )
        self.env_name = env_name
        self.rounds = rounds
        self.episodes = episodes
        self.evaluations = evaluations
        self.max_steps = max_steps
        self.layout = Layout(inputs, hidden, actions)

    def epsilon(self, episodes_done: float) -> float:
        """1.0 falling linearly to 0.1 over the run's ``rounds * episodes`` training episodes."""
        return max(MIN_EPSILON, 1.0 - (1.0 - MIN_EPSILON) * episodes_done / (self.rounds * self.episodes))

    def __call__(self) -> Trainable:
        """One member alone (a population of one), for the other executors."""
        return SarsaMember(self)


class SarsaPopulation(Population):
    """The stacked population (weights, Adam state, ``[P]`` hyperparameters, exploit as a row
    copy) that trains by playing episodes: one environment and one random stream per member."""

    spec: SarsaTrainable

    def __init__(
        self,
        spec: SarsaTrainable,
        slots: Sequence[int],
        seeds: Sequence[int],
        hparams: Sequence[HParams],
        device: torch.device,
        memory: MemoryPlan,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, slots, seeds, hparams, device, memory, seed)
        self._attach(seeds)

    @classmethod
    def adopt(cls, population: Population, seeds: Sequence[int]) -> SarsaPopulation:
        """This class over ``population``'s state (built, and loaded from checkpoints, by the
        vectorized executor): the same tensors, plus environments and random streams."""
        adopted = cls.__new__(cls)
        adopted.__dict__.update(population.__dict__)
        adopted._attach(seeds)
        return adopted

    def _attach(self, seeds: Sequence[int]) -> None:
        spec = self.spec
        self.layout = spec.layout
        self.one_hot = np.eye(self.layout.actions, dtype=np.float32)
        self.envs = [make_env(spec.env_name, spec.max_steps) for _ in seeds]
        self.rngs = [np.random.default_rng(seed) for seed in seeds]
        self.env_steps = 0  # environment steps taken, for throughput figures

    # --- the batched computation -------------------------------------------------------
    def q_values(self, states: np.ndarray) -> np.ndarray:
        """Both networks of every member on its own state ``states [P, in]``: ``[P, 2, A]``."""
        theta = self.params["theta"].numpy().reshape(-1, self.layout.size)
        _, _, q = self.layout.forward(theta, np.repeat(states, 2, axis=0))
        return q.reshape(self.size, 2, -1)

    def update(
        self, rows: np.ndarray, learners: np.ndarray, states: np.ndarray, actions: np.ndarray, targets: np.ndarray
    ) -> None:
        """One Double SARSA step for members ``rows``: network ``learners`` of each takes an Adam
        step (``torch.optim.Adam``'s arithmetic, the network's own step count) on the smooth L1
        loss between its ``Q(state, action)`` and ``targets``, the gradient written out."""
        layout, size = self.layout, self.layout.size
        flat = rows * 2 + learners  # one row per (member, network) in the [P * 2] views
        theta = self.params["theta"].numpy().reshape(-1, size)
        first, second = (self.opt_state[slot][0].numpy().reshape(-1, size) for slot in ("exp_avg", "exp_avg_sq"))
        counts = self.buffers["updates"].numpy().reshape(-1)
        weights = theta[flat]
        pre, hidden, q = layout.forward(weights, states)
        picked = self.one_hot[actions]  # [n, A]
        error = np.clip((q * picked).sum(1) - targets, -1.0, 1.0)  # d smooth_l1 / d Q(s, a), beta 1
        d_q = picked * error[:, None]
        d_hidden = np.matmul(d_q[:, None], layout.split(weights)[2])[:, 0] * (pre > 0)
        n = len(flat)
        grad = np.concatenate(
            [
                (d_hidden[:, :, None] * states[:, None]).reshape(n, -1),
                d_hidden,
                (d_q[:, :, None] * hidden[:, None]).reshape(n, -1),
                d_q,
            ],
            axis=1,
        )
        lr, beta1, beta2, decay = (
            self.hp[name].numpy()[rows, None] for name in ("lr", "beta1", "beta2", "weight_decay")
        )
        if decay.any():
            grad += decay * weights
        count = counts[flat] + 1
        exp_avg = first[flat]
        exp_avg += (grad - exp_avg) * (1 - beta1)
        exp_avg_sq = second[flat] * beta2 + (1 - beta2) * grad * grad
        correction1 = (1 - beta1.astype(np.float64)[:, 0] ** count)[:, None]
        correction2 = (1 - beta2.astype(np.float64)[:, 0] ** count)[:, None]
        denominator = np.sqrt(exp_avg_sq) / np.sqrt(correction2).astype(np.float32) + self.spec.eps
        weights -= (lr / correction1).astype(np.float32) * exp_avg / denominator
        theta[flat], first[flat], second[flat], counts[flat] = weights, exp_avg, exp_avg_sq, count

    # --- episodes ------------------------------------------------------------------------
    def play(self, rows: Sequence[int], episodes: int, *, learn: bool) -> np.ndarray:
        """``episodes`` episodes for each member in ``rows``, each on its own environment:
        epsilon-greedy with Double SARSA updates (``learn``), else greedy from the evaluation
        seeds. The returns, ``[len(rows), episodes]``."""
        size = self.size
        states = np.zeros((size, self.layout.inputs), dtype=np.float32)
        actions = np.zeros(size, dtype=np.int64)
        epsilons = np.zeros(size)
        played = np.zeros(size, dtype=np.int64)
        totals = np.zeros(size)
        returns = np.zeros((size, episodes))
        active = list(rows)
        self._start(active, states, actions, epsilons, played, learn)
        while active:
            following = states.copy()
            rewards = np.zeros(size, dtype=np.float32)
            terminal = np.zeros(size, dtype=np.float32)
            ended = []
            for row in active:
                state, reward, terminated, truncated, _ = self.envs[row].step(int(actions[row]))
                following[row], rewards[row], terminal[row] = state, reward, terminated
                if terminated or truncated:
                    ended.append(row)
            self.env_steps += len(active)
            totals[active] += rewards[active]
            q = self.q_values(following)
            greedy = q.sum(1).argmax(-1)
            if learn:
                learners = np.zeros(size, dtype=np.int64)
                for row in active:  # the order of experiments.rl: the next action, then the learner
                    greedy[row] = self._explore(row, int(greedy[row]), epsilons[row])
                    learners[row] = self.rngs[row].random() < 0.5
                live = np.array(active)
                following_value = q[live, 1 - learners[live], greedy[live]]
                gamma = self.hp["gamma"].numpy()[live]
                targets = rewards[live] + gamma * (1 - terminal[live]) * following_value
                self.update(live, learners[live], states[live], actions[live], targets)
            states[active], actions[active] = following[active], greedy[active]
            if ended:
                for row in ended:
                    returns[row, played[row]] = totals[row]
                    totals[row] = 0.0
                    played[row] += 1
                    if learn:
                        self.buffers["episodes"][row] += 1
                again = [row for row in ended if played[row] < episodes]
                active = [row for row in active if row not in ended or played[row] < episodes]
                self._start(again, states, actions, epsilons, played, learn)
        return returns[list(rows)]

    def _start(
        self,
        rows: list[int],
        states: np.ndarray,
        actions: np.ndarray,
        epsilons: np.ndarray,
        played: np.ndarray,
        learn: bool,
    ) -> None:
        """Reset the environments of ``rows`` for their next episode and choose first actions."""
        if not rows:
            return
        for row in rows:
            if learn:
                epsilons[row] = self.spec.epsilon(float(self.buffers["episodes"][row]))
                seed = int(self.rngs[row].integers(2**31))
            else:
                seed = EVALUATION_SEED + int(played[row])
            states[row], _ = self.envs[row].reset(seed=seed)
        greedy = self.q_values(states).sum(1).argmax(-1)
        for row in rows:
            actions[row] = self._explore(row, int(greedy[row]), epsilons[row]) if learn else greedy[row]

    def _explore(self, row: int, greedy: int, epsilon: float) -> int:
        """Epsilon-greedy from member ``row``'s own random stream."""
        rng = self.rngs[row]
        if rng.random() < epsilon:
            return int(rng.integers(self.layout.actions))
        return greedy

    # --- what the executor calls -----------------------------------------------------------
    def train_step(self, batches: Any = None, active: Sequence[int] | None = None) -> None:
        """One round of training episodes for every member (or only the ``active`` rows)."""
        self.play(range(self.size) if active is None else active, self.spec.episodes, learn=True)

    def evaluate(self) -> list[dict[str, float]]:
        """Each member's mean return over the greedy evaluation episodes, and its epsilon."""
        returns = self.play(range(self.size), self.spec.evaluations, learn=False)
        return [
            {"return": float(returns[row].mean()), "epsilon": self.spec.epsilon(float(self.buffers["episodes"][row]))}
            for row in range(self.size)
        ]


class SarsaExecutor(VectorizedExecutor):
    """The vectorized executor, its population playing episodes (``SarsaPopulation``)."""

    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.env_steps = 0

    def _build(
        self, scheduler: Scheduler, spec: VectorizedTrainable, members: list[Any], device: torch.device, batches: Any
    ) -> Population:
        if not isinstance(spec, SarsaTrainable):
            raise ConfigError(f"SarsaExecutor trains a SarsaTrainable, got {type(spec).__name__}")
        population = super()._build(scheduler, spec, members, device, batches)
        self.population = SarsaPopulation.adopt(population, [member_seed(scheduler.run.seed, m.slot) for m in members])
        return self.population


class SarsaMember(Trainable):
    """One member of a ``SarsaTrainable`` trained alone: the same code, a population of one."""

    def __init__(self, spec: SarsaTrainable) -> None:
        self.spec = spec

    def setup(self, hparams: HParams, context: TrainContext) -> None:
        plan = MemoryPlan(0, 0, 0, 1, 1)
        device = torch.device("cpu")
        self.population = SarsaPopulation(
            self.spec, [context.slot], [context.seed], [hparams], device, plan, context.run_seed
        )
        self.steps = context.start_step

    def step(self) -> None:
        self.population.train_step()
        self.steps += 1

    def evaluate(self) -> dict[str, float]:
        return self.population.evaluate()[0]

    def state_dict(self) -> dict[str, Any]:
        return self.population.member_state(0, self.steps)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.population.load_member(0, state)

    def set_hparams(self, hparams: HParams) -> None:
        self.population.set_hparams(0, hparams)


# --- the comparison -----------------------------------------------------------------------------


def quick_scale() -> SarsaTrainable:
    """A few seconds on CartPole: what the tests run."""
    return SarsaTrainable("CartPole-v1", rounds=3, episodes=5, evaluations=2, max_steps=100, hidden=16)


def experiment() -> dict[str, Any]:
    """One PBT run at the seed's scale (``poptrain run experiments.rl_vector``); the command line
    names executors, so each member trains alone there (a population of one, the same code)."""
    spec = SarsaTrainable()  # the seed's scale
    return {
        "trainable": spec,
        "space": SPACE,
        "population_size": 8,
        "steps": spec.rounds,
        "metric": "return",
        "ready": poptrain.every(1),
        **VARIANTS["pbt"],
    }


def train_arm(make: Callable[[], SarsaTrainable], name: str, seed: int, population: int, root: str) -> dict[str, float]:
    """One run of strategy ``name`` (a key of ``VARIANTS``): its best and mean final return."""
    torch.set_num_threads(1)
    spec = make()
    started, cpu = time.perf_counter(), time.process_time()
    run = poptrain.create_run(
        name=f"{slug(name)}-seed{seed}",
        seed=seed,
        root=root,
        space=SPACE,
        population_size=population,
        metric="return",
        ready=poptrain.every(1),
        **VARIANTS[name],
    )
    executor = SarsaExecutor()
    run.optimize(spec, steps=spec.rounds, executor=executor)
    finals = [s.value for s in run.scores() if s.step == spec.rounds]
    run.close()
    seconds = time.perf_counter() - started
    steps = executor.population.env_steps
    print(
        f"{name}, seed {seed}: best final return {max(finals):.1f}, population mean {np.mean(finals):.1f}, "
        f"{seconds:.0f} s ({time.process_time() - cpu:.0f} s CPU), {steps:,} env steps, {steps / seconds:,.0f}/s",
        flush=True,
    )
    return {
        "seed": seed,
        "best": max(finals),
        "mean": float(np.mean(finals)),
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "env_steps": steps,
        "steps_per_second": steps / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    arguments = parser(
        "Deep Double SARSA at the seed's scale: PBT against no PBT",
        seeds=5,
        quick="CartPole, population 4, 3 tiny rounds, 1 seed",
        root="runs/rl_vector",
    )
    arguments.add_argument("--jobs", type=int, default=2, help="runs trained at once, one process each (default 2)")
    arguments.add_argument("--env", default="LunarLander-v3", help="the gymnasium environment (default LunarLander-v3)")
    arguments.add_argument("--max-steps", type=int, default=None, help="cut episodes at this many steps")
    args = arguments.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        raise ConfigError(f"--seeds and --jobs must be >= 1, got {args.seeds} and {args.jobs}")
    make: Callable[[], SarsaTrainable]
    if args.quick:
        make, population, seeds, jobs = quick_scale, 4, 1, 1
    else:
        make = partial(SarsaTrainable, args.env, max_steps=args.max_steps)
        population, seeds, jobs = 8, args.seeds, args.jobs
    spec = make()  # a bad environment fails here, before anything is written
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    tasks = [(name, seed) for seed in range(seeds) for name in VARIANTS]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        train = partial(train_arm, make, population=population, root=scratch)
        if jobs == 1:
            finished = [train(name, seed) for name, seed in tasks]
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                finished = list(pool.map(train, *zip(*tasks)))
    wall = time.perf_counter() - started
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for (name, _), result in zip(tasks, finished):
        results[name].append(result)
    cap = f"each cut at {spec.max_steps} steps" if spec.max_steps else "the environment's own step limit"
    text = save_table(
        root,
        f"Deep Double SARSA on {spec.env_name}, vectorized: population {population}, {spec.rounds} rounds of "
        f"{spec.episodes} training and {spec.evaluations} evaluation episodes ({cap}), {seeds} seed(s) "
        "(median [min-max] of the final evaluation return)",
        ["best member", "population mean"],
        results,
        [("best", 1), ("mean", 1)],
    )
    names = list(VARIANTS)
    pairs = list(zip(results[names[0]], results[names[1]]))
    wins = sum(round(a["best"], 1) > round(b["best"], 1) for a, b in pairs)
    ties = sum(round(a["best"], 1) == round(b["best"], 1) for a, b in pairs)
    runs = [r for rows in results.values() for r in rows]
    summary = (
        f"\n{names[0]} against {names[1]}, best member per seed: {wins} wins, {ties} ties, "
        f"{len(pairs) - wins - ties} losses\n"
        f"wall time {wall / 60:.1f} min for {len(tasks)} runs, {jobs} at a time; the runs' CPU time "
        f"{sum(r['cpu_seconds'] for r in runs) / 60:.1f} min; environment steps per run "
        f"{median_range([r['env_steps'] for r in runs], 0)}, per second of CPU "
        f"{median_range([r['env_steps'] / r['cpu_seconds'] for r in runs], 0)}"
    )
    print(summary)
    (root / "table.md").write_text(text + "\n" + summary + "\n")
    return 0


if __name__ == "__main__":
    from experiments.harness import run_cli

    run_cli(main)
