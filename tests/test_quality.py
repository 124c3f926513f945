"""The quality suite (benchmarks/quality.py): its statistics on hand-made input, its tasks'
disjoint splits, a quick run with its cache, and its refusal of unknown names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmarks import quality
from experiments.quality import TASKS
from experiments.quality.task import SELECTION, TEST
from experiments.quality.toys import deceptive_reference, toy_scorer, zoo_schedule_q

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def test_paired_counts_and_wilcoxon_on_a_hand_made_input() -> None:
    assert quality.paired_counts([3.0, 2.0, 1.0, 5.0], [1.0, 2.0, 4.0, 5.0]) == (1, 2, 1)
    # five positive differences of distinct sizes: the exact one-sided p is 1 / 2**5
    assert quality.wilcoxon_greater([2, 3, 4, 5, 6], [1, 1, 1, 1, 1]) == pytest.approx(1 / 32)
    assert quality.wilcoxon_greater([1, 1, 1, 1, 1], [2, 3, 4, 5, 6]) == pytest.approx(1.0)
    # ties are dropped before ranking; no difference at all is no evidence
    assert quality.wilcoxon_greater([2, 3, 4, 5, 6, 7], [1, 1, 1, 1, 1, 7]) == pytest.approx(1 / 32)
    assert quality.wilcoxon_greater([1.0, 2.0], [1.0, 2.0]) == 1.0


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_scores_on_splits_no_decision_reads(name: str) -> None:
    splits = TASKS[name](True).splits
    assert {"validation", SELECTION, TEST} <= set(splits)
    names = list(splits)
    for i, first in enumerate(names):
        assert splits[first], f"{name}: split {first} is empty"
        for second in names[i + 1 :]:
            assert not splits[first] & splits[second], f"{name}: {first} and {second} share ids"


def test_toy_held_out_is_the_noise_free_objective_and_ranking_is_noisy() -> None:
    task = TASKS["toy_plain"](True)
    member = task.trainable()
    member.setup({"h": 0.5}, _context())
    member.step()
    ranked = [member.evaluate()["Q"] for _ in range(3)]
    assert toy_scorer(member, TEST) == pytest.approx(1.2 - member.theta**2)
    assert all(r != toy_scorer(member, TEST) for r in ranked) and len(set(ranked)) == 3
    assert toy_scorer(member, SELECTION) == toy_scorer(member, SELECTION)  # the same model, the same draws


def test_toy_deceptive_punishes_the_greedy_schedule() -> None:
    reference = deceptive_reference()
    assert reference["optimum"] >= reference["linear"] > reference["fixed_1"] > reference["greedy"]
    # without the penalty (ToyPlain) greedy is right
    assert zoo_schedule_q([1e-4] * 50, deceptive=False) > zoo_schedule_q([1.0] * 50, deceptive=False)
    assert TASKS["toy_deceptive"](True).optimum == pytest.approx(reference["optimum"] - 0.01)


def test_quick_run_writes_a_row_per_strategy_and_resumes_from_its_cache(tmp_path: Path, capsys) -> None:
    doc = tmp_path / "quality.md"
    doc.write_text(f"# prose kept\n\n{quality.START}\nold\n{quality.END}\n\nmore prose\n")
    args = ["--quick", "--root", str(tmp_path / "results"), "--doc", str(doc), "--tasks", "toy,toy_deceptive"]
    assert quality.main(args) == 0
    cached = sorted((tmp_path / "results" / "quick").glob("*/*/seed*.json"))
    pairs = [(t, s) for t in ("toy", "toy_deceptive") for s in quality.STRATEGIES]
    taken = sum(quality.STRATEGIES[s](TASKS[t](True)) is not None for t, s in pairs)
    assert len(cached) == taken * 2  # (task, strategy) pairs x seeds; MF-PBT needs more than 2 members
    text = doc.read_text()
    assert text.startswith("# prose kept") and text.rstrip().endswith("more prose") and "old" not in text
    for strategy in quality.STRATEGIES:
        for rule in quality.RULES:
            assert f"| {strategy} | {rule} |" in text
    assert "| best untouched member | oracle (test) |" in text
    assert "reached optimum" in text  # ToyDeceptive's column
    assert doc.with_suffix(".png").exists()
    record = json.loads(cached[0].read_text())
    assert set(record["scores"]) == set(quality.RULES)

    stamps = {p: p.stat().st_mtime_ns for p in cached}
    capsys.readouterr()
    assert quality.main(args) == 0  # everything cached: nothing trains again
    assert "seed 0:" not in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps


def test_unknown_task_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.quality", "--quick", "--tasks", "toy,nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: unknown task nope; choose from {', '.join(TASKS)}"]


def _context():
    import poptrain

    return poptrain.TrainContext("t", 0, 0)
