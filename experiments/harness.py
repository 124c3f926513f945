"""What the experiments and benchmarks share: the argument parser, the thread setting, the clock,
a median [min-max] cell and the saved table."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn


def median_range(values: Sequence[float], digits: int, *, scale: float = 1.0, suffix: str = "") -> str:
    """``median [min-max]`` of ``values`` (times ``scale``) with ``digits`` decimals."""
    scaled = [scale * v for v in values]
    return f"{statistics.median(scaled):.{digits}f}{suffix} [{min(scaled):.{digits}f}-{max(scaled):.{digits}f}]"


def save_table(
    root: Path,
    title: str,
    header: Sequence[str],
    results: Mapping[str, list[dict[str, Any]]],
    columns: Sequence[tuple[str, int]],
    **cell: Any,
) -> str:
    """A markdown table, one row per strategy: each column's median [min-max] over the seeds,
    then the median seconds per run; printed and saved with the raw results (``table.md``,
    ``results.json``)."""
    table = markdown_table(
        ["strategy", *header, "seconds per run"],
        (
            [name]
            + [median_range([r[key] for r in rows], digits, **cell) for key, digits in columns]
            + [f"{statistics.median(r['seconds'] for r in rows):.0f}"]
            for name, rows in results.items()
        ),
    )
    text = f"{title}\n\n{table}"
    print(text)
    (root / "table.md").write_text(text + "\n")
    (root / "results.json").write_text(json.dumps(results, indent=2))
    return text


def slug(name: str) -> str:
    """A strategy's name as a run or folder name (``"no exploit/explore"`` -> ``"no-exploit-explore"``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def variant_runs(
    variants: Mapping[str, Mapping[str, Any]], seeds: int, root: str | Path, **settings: Any
) -> Iterator[tuple[int, str, Any, float]]:
    """For every seed and every strategy, a fresh run named ``<strategy>-seed<N>`` under ``root``
    (``settings``: the rest of ``create_run``'s arguments), with the time it was started."""
    import poptrain

    for seed in range(seeds):
        for name, strategy in variants.items():
            started = time.perf_counter()
            run = poptrain.create_run(name=f"{slug(name)}-seed{seed}", seed=seed, root=root, **settings, **strategy)
            yield seed, name, run, started


def run_cli(main: Callable[[], int]) -> NoReturn:
    """``python -m poptrain.experiments.X``: bad input is one line on stderr and exit status 2."""
    from poptrain.errors import PoptrainError

    try:
        code = main()
    except PoptrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


# --- one harness for experiments/ and benchmarks/: the parser, the threads, the clock -----------
def parser(
    description: str,
    *,
    seeds: int | None = None,
    quick: str | None = None,
    root: str | None = None,
    out: str | Path | None = None,
    threads: bool = False,
) -> argparse.ArgumentParser:
    """An argument parser with the flags the experiments and benchmarks share, each added when
    asked for: ``--seeds N`` (default ``seeds``), ``--quick`` (``quick``: what it shrinks to),
    ``--root DIR`` (default ``root``: where runs and tables go), ``--out FILE`` (default ``out``:
    where the JSON result goes) and ``--threads N`` (PyTorch's intra-op threads; see
    ``set_threads``)."""
    made = argparse.ArgumentParser(description=description)
    if seeds is not None:
        made.add_argument("--seeds", type=int, default=seeds, help=f"seeds per strategy (default {seeds})")
    if quick is not None:
        made.add_argument("--quick", action="store_true", help=quick)
    if root is not None:
        made.add_argument("--root", default=root, help=f"where runs, tables and plots go (default {root})")
    if out is not None:
        made.add_argument("--out", type=Path, default=Path(out), help=f"where to write the JSON (default {out})")
    if threads:
        made.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: PyTorch's own)")
    return made


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given (``--threads``); nothing otherwise."""
    if threads is not None:
        if threads < 1:
            raise SystemExit(f"error: --threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


class Timer:
    """What ``timed()`` measured: ``seconds`` of wall time (set when the block ends)."""

    seconds: float = float("nan")


@contextmanager
def timed() -> Iterator[Timer]:
    """``with timed() as clock: ...`` then ``clock.seconds`` is the block's wall time."""
    clock = Timer()
    started = time.perf_counter()
    try:
        yield clock
    finally:
        clock.seconds = time.perf_counter() - started


def seconds_per_call(fn: Callable[[], Any], calls: int = 1) -> float:
    """Mean wall seconds of ``calls`` calls of ``fn`` (one timing over all of them)."""
    with timed() as clock:
        for _ in range(calls):
            fn()
    return clock.seconds / calls


def median_of_repeats(fn: Callable[[], float], repeats: int) -> tuple[float, list[float]]:
    """``fn`` (which returns a measurement, e.g. seconds) ``repeats`` times: the median and every value."""
    values = [fn() for _ in range(repeats)]
    return statistics.median(values), values


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table: ``header`` then one line per row (cells as given, ``str``-ed)."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
