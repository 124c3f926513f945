"""A real multi-node Ray cluster on this machine, every server bound to 127.0.0.1.

Used by the tests and ``benchmarks/ray.py``: a head node and ``workers`` more nodes joined to
it, each with its own raylet, started with ``ray start`` and stopped afterwards.

Ray resolves ``--node-ip-address=127.0.0.1`` to the machine's outward address unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; that setting also refuses to start a second node, so a
worker node is started by ``python -m poptrain.testing.ray_cluster join ADDRESS``, which keeps
the loopback address as given.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # node addresses stay 127.0.0.1


@dataclass(frozen=True)
class LocalCluster:
    """A running local cluster: ``address`` is what ``ray.init(address=...)`` takes."""

    address: str
    nodes: int
    cpus_per_node: int
    temp_dir: str

    def kill_node(self, index: int = 1) -> int:
        """SIGKILL worker node ``index``'s raylet (1: the first node that joined), as when a
        machine is lost; return its pid."""
        socket_name = f"sockets/raylet.{index}".encode()
        for pid in _processes_using(self.temp_dir):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"/raylet/raylet" in command and _socket_arg(command).endswith(socket_name):
                os.kill(pid, signal.SIGKILL)
                return pid
        raise LookupError(f"no raylet for node {index} in {self.temp_dir}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _ray_bin() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed ({done.returncode}): {done.stderr.strip()[-800:]}")


def _socket_arg(command: bytes) -> bytes:
    for arg in command.split(b"\0"):
        if arg.startswith(b"--raylet_socket_name="):
            return arg.split(b"=", 1)[1]
    return b""


def _processes_using(folder: str) -> list[int]:
    """The processes that name ``folder`` in their command line or hold a file in it open."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            uses = folder.encode() in (entry / "cmdline").read_bytes() or any(
                os.readlink(fd).startswith(folder) for fd in (entry / "fd").iterdir()
            )
        except OSError:
            continue
        if uses:
            found.append(int(entry.name))
    return found


def stop(temp_dir: str) -> None:
    """Stop the cluster whose session lives in ``temp_dir``: every process that names it or
    writes its logs there; other Ray instances on the machine are left alone."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        pids = _processes_using(temp_dir)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and _alive(pid)]
            time.sleep(0.1)
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@contextmanager
def local_cluster(workers: int = 1, cpus_per_node: int = 1) -> Iterator[LocalCluster]:
    """Start a head node and ``workers`` worker nodes on 127.0.0.1; stop them on exit.

    The cluster requires a token made for it; this process gets it in its environment, with
    the loopback setting, so that a ``ray.init(address=...)`` here connects (import ``ray``
    after entering) until the cluster stops.
    """
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), **LOOPBACK_ENV}
    saved = {key: os.environ.get(key) for key in auth}
    os.environ.update(auth)
    _refresh_ray_config()
    env = {**os.environ, **LOOPBACK_ENV}
    port = _free_port()
    address = f"{LOOPBACK}:{port}"
    head = [
        _ray_bin(),
        "start",
        "--head",
        f"--node-ip-address={LOOPBACK}",
        f"--port={port}",
        f"--num-cpus={cpus_per_node}",
        "--num-gpus=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--object-store-memory={200 * 1024 * 1024}",
    ]
    temp_dir = tempfile.mkdtemp(prefix="ptray-", dir="/tmp")  # short: Ray's socket paths must stay short
    head.append(f"--temp-dir={temp_dir}")
    try:
        _run(head, env)
        for _ in range(workers):
            join_env = {k: v for k, v in env.items() if k not in LOOPBACK_ENV}
            _run([sys.executable, "-m", "poptrain.testing.ray_cluster", "join", address, str(cpus_per_node)], join_env)
        yield LocalCluster(address, 1 + workers, cpus_per_node, temp_dir)
    finally:
        stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _refresh_ray_config()


def _refresh_ray_config() -> None:
    """Ray reads the authentication settings from the environment once; a process that had
    imported Ray before reads them again."""
    if "ray" in sys.modules:
        # private names of Ray's compiled module, absent from its type information
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()  # the token of a cluster met before


def wait_for_nodes(count: int, timeout: float = 60.0) -> None:
    """Wait until the connected cluster has ``count`` live nodes."""
    import ray

    deadline = time.monotonic() + timeout
    while sum(1 for n in ray.nodes() if n.get("Alive")) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Ray cluster did not reach {count} live nodes in {timeout:.0f} s")
        time.sleep(0.2)


def _join(address: str, cpus: str) -> None:  # pragma: no cover - runs as `ray start` in a child process
    from ray._private import services
    from ray.scripts.scripts import main

    services.resolve_ip_for_localhost = lambda host: host  # keep 127.0.0.1 as given
    sys.argv = [
        "ray",
        "start",
        f"--address={address}",
        f"--node-ip-address={LOOPBACK}",
        f"--num-cpus={cpus}",
        "--num-gpus=0",
        "--disable-usage-stats",
        f"--object-store-memory={200 * 1024 * 1024}",
    ]
    main()


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 4 and sys.argv[1] == "join":
        _join(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit("usage: python -m poptrain.testing.ray_cluster join HOST:PORT CPUS")
