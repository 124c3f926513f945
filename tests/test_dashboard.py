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
        run = poptrain.load_run("toy", root=root)
        run.storage.set_run_state(run.record.id, "running")  # a run training: its page keeps polling
        browser.get(f"{url}/runs/toy")
        _wait(browser, "return window.poptrainRendered >= 1")
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
        (row,) = json.loads(urllib.request.urlopen(f"{url}/api/index", timeout=10).read())["runs"]
        best = run.best()
        assert best is not None and (row["name"], row["state"], row["best"]) == ("on-pg", "finished", best.score)
        assert row["steps_done"] == 16
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


# --- the index -----------------------------------------------------------------------------------
def three_runs(root: Path) -> dict[str, poptrain.Run]:
    """A finished run, a failed one (a member failed, the run marked failed as ``optimize`` does)
    and one still running (16 of its 32 planned steps per member done)."""
    done = toy_run(root, "done")
    broke = toy_run(root, "broke")
    broke.storage.record_failure(broke.record.id, 1, "RuntimeError: out of memory")
    broke.storage.set_run_state(broke.record.id, "failed")
    live = toy_run(root, "live")  # optimize records its 16 steps as the plan; the plan is then 32
    live.storage.set_run_steps(live.record.id, 32)
    live.storage.set_run_state(live.record.id, "running")
    runs = {"done": done, "broke": broke, "live": live}
    for run in runs.values():
        run.refresh()
    return runs


def _cells(row: dict[str, Any]) -> list[str]:
    return [cell["text"] for cell in row["cells"]]


def test_index_rows_show_state_best_progress_and_eta(tmp_path: Path) -> None:
    from poptrain.report.dashboard import RunSource

    runs = three_runs(tmp_path)
    newest = max(s.wall_time for run in runs.values() for s in run.scores())
    source = RunSource(None, tmp_path)
    index = source.index(now=newest + 1)
    rows = {row["name"]: row for row in index["runs"]}
    assert list(rows) == ["broke", "done", "live"] and index["where"] == str(tmp_path)
    for name, run in runs.items():
        best = run.best()
        assert best is not None
        assert (rows[name]["best"], rows[name]["best_slot"]) == (best.score, best.slot)  # the report's number
        assert _cells(rows[name])[3] == f"{best.score:.4g} (member {best.slot}, step {best.step})"
        assert rows[name]["cells"][0]["href"] == f"/runs/{name}"
    done, broke, live = rows["done"], rows["broke"], rows["live"]
    assert (done["state"], done["flag"], done["eta_seconds"]) == ("finished", "finished", None)
    assert _cells(done)[1:] == ["finished", "Q (max)", _cells(done)[3], "32 of 32 steps", "-", "1 s ago"]
    assert done["cells"][6]["title"].endswith("Z")  # the UTC time on hover
    assert (broke["state"], broke["label"], broke["flag"], broke["eta_seconds"]) == ("failed", "failed", "failed", None)
    assert broke["cells"][1] == {"text": "failed", "mark": "failed"}  # marked, unlike a finished run
    assert _cells(broke)[4] == "32 of 32 steps" and _cells(broke)[5] == "-"
    assert (live["state"], live["flag"]) == ("running", "running")
    assert _cells(live)[4] == "32 of 64 steps"
    assert live["eta_seconds"] is not None and _cells(live)[5].startswith("about ")
    # Twelve quiet minutes later a "running" run may have lost its process: said so, and no ETA.
    last = max(s.wall_time for s in runs["live"].scores())
    quiet = {row["name"]: row for row in source.index(now=last + 12 * 60 + 5)["runs"]}["live"]
    assert (quiet["state"], quiet["flag"], quiet["eta_seconds"]) == ("running", "quiet", None)
    assert quiet["label"] == "running? (no update for 12 min)" and _cells(quiet)[5] == "-"
    assert quiet["best"] == live["best"]


def test_index_api_and_page_answer_with_the_rows(tmp_path: Path) -> None:
    from poptrain.report.dashboard import make_server

    three_runs(tmp_path)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "poptrain.db").write_bytes(b"not a database" * 50)
    server = make_server(None, tmp_path, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert json.loads(urllib.request.urlopen(f"{url}/api/runs", timeout=10).read()) == [
            "broke",
            "done",
            "garbage",
            "live",
        ]  # unchanged: the names
        answer = urllib.request.urlopen(f"{url}/api/index", timeout=10)
        assert answer.headers["Cache-Control"] == "no-store"
        rows = {row["name"]: row for row in json.loads(answer.read())["runs"]}
        assert [rows[n]["label"] for n in ("broke", "done", "garbage", "live")] == [
            "failed",
            "finished",
            "unreadable",
            "running",
        ]
        assert rows["garbage"]["error"] and "garbage" in rows["garbage"]["error"]  # says which file
        page = urllib.request.urlopen(f"{url}/", timeout=10).read().decode()
        assert '<td class="mark-failed">failed</td>' in page and "32 of 64 steps" in page
    finally:
        server.shutdown()
        server.server_close()


def test_an_empty_index_says_how_to_start_a_run(tmp_path: Path) -> None:
    from poptrain.report.dashboard import make_server

    server = make_server(None, tmp_path / "runs", "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        page = urllib.request.urlopen(f"{url}/", timeout=10).read().decode()
        assert f"no runs yet under {tmp_path / 'runs'}: start one with <code>poptrain run ...</code>" in page
        assert json.loads(urllib.request.urlopen(f"{url}/api/index", timeout=10).read())["runs"] == []
    finally:
        server.shutdown()
        server.server_close()


def test_index_in_chromium_marks_states_and_refreshes(tmp_path: Path) -> None:
    from poptrain.report.dashboard import make_server

    runs = three_runs(tmp_path)
    server = make_server(None, tmp_path, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = _browser()
    states = """return Array.from(document.querySelectorAll('#runs tr')).map(
        tr => [tr.cells[0].textContent, tr.cells[1].textContent, tr.cells[1].className])"""
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        expected = [
            ["broke", "failed", "mark-failed"],
            ["done", "finished", "mark-finished"],
            ["live", "running", "mark-running"],
        ]
        assert browser.execute_script(states) == expected
        live = runs["live"]
        member = live.members()[0]
        live.storage.record_scores(live.record.id, [ScoreRecord(0, member.step + 1, 1.19, member.generation_id)])
        browser.execute_script("refreshIndex()")  # what the 5-second poll does
        _wait(browser, "return window.poptrainIndexRendered >= 1")
        assert browser.execute_script(states) == expected
        progress = "return document.querySelectorAll('#runs tr')[2].cells[4].textContent"
        assert browser.execute_script(progress) == "33 of 64 steps"
        assert not browser.execute_script("return document.getElementById('table').hidden")
        assert _errors(browser) == []
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard-index.png"))
    finally:
        browser.quit()
        server.shutdown()
        server.server_close()


def test_run_page_keeps_the_zoom_across_refreshes(dashboard: tuple[str, Path]) -> None:
    url, root = dashboard
    run = poptrain.load_run("toy", root=root)
    run.storage.set_run_state(run.record.id, "running")  # a run training: its page keeps polling
    browser = _browser()
    try:
        browser.get(f"{url}/runs/toy")
        _wait(browser, "return window.poptrainRendered >= 1")
        browser.execute_script("Plotly.relayout('scores', {'xaxis.range': [2, 5]})")
        for value in (1.1875, 1.1880):  # two refreshes with news
            member = run.members()[0]
            run.storage.record_scores(run.record.id, [ScoreRecord(0, member.step + 1, value, member.generation_id)])
            _wait(
                browser,
                "return document.getElementById('scores').data.some("
                f"t => t.name === 'member 0' && t.y.includes({value}))",
            )
        rendered = browser.execute_script("return window.poptrainRendered")
        _wait(browser, f"return window.poptrainRendered >= {rendered + 1}")  # one more refresh after both
        assert browser.execute_script("return document.getElementById('scores').layout.xaxis.range") == [2, 5]
        assert _errors(browser) == []
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard-zoom.png"))
    finally:
        browser.quit()
        run.close()


def test_a_browser_closing_mid_answer_prints_nothing(
    dashboard: tuple[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import struct

    from poptrain.report.dashboard import make_server

    _, root = dashboard
    server = make_server(None, root, "127.0.0.1", 0)
    answered = threading.Semaphore(0)
    shutdown_request = server.shutdown_request

    def counted(request: Any) -> None:  # the server's last act on each connection
        shutdown_request(request)
        answered.release()

    monkeypatch.setattr(server, "shutdown_request", counted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        for path in ("/api/runs/toy", "/runs/toy", "/", "/api/index"):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
            client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            client.close()  # before reading a byte of the answer
            assert answered.acquire(timeout=30), path
        still = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=10)
        assert json.loads(still.read()) == ["toy"]  # still serving
    finally:
        server.shutdown()
        server.server_close()
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_index_reads_a_run_deleted_and_made_again_afresh(tmp_path: Path) -> None:
    import shutil

    from poptrain.report.dashboard import RunSource

    toy_run(tmp_path, "toy", meta={"steps": 16}).close()
    source = RunSource(None, tmp_path)
    try:
        assert [row.steps_planned for row in source.rows()] == [32]
        shutil.rmtree(tmp_path / "toy")
        assert source.rows() == []
        toy_run(tmp_path, "toy", population=3, meta={"steps": 16}).close()
        (row,) = source.rows()
        best = poptrain.load_run("toy", root=tmp_path).best()
        assert (row.steps_done, row.steps_planned, row.best) == (48, 48, best.score if best else None)
    finally:
        source.close()
