"""Run data never becomes markup: the HTML report and the dashboard page in headless Chromium
with a run whose every string carries an HTML/JS payload, the dashboard's Host check and
headers, and the terminal output with rich markup in the data."""

from __future__ import annotations

import http.client
import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.browser_helpers import browser as _browser
from tests.browser_helpers import errors as _errors
from tests.browser_helpers import wait as _wait

import poptrain
from poptrain.errors import ConfigError
from poptrain.report.writer import write_report

MARK = "xssmark"
PAYLOAD = (
    f'<img src=x onerror="window.__pwned=1" data-xss={MARK}><script>window.__pwned=1</script>'
    f'<{MARK}></{MARK}><b>bold</b><a href="javascript:window.__pwned=1">link</a><!--<script>'
)
RATE = f"rate {PAYLOAD} $\\frac$"  # a hyperparameter name (with matplotlib math text, drawn literally in the PNGs)
CHOICE = "opt [/bold]"
METRIC = f"acc {PAYLOAD} $x^$"
STATE = f"finished {PAYLOAD}"
ERROR = f"RuntimeError: {PAYLOAD}"
OPTIONS = [f"a {PAYLOAD}", f"b {PAYLOAD} [/bold] [red]"]  # any move between them shows the payload


class Evil(poptrain.Trainable):
    """Adds its rate every step; reports the metric and a second metric with payload names."""

    def setup(self, hparams: dict[str, Any], context: poptrain.TrainContext) -> None:
        self.x = 0.0
        self.set_hparams(hparams)

    def set_hparams(self, hparams: dict[str, Any]) -> None:
        self.rate = float(hparams[RATE])

    def step(self) -> None:
        self.x += self.rate

    def evaluate(self) -> dict[str, float]:
        return {METRIC: self.x, f"loss {PAYLOAD}": -self.x}

    def state_dict(self) -> dict[str, float]:
        return {"x": self.x}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.x = float(state["x"])


def evil_run(root: Path) -> poptrain.Run:
    """A trained run (exploits and explores with payload operations), a failed member, a
    payload state, and its report written with a payload extra summary."""
    space = {RATE: poptrain.Float(0.0, 1.0), CHOICE: poptrain.Choice(OPTIONS)}
    run = poptrain.create_run(
        name="xss", space=space, population_size=4, metric=METRIC, root=root, ready=poptrain.every(2)
    )
    run.optimize(Evil, steps=6)
    run.storage.record_failure(run.record.id, 3, ERROR)
    run.storage.set_run_state(run.record.id, STATE)
    run.refresh()
    assert any(PAYLOAD in op for row in run.report_data().decisions for op in row.changes.values())
    write_report(run, run.folder, summary={PAYLOAD: PAYLOAD, "note": "[/bold] [red]"})  # type: ignore[arg-type]
    return run


# What the page must not contain: an element or attribute made from run data, a script run.
# Plotly keeps each label's source in a data-unformatted attribute, which it draws through its
# HTML subset: the one place the payload may sit in an attribute, and there only escaped.
INJECTED = f"""
const found = [];
for (const e of document.querySelectorAll("*")) {{
  if (e.tagName.toLowerCase().includes("{MARK}")) found.push("tag " + e.tagName);
  for (const a of e.attributes) {{
    const name = a.name.toLowerCase(), value = a.value.toLowerCase(), where = name + "=" + a.value + " on " + e.tagName;
    if (name.includes("{MARK}") || name === "data-xss" || name.startsWith("on")) found.push(where);
    if (name === "data-unformatted") {{
      if (/<[a-z!\\/]/.test(value)) found.push("unescaped label " + where);
    }} else if (value.includes("{MARK}") || value.includes("javascript:")) found.push(where);
  }}
}}
if (window.__pwned !== undefined) found.push("window.__pwned set");
if (document.querySelectorAll("[data-xss]").length) found.push("[data-xss] present");
return found;
"""


def _text(browser: Any, element: str) -> str:
    return browser.execute_script(f"return document.getElementById('{element}').textContent")


def _check_page(browser: Any) -> None:
    """The payloads show as text everywhere; none became an element, attribute or script."""
    _wait(browser, "return window.poptrainRendered >= 1")
    assert browser.execute_script(INJECTED) == []
    assert _errors(browser) == []  # the CSP blocks nothing the page needs
    assert RATE in _text(browser, "summary")  # the best member's hyperparameters, as text
    assert PAYLOAD in _text(browser, "decisions")  # a Choice explored to the payload
    assert RATE in _text(browser, "schedules")  # plotly shows the axis title literally
    assert METRIC in _text(browser, "scores")
    assert _text(browser, "status") == "state: " + STATE  # the state as text, after its label
    labels = browser.execute_script("return document.getElementById('schedules').data.map(t => t.name)")
    assert f"best: {RATE.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}" in labels


def test_report_shows_payloads_as_text_in_chromium(tmp_path: Path) -> None:
    run = evil_run(tmp_path)
    browser = _browser()
    try:
        browser.get((run.folder / "report.html").as_uri())  # type: ignore[operator]
        _check_page(browser)
        assert PAYLOAD in _text(browser, "summary")  # the extra summary's value
        assert "[/bold] [red]" in _text(browser, "summary")
    finally:
        browser.quit()
        run.close()


def test_dashboard_shows_payloads_as_text_in_chromium(tmp_path: Path) -> None:
    from poptrain.report.dashboard import make_server

    evil_run(tmp_path).close()
    server = make_server(None, tmp_path, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = _browser()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/runs/xss")
        _check_page(browser)
        browser.get(f"http://localhost:{server.server_address[1]}/")
        assert browser.execute_script("return document.querySelector('#runs a').textContent") == "xss"
        assert browser.execute_script("return document.querySelector('#runs td.mark-other').textContent") == STATE
        browser.execute_script("refreshIndex()")  # the rows again, built by the page's script
        _wait(browser, "return window.poptrainIndexRendered >= 1")
        assert browser.execute_script("return document.querySelector('#runs td.mark-other').textContent") == STATE
        assert browser.execute_script(INJECTED) == []
        assert _errors(browser) == []
    finally:
        browser.quit()
        server.shutdown()
        server.server_close()


def test_report_html_keeps_data_inside_its_script() -> None:
    from poptrain.report.data import report_data
    from poptrain.report.html import page, report_html, report_json
    from poptrain.storage import InMemoryStorage

    storage = InMemoryStorage()
    run = storage.create_run(
        "tiny", spec={"metric": "acc", "mode": "max", "population_size": 1}, seed=0, initial_hparams=[{"h0": 0.5}]
    )
    evil = {"a": "</script><script>window.__pwned=1</script>", "b": "<!--<script>", "c": "x\u2028y\u2029z & >"}
    data = report_data(
        run,
        storage.get_members(run.id),
        storage.get_generations(run.id),
        storage.get_scores(run.id),
        None,
        summary=evil,
    )
    text = report_html(data)
    inline = text.split("const data = ", 1)[1].split(";\nrender(data);", 1)[0]
    assert json.loads(inline) == json.loads(report_json(data))  # the same data, escaped
    assert not any(c in inline for c in "<>&\u2028\u2029")
    assert text.count("</script>") == 2  # plotly.js's and the renderer's: no data closed a script
    polled = page("t", "", refresh_url="/api/runs/</script><!--<script>\u2028")
    assert "</script><!--" not in polled and "<!--<script>" not in polled and "\u2028" not in polled


# --- the dashboard's Host check, headers and port -----------------------------------------------
@pytest.fixture
def server(tmp_path: Path) -> Any:
    from poptrain.report.dashboard import make_server

    served = make_server(None, tmp_path, "127.0.0.1", 0)
    threading.Thread(target=served.serve_forever, daemon=True).start()
    yield served
    served.shutdown()
    served.server_close()


def _get(port: int, path: str, host: str | None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("GET", path, skip_host=True)
    if host is not None:
        connection.putheader("Host", host)
    connection.endheaders()
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_loopback_dashboard_answers_only_local_host_names(server: Any) -> None:
    port = server.server_address[1]
    for host in (
        "evil.example",
        f"evil.example:{port}",
        "127.0.0.1.evil.example",
        "localhost.evil.example:80",
        None,
        "",
    ):
        response = _get(port, "/api/runs", host)
        assert response.status == 403, host
        assert response.getheader("Content-Type", "").startswith("text/plain")
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost", "127.0.0.1", f"[::1]:{port}", "LOCALHOST"):
        assert _get(port, "/api/runs", host).status == 200, host


def test_dashboard_responses_carry_security_headers(server: Any) -> None:
    port = server.server_address[1]
    for path in ("/", "/api/runs", "/runs/nope", "/elsewhere"):
        response = _get(port, path, f"127.0.0.1:{port}")
        assert response.getheader("X-Content-Type-Options") == "nosniff", path
        policy = response.getheader("Content-Security-Policy") or ""
        assert "default-src 'none'" in policy and "script-src 'unsafe-inline'" in policy, path
    assert _get(port, "/", "evil.example").getheader("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize(
    ("bound", "host", "allowed"),
    [
        ("127.0.0.1", "localhost:8321", True),
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "[::1]:8321", True),
        ("127.0.0.1", "evil.example", False),
        ("127.0.0.1", None, False),
        ("127.0.0.1", "localhost:x", False),
        ("127.0.0.1", "[::1", False),
        ("127.1.2.3", "attacker.test:8321", False),
        ("::1", "attacker.test", False),
        ("localhost", "attacker.test", False),
        ("::1", "[::1]:8321", True),
        ("0.0.0.0", "evil.example", True),
        ("192.168.1.5", "my-machine:8321", True),
        ("", "anything", True),
        ("::", "anything", True),
        ("0.0.0.0", None, True),
    ],
)
def test_host_rule_restricts_only_loopback_servers(bound: str, host: str | None, allowed: bool) -> None:
    from poptrain.report.dashboard import allowed_host

    assert allowed_host(bound, host) is allowed


@pytest.mark.parametrize("port", [-1, 65536, 10**6])
def test_a_port_out_of_range_is_a_config_error(tmp_path: Path, port: int) -> None:
    from poptrain.report.dashboard import make_server

    with pytest.raises(ConfigError, match=f"--port must be between 0 and 65535, got {port}"):
        make_server(None, tmp_path, "127.0.0.1", port)


# --- rich markup in the data ---------------------------------------------------------------------
MARKUP_NAME = "lr [/bold] [red]"
MARKUP_RUN = "run[/bold][red]"


def test_summary_prints_markup_in_data_literally() -> None:
    from poptrain.report.terminal import print_summary
    from poptrain.results import BestMember, ScheduleSegment

    hparams = {MARKUP_NAME: 0.5, "opt": "[/bold]", "emoji": ":smile: {task}"}
    schedule = [
        ScheduleSegment(0, 0, 4, hparams, "init"),
        ScheduleSegment(1, 4, 8, hparams, "exploit", 0, {"opt": "-> '[/bold]'", MARKUP_NAME: "* [red]"}),
    ]
    best = BestMember(1, 0.9, 8, {"acc": 0.9, "x [/bold]": 1.0}, hparams, None, schedule)
    stream = io.StringIO()
    print_summary(MARKUP_RUN, "acc", best, {"extra [/bold]": "[red] [/bold]"}, wall_time=1.0, stream=stream)
    out = stream.getvalue()
    for literal in (
        MARKUP_RUN,
        MARKUP_NAME,
        "[/bold] (-> '[/bold]')",
        "0.5 (* [red])",
        "x [/bold] = 1",
        "extra [/bold] = [red] [/bold]",
        ":smile: {task}",
    ):
        assert literal in out, literal
    stream = io.StringIO()
    print_summary(MARKUP_RUN, "acc", None, {}, wall_time=1.0, stream=stream)
    assert MARKUP_RUN in stream.getvalue()


@pytest.mark.parametrize("live", [True, False])
def test_progress_prints_markup_in_data_literally(live: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from poptrain.report.terminal import TerminalProgress
    from poptrain.strategy import Decision

    monkeypatch.setenv("COLUMNS", "200")  # the live table's width: no cell cut short
    stream = io.StringIO()
    progress = TerminalProgress("acc [/bold] {x}", "max", stream=stream, live=live, lines=2)
    progress.on_start(MARKUP_RUN + " {task}", 2, 4, 0)
    hparams = {MARKUP_NAME: 0.5, "opt": "[/bold]"}
    progress.on_score(0, 1, 0.5, hparams, 0)
    progress.on_decision(Decision(1, 1, "exploit", {MARKUP_NAME: 0.4, "opt": "[red]"}, 0, {"opt": "-> '[red]'"}))
    progress.on_score(1, 1, 0.4, {MARKUP_NAME: 0.4, "opt": "[red]"}, 1)
    progress.on_score(0, 2, 0.6, hparams, 0)
    progress.on_score(1, 2, 0.7, hparams, 1)
    progress.on_finish()
    out = stream.getvalue()
    assert MARKUP_RUN + " {task}" in out
    if live:
        for literal in ("[/bold]", "-> '[red]'", "acc [/bold] {x}"):
            assert literal in out, literal


def test_text_helper_never_reads_markup() -> None:
    from rich.console import Console

    from poptrain.report.terminal import text

    stream = io.StringIO()
    console = Console(file=stream, width=100)
    console.print(text("[/bold] [red]x :smile:"), text(3))
    assert stream.getvalue() == "[/bold] [red]x :smile: 3\n"


def test_terminal_escape_sequences_in_data_are_printed_escaped(tmp_path: Path) -> None:
    import subprocess
    import sys

    from poptrain.printable import printable
    from poptrain.report.terminal import text

    title = "\x1b]0;owned\x07"
    assert printable(f"lr{title}\x1b[31m\nnext") == "lr\\x1b]0;owned\\x07\\x1b[31m\nnext"
    assert printable("a\nb\tc", lines=False) == "a\\x0ab\\x09c"
    assert text(f"x{title}").plain == "x\\x1b]0;owned\\x07"
    experiment = tmp_path / "loud.py"  # an error message carrying an escape sequence: printed escaped
    experiment.write_text('raise RuntimeError("broken \\x1b]0;owned\\x07 here")\n')
    result = subprocess.run(
        [sys.executable, "-m", "poptrain", "run", str(experiment), "--root", str(tmp_path / "runs")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "\x1b" not in result.stderr and "broken \\x1b]0;owned\\x07 here" in result.stderr
