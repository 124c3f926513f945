"""What the comparison experiments share: a median [min-max] cell and the saved table."""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    lines = [
        title,
        "",
        "| " + " | ".join(["strategy", *header, "seconds per run"]) + " |",
        "|---" * (len(header) + 2) + "|",
    ]
    for name, rows in results.items():
        cells = [median_range([r[key] for r in rows], digits, **cell) for key, digits in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {statistics.median(r['seconds'] for r in rows):.0f} |")
    text = "\n".join(lines)
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
