"""A throwaway PostgreSQL server for tests: Debian's binaries, 127.0.0.1 only, a free port,
a temporary data folder; stopped (``pg_ctl stop -m immediate``) and removed afterwards."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

MISSING = "PostgreSQL server not installed: apt-get install postgresql"
USER = "poptrain"
_names = itertools.count()


def find_bin() -> str | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``initdb`` and ``pg_ctl``, or ``PATH``'s."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0
    )
    for folder in reversed(candidates):
        if os.access(os.path.join(folder, "initdb"), os.X_OK) and os.access(os.path.join(folder, "pg_ctl"), os.X_OK):
            return folder
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb and shutil.which("pg_ctl") else None


def unavailable(reason: str) -> None:
    """Skip with a visible reason, but fail in CI (``CI`` set) where PostgreSQL must be tested."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set, so PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_server(timeout: float = 60) -> Iterator[str]:
    """Start a server; yield its URL prefix ``postgresql+psycopg://poptrain@127.0.0.1:PORT``."""
    folder = find_bin()
    if folder is None:
        unavailable(MISSING)
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb refuses root: run the server as Debian's postgres user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = tempfile.mkdtemp(prefix="poptrain-pg-")
    data = os.path.join(root, "data")
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()

    def run(*args: str) -> None:
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {(result.stderr or result.stdout).strip()[-2000:]}")

    started = False
    try:
        run(os.path.join(folder, "initdb"), "-D", data, "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        run(
            os.path.join(folder, "pg_ctl"),
            "-D",
            data,
            "-o",
            options,
            "-l",
            os.path.join(root, "log"),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        )
        started = True
        yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}"
    finally:
        if started:
            subprocess.run(
                [*prefix, os.path.join(folder, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


def new_database(server: str) -> str:
    """A fresh, empty database on the server; its SQLAlchemy URL."""
    import psycopg

    name = f"t{os.getpid()}_{next(_names)}"
    dsn = server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"
