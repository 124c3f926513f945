"""``poptrain dashboard``: a local web page listing runs and showing each one's report, live.

A small threaded HTTP server (the standard library's) bound to 127.0.0.1 unless told
otherwise. ``/`` lists the runs; ``/runs/NAME`` is the report page, which fetches
``/api/runs/NAME`` (the report's JSON, read afresh from storage) every 2 seconds, so a run that
is training updates in place. Runs are found in one database (``--storage URL``: SQLite or
PostgreSQL) or, by default, in the run folders under ``--root`` (one SQLite file each).
"""

from __future__ import annotations

import html
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from poptrain.errors import PoptrainError


class RunSource:
    """Where the dashboard reads runs from: one storage URL, or the run folders under a root."""

    def __init__(self, storage: str | None, root: str | Path) -> None:
        self.storage = storage
        self.root = Path(root)
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        if self.storage is not None:
            from poptrain.storage import open_storage

            store = open_storage(self.storage)
            try:
                return [r.name for r in store.list_runs()]
            finally:
                store.close()
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/poptrain.db"))

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


def _handler(source: RunSource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal is the user's
            pass

        def _send(self, status: int, body: str, kind: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = unquote(self.path.split("?", 1)[0])
            try:
                if path == "/":
                    self._send(HTTPStatus.OK, _index(source.names()), "text/html")
                elif path == "/api/runs":
                    self._send(HTTPStatus.OK, json.dumps(source.names()), "application/json")
                elif path.startswith("/api/runs/"):
                    self._send(HTTPStatus.OK, source.report(path[len("/api/runs/"):]), "application/json")
                elif path.startswith("/runs/"):
                    from poptrain.report.html import page

                    name = path[len("/runs/"):]
                    if name not in source.names():
                        self._send(HTTPStatus.NOT_FOUND, f"no run named {html.escape(name)}", "text/plain")
                        return
                    nav = '<p><a href="/">all runs</a></p>'
                    self._send(HTTPStatus.OK, page(f"poptrain: {name}", "", refresh_url=f"/api/runs/{name}", nav=nav), "text/html")
                else:
                    self._send(HTTPStatus.NOT_FOUND, "not found", "text/plain")
            except PoptrainError as exc:
                self._send(HTTPStatus.NOT_FOUND, str(exc), "text/plain")

    return Handler


def _index(names: list[str]) -> str:
    items = "".join(f'<li><a href="/runs/{html.escape(n)}">{html.escape(n)}</a></li>' for n in names) or "<li>no runs yet</li>"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'><title>poptrain dashboard</title>"
        "<meta http-equiv='refresh' content='5'></head><body style='font-family: system-ui, sans-serif'>"
        f"<h1>poptrain runs</h1><ul id='runs'>{items}</ul></body></html>"
    )


def make_server(storage: str | None, root: str | Path, host: str = "127.0.0.1", port: int = 8321) -> ThreadingHTTPServer:
    """The dashboard's server, bound but not yet serving (``serve_forever()`` serves)."""
    server = ThreadingHTTPServer((host, port), _handler(RunSource(storage, root)))
    server.daemon_threads = True
    return server
