"""User code that misbehaves gets a clear error naming the member, and the run records it."""

from __future__ import annotations

from pathlib import Path

import pytest

import poptrain
from poptrain.experiments.toy import INITIAL_H, SPACE, ToyQuadratic


class NoMetric(ToyQuadratic):
    def evaluate(self) -> dict[str, float]:
        return {"loss": 1.0}


class Crashes(ToyQuadratic):
    def step(self) -> None:
        if self.theta[0] < 0.85:
            raise ValueError("diverged")
        super().step()


def toy_run(tmp_path: Path, **kwargs: object) -> poptrain.Run:
    return poptrain.create_run(name="t", space=SPACE, population_size=2, metric="Q", root=tmp_path,
                               initial_hparams=INITIAL_H, **kwargs)  # type: ignore[arg-type]


def test_missing_metric_is_named(tmp_path: Path) -> None:
    with pytest.raises(poptrain.MetricError, match=r"evaluate\(\) returned metrics \['loss'\] without 'Q'"):
        toy_run(tmp_path).optimize(NoMetric, steps=4)


def test_crashing_member_is_named_and_recorded(tmp_path: Path) -> None:
    run = toy_run(tmp_path)
    with pytest.raises(poptrain.TrainableError, match=r"member 0 failed in step\(\) at step \d+: ValueError: diverged"):
        run.optimize(Crashes, steps=20)
    reloaded = poptrain.load_run("t", root=tmp_path)
    assert reloaded.record.state == "failed"
    failed = [m for m in reloaded.members() if m.state == "failed"]
    assert failed and "ValueError: diverged" in (failed[0].error or "")
    # every step trained before the crash is stored, even those after the last ready point
    steps = sorted(s.step for s in reloaded.scores() if s.slot == 0)
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] % 4 != 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population_size": 0}, "population_size must be a whole number >= 1"),
        ({"mode": "maximise"}, "mode must be 'max' or 'min'"),
        ({"name": "bad/name"}, "not usable as a folder name"),
        ({"seed": -1}, "seed must be a whole number >= 0"),
    ],
)
def test_bad_run_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"name": "ok", "space": SPACE, "population_size": 2, "root": tmp_path, **kwargs}
    with pytest.raises(poptrain.ConfigError, match=message):
        poptrain.create_run(**args)
    assert not any(tmp_path.iterdir())


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    run = toy_run(tmp_path).optimize(ToyQuadratic, steps=8)
    best = run.best()
    assert best is not None and best.checkpoint is not None
    path = tmp_path / "t" / "checkpoints" / best.checkpoint.uri
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(poptrain.CheckpointError, match="corrupt"):
        run.load_state(best.checkpoint)
