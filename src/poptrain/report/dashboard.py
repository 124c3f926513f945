"""``poptrain dashboard``: a local web page listing runs and showing each one's report, live.

A small threaded HTTP server (the standard library's) bound to 127.0.0.1 unless told
otherwise. Its answers:

- ``/``: the index, a table of the runs (state, best score, progress, ETA, last update; see
  ``poptrain.report.index``), which refreshes itself from ``/api/index`` every 5 seconds;
- ``/api/index``: the index as JSON, ``{"where": .., "now": .., "runs": [row, ..]}``, each row
  an ``IndexRow`` (``to_dict()``) with its table ``cells`` (text);
- ``/api/runs``: the run names, a JSON list;
- ``/runs/NAME``: the report page, which fetches ``/api/runs/NAME`` (the report's JSON, read
  afresh from storage, never cached) every 2 seconds, so a run that is training updates in place.

Runs are found in one database (``--storage URL``: SQLite or PostgreSQL) or, by default, in
the run folders under ``--root`` (one SQLite file each). The index reads each run's members,
checkpoints and scores only, one run at a time. A browser that closes the connection before
its answer is written is no error: nothing is printed.

A server bound to a loopback address answers only requests addressed to localhost (or a
loopback IP), so that a web page elsewhere cannot read it through DNS rebinding; every answer
forbids content sniffing and, through its Content-Security-Policy, loading anything from
elsewhere.
"""

from __future__ import annotations

import html
import ipaddress
import json
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, unquote

from poptrain.errors import ConfigError, PoptrainError

if TYPE_CHECKING:
    from poptrain.report.index import IndexRow
    from poptrain.storage import Storage

# Sent with every answer: no MIME sniffing; the page may run its inline plotly.js and renderer
# and fetch its data from this server, nothing else (no other script, frame, form or image).
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
    ),
)


def _is_loopback(name: str) -> bool:
    """Whether ``name`` (an address, possibly in brackets, or a host name) is this machine only."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _host_name(header: str) -> str | None:
    """The host of a ``Host`` header without its port (``[::1]:80`` -> ``[::1]``); None if malformed."""
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        name, rest = header[: end + 1], header[end + 1 :]
    else:
        name, colon, port = header.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit()):
        return None
    return name or None


def allowed_host(bound: str, host_header: str | None) -> bool:
    """Whether a server bound to address ``bound`` answers a request with this ``Host`` header:
    any when bound to another address than loopback (the user chose to share it), else only
    localhost or a loopback IP, with or without a port (a missing header is refused)."""
    if not _is_loopback(bound):
        return True
    name = _host_name(host_header.strip()) if host_header else None
    return name is not None and _is_loopback(name)


class RunSource:
    """Where the dashboard reads runs from: one storage URL, or the run folders under a root."""

    def __init__(self, storage: str | None, root: str | Path) -> None:
        self.storage = storage
        self.root = Path(root)
        self._lock = threading.Lock()
        # Under --root, each run's database stays open between index reads (opening one costs
        # more than reading its rows), keyed by the file's identity so a run deleted and made
        # again is opened afresh; ``close()`` closes them.
        self._open: dict[str, tuple[tuple[int, int], Storage]] = {}

    def where(self) -> str:
        """Where the runs are, for people (a database URL with its password hidden)."""
        if self.storage is None:
            return str(self.root)
        from poptrain.storage._sql import display_url

        return display_url(self.storage)

    def names(self) -> list[str]:
        if self.storage is not None:
            from poptrain.errors import RunNotFoundError
            from poptrain.storage import open_storage

            try:
                store = open_storage(self.storage, create=False)  # a reader never gives a database a schema
            except RunNotFoundError:
                return []
            try:
                return [r.name for r in store.list_runs()]
            finally:
                store.close()
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/poptrain.db"))

    def rows(self, now: float | None = None) -> list[IndexRow]:
        """Every run's index row, read now (a run that cannot be read gets an ``unreadable`` row).
        The lock is held for one run's reads at a time, so report pages are served in between."""
        from poptrain.errors import RunNotFoundError
        from poptrain.report.index import read_index_row, unreadable_row
        from poptrain.storage import open_storage

        now = time.time() if now is None else now
        rows: list[IndexRow] = []
        if self.storage is not None:
            try:
                store = open_storage(self.storage, create=False)
            except RunNotFoundError:
                return []
            try:
                for record in store.list_runs():
                    try:
                        with self._lock:
                            rows.append(read_index_row(store, record, now=now))
                    except Exception as exc:  # noqa: BLE001 - one unreadable run does not hide the others
                        rows.append(unreadable_row(record.name, exc))
            finally:
                store.close()
            return rows
        names = self.names()
        for name in names:
            try:
                with self._lock:
                    store = self._run_storage(name)
                    rows.append(read_index_row(store, store.get_run(name), now=now))
            except Exception as exc:  # noqa: BLE001 - one unreadable run does not hide the others
                self._forget({name})
                rows.append(unreadable_row(name, exc))
        self._forget(set(self._open) - set(names))
        return rows

    def _run_storage(self, name: str) -> Storage:
        """The open storage of run folder ``name`` (opened now if new, or if its file changed);
        called with the lock held."""
        from poptrain.run_folders import DATABASE, run_folder
        from poptrain.storage import open_storage

        path = run_folder(self.root, name) / DATABASE
        stat = path.stat()
        identity = (stat.st_dev, stat.st_ino)
        held = self._open.get(name)
        if held is not None and held[0] == identity:
            return held[1]
        if held is not None:
            held[1].close()
        store = open_storage(None, default_path=str(path), create=False)
        self._open[name] = (identity, store)
        return store

    def _forget(self, names: set[str]) -> None:
        """Close the kept storages of these runs."""
        with self._lock:
            for name in names:
                held = self._open.pop(name, None)
                if held is not None:
                    held[1].close()

    def close(self) -> None:
        """Close the run databases kept open."""
        self._forget(set(self._open))

    def index(self, now: float | None = None) -> dict[str, Any]:
        """The index as JSON-ready data: where the runs are, the time it was read, and the rows
        (each with its table cells)."""
        from poptrain.report.index import row_cells

        now = time.time() if now is None else now
        return {
            "where": self.where(),
            "now": now,
            "runs": [{**row.to_dict(), "cells": row_cells(row, now=now)} for row in self.rows(now)],
        }

    def report(self, name: str) -> str:
        """The run's report JSON, read now."""
        import poptrain
        from poptrain.report.html import report_json
        from poptrain.report.writer import run_report_data

        with self._lock:  # one reader at a time keeps SQLite connections simple
            run = poptrain.load_run(name, storage=self.storage, root=self.root)
            try:
                return report_json(run_report_data(run))
            finally:
                run.close()


# A browser that goes away mid-answer (a closed tab, a page reload): not worth a traceback.
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def _handler(source: RunSource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal is the user's
            pass

        def handle(self) -> None:  # a client gone mid-request or mid-answer ends it quietly
            try:
                super().handle()
            except _GONE:
                self.close_connection = True

        def end_headers(self) -> None:  # every answer, errors from http.server included
            for name, value in SECURITY_HEADERS:
                self.send_header(name, value)
            super().end_headers()

        def _send(self, status: int, body: str, kind: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # the http.server API names it
            hosts = self.headers.get_all("Host") or []
            bound = cast("tuple[Any, ...]", self.server.server_address)[0]  # an (IPv4 or IPv6) TCP server
            if not allowed_host(bound, hosts[0] if len(hosts) == 1 else None):
                self._send(
                    HTTPStatus.FORBIDDEN,
                    "this dashboard answers only requests for localhost or 127.0.0.1\n",
                    "text/plain",
                )
                return
            path = unquote(self.path.split("?", 1)[0])
            try:
                if path == "/":
                    self._send(HTTPStatus.OK, _index(source.index()), "text/html")
                elif path == "/api/index":
                    self._send(HTTPStatus.OK, json.dumps(source.index(), allow_nan=False), "application/json")
                elif path == "/api/runs":
                    self._send(HTTPStatus.OK, json.dumps(source.names()), "application/json")
                elif path.startswith("/api/runs/"):
                    self._send(HTTPStatus.OK, source.report(path[len("/api/runs/") :]), "application/json")
                elif path.startswith("/runs/"):
                    from poptrain.report.html import page

                    name = path[len("/runs/") :]
                    if name not in source.names():
                        self._send(HTTPStatus.NOT_FOUND, f"no run named {name!r}", "text/plain")
                        return
                    nav = '<p><a href="/">all runs</a></p>'
                    url = f"/api/runs/{quote(name, safe='')}"
                    self._send(HTTPStatus.OK, page(f"poptrain: {name}", "", refresh_url=url, nav=nav), "text/html")
                else:
                    self._send(HTTPStatus.NOT_FOUND, "not found", "text/plain")
            except _GONE:
                raise  # nobody to answer (handle() ends the connection)
            except PoptrainError as exc:
                self._send(HTTPStatus.NOT_FOUND, str(exc), "text/plain")
            except Exception as exc:  # noqa: BLE001 - a page must answer, whatever the storage did
                first = (str(exc).strip().splitlines() or [""])[0]
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {first}", "text/plain")

    return Handler


_INDEX_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; white-space: nowrap; }
th { background: #f4f4f4; }
td.mark-finished { color: #1a7f37; }
td.mark-running { color: #0969da; font-weight: 600; }
td.mark-failed, td.mark-unreadable { color: #fff; background: #cf222e; font-weight: 600; }
td.mark-interrupted, td.mark-quiet { color: #000; background: #f5c518; font-weight: 600; }
td.mark-stopped { color: #8250df; }
#status { color: #666; }
"""

# Rebuilds the table from /api/index every 5 seconds; every value goes in as text (textContent),
# links only as the /runs/... paths the server made.
_INDEX_JS = """
function cell(c) {
  const td = document.createElement("td");
  if (c.mark) td.className = "mark-" + c.mark;
  if (c.title) td.title = c.title;
  if (c.href && c.href.startsWith("/runs/")) {
    const a = document.createElement("a");
    a.setAttribute("href", c.href);
    a.textContent = c.text;
    td.appendChild(a);
  } else {
    td.textContent = c.text;
  }
  return td;
}
async function refreshIndex() {
  const status = document.getElementById("status");
  try {
    const r = await fetch("/api/index", {cache: "no-store"});
    if (!r.ok) { status.textContent = "the dashboard answered " + r.status; return; }
    const index = await r.json();
    const body = document.getElementById("runs");
    body.replaceChildren(...index.runs.map(run => {
      const tr = document.createElement("tr");
      run.cells.forEach(c => tr.appendChild(cell(c)));
      return tr;
    }));
    document.getElementById("table").hidden = index.runs.length === 0;
    document.getElementById("empty").hidden = index.runs.length !== 0;
    status.textContent = "updated " + new Date(index.now * 1000).toLocaleTimeString();
    window.poptrainIndexRendered = (window.poptrainIndexRendered || 0) + 1;
  } catch (e) {
    status.textContent = "cannot reach the dashboard (is poptrain dashboard still running?)";
  }
}
setInterval(refreshIndex, 5000);
"""


def _cell_html(cell: dict[str, str]) -> str:
    attributes = (f' class="mark-{html.escape(cell["mark"])}"' if cell.get("mark") else "") + (
        f' title="{html.escape(cell["title"])}"' if cell.get("title") else ""
    )
    text = html.escape(cell["text"])
    if cell.get("href"):
        text = f'<a href="{html.escape(cell["href"])}">{text}</a>'
    return f"<td{attributes}>{text}</td>"


def _index(index: dict[str, Any]) -> str:
    """The index page: the rows rendered here (readable at once), then refreshed by the script."""
    from poptrain.report.index import COLUMNS

    runs = index["runs"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(_cell_html(c) for c in run["cells"]) + "</tr>" for run in runs)
    empty = f"no runs yet under {html.escape(index['where'])}: start one with <code>poptrain run ...</code>"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"<title>poptrain dashboard</title><style>{_INDEX_STYLE}</style></head><body>"
        "<h1>poptrain runs</h1>"
        f"<p id='empty'{' hidden' if runs else ''}>{empty}</p>"
        f"<table id='table'{'' if runs else ' hidden'}><thead><tr>{head}</tr></thead><tbody id='runs'>{body}</tbody></table>"
        f"<p id='status'></p><script>{_INDEX_JS}</script></body></html>"
    )


class _Server(ThreadingHTTPServer):
    """The dashboard's server: a client that closed its connection early is not reported;
    closing it closes the databases its source keeps open."""

    source: RunSource | None = None

    def server_close(self) -> None:
        super().server_close()
        if self.source is not None:
            self.source.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], _GONE):
            return
        super().handle_error(request, client_address)


class _IPv6Server(_Server):
    """The server on an IPv6 address (``--host ::1``)."""

    address_family = socket.AF_INET6


def make_server(
    storage: str | None, root: str | Path, host: str = "127.0.0.1", port: int = 8321
) -> ThreadingHTTPServer:
    """The dashboard's server, bound but not yet serving (``serve_forever()`` serves). A port
    outside 0..65535 is a ``ConfigError``; one that cannot be bound raises ``OSError``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}")
    server_class = _IPv6Server if ":" in host else _Server
    source = RunSource(storage, root)
    server = server_class((host, port), _handler(source))
    server.source = source
    server.daemon_threads = True
    return server
