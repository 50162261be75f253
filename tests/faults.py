"""Fault injection for tests: a private redis-server, and a TCP proxy that can cut and refuse connections.

Never stop, flush or restart the shared Redis and PostgreSQL: other test sessions use them. Outages are
made here, on a redis-server this process started on a free loopback port, and on a proxy between the
app and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks._server import free_port


class TcpProxy:
    """Forwards 127.0.0.1:port to an upstream address; `cut()` resets the connections it carries and
    `refuse()` makes it close every new one at once (as a database that is down or restarting)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._refusing = False
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._live.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with self._lock:
                    self._live.discard(s)
                _reset(s)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._live) // 2

    def cut(self) -> None:
        """Reset every connection carried now (the database went away under them)."""
        with self._lock:
            live = list(self._live)
            self._live.clear()
        for s in live:
            _reset(s)

    def refuse(self, on: bool = True) -> None:
        """While on, every new connection is closed at once."""
        with self._lock:
            self._refusing = on

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@contextlib.contextmanager
def tcp_proxy(upstream_host: str, upstream_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(upstream_host, upstream_port)
    try:
        yield proxy
    finally:
        proxy.close()


class PrivateRedis:
    """A redis-server of our own on a free loopback port, without persistence: a restart loses all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed (scripts/ensure_services.sh installs it)"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server on {self.port} did not start")
            time.sleep(0.05)

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def client(self) -> object:
        import redis

        return redis.Redis(port=self.port)

    def flush(self) -> None:
        self.client().flushall()  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def gunicorn_workers(base_url: str) -> list[int]:
    """The worker pids of the gunicorn (started by this test) that serves `base_url`."""
    bind = base_url.split("://", 1)[1]
    procs: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdecimal():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if b"gunicorn" in b" ".join(cmdline) and bind.encode() in cmdline:
            procs[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])  # the ppid
    masters = [pid for pid, ppid in procs.items() if ppid not in procs]
    return sorted(pid for pid, ppid in procs.items() if ppid in masters)
