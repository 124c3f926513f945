"""Reports: the data checked exactly, PNGs and a self-contained HTML page written, the CLI,
and the page loaded in headless Chromium."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from tests.browser_helpers import ARTIFACTS
from tests.browser_helpers import browser as _browser
from tests.browser_helpers import errors as _errors
from tests.browser_helpers import wait as _wait
from tests.report_helpers import synthetic, toy_run

import poptrain
from poptrain.report.data import Curve, DecisionRow, Segment, TreeNode, report_data


def test_report_data_of_a_known_history() -> None:
    run, storage = synthetic()
    gens = storage.get_generations(run.id)
    g0, g1, g2 = (g.id for g in gens)
    data = report_data(
        run, storage.get_members(run.id), storage.get_generations(run.id), storage.get_scores(run.id), None
    )
    assert data.curves == [
        Curve(0, [1, 2, 3, 4], [0.3, 0.6, 0.5, 0.55], [g0] * 4),
        Curve(1, [1, 2, 3, 4], [0.1, 0.2, 0.7, 0.8], [g1, g1, g2, g2]),
    ]
    # without checkpoint records every score counts; with them, only the checkpointed ones (see test_report_data)
    assert data.best_so_far == Curve(-1, [1, 2, 3, 4], [0.3, 0.6, 0.7, 0.8], [g0, g0, g2, g2])
    assert data.exploits == [(1, 2, 0)]
    assert data.schedules["h0"] == [Segment(0, 0, 4, 0.5), Segment(1, 0, 2, 0.2), Segment(1, 2, 4, 0.6)]
    assert data.schedules["h1"] == [Segment(0, 0, 4, 0.1), Segment(1, 0, 2, 0.9), Segment(1, 2, 4, 0.1)]
    assert data.tree == [
        TreeNode(g0, 0, 0, 0, 4, None, None, "init", 0.55, False, True),
        TreeNode(g1, 1, 0, 0, 2, None, None, "init", 0.2, False, False),
        TreeNode(g2, 1, 1, 2, 4, g0, 0, "exploit", 0.8, False, True),
    ]
    assert data.decisions == [
        DecisionRow(2, 1, "exploit", 0, {"h0": "* 1.2"}, 0.2, 0.7, {"h0": 0.2, "h1": 0.9}, {"h0": 0.6, "h1": 0.1})
    ]
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


def _story_run(root: Path, population: int) -> poptrain.Run:
    """A toy run with a log-scaled hyperparameter (``lr``: the toy ignores it, PBT still moves it)."""
    from tests.report_helpers import SPACE

    from poptrain.experiments.toy import ToyQuadratic

    space = {**SPACE, "lr": poptrain.Float(1e-4, 0.1, log=True)}
    run = poptrain.create_run(
        name=f"toy{population}", space=space, population_size=population, metric="Q", root=root, ready=poptrain.every(4)
    )
    return run.optimize(ToyQuadratic, steps=24)


def _shown(value: float) -> str:
    """``value`` as the page writes it (4 significant digits, no trailing zeros)."""
    return repr(float(f"{value:.4g}"))


@pytest.mark.parametrize("population", [16, 64])
def test_report_page_tells_who_won_first(tmp_path: Path, population: int) -> None:
    from poptrain.report.bundle import partial_bundle

    run = _story_run(tmp_path, population)
    paths = run.write_report()
    best = run.best()
    assert best is not None
    browser = _browser()
    try:
        browser.get(paths["html"].as_uri())
        _wait(browser, "return window.poptrainRendered >= 1")
        assert _errors(browser) == []
        headline = browser.execute_script("return document.querySelector('#winner .headline').textContent")
        assert headline == f"Winner: member {best.slot}, Q = {_shown(best.score)} at step {best.step}"
        winner_top = browser.execute_script("return document.getElementById('winner').getBoundingClientRect().top")
        assert winner_top < browser.execute_script(
            "return document.getElementById('scores').getBoundingClientRect().top"
        )
        axes = browser.execute_script(
            "const l = document.getElementById('schedules').layout;"
            "return Object.keys(l).filter(k => k.startsWith('yaxis')).map(k => [l[k].title.text, l[k].type]);"
        )
        assert sorted(axes) == [["h0", "linear"], ["h1", "linear"], ["lr", "log"]]
        tree = browser.execute_script("return document.getElementById('lineage').layout")
        assert min(tree["yaxis"]["range"]) >= -0.5  # no negative members
        assert tree["height"] == min(900, 140 + 22 * population)  # fixed: 900 px however many members
        assert browser.execute_script("return document.getElementById('lineage').offsetHeight") <= 900
        scores = browser.execute_script("return document.getElementById('scores').layout")
        assert scores["uirevision"] and scores["yaxis"]["range"] == run.report_data().y_range
        members = browser.execute_script("return document.querySelectorAll('#members tr').length")
        assert members == population + 1
        ARTIFACTS.mkdir(exist_ok=True)
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1200, min(height + 40, 8000))
        browser.save_screenshot(str(ARTIFACTS / f"report-{population}.png"))
    finally:
        browser.quit()
        run.close()
    if population == 16:
        size = paths["html"].stat().st_size
        if partial_bundle() is None:
            if os.environ.get("CI"):
                pytest.fail("the package was built without plotly's partial bundle: `pip install -e .` fetches it")
            pytest.skip(f"plotly's partial bundle is not installed (`pip install -e .` fetches it); report is {size} B")
        assert size < 1_500_000


def test_members_table_sorts_numerically(tmp_path: Path) -> None:
    run = _story_run(tmp_path, 16)
    paths = run.write_report()
    browser = _browser()
    try:
        browser.get(paths["html"].as_uri())
        _wait(browser, "return window.poptrainRendered >= 1")
        column = "[...document.querySelectorAll('#members tr')].slice(1).map(r => r.cells[{}].textContent)"
        assert browser.execute_script(f"return {column.format(0)}") == [str(s) for s in range(16)]
        browser.execute_script("document.querySelectorAll('#members th')[4].click()")  # last score: best first
        last = [float(v) for v in browser.execute_script(f"return {column.format(4)}")]
        assert last == sorted(last, reverse=True) and len(last) == 16
    finally:
        browser.quit()
        run.close()


def test_dashboard_page_stops_polling_when_the_run_has_ended(tmp_path: Path) -> None:
    import threading

    from poptrain.report.dashboard import make_server

    toy_run(tmp_path, population=2).close()
    server = make_server(None, tmp_path, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = _browser()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/runs/toy")
        _wait(browser, "return window.poptrainRendered >= 1")
        live = browser.execute_script("return document.getElementById('live').textContent")
        assert live.startswith("The run ended (finished)")
        browser.execute_script("window.poptrainRendered = 0")
        time.sleep(2.5)  # longer than one polling interval: no further render
        assert browser.execute_script("return window.poptrainRendered") == 0
        assert _errors(browser) == []
    finally:
        browser.quit()
        server.shutdown()
        server.server_close()


def test_report_falls_back_to_the_full_plotly_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plotly.offline import get_plotlyjs

    from poptrain.report import bundle
    from poptrain.report.html import report_html

    monkeypatch.setattr(bundle, "partial_bundle", lambda: None)  # a package built without network
    bundle.plotly_js.cache_clear()
    try:
        page = report_html(toy_run(tmp_path, population=2).report_data())
        assert bundle.plotly_js()[1].startswith("plotly.js ") and get_plotlyjs() in page
    finally:
        bundle.plotly_js.cache_clear()
