"""Servers of our own for the scale tests: a Redis Cluster, a PgBouncer, a PostgreSQL primary with a
streaming replica. Each runs on loopback ports from its own range, under a temp dir, and is stopped when
its `with` block ends. The shared PostgreSQL and Redis are never reconfigured, restarted or flushed.

`make test` installs what these need (scripts/ensure_services.sh: pgbouncer, redis-tools); a test skips
only when a binary is missing all the same, and says which.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

# The loopback ports each harness may use (one range per kind, so parallel sessions of other kinds of
# servers never collide with them).
REDIS_CLUSTER_PORTS = range(7300, 7400)
PGBOUNCER_PORTS = range(6440, 6450)
REPLICA_PG_PORTS = range(5450, 5460)
APP_PORTS = range(8800, 8850)
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def binary(name: str) -> str:
    """The path of a server binary, or skip the test saying what is missing."""
    dirs = [*PG_BIN_DIRS, Path("/usr/sbin")]  # PostgreSQL's own tools; pgbouncer lives in sbin
    found = shutil.which(name) or next((str(d / name) for d in dirs if (d / name).exists()), None)
    if not found:
        pytest.skip(f"{name} is not installed (scripts/ensure_services.sh installs it with apt-get)")
    return found


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no obstacle
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ports_from(candidates: range, n: int, *, spacing: int = 1) -> list[int]:
    """`n` ports of `candidates` that nobody uses now (a Redis node also uses port + 10000)."""
    found = [
        p for p in candidates if _bindable(p) and not _listening(p) and (spacing == 1 or _bindable(p + 10000))
    ]
    if len(found) < n:
        held = (
            subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout
            if shutil.which("ss")
            else ""
        )
        busy = [line for line in held.splitlines() if any(f":{p} " in line for p in candidates)]
        pytest.fail(
            f"fewer than {n} free ports in {candidates.start}-{candidates.stop - 1}: {found}\n"
            + "\n".join(busy[:40])
        )
    return found[:n]


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL it when the test process dies, so that a test killed by a timeout
    or a crashed worker leaves no server holding its ports for the next test."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_until(check: object, what: str, timeout_s: float = 30.0, step_s: float = 0.1) -> None:
    """Poll `check()` until it is true; fail the test saying `what` did not happen."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:  # a server still starting answers with errors
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(step_s)


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def postgres_owned_dir(prefix: str) -> Path:
    """A fresh temp dir the `postgres` OS user owns (PostgreSQL and PgBouncer refuse to run as root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def _as_postgres(cmd: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
    user = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
    return subprocess.Popen(list(cmd), **user, **kw)  # type: ignore[call-overload,no-any-return]


def _run_as_postgres(cmd: Sequence[str], timeout_s: float = 120) -> None:
    proc = _as_postgres(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{out.decode(errors='replace')[-3000:]}"
        )


# ---------------------------------------------------------------------------------------------- Redis


class RedisClusterNodes:
    """`masters` Redis Cluster masters, each with `replicas` replicas, on REDIS_CLUSTER_PORTS."""

    def __init__(
        self, workdir: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000
    ) -> None:
        self.workdir = workdir
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = ports_from(REDIS_CLUSTER_PORTS, masters * (1 + replicas), spacing=10000)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The service's VOUCHER_REDIS_URL for this cluster (any node is a startup node)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        """Start the nodes and join them into a cluster. A `--cluster create` that fails is retried once on
        fresh nodes and ports, with a warning that carries what each node knew, held and logged (CI once
        saw a node called "not empty" that this harness had just started, and no trace was left of why)."""
        try:
            self._start_once()
        except AssertionError as first:
            with warnings.catch_warnings():
                # The suite turns warnings into errors; this one is a report, and the retry must run.
                warnings.simplefilter("always")
                warnings.warn(
                    f"Redis Cluster creation failed once, retrying on fresh nodes: {first}", stacklevel=2
                )
            self.stop()
            self.workdir = self.workdir.with_name(self.workdir.name + "-retry")
            fresh = range(max(self.ports) + 1, REDIS_CLUSTER_PORTS.stop)  # none of the failed nodes' ports
            self.ports = ports_from(fresh, len(self.ports), spacing=10000)
            self.procs = {}
            self._start_once()

    def _start_once(self) -> None:
        server, cli = binary("redis-server"), binary("redis-cli")
        for port in self.ports:
            self._spawn(server, port)
        for port in self.ports:
            wait_until(lambda p=port: self.node(p).ping(), f"redis node {port} answering")
            self._check_ours(port)
        out = subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports]]
            + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:] + self._diagnosis()
        self.wait_healthy()

    def _check_ours(self, port: int) -> None:
        """The server answering on `port` is the one this harness started, and it is empty: a node another
        process started on a port we chose would join our cluster, or refuse to."""
        info = self.node(port).info()  # type: ignore[attr-defined]
        proc = self.procs[port]
        if info.get("process_id") != proc.pid:
            raise AssertionError(
                f"port {port} is answered by redis pid {info.get('process_id')}, not ours ({proc.pid}, "
                f"{'exited ' + str(proc.returncode) if proc.poll() is not None else 'running'})"
                + self._diagnosis()
            )
        known = self.node(port).execute_command("CLUSTER", "INFO")  # type: ignore[attr-defined]
        known = known.decode() if isinstance(known, bytes) else str(known)
        if "cluster_known_nodes:1\r\n" not in known + "\r\n" or info.get("db0"):
            raise AssertionError(f"node {port}, just started, is not empty" + self._diagnosis())

    def _diagnosis(self) -> str:
        """What each node knows and holds, and the tail of its log, for a failure message."""
        lines = []
        for port, proc in self.procs.items():
            lines.append(f"\n--- node {port} (pid {proc.pid}, exit {proc.poll()})")
            try:
                client = self.node(port)
                known = client.execute_command("CLUSTER", "NODES")  # type: ignore[attr-defined]
                lines.append(f"dbsize {client.dbsize()}; CLUSTER NODES:\n{known}")  # type: ignore[attr-defined]
            except Exception as exc:
                lines.append(f"not answering: {exc!r}")
            log = self.workdir / str(port) / "redis.log"
            if log.exists():
                lines.append("log:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        held = (
            subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout
            if shutil.which("ss")
            else ""
        )
        lines.append(
            "\nsockets on the ports:\n"
            + "\n".join(
                line
                for line in held.splitlines()
                if any(f":{p} " in line or f":{p + 10000} " in line for p in self.ports)
            )[:4000]
        )
        return "\n".join(lines)[-12000:]

    def _spawn(self, server: str, port: int) -> None:
        node_dir = self.workdir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "no"]
            + ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            + ["--cluster-node-timeout", str(self.node_timeout_ms)]
            + ["--save", "", "--appendonly", "no", "--dir", str(node_dir), "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    def node(self, port: int) -> object:
        import redis

        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def nodes(self) -> list[dict[str, object]]:
        """CLUSTER NODES as seen by a live node: port, role, id, master id, flags."""
        for port in self.live_ports():
            try:
                raw = self.node(port).execute_command("CLUSTER", "NODES")  # type: ignore[attr-defined]
            except Exception:
                continue
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            rows = []
            for line in text.strip().splitlines():
                fields = line.split()
                flags = fields[2].split(",")
                rows.append(
                    {
                        "id": fields[0],
                        "port": int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                        "flags": flags,
                        "master": "master" in flags,
                        "master_id": fields[3],
                        "failed": "fail" in flags or "fail?" in flags,
                        "slots": fields[8:],
                    }
                )
            return rows
        raise AssertionError("no cluster node answers")

    def masters(self) -> list[int]:
        return sorted(n["port"] for n in self.nodes() if n["master"] and not n["failed"] and n["slots"])  # type: ignore[misc]

    def replica_of(self, master_port: int) -> int:
        rows = self.nodes()
        master_id = next(n["id"] for n in rows if n["port"] == master_port)
        return next(
            int(n["port"])  # type: ignore[call-overload]
            for n in rows
            if n["master_id"] == master_id and not n["failed"] and n["port"] in self.live_ports()
        )

    def _healthy(self) -> bool:
        for port in self.live_ports():
            info = self.node(port).execute_command("CLUSTER", "INFO")  # type: ignore[attr-defined]
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text or "cluster_slots_ok:16384" not in text:
                return False
        return True

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        wait_until(self._healthy, "every live node reporting cluster_state:ok with all slots", timeout_s)

    def failover(self, master_port: int) -> int:
        """CLUSTER FAILOVER on one of the master's replicas (a graceful switch); return the new master."""
        replica = self.replica_of(master_port)
        self.node(replica).execute_command("CLUSTER", "FAILOVER")  # type: ignore[attr-defined]
        wait_until(lambda: replica in self.masters(), f"replica {replica} taking over from {master_port}")
        self.wait_healthy()
        return replica

    def kill(self, master_port: int) -> int:
        """SIGKILL a master; wait for its replica to be elected; return the new master's port."""
        replica = self.replica_of(master_port)
        self.procs[master_port].kill()
        self.procs[master_port].wait(10)
        wait_until(
            lambda: replica in self.masters(), f"replica {replica} elected after {master_port} died", 60
        )
        self.wait_healthy()
        return replica

    def stop(self) -> None:
        for proc in self.procs.values():
            _stop(proc)


@contextlib.contextmanager
def redis_cluster(workdir: Path, masters: int = 3, replicas: int = 1) -> Iterator[RedisClusterNodes]:
    cluster = RedisClusterNodes(workdir, masters, replicas)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# ------------------------------------------------------------------------------------------ PgBouncer


class PgBouncer:
    """Debian's pgbouncer in transaction mode in front of a PostgreSQL server, for named databases."""

    def __init__(
        self, upstream_host: str, upstream_port: int, databases: Sequence[str], pool_size: int = 20
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.databases = list(databases)
        self.pool_size = pool_size
        self.port = ports_from(PGBOUNCER_PORTS, 1)[0]
        self.dir = postgres_owned_dir("voucher-pgbouncer-")
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        exe = binary("pgbouncer")
        host, port = self.upstream
        dbs = "\n".join(f"{d} = host={host} port={port} dbname={d} user=postgres" for d in self.databases)
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            f"""[databases]
{dbs}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = 1000
server_reset_query =
ignore_startup_parameters = extra_float_digits
admin_users = postgres
stats_users = postgres
logfile = {self.dir / "pgbouncer.log"}
pidfile = {self.dir / "pgbouncer.pid"}
"""
        )
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for f in self.dir.iterdir():
                os.chown(f, pw.pw_uid, pw.pw_gid)
        self.proc = _as_postgres([exe, str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _listening(self.port), f"pgbouncer listening on {self.port}")

    def show(self, what: str) -> list[dict[str, object]]:
        """SHOW POOLS / STATS / ... on pgbouncer's admin console."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} dbname=pgbouncer user=postgres",
            autocommit=True,
            prepare_threshold=None,
        ) as conn:
            cur = conn.execute(f"SHOW {what}")
            cols = [c.name for c in cur.description or []]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT)  # SIGINT: a safe shutdown
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def pgbouncer(
    upstream_host: str, upstream_port: int, databases: Sequence[str], pool_size: int = 20
) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(upstream_host, upstream_port, databases, pool_size)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()


# ----------------------------------------------------------------------------------- primary + replica


class StreamingPair:
    """A PostgreSQL primary of our own (initdb) and a streaming replica made from it with
    `pg_basebackup -R`, both on REPLICA_PG_PORTS under one temp dir, run as the `postgres` OS user.

    Why not a replica of the shared server: its pg_hba.conf has no `replication` line, and a replica of
    it would stream every other session's databases; our own primary needs no change to anything shared.
    """

    def __init__(self) -> None:
        self.primary_port, self.replica_port = ports_from(REPLICA_PG_PORTS, 2)
        self.dir = postgres_owned_dir("voucher-replica-")
        self.primary_data = self.dir / "primary"
        self.replica_data = self.dir / "replica"
        self.started: list[Path] = []

    def url(self, port: int, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"

    @property
    def primary_admin_url(self) -> str:
        return self.url(self.primary_port)

    def _pg_ctl(self, data: Path, *args: str) -> None:
        _run_as_postgres(
            [binary("pg_ctl"), "-D", str(data), "-l", str(data.parent / f"{data.name}.log"), *args]
        )

    def start(self) -> None:
        _run_as_postgres(
            [binary("initdb"), "-D", str(self.primary_data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
        )
        with (self.primary_data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.primary_port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nwal_level = replica\nmax_wal_senders = 4\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\n"
                "max_connections = 200\n"
            )
        self._pg_ctl(self.primary_data, "-w", "start")
        self.started.append(self.primary_data)
        _run_as_postgres(
            [binary("pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres"]
            + ["-D", str(self.replica_data), "-R", "-X", "stream", "-c", "fast"]
        )
        with (self.replica_data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.replica_port}\nhot_standby = on\nmax_standby_streaming_delay = 30s\n")
        self._pg_ctl(self.replica_data, "-w", "start")
        self.started.append(self.replica_data)

    def stop_replica(self) -> None:
        self._pg_ctl(self.replica_data, "-m", "fast", "-w", "stop")

    def start_replica(self) -> None:
        self._pg_ctl(self.replica_data, "-w", "start")

    def sql(self, port: int, statement: str, database: str = "postgres") -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={port} dbname={database} user=postgres", autocommit=True
        ) as c:
            cur = c.execute(statement)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> None:
        self.sql(self.primary_port, f'CREATE DATABASE "{name}"')
        wait_until(
            lambda: self.sql(self.replica_port, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"),
            f"database {name} on the replica",
        )

    def stop(self) -> None:
        for data in reversed(self.started):
            with contextlib.suppress(Exception):
                self._pg_ctl(data, "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def streaming_pair() -> Iterator[StreamingPair]:
    pair = StreamingPair()
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
