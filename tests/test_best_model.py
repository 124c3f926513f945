"""The best-ever model is kept and handed over: run.best() names it (not the best of the final
population), collection never deletes it, load_best() gives it back live in one call, and
`poptrain export --best-model` writes it out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import poptrain


class Overfits(poptrain.Trainable):
    """Its validation score peaks at step 6, then falls: the best model is a mid-run one."""

    def setup(self, hparams, context):
        self.steps = 0
        self.w = torch.zeros(2)
        self.rate = hparams["rate"]

    def step(self):
        self.steps += 1
        self.w += self.rate

    def evaluate(self):
        return {"val": -((self.steps - 6) ** 2) + self.rate}

    def state_dict(self):
        return {"steps": self.steps, "w": self.w.clone()}

    def load_state_dict(self, state):
        self.steps, self.w = int(state["steps"]), state["w"].clone()

    def set_hparams(self, hparams):
        self.rate = hparams["rate"]


class Seen(poptrain.ProgressListener):
    def __init__(self) -> None:
        self.saved: list[float] = []

    def on_checkpoint(self, slot: int, step: int, value: float) -> None:
        self.saved.append(value)


def trained(tmp_path: Path) -> tuple[poptrain.Run, Seen]:
    run = poptrain.create_run(
        name="overfit",
        space={"rate": poptrain.Float(0.1, 0.9)},
        population_size=3,
        metric="val",
        root=tmp_path,
        ready=poptrain.every(2),
        exploit=None,
        explore=None,
        seed=1,
    )
    seen = Seen()
    run.optimize(Overfits, steps=16, keep_checkpoints=1, progress=seen)
    return run, seen


def test_the_best_ever_model_is_the_mid_run_one_and_is_kept(tmp_path: Path) -> None:
    run, seen = trained(tmp_path)
    best = run.best()
    assert best is not None and best.step == 6 and best.checkpoint is not None
    assert best.score == pytest.approx(max(m.hparams["rate"] for m in run.members()))
    assert best.score == max(seen.saved)  # the progress line's "best so far" names the same model
    final = run.best(final=True)
    assert final is not None and final.step == 16 and final.score < best.score
    assert not best.checkpoint.deleted and (tmp_path / "overfit" / "checkpoints" / best.checkpoint.uri).is_file()
    assert best.schedule[-1].end_step == 6
    live = run.load_best(Overfits)
    assert live.evaluate()["val"] == pytest.approx(best.score)
    assert live.steps == 6 and live.rate == best.hparams["rate"]


def test_export_writes_the_best_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from poptrain.cli.main import main

    trained(tmp_path)
    target = tmp_path / "best.pt"
    assert main(["export", "overfit", "--root", str(tmp_path), "--best-model", str(target)]) == 0
    assert "member" in capsys.readouterr().err
    state = torch.load(target, weights_only=True)
    assert state["steps"] == 6
    assert main(["export", "overfit", "--root", str(tmp_path), "--best-model", str(target), "--format", "csv"]) == 2
    assert "goes alone" in capsys.readouterr().err


def test_load_best_without_a_checkpoint_says_so(tmp_path: Path) -> None:
    run = poptrain.create_run(name="fresh", space={"rate": poptrain.Float(0.1, 0.9)}, population_size=2, root=tmp_path)
    with pytest.raises(poptrain.ConfigError, match="no checkpoint yet"):
        run.load_best(Overfits)


class Lucky(Overfits):
    """``rate`` < 0.5: one lucky evaluation (10 at step 4, 1 otherwise); else a steady 5."""

    def evaluate(self):
        if self.rate >= 0.5:
            return {"val": 5.0}
        return {"val": 10.0 if self.steps == 4 else 1.0}


def test_a_selection_window_is_not_fooled_by_one_lucky_evaluation(tmp_path: Path) -> None:
    run = poptrain.create_run(
        name="lucky",
        space={"rate": poptrain.Float(0.1, 0.9)},
        population_size=2,
        metric="val",
        root=tmp_path,
        ready=poptrain.every(2),
        exploit=None,
        explore=None,
        initial_hparams=[{"rate": 0.2}, {"rate": 0.8}],
    ).optimize(Lucky, steps=8)
    lucky = run.best()
    assert (lucky.slot, lucky.step, lucky.score, lucky.selection_score) == (0, 4, 10.0, None)
    steady = run.best(window=3)
    assert steady.slot == 1 and steady.score == 5.0 and steady.selection_score == pytest.approx(5.0)
    with pytest.raises(poptrain.ConfigError, match="window must be"):
        run.best(window=0)


def test_select_rescores_the_top_candidates_on_a_selection_split(tmp_path: Path) -> None:
    run, _ = trained(tmp_path)
    seen: list[tuple[int, float]] = []

    def selection_split(live: Overfits) -> dict[str, float]:
        seen.append((live.steps, live.rate))
        return {"val": -live.rate}  # the selection split prefers the smallest rate

    rates = sorted(m.hparams["rate"] for m in run.members())
    best = run.best(select=selection_split, candidates=3, trainable=Overfits)
    assert best is not None and best.step == 6 and best.hparams["rate"] == rates[0]
    assert best.selection_score == pytest.approx(-rates[0]) and best.score == pytest.approx(rates[0])
    assert sorted(seen) == [(6, r) for r in rates]  # the three best checkpoints, loaded live
    live = run.load_best(Overfits, select=lambda t: -t.rate, candidates=3)
    assert live.rate == rates[0] and live.steps == 6
    assert run.best(select=lambda t: -t.rate, candidates=1, trainable=Overfits).hparams["rate"] == rates[-1]


def test_select_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    run, _ = trained(tmp_path)
    with pytest.raises(poptrain.ConfigError, match="candidates must be a whole number >= 1"):
        run.best(select=lambda t: 0.0, candidates=0, trainable=Overfits)
    with pytest.raises(poptrain.ConfigError, match="select must be a function"):
        run.best(select=3, trainable=Overfits)  # type: ignore[arg-type]
    with pytest.raises(poptrain.MetricError, match="without 'val'"):
        run.best(select=lambda t: {"acc": 1.0}, trainable=Overfits)
    with pytest.raises(poptrain.TrainableError, match=r"failed in select\(\) at step 6: ZeroDivisionError"):
        run.best(select=lambda t: 1 / 0, trainable=Overfits)
    with pytest.raises(poptrain.ConfigError, match="was not started by `poptrain run`"):
        run.best(select=lambda t: 0.0)
