"""Reports: the data checked exactly, PNGs and a self-contained HTML page written, the CLI,
and the page loaded in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.browser_helpers import ARTIFACTS
from tests.browser_helpers import browser as _browser
from tests.browser_helpers import errors as _errors
from tests.browser_helpers import wait as _wait
from tests.report_helpers import synthetic, toy_run

from poptrain.report.data import Curve, DecisionRow, Segment, TreeNode, report_data


def test_report_data_of_a_known_history() -> None:
    run, storage = synthetic()
    data = report_data(
        run, storage.get_members(run.id), storage.get_generations(run.id), storage.get_scores(run.id), None
    )
    assert data.curves == [Curve(0, [1, 2, 3, 4], [0.3, 0.6, 0.5, 0.55]), Curve(1, [1, 2, 3, 4], [0.1, 0.2, 0.7, 0.8])]
    assert data.best_so_far == Curve(-1, [1, 2, 3, 4], [0.3, 0.6, 0.7, 0.8])
    assert data.exploits == [(1, 2, 0)]
    assert data.schedules["h0"] == [Segment(0, 0, 4, 0.5), Segment(1, 0, 2, 0.2), Segment(1, 2, 4, 0.6)]
    assert data.schedules["h1"] == [Segment(0, 0, 4, 0.1), Segment(1, 0, 2, 0.9), Segment(1, 2, 4, 0.1)]
    gens = storage.get_generations(run.id)
    assert data.tree == [
        TreeNode(gens[0].id, 0, 0, 0, 4, None, None, "init", 0.55),
        TreeNode(gens[1].id, 1, 0, 0, 2, None, None, "init", 0.2),
        TreeNode(gens[2].id, 1, 1, 2, 4, gens[0].id, 0, "exploit", 0.8),
    ]
    assert data.decisions == [DecisionRow(2, 1, "exploit", 0, {"h0": "* 1.2"}, 0.2, 0.7)]
    assert (data.summary["steps_trained"], data.summary["decisions"], data.summary["exploits"]) == (8, 1, 1)
    assert json.loads(json.dumps(data.to_dict()))["curves"][1]["values"] == [0.1, 0.2, 0.7, 0.8]


def _external_resources(page: str) -> list[str]:
    """Scripts, stylesheets and images the page would fetch."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.extend(
                f"{tag} {v}"
                for k, v in attrs
                if k in ("src", "href") and tag in ("script", "link", "img") and not (v or "").startswith("data:")
            )

    Tags().feed(page)
    return found


def test_report_files_are_written_and_self_contained(tmp_path: Path) -> None:
    run = toy_run(tmp_path, population=4)
    paths = run.write_report()
    assert paths["html"] == tmp_path / "toy" / "report.html"
    page = paths["html"].read_text()
    assert _external_resources(page) == []  # plotly.js is inline: opens with no server and no network
    assert '"run": "toy"' in page and "Plotly" in page
    for name in ("scores", "schedules", "lineage"):
        data = paths[name].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    figure = run.plot_lineage()
    assert figure.axes and figure.axes[0].get_title().startswith("toy: population development")


@pytest.mark.parametrize("case", ["one member", "no decisions", "a failed member"])
def test_unusual_runs_render(tmp_path: Path, case: str) -> None:
    if case == "one member":
        run = toy_run(tmp_path, population=1)
    elif case == "no decisions":
        run = toy_run(tmp_path, exploit=None, explore=None)
    else:
        run = toy_run(tmp_path)
        run.storage.record_failure(run.record.id, 1, "RuntimeError: out of memory")
    data = run.report_data()
    assert len(data.curves) == len(run.members())
    if case == "no decisions":
        assert data.decisions == [] and data.exploits == []
    paths = run.write_report()
    assert paths["html"].stat().st_size > 100_000 and paths["lineage"].stat().st_size > 5_000


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from poptrain.cli.main import main

    toy_run(tmp_path)
    assert main(["report", "toy", "--root", str(tmp_path)]) == 0
    assert "report.html" in capsys.readouterr().out and (tmp_path / "toy" / "lineage.png").is_file()
    assert main(["report", "nope", "--root", str(tmp_path)]) == 2
    assert "no run named 'nope'" in capsys.readouterr().err


def test_report_page_renders_in_chromium(tmp_path: Path) -> None:
    run = toy_run(tmp_path, population=4)
    paths = run.write_report()
    browser = _browser()
    try:
        browser.get(paths["html"].as_uri())
        _wait(browser, "return window.poptrainRendered >= 1")
        assert _errors(browser) == []
        assert browser.execute_script("return document.querySelector('#summary .members').textContent") == "4"
        for plot in ("scores", "schedules", "lineage"):
            assert browser.execute_script(f"return document.querySelectorAll('#{plot} .main-svg').length") >= 1
        curves = browser.execute_script(
            "return document.getElementById('scores').data.filter(t => t.name.startsWith('member')).length"
        )
        assert curves == 4
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "report.png"))
    finally:
        browser.quit()
