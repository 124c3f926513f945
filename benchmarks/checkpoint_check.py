"""The cost of checking, at every save, that a member's state can be loaded back safely.

`serialize` walks the state (``check_loadable``) before ``torch.save``, so that a state holding
a numpy array stops the run at its first checkpoint instead of failing at the first exploit.
This times ``serialize`` against ``torch.save`` alone, interleaved in one process, on realistic
states: an MLP's weights plus its Adam state after one step (the README Quickstart's pattern)
and torch's RNG state.

    .venv/bin/python -m benchmarks.checkpoint_check [--repeats 7]
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Callable
from typing import Any

import torch
from experiments.harness import parser, seconds_per_call

from poptrain.checkpoints import check_loadable, serialize


def state(layers: int, width: int) -> dict[str, Any]:
    """An MLP with LayerNorms, its Adam state after one step, and the RNG state."""
    blocks: list[torch.nn.Module] = []
    for _ in range(layers):
        blocks += [torch.nn.Linear(width, width), torch.nn.LayerNorm(width), torch.nn.ReLU()]
    model = torch.nn.Sequential(*blocks)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(8, width)).sum().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}


def save(s: Any) -> None:
    torch.save(s, io.BytesIO())


def timed(fn: Callable[[Any], Any], s: Any, rounds: int) -> float:
    """Seconds one ``fn(s)`` takes, the mean of ``rounds``."""
    return seconds_per_call(lambda: fn(s), rounds)


def main() -> None:
    args_parser = parser(__doc__.splitlines()[0])
    args_parser.add_argument("--repeats", type=int, default=7)
    args = args_parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"{'state':<28} {'tensors':>7} {'MB':>6} {'torch.save':>11} {'check':>9} {'check share':>11} {'serialize':>10} {'ratio':>6}"
    )
    for label, layers, width in (
        ("small MLP (16 x 128)", 16, 128),
        ("wide MLP (33 x 256)", 33, 256),
        ("large MLP (33 x 512)", 33, 512),
    ):
        s = state(layers, width)
        tensors = sum(1 for _ in s["model"].values()) + sum(len(v) for v in s["optimizer"]["state"].values()) + 1
        size = len(serialize(s)) / 2**20
        rounds = max(3, int(0.2 / max(1e-4, timed(save, s, 1))))
        plain, check, full = [], [], []
        for _ in range(args.repeats):  # interleaved, so the machine's drift hits all three alike
            plain.append(timed(save, s, rounds))
            check.append(timed(check_loadable, s, rounds))
            full.append(timed(serialize, s, rounds))
        p, c, f = (statistics.median(x) for x in (plain, check, full))
        print(
            f"{label:<28} {tensors:>7} {size:>6.1f} {p * 1e3:>9.2f}ms {c * 1e6:>7.0f}µs {c / p:>10.2%} {f * 1e3:>8.2f}ms "
            f"{f / p:>6.3f}"
        )
    print("check share: the walk's time against torch.save's; ratio: serialize (walk + torch.save + copy out of the")
    print("buffer) against torch.save alone; medians of interleaved repeats")


if __name__ == "__main__":
    main()
