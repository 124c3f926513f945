"""Reports: the data checked exactly, PNGs and a self-contained HTML page written, the CLI,
the dashboard, and both pages loaded in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import poptrain
from poptrain.experiments.toy import ToyQuadratic
from poptrain.records import NewCheckpoint, ReadyPoint, ScoreRecord
from poptrain.report.data import Curve, DecisionRow, Segment, TreeNode, report_data
from poptrain.storage import InMemoryStorage
from poptrain.strategy import Decision

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SPACE = {"h0": poptrain.Float(0.0, 1.0), "h1": poptrain.Float(0.0, 1.0)}


def _ckpt(tag: str) -> NewCheckpoint:
    return NewCheckpoint(f"ckpt/{tag}.pt", "0" * 64, 10)


def synthetic() -> tuple[Any, InMemoryStorage]:
    """Two members, four steps; member 1 copies member 0 at step 2 (and explores h0)."""
    storage = InMemoryStorage()
    run = storage.create_run(
        "tiny",
        spec={"metric": "acc", "mode": "max", "population_size": 2},
        seed=0,
        initial_hparams=[{"h0": 0.5, "h1": 0.1}, {"h0": 0.2, "h1": 0.9}],
    )
    g0, g1 = (m.generation_id for m in storage.get_members(run.id))
    storage.record_scores(run.id, [ScoreRecord(0, 1, 0.3, g0), ScoreRecord(1, 1, 0.1, g1)])
    storage.record_ready(
        run.id,
        [
            ReadyPoint(0, 2, _ckpt("0-2"), 0.6),
            ReadyPoint(1, 2, _ckpt("1-2"), 0.2, Decision(1, 2, "exploit", {"h0": 0.6, "h1": 0.1}, 0, {"h0": "* 1.2"})),
        ],
        [ScoreRecord(0, 2, 0.6, g0), ScoreRecord(1, 2, 0.2, g1)],
    )
    g1b = {m.slot: m for m in storage.get_members(run.id)}[1].generation_id
    storage.record_scores(
        run.id,
        [
            ScoreRecord(0, 3, 0.5, g0),
            ScoreRecord(1, 3, 0.7, g1b),
            ScoreRecord(0, 4, 0.55, g0),
            ScoreRecord(1, 4, 0.8, g1b),
        ],
    )
    return storage.get_run("tiny"), storage


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


def toy_run(root: Path, name: str = "toy", population: int = 2, **kwargs: Any) -> poptrain.Run:
    run = poptrain.create_run(
        name=name, space=SPACE, population_size=population, metric="Q", root=root, ready=poptrain.every(4), **kwargs
    )
    return run.optimize(ToyQuadratic, steps=16)


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


@pytest.fixture
def dashboard(tmp_path: Path) -> Any:
    from poptrain.report.dashboard import make_server

    toy_run(tmp_path)
    server = make_server(None, tmp_path, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    server.shutdown()
    server.server_close()


def test_dashboard_serves_runs_and_fresh_data(dashboard: tuple[str, Path]) -> None:
    url, root = dashboard
    assert json.loads(urllib.request.urlopen(f"{url}/api/runs", timeout=10).read()) == ["toy"]
    assert "/runs/toy" in urllib.request.urlopen(f"{url}/", timeout=10).read().decode()
    before = json.loads(urllib.request.urlopen(f"{url}/api/runs/toy", timeout=10).read())
    run = poptrain.load_run("toy", root=root)
    member = run.members()[0]
    run.storage.record_scores(run.record.id, [ScoreRecord(0, member.step + 1, 1.19, member.generation_id)])
    after = json.loads(urllib.request.urlopen(f"{url}/api/runs/toy", timeout=10).read())
    assert after["curves"][0]["values"] == before["curves"][0]["values"] + [1.19]
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{url}/runs/nope", timeout=10)


# --- headless Chromium ------------------------------------------------------------------------
def _browser() -> Any:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium and chromium-driver (.ci/run installs them)")
        pytest.skip("chromium and chromedriver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--window-size=1200,2400",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(browser: Any, script: str, seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def _errors(browser: Any) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


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


def test_dashboard_updates_live_in_chromium(dashboard: tuple[str, Path]) -> None:
    url, root = dashboard
    browser = _browser()
    try:
        browser.get(f"{url}/runs/toy")
        _wait(browser, "return window.poptrainRendered >= 1")
        run = poptrain.load_run("toy", root=root)
        member = run.members()[1]
        run.storage.record_scores(run.record.id, [ScoreRecord(1, member.step + 1, 1.1875, member.generation_id)])
        _wait(
            browser,
            "return document.getElementById('scores').data.some(t => t.name === 'member 1' && t.y.includes(1.1875))",
        )
        assert _errors(browser) == []
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    finally:
        browser.quit()


def test_dashboard_command_serves_on_loopback_and_refuses_a_busy_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket
    import subprocess
    import sys

    from poptrain.cli.main import main

    toy_run(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "poptrain", "dashboard", "toy", "--root", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("poptrain dashboard at http://127.0.0.1:") and "/runs/toy (Ctrl-C stops it)" in line
        url = line.split(" at ", 1)[1].split(" ")[0].rsplit("/runs/", 1)[0]
        assert json.loads(urllib.request.urlopen(f"{url}/api/runs", timeout=10).read()) == ["toy"]
    finally:
        process.terminate()
        process.wait(timeout=10)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["dashboard", "--root", str(tmp_path), "--port", str(busy.getsockname()[1])])
    assert code == 2 and "choose another --port" in capsys.readouterr().err


def test_dashboard_reads_runs_from_postgresql(postgres_url: str, tmp_path: Path) -> None:
    from poptrain.report.dashboard import make_server

    run = poptrain.create_run(
        name="on-pg",
        space=SPACE,
        population_size=2,
        metric="Q",
        storage=postgres_url,
        root=tmp_path,
        ready=poptrain.every(4),
    )
    run.optimize(ToyQuadratic, steps=8)
    server = make_server(postgres_url, tmp_path, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert json.loads(urllib.request.urlopen(f"{url}/api/runs", timeout=10).read()) == ["on-pg"]
        data = json.loads(urllib.request.urlopen(f"{url}/api/runs/on-pg", timeout=10).read())
        assert data["population"] == 2 and [len(c["steps"]) for c in data["curves"]] == [8, 8]
    finally:
        server.shutdown()
        server.server_close()


def test_dashboard_answers_500_when_reading_a_run_breaks(
    dashboard: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from poptrain.report.dashboard import RunSource

    def broken(self: RunSource, name: str) -> str:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(RunSource, "report", broken)
    url, _ = dashboard
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{url}/api/runs/toy", timeout=10)
    assert info.value.code == 500 and info.value.read().decode() == "RuntimeError: disk on fire"
    assert json.loads(urllib.request.urlopen(f"{url}/api/runs", timeout=10).read()) == ["toy"]  # still serving
