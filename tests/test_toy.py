"""The toy example of Jaderberg et al. (2017), Figure 2, end to end through the sequential executor."""

from __future__ import annotations

import statistics

import pytest

from pbt_helpers import lineage_signature
from poptrain.experiments.toy import STEPS, VARIANTS, best_q, run_variant

SEEDS = range(8)


@pytest.fixture(scope="module")
def medians():
    return {
        variant: statistics.median(best_q(run_variant(variant, seed=seed)) for seed in SEEDS) for variant in VARIANTS
    }


def test_pbt_gets_close_to_the_optimum(medians):
    assert medians["pbt"] >= 1.19


def test_grid_search_is_stuck(medians):
    # fixed h = (1, 0) or (0, 1) can only bring one coordinate down: 1.2 - 0.9² = 0.39
    assert medians["grid"] == pytest.approx(0.39, abs=1e-3)


@pytest.mark.parametrize("variant", ["explore-only", "exploit-only"])
def test_half_of_pbt_is_in_between(medians, variant):
    assert medians["grid"] < medians[variant] < medians["pbt"]


def test_sequential_executor_is_deterministic():
    first, again = (lineage_signature(run_variant("pbt", seed=3)) for _ in range(2))
    assert first == again
    lineage, scores = first
    assert len(scores) == 2 * STEPS
    assert any(kind == "exploit" for _, _, _, kind, *_ in lineage)
    assert lineage_signature(run_variant("pbt", seed=4)) != first


def test_sqlite_storage_gives_the_same_lineage(tmp_path):
    in_memory = run_variant("pbt", seed=5)
    on_disk = run_variant("pbt", seed=5, storage=f"sqlite:///{tmp_path}/toy.db", root=str(tmp_path), name="toy-sqlite")
    assert lineage_signature(on_disk) == lineage_signature(in_memory)
    assert on_disk.best().score == in_memory.best().score
    assert on_disk.best().schedule == in_memory.best().schedule
    assert any((tmp_path / "toy-sqlite" / "checkpoints").rglob("*.pt"))
