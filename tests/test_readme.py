"""The README's quickstart runs as written and does what it says."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_opens_with_two_commands() -> None:
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    assert first_block is not None and text.index(first_block.group(0)) < 40
    commands = [line.split("#")[0].strip() for line in first_block.group(1).strip().splitlines()]
    assert commands == ["make run", "make test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_quickstart_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quickstart = python_blocks()[0]
    assert len(quickstart.strip().splitlines()) < 25  # imports included
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(compile(quickstart, "README quickstart", "exec"), namespace)
    finally:
        os.chdir(cwd)
    best = namespace["best"]
    assert best.score < 0.05  # a good learning rate was found: the regression is learnt
    assert best.schedule[0].start_step == 0 and best.schedule[-1].end_step == 40
    assert (tmp_path / "runs" / "quickstart" / "poptrain.db").is_file()


def test_vectorized_example_runs() -> None:
    import poptrain
    from poptrain.experiments.digits import SPACE, load_split

    [block] = [b for b in python_blocks() if "VectorizedTrainable(" in b and "Dropout(" in b]
    data = load_split()
    run = poptrain.create_run(name="readme-vec", space=SPACE, population_size=8, metric="val_acc", storage="memory")
    namespace = {"run": run, **{k: data[k] for k in ("x_train", "y_train", "x_val", "y_val")}}
    exec(compile(block, "README vectorized example", "exec"), namespace)
    assert {m.step for m in run.members()} == {30}
    assert run.best().score > 0.9  # the digits are learnt


def test_apbt_example_runs() -> None:
    import torch
    from experiments import apbt

    [block] = [b for b in python_blocks() if "masked_mlp(" in b]
    iris = apbt.problem("iris")

    def evaluate(predict):  # the README's placeholder
        return {"val_acc": (predict(iris.x_val).argmax(-1) == iris.y_val).float().mean(-1)}

    namespace = {"x": iris.x_train, "y": iris.y_train, "evaluate": evaluate, "F": torch.nn.functional}
    cwd = os.getcwd()
    try:
        os.chdir(tempfile.mkdtemp())
        exec(compile("import poptrain\n" + block, "README APBT example", "exec"), namespace)
    finally:
        os.chdir(cwd)
    run = namespace["run"]
    best = run.best()
    assert best is not None and 1 <= best.hparams["widths"][0] <= 10
    assert best.metrics["val_acc"] > 0.9
