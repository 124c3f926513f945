"""The dashboard: runs served live from SQLite folders or PostgreSQL, on loopback, in Chromium."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.browser_helpers import ARTIFACTS
from tests.browser_helpers import browser as _browser
from tests.browser_helpers import errors as _errors
from tests.browser_helpers import wait as _wait
from tests.report_helpers import SPACE, toy_run

import poptrain
from poptrain.experiments.toy import ToyQuadratic
from poptrain.records import ScoreRecord


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
