"""Does PBT beat random search? Tasks x strategies x seeds at equal compute, scored on held-out data.

    .venv/bin/python -m benchmarks.quality                        # every task, 10 seeds (resumes)
    .venv/bin/python -m benchmarks.quality --tasks toy,toy_deceptive --seeds 10
    .venv/bin/python -m benchmarks.quality --quick                # 2 seeds, tiny scales (seconds)
    .venv/bin/python -m benchmarks.quality --report-only          # rebuild the report from the cache

Every strategy of a task trains the same population for the same steps (the same compute); the
same seed gives every strategy the same initial population. Three selection rules pick the final
model from each run: ``last`` (``run.best()``, the best-scored checkpoint), ``window``
(``run.best(window=3)``) and ``selection`` (``run.best(select=...)``: the top candidates re-scored
on a selection split training never ranks on). The chosen model is scored on the task's test
split, which no decision saw. Each (task, strategy, seed) result is cached as JSON under
``--root``; the report (``docs/quality.md`` between its markers, and ``docs/quality.png``) is
rebuilt from every cached result, so the suite can be run task by task and resumed.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.harness import markdown_table, median_range, parser, set_threads, slug, timed
from experiments.quality import TASKS, Task
from experiments.quality.task import SELECTION, TEST

import poptrain

ROOT = Path("benchmarks/results/quality")
DOC = Path("docs/quality.md")
PLOT = Path("docs/quality.png")
START, END = "<!-- quality:tables:start -->", "<!-- quality:tables:end -->"
QUICK_TASKS = ["toy", "toy_deceptive"]
BASELINE = "random search"
CANDIDATES = 5  # models the selection rule re-scores
WINDOW = 3
TIE = 1e-9  # held-out scores closer than this are a tie

# --- the strategies: a name and the create_run arguments it adds for a task (None: not for it) --
StrategyFn = Callable[[Task], dict[str, Any] | None]


def mf_pbt(task: Task) -> dict[str, Any] | None:
    """MF-PBT with the task's ready interval as base: factors 1, 2, 4, 8 while a group still has a
    ready point in the run and at least 3 members (the truncation and migration need them)."""
    factors = [f for f in (1, 2, 4, 8) if task.ready * f <= task.steps]
    factors = factors[: max(0, task.population // 3)]
    if len(factors) < 2:
        return None
    return {**poptrain.mfpbt(base=task.ready, factors=factors), "explore": task.explore}


STRATEGIES: dict[str, StrategyFn] = {
    BASELINE: lambda task: {"exploit": None, "explore": None, "replace_failed": False},
    "truncation": lambda task: {"exploit": poptrain.Strategy().exploit, "explore": task.explore},
    "tournament": lambda task: {"exploit": poptrain.tournament(), "explore": task.explore},
    "truncation + min_gap": lambda task: {
        "exploit": poptrain.truncation(0.2, min_gap=task.noise),
        "explore": task.explore,
    },
    "t-test": lambda task: {"exploit": poptrain.ttest(window=min(10, max(2, 2 * task.ready))), "explore": task.explore},
    "MF-PBT": mf_pbt,
}

# --- the selection rules: each re-scores what one run produced --------------------------------
RULES = ["last", "window", "selection"]


def chosen_scores(run: poptrain.Run, task: Task) -> dict[str, float]:
    """The held-out (test) score of the model each selection rule picks from ``run``."""

    def test_score(**rule: Any) -> float:
        return task.score(run.load_best(task.trainable, **rule), TEST)

    return {
        "last": test_score(),
        "window": test_score(window=WINDOW),
        "selection": test_score(select=lambda t: task.score(t, SELECTION), candidates=CANDIDATES),
    }


def best_untouched(run: poptrain.Run, task: Task) -> float:
    """Random search's oracle: the best test score among its final members (none was ever
    touched by exploit or explore), chosen on the test split itself."""
    best = run.best(
        final=True, select=lambda t: task.score(t, TEST), candidates=task.population, trainable=task.trainable
    )
    return float("nan") if best is None or best.selection_score is None else float(best.selection_score)


def run_one(task: Task, strategy: str, seed: int, scratch: Path) -> dict[str, Any]:
    """Train one run of ``strategy`` on ``task`` with ``seed`` and score every selection rule."""
    recipe = STRATEGIES[strategy](task)
    assert recipe is not None  # run_suite skips the strategies a task cannot take
    settings = {**task.settings(seed), **recipe}  # a strategy may bring its own ready (MF-PBT)
    run = poptrain.create_run(
        name=f"{task.name}-{slug(strategy)}-seed{seed}", storage="memory", root=scratch, **settings
    )
    with timed() as clock:
        run.optimize(task.trainable, steps=task.steps, executor=task.executor, keep_best=CANDIDATES)
    with timed() as scoring:
        scores = chosen_scores(run, task)
        oracle = best_untouched(run, task) if strategy == BASELINE else None
    best = run.best()
    exploits = sum(1 for g in run.lineage() if g.kind == "exploit")
    run.close()
    return {
        "task": task.name,
        "strategy": strategy,
        "seed": seed,
        "scores": scores,
        "oracle": oracle,
        "ranking_score": best.score if best else None,
        "exploits": exploits,
        "seconds": clock.seconds,
        "scoring_seconds": scoring.seconds,
        "scale": task.scale,
    }


def cache_path(root: Path, task: str, strategy: str, seed: int) -> Path:
    return root / task / slug(strategy) / f"seed{seed}.json"


def run_suite(tasks: Sequence[str], strategies: Sequence[str], seeds: int, root: Path, *, quick: bool) -> int:
    """Every missing (task, strategy, seed) result, cached as it finishes; how many were run."""
    done = 0
    with tempfile.TemporaryDirectory() as scratch:
        for name in tasks:
            task = TASKS[name](quick)
            for seed in range(seeds):
                for strategy in strategies:
                    path = cache_path(root, name, strategy, seed)
                    if path.exists() or STRATEGIES[strategy](task) is None:
                        continue
                    result = run_one(task, strategy, seed, Path(scratch))
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(result, indent=2) + "\n")
                    done += 1
                    print(
                        f"{name:14s} {strategy:22s} seed {seed}: last {result['scores']['last']:.4g}, "
                        f"selection {result['scores']['selection']:.4g} ({result['seconds']:.1f} s)",
                        flush=True,
                    )
    return done


def load_results(root: Path) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """Every cached result: ``[task][strategy][seed]``."""
    results: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for path in sorted(root.glob("*/*/seed*.json")):
        record = json.loads(path.read_text())
        results.setdefault(record["task"], {}).setdefault(record["strategy"], {})[record["seed"]] = record
    return results


# --- statistics ---------------------------------------------------------------------------
def paired_counts(scores: Sequence[float], baseline: Sequence[float], tie: float = TIE) -> tuple[int, int, int]:
    """Wins, ties and losses of ``scores`` against ``baseline``, seed by seed."""
    wins = sum(1 for a, b in zip(scores, baseline) if a > b + tie)
    losses = sum(1 for a, b in zip(scores, baseline) if a < b - tie)
    return wins, len(scores) - wins - losses, losses


def wilcoxon_greater(scores: Sequence[float], baseline: Sequence[float], tie: float = TIE) -> float:
    """One-sided Wilcoxon signed-rank p-value that ``scores`` beat ``baseline`` (paired by seed):
    ties are dropped (Wilcoxon's rule); with no differences left, 1.0 (no evidence)."""
    from scipy.stats import wilcoxon

    differences = [a - b for a, b in zip(scores, baseline) if abs(a - b) > tie]
    if not differences:
        return 1.0
    return float(wilcoxon(differences, alternative="greater").pvalue)


# --- the report ---------------------------------------------------------------------------
def _cell(values: Sequence[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "-"
    spread = max(abs(v) for v in finite) or 1.0
    digits = max(0, min(4, 3 - math.floor(math.log10(spread))))
    return median_range(finite, digits)


def task_table(task: str, by_strategy: Mapping[str, Mapping[int, dict[str, Any]]], optimum: float | None) -> str:
    """One task's table: per strategy and selection rule, the held-out score over the seeds and
    the paired comparison with random search (same seeds, same rule)."""
    base = by_strategy.get(BASELINE, {})
    header = ["strategy", "rule", "held-out median [min-max]", "W/T/L vs random search", "Wilcoxon p (greater)"]
    if optimum is not None:
        header.append(f"reached optimum (>= {optimum:.4f})")
    header.append("seconds per run")
    rows = []
    for strategy in [s for s in STRATEGIES if s in by_strategy] + [s for s in by_strategy if s not in STRATEGIES]:
        records = by_strategy[strategy]
        seeds = sorted(records)
        seconds = statistics.median(records[s]["seconds"] for s in seeds)
        for rule in RULES:
            values = [records[s]["scores"][rule] for s in seeds]
            paired = [s for s in seeds if s in base]
            if strategy == BASELINE or not paired:
                versus, p = "-", "-"
            else:
                mine = [records[s]["scores"][rule] for s in paired]
                theirs = [base[s]["scores"][rule] for s in paired]
                versus = "{}/{}/{}".format(*paired_counts(mine, theirs))
                p = f"{wilcoxon_greater(mine, theirs):.3f}"
            row = [strategy, rule, _cell(values), versus, p]
            if optimum is not None:
                row.append(f"{sum(v >= optimum for v in values)}/{len(values)}")
            row.append(f"{seconds:.1f}")
            rows.append(row)
    if base:
        oracle = [r["oracle"] for r in base.values() if r.get("oracle") is not None]
        row = ["best untouched member", "oracle (test)", _cell(oracle), "-", "-"]
        if optimum is not None:
            row.append(f"{sum(v >= optimum for v in oracle)}/{len(oracle)}")
        rows.append(row + ["-"])
    counts = sorted({len(r) for r in by_strategy.values()})
    return f"### {task} ({'/'.join(map(str, counts))} seeds)\n\n" + markdown_table(header, rows)


def report(results: Mapping[str, Mapping[str, Mapping[int, dict[str, Any]]]], *, quick: bool) -> str:
    """The tables of every task with results, in the suite's task order."""
    parts = []
    for name in [t for t in TASKS if t in results]:
        task = TASKS[name](quick)
        scale = next(iter(next(iter(results[name].values())).values()))["scale"]
        parts.append(
            task_table(name, results[name], task.optimum)
            + f"\n\nScale: {scale}. Held-out: {task.held_out}. `truncation + min_gap`: min_gap = {task.noise:.3g}."
        )
    return "\n\n".join(parts)


def plot(results: Mapping[str, Mapping[str, Mapping[int, dict[str, Any]]]], path: Path, rule: str = "last") -> None:
    """Held-out score minus random search's (same seed, ``rule``), per task and strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [t for t in TASKS if t in results and BASELINE in results[t]]
    if not names:
        return
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        base = results[name][BASELINE]
        others = [s for s in results[name] if s != BASELINE]
        data = []
        for strategy in others:
            records = results[name][strategy]
            data.append([records[s]["scores"][rule] - base[s]["scores"][rule] for s in sorted(records) if s in base])
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.boxplot(data, showfliers=False)
        for i, values in enumerate(data, start=1):
            axis.plot([i] * len(values), values, "o", alpha=0.5, markersize=3)
        axis.set_xticks(range(1, len(others) + 1), [s.replace(" + ", "\n+ ") for s in others], fontsize=7)
        axis.set_title(name, fontsize=9)
        axis.tick_params(axis="y", labelsize=7)
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    figure.suptitle(f"held-out score minus random search's, same seed (rule: {rule}); above 0: better", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_doc(doc: Path, tables: str) -> None:
    """Replace the text between the markers of ``doc`` with ``tables`` (the prose is kept)."""
    text = doc.read_text() if doc.exists() else f"# Quality suite\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{tables}\n{END}{tail}")


def pick(given: str | None, known: Sequence[str], default: Sequence[str], what: str) -> list[str]:
    """The names in a comma-separated ``given`` (or ``default``); an unknown one is one line on stderr and exit 2."""
    names = [n.strip() for n in given.split(",") if n.strip()] if given else list(default)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        print(
            f"error: unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return names


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(
        "PBT strategies against random search at equal compute, scored on held-out data",
        seeds=10,
        quick="2 seeds, tiny scales, toy and toy_deceptive unless --tasks (seconds)",
        root=str(ROOT),
        threads=True,
    )
    args_parser.add_argument("--tasks", help=f"comma-separated, from: {', '.join(TASKS)} (default: all)")
    args_parser.add_argument("--strategies", help="comma-separated (default: all); random search is always run")
    args_parser.add_argument(
        "--doc", type=Path, help=f"the markdown to update (default {DOC}; --quick: ROOT/quality.md)"
    )
    args_parser.add_argument(
        "--report-only", action="store_true", help="rebuild the report from the cache, run nothing"
    )
    args = args_parser.parse_args(argv)
    set_threads(args.threads if args.threads is not None else 1)
    tasks = pick(args.tasks, list(TASKS), QUICK_TASKS if args.quick else list(TASKS), "task")
    strategies = pick(args.strategies, list(STRATEGIES), list(STRATEGIES), "strategy")
    if BASELINE not in strategies:
        strategies.insert(0, BASELINE)
    seeds = 2 if args.quick else args.seeds
    if seeds < 1:
        print(f"error: --seeds must be >= 1, got {seeds}", file=sys.stderr)
        return 2
    root = Path(args.root) / ("quick" if args.quick else "full")
    if not args.report_only:
        run_suite(tasks, strategies, seeds, root, quick=args.quick)
    results = load_results(root)
    tables = report(results, quick=args.quick)
    doc = args.doc or (root / "quality.md" if args.quick else DOC)
    doc.parent.mkdir(parents=True, exist_ok=True)
    write_doc(doc, tables)
    plot(results, doc.with_suffix(".png") if args.doc or args.quick else PLOT)
    print(tables)
    return 0


if __name__ == "__main__":
    from experiments.harness import run_cli

    run_cli(main)
