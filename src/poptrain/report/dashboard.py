"""``poptrain dashboard``: a local web page listing runs and showing each one's report, live.

A small threaded HTTP server (the standard library's) bound to 127.0.0.1 unless told
otherwise. ``/`` lists the runs; ``/runs/NAME`` is the report page, which fetches
``/api/runs/NAME`` (the report's JSON, read afresh from storage) every 2 seconds, so a run that
is training updates in place. Runs are found in one database (``--storage URL``: SQLite or
PostgreSQL) or, by default, in the run folders under ``--root`` (one SQLite file each).

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
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote

from poptrain.errors import ConfigError, PoptrainError

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
                    self._send(HTTPStatus.OK, _index(source.names()), "text/html")
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
            except PoptrainError as exc:
                self._send(HTTPStatus.NOT_FOUND, str(exc), "text/plain")
            except Exception as exc:  # noqa: BLE001 - a page must answer, whatever the storage did
                first = (str(exc).strip().splitlines() or [""])[0]
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {first}", "text/plain")

    return Handler


def _index(names: list[str]) -> str:
    items = (
        "".join(f'<li><a href="/runs/{html.escape(quote(n, safe=""))}">{html.escape(n)}</a></li>' for n in names)
        or "<li>no runs yet</li>"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'><title>poptrain dashboard</title>"
        "<meta http-equiv='refresh' content='5'></head><body style='font-family: system-ui, sans-serif'>"
        f"<h1>poptrain runs</h1><ul id='runs'>{items}</ul></body></html>"
    )


class _IPv6Server(ThreadingHTTPServer):
    """The server on an IPv6 address (``--host ::1``)."""

    address_family = socket.AF_INET6


def make_server(
    storage: str | None, root: str | Path, host: str = "127.0.0.1", port: int = 8321
) -> ThreadingHTTPServer:
    """The dashboard's server, bound but not yet serving (``serve_forever()`` serves). A port
    outside 0..65535 is a ``ConfigError``; one that cannot be bound raises ``OSError``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}")
    server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
    server = server_class((host, port), _handler(RunSource(storage, root)))
    server.daemon_threads = True
    return server
