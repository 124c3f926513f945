"""``poptrain compare``: the comparison data checked exactly, the refusals, the command, and
the page in headless Chromium."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from tests.browser_helpers import ARTIFACTS
from tests.browser_helpers import browser as _browser
from tests.browser_helpers import errors as _errors
from tests.browser_helpers import wait as _wait
from tests.report_helpers import synthetic, toy_run

from poptrain.errors import ConfigError
from poptrain.report.compare import ComparedRun, comparison
from poptrain.report.data import Curve, ReportData, Rival, Winner, report_data


def _known(name: str, untouched: Rival | None, metric: str = "acc") -> ReportData:
    run, storage = synthetic()
    data = report_data(
        run, storage.get_members(run.id), storage.get_generations(run.id), storage.get_scores(run.id), None
    )
    winner = Winner(1, 4, 0.8, 3, Rival(0, 0.55, 0.25), untouched, [], None, "export", "replay")
    rows = [["population", "2"], ["ready", "every 2 steps"], ["exploit", "truncation"], ["explore", "perturb"]]
    return dataclasses.replace(
        data,
        run=name,
        metric=metric,
        winner=winner,
        settings_rows=rows,
        best_so_far=Curve(-1, [2, 4], [0.6, 0.8]),
        summary={**data.summary, "wall_seconds": 12.5},
    )


def test_comparison_of_known_runs() -> None:
    result = comparison([_known("pbt", Rival(0, 0.55, 0.25)), _known("pbt2", None)])
    assert (result.metric, result.mode) == ("acc", "max")
    strategy = "ready every 2 steps; exploit truncation; explore perturb"
    assert result.runs == [
        ComparedRun("pbt", "created", strategy, 2, 0.8, 1, 0.55, 0, 8, 12.5, Curve(-1, [2, 4], [0.6, 0.8])),
        ComparedRun("pbt2", "created", strategy, 2, 0.8, 1, None, None, 8, 12.5, Curve(-1, [2, 4], [0.6, 0.8])),
    ]
    assert result.to_dict()["runs"][0]["best_so_far"]["values"] == [0.6, 0.8]


def test_comparison_refuses_one_run_and_different_metrics() -> None:
    with pytest.raises(ConfigError, match="at least two runs, got 1"):
        comparison([_known("a", None)])
    with pytest.raises(ConfigError, match=r"runs 'a' \(acc, max\) and 'b' \(loss, max\) measure different metrics"):
        comparison([_known("a", None), _known("b", None, metric="loss")])


def test_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from poptrain.cli.main import main

    pbt = toy_run(tmp_path, name="pbt", population=4)
    random = toy_run(tmp_path, name="random", population=4, exploit=None, explore=None)
    assert main(["compare", "pbt", "random", "--root", str(tmp_path)]) == 0
    assert str(tmp_path / "compare.html") in capsys.readouterr().out
    page = (tmp_path / "compare.html").read_text()
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert '"run": "pbt"' in page and '"run": "random"' in page and "<script src" not in page
    best = random.best()
    assert best is not None
    assert f'"best_score": {best.score}' in page  # the random run's best is its own checkpointed best
    assert main(["compare", "pbt", "--root", str(tmp_path)]) == 2
    assert "compare needs at least two runs, got 1" in capsys.readouterr().err
    assert main(["compare", "pbt", "nope", "--root", str(tmp_path)]) == 2
    assert "no run named 'nope'" in capsys.readouterr().err
    pbt.close()
    random.close()


def test_compare_refuses_runs_of_different_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.report_helpers import SPACE

    import poptrain
    from poptrain.cli.main import main
    from poptrain.experiments.toy import ToyQuadratic

    toy_run(tmp_path, name="q", population=2).close()
    poptrain.create_run(
        name="neg", space=SPACE, population_size=2, metric="Q", mode="min", root=tmp_path, ready=poptrain.every(4)
    ).optimize(ToyQuadratic, steps=4).close()
    assert main(["compare", "q", "neg", "--root", str(tmp_path)]) == 2
    assert "runs 'q' (Q, max) and 'neg' (Q, min) measure different metrics" in capsys.readouterr().err
    assert not (tmp_path / "compare.html").exists()


def test_compare_page_renders_in_chromium(tmp_path: Path) -> None:
    from poptrain.report.compare import write_comparison

    runs = [toy_run(tmp_path, name="pbt", population=4), toy_run(tmp_path, name="random", population=4, exploit=None)]
    paths = write_comparison(runs, tmp_path / "out" / "compare.html")
    browser = _browser()
    try:
        browser.get(paths["html"].as_uri())
        _wait(browser, "return window.poptrainRendered >= 1")
        assert _errors(browser) == []
        assert browser.execute_script("return document.getElementById('curves').data.length") == 2
        cells = browser.execute_script(
            "return [...document.querySelectorAll('#runs tr')].map(r => r.cells[0].textContent)"
        )
        assert cells == ["run", "pbt", "random"]
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "compare.png"))
    finally:
        browser.quit()
        for run in runs:
            run.close()
