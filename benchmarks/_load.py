"""What the HTTP benchmarks share: the load client (wrk with prepared, pre-signed requests), pgbench,
per-process CPU accounting from /proc, the machine's steal time, PostgreSQL's own counters, and the
interleaved report with medians.

A phase is one fixed-length run of one workload (the real route, its floor, pgbench, /healthz). Around
each phase the meter reads utime+stime of the processes that do the work (the gunicorn master and
workers, every PostgreSQL process, redis-server, the load client) and /proc/stat, and PostgreSQL's
pg_stat_database row of the benchmark's database (commits and rows written per request: the real route
and its floor must agree there, or the floor does not do the same work).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
CLOSE_EVERY = 50  # one request in 50 closes its connection, so both workers keep getting new ones
GROUPS = ("gunicorn", "postgres", "redis", "client")


def add_load_options(parser: argparse.ArgumentParser, pg_admin_url: str, redis_url: str) -> None:
    """The options every HTTP benchmark takes: client shape, phase lengths, and the servers to use."""
    parser.add_argument(
        "--connections", type=int, default=32, help="client connections (and pgbench clients)"
    )
    parser.add_argument("--client-threads", type=int, default=2, help="wrk and pgbench threads")
    parser.add_argument(
        "--pg-clients",
        type=int,
        help="pgbench clients (default: workers x threads, the transactions the servers can have in flight)",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (both apps)")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker (both apps)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of route, floor, pgbench, /healthz")
    parser.add_argument(
        "--no-prime", action="store_true", help="measure each phase cold, without the short runs before it"
    )
    parser.add_argument("--log-dir", type=Path, help="keep the two servers' logs here")
    parser.add_argument(
        "--signing-key-scrypt-n",
        type=int,
        help="scrypt cost of the seeded signing key (default: production's; a diagnosis only: the key "
        "ring decrypts the key again on every reload)",
    )
    parser.add_argument("--pg-admin-url", default=pg_admin_url)
    parser.add_argument("--redis-url", default=redis_url)


def signed_headers(merchant_id: str, secret: str, path: str, body: bytes, **extra: str) -> dict[str, str]:
    """The contract's merchant signature headers for a POST (a fresh timestamp and nonce each call)."""
    ts, nonce = str(int(time.time())), secrets.token_hex(12)
    canonical = "\n".join(["POST", path, ts, nonce, hashlib.sha256(body).hexdigest()])
    signature = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return {
        "X-Voucher-Merchant": merchant_id,
        "X-Voucher-Timestamp": ts,
        "X-Voucher-Nonce": nonce,
        "X-Voucher-Signature": "v1=" + signature,
        "Content-Type": "application/json",
        **extra,
    }


def raw_request(
    method: str, path: str, headers: dict[str, str], body: bytes = b"", close: bool = False
) -> bytes:
    """One HTTP/1.1 request as bytes, as wrk sends it."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- machine and process accounting -------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(comm, ppid, utime+stime in ticks) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    return parse_stat(raw)


def parse_stat(raw: str) -> tuple[str, int, int]:
    """(comm, ppid, utime+stime) of a /proc/<pid>/stat line (comm may hold spaces and parentheses)."""
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    return comm, int(rest[1]), int(rest[11]) + int(rest[12])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _cpu_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


@dataclass
class Usage:
    """CPU seconds per group during one phase, and the machine's own counters."""

    seconds: dict[str, float]
    pg_this_db: float
    wall: float
    busy: float  # of all CPUs, in CPU seconds
    steal: float  # CPU seconds stolen by the hypervisor
    total: float  # CPU seconds the machine had (wall x CPUs, as /proc/stat counts them)
    activity: Counter[str] = field(default_factory=Counter)  # samples of the database's backends


class CpuMeter:
    """Samples /proc every `interval` seconds while a phase runs, so processes that come and go inside
    the phase (pgbench's backends, wrk) are counted up to their last sample; `server_pids` are the
    gunicorn masters of the server under test (their workers are found as children; set per phase),
    `client_pids` the load client's."""

    def __init__(self, pg_url: str, interval: float = 0.2) -> None:
        import psycopg

        self.server_pids: set[int] = set()
        self.database = ""
        self.interval = interval
        self.client_pids: set[int] = set()
        # Where the database's backends are, sampled with the CPU: running, waiting (on what), idle.
        self.pg = psycopg.connect(pg_url, autocommit=True)

    def _activity(self, into: Counter[str]) -> None:
        rows = self.pg.execute(
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            (self.database,),
        ).fetchall()
        for state, wtype, wevent in rows:
            if state == "idle":
                into["idle"] += 1
            elif wtype and wtype != "Client":
                into[f"{state}/{wtype}:{wevent}"] += 1
            else:
                into[str(state) + ("/waiting on client" if wtype == "Client" else "/on CPU")] += 1

    def _scan(self) -> dict[int, tuple[str, int]]:
        """pid -> (group, ticks) of the processes the meter accounts."""
        out: dict[int, tuple[str, int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            st = _proc_stat(pid)
            if st is None:
                continue
            comm, ppid, ticks = st
            if pid in self.server_pids or ppid in self.server_pids:
                group = "gunicorn"
            elif pid in self.client_pids:
                group = "client"
            elif comm == "postgres" or comm.startswith("postgres:"):
                group = "postgres"
            elif comm.startswith("redis-server"):
                group = "redis"
            else:
                continue
            out[pid] = (group, ticks)
        return out

    def _ours(self, pid: int) -> bool:
        return f" {self.database} " in _cmdline(pid)

    def measure(self, run: Callable[[], Any]) -> tuple[Any, Usage]:
        """Run `run()` and return its result with what the machine spent meanwhile."""
        first = self._scan()
        last = dict(first)
        ours: dict[int, bool] = {pid: self._ours(pid) for pid, (g, _) in first.items() if g == "postgres"}
        cpu0, t0 = _cpu_times(), time.monotonic()
        stop = threading.Event()
        activity: Counter[str] = Counter()

        def sample() -> None:
            while not stop.wait(self.interval):
                self._activity(activity)
                for pid, seen in self._scan().items():
                    last[pid] = seen
                    if seen[0] == "postgres" and pid not in ours:
                        ours[pid] = self._ours(pid)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = run()
        finally:
            stop.set()
            sampler.join()
        for pid, seen in self._scan().items():
            last[pid] = seen
        cpu1, wall = _cpu_times(), time.monotonic() - t0
        seconds = dict.fromkeys(GROUPS, 0.0)
        pg_this_db = 0.0
        for pid, (group, ticks) in last.items():
            before = first.get(pid, (group, 0))[1]
            spent = max(0, ticks - before) / CLK_TCK
            seconds[group] += spent
            if group == "postgres" and ours.get(pid):
                pg_this_db += spent
        delta = [b - a for a, b in zip(cpu0, cpu1, strict=False)]
        idle = delta[3] + (delta[4] if len(delta) > 4 else 0)
        steal = delta[7] if len(delta) > 7 else 0
        total = sum(delta[:8])
        busy = (total - idle - steal) / CLK_TCK
        return result, Usage(seconds, pg_this_db, wall, busy, steal / CLK_TCK, total / CLK_TCK, activity)


# --- PostgreSQL's own counters ------------------------------------------------------------------

PG_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_fetched")


def pg_counters(conn: Any, database: str) -> dict[str, int]:
    """The benchmark database's pg_stat_database counters (a fresh snapshot each call)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        f"SELECT {', '.join(PG_COUNTERS)} FROM pg_stat_database WHERE datname = %s", (database,)
    ).fetchone()
    return dict(zip(PG_COUNTERS, (int(x) for x in row), strict=True))


# --- the load clients -----------------------------------------------------------------------------


@dataclass
class Result:
    """What one phase did: answers by status, how many of them count, and the latencies."""

    statuses: Counter[str] = field(default_factory=Counter)
    counted: int = 0
    elapsed: float = 0.0
    sent_per_thread: list[int] = field(default_factory=list)
    exhausted: int = 0
    errors: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    port: int,
    per_thread: Sequence[Sequence[bytes]],
    seconds: float,
    connections: int,
    count_status: str | None,
    meter: CpuMeter,
    cycle: bool = False,
) -> tuple[Result, Usage]:
    """Send each thread's prepared requests with wrk for `seconds`; count `count_status` answers (all
    when None)."""
    with tempfile.TemporaryDirectory(prefix="vbench-wrk-") as tmp:
        for i, reqs in enumerate(per_thread):
            Path(tmp, f"{i}.req").write_bytes(b"".join(r + b"\0" for r in reqs))
        cmd = [
            "wrk",
            f"-t{len(per_thread)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(HERE / "_wrk.lua"),
            f"http://127.0.0.1:{port}/",
            "--",
            tmp,
            "cycle" if cycle else "once",
        ]

        def go() -> str:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            meter.client_pids = {proc.pid}
            out, _ = proc.communicate(timeout=seconds + 120)
            return out.decode(errors="replace")

        out, usage = meter.measure(go)
    return parse_wrk(out, count_status), usage


def parse_wrk(out: str, count_status: str | None) -> Result:
    """What _wrk.lua's done() printed (its BENCH lines), as a Result counting `count_status` answers
    (all when None)."""
    res = Result()
    for line in out.splitlines():
        parts = line.split()
        if not parts or parts[0] != "BENCH":
            continue
        if parts[1] == "status":
            res.statuses[parts[2]] += int(parts[3])
        elif parts[1] == "thread":
            res.sent_per_thread.append(int(parts[4]))
            res.exhausted += int(parts[6])
        elif parts[1] == "duration_us":
            res.elapsed = int(parts[2]) / 1e6
        elif parts[1] == "errors":
            if any(int(x) for x in parts[2:]):
                res.errors = "socket errors connect/read/write/status/timeout " + "/".join(parts[2:])
        elif parts[1].startswith("latency_"):
            res.latency_ms[parts[1][8:-3]] = int(parts[2]) / 1000
    if not res.elapsed:
        raise RuntimeError(f"wrk printed no result:\n{out[-3000:]}")
    if res.exhausted:
        res.note = f"the prepared requests ran out ({res.exhausted} /healthz fillers sent): raise the pool"
    res.counted = res.statuses.get(count_status, 0) if count_status else sum(res.statuses.values())
    return res


def pgbench_path() -> str | None:
    """pgbench, on PATH or in Debian's versioned directory."""
    found = shutil.which("pgbench")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True):
        return str(candidate)
    return None


WRK_MISSING = "wrk not found: the HTTP benchmarks need it (Debian: apt-get install wrk)"
PGBENCH_MISSING = (
    "pgbench not found: install it (Debian: apt-get install postgresql-client, or postgresql-contrib on "
    "older releases) to measure the database's own limit; pg_per_s is reported as 0"
)


def run_pgbench(
    pg_url: str,
    script: str,
    variables: dict[str, str],
    seconds: float,
    clients: int,
    threads: int,
    meter: CpuMeter,
) -> tuple[Result, Usage]:
    """pgbench -M prepared running `script` with `clients` connections for `seconds`."""
    from sqlalchemy.engine import make_url

    exe = pgbench_path()
    assert exe is not None
    url = make_url(pg_url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="vbench-") as f:
        f.write(script)
        f.flush()
        cmd = [
            exe,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(max(1, round(seconds))),
            "-f",
            f.name,
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            *[f"-D{k}={v}" for k, v in variables.items()],
            url.database or "postgres",
        ]

        def go() -> tuple[int, str]:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            meter.client_pids = {proc.pid}
            out, _ = proc.communicate(timeout=seconds + 120)
            return proc.returncode, out.decode(errors="replace")

        for _attempt in range(3):
            (code, out), usage = meter.measure(go)
            if "too many clients" not in out:
                break
            time.sleep(5)  # the shared server's max_connections: others' tests come and go
    res = Result(elapsed=seconds)
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    lat = re.search(r"latency average = ([\d.]+) ms", out)
    if code != 0 or not processed or not tps:
        res.note = f"pgbench failed (exit {code}): " + " | ".join(out.strip().splitlines()[-2:])
        res.elapsed = 0.0
        return res, usage
    res.counted = int(processed.group(1))
    res.statuses["txn"] = res.counted
    if failed and int(failed.group(1)):
        res.statuses["failed"] = int(failed.group(1))
    res.elapsed = res.counted / float(tps.group(1)) if float(tps.group(1)) else seconds
    if lat:
        res.latency_ms["mean"] = float(lat.group(1))
    return res, usage


def pgbench_script(transactions: Iterable[Sequence[str]], prelude: str = "") -> str:
    """A pgbench script: `prelude` (meta-commands), then each transaction's statements between BEGIN
    and END. Statements must be on one line each (pgbench ends a command at a newline or `;`)."""
    lines = [prelude.strip()] if prelude.strip() else []
    for statements in transactions:
        lines.append("BEGIN;")
        lines += [" ".join(s.split()) for s in statements]
        lines.append("END;")
    return "\n".join(lines) + "\n"


def to_pgbench(statement: str, casts: dict[str, str], names: dict[str, str] | None = None) -> str:
    """A psycopg statement (%(name)s placeholders) as pgbench's (:name, typed with CAST: pgbench's
    prepared statements send untyped parameters, which PostgreSQL cannot type in a SELECT list).
    `names` replaces a parameter with an SQL expression instead."""
    names = names or {}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in names:
            return names[name]
        return f"CAST(:{name} AS {casts.get(name, 'text')})"

    return " ".join(re.sub(r"%\((\w+)\)s", sub, statement).split())


# --- the report -----------------------------------------------------------------------------------


@dataclass
class Phase:
    """One measured phase, as reported."""

    kind: str  # route | floor | pg | healthz
    label: str
    result: Result
    usage: Usage
    pg: dict[str, int]
    effects: int = 0  # what the database shows was done, answers still in flight at the end included

    @property
    def rate(self) -> float:
        return self.result.counted / self.result.elapsed if self.result.elapsed else 0.0

    @property
    def failed(self) -> bool:
        return not self.result.elapsed


def _per(value: float, n: int) -> str:
    return f"{value / n * 1000:.3f}" if n else "-"


def print_phase(p: Phase) -> None:
    """One phase: rate, statuses, latency, CPU ms per counted request by group, steal, PostgreSQL rows."""
    r, u, n = p.result, p.usage, p.result.counted
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items()))
    lat = " ".join(f"{k} {v:.1f}" for k, v in r.latency_ms.items())
    print(f"{p.label}: {n} in {r.elapsed:.2f} s = {p.rate:.0f}/s  [{statuses}]  latency ms: {lat}")
    cpu = "  ".join(f"{g} {_per(u.seconds[g], n)}" for g in GROUPS)
    accounted = sum(u.seconds.values())
    print(
        f"  CPU ms/request: {cpu}  (postgres of this database {_per(u.pg_this_db, n)})  | machine: busy "
        f"{u.busy / u.wall:.2f} of {u.total / u.wall:.0f} CPUs, not accounted {(u.busy - accounted) / u.wall:.2f}"
        f" CPUs, steal {100 * u.steal / u.total if u.total else 0:.1f}%"
    )
    if u.activity:
        samples = sum(u.activity.values())
        top = ", ".join(f"{k} {100 * v / samples:.0f}%" for k, v in u.activity.most_common(5))
        print(f"  backends of the database (sampled): {top}")
    if p.pg and p.effects:
        per = "  ".join(
            f"{k.replace('xact_', '').replace('tup_', '')} {v / p.effects:.2f}" for k, v in p.pg.items()
        )
        print(f"  PostgreSQL per effect ({p.effects} in the database): {per}")
    for note in filter(None, [r.note, r.errors]):
        print(f"  NOTE: {note}")


def median_rate(phases: Sequence[Phase], kind: str) -> float:
    rates = [p.rate for p in phases if p.kind == kind and not p.failed]
    return statistics.median(rates) if rates else 0.0


def print_summary(phases: Sequence[Phase], route_label: str) -> dict[str, float]:
    """Medians per kind with their spread and median CPU per request; return the median rates."""
    print("\nmedians over the rounds (rate min..max; CPU ms per request, median):")
    out = {}
    for kind, label in (
        ("route", route_label),
        ("floor", "floor"),
        ("pg", "pgbench"),
        ("healthz", "/healthz"),
    ):
        ps = [p for p in phases if p.kind == kind and not p.failed]
        if not ps:
            out[kind] = 0.0
            continue
        out[kind] = median_rate(phases, kind)
        rates = [p.rate for p in ps]
        cpu = "  ".join(
            f"{g} {statistics.median([p.usage.seconds[g] / max(1, p.result.counted) * 1000 for p in ps]):.3f}"
            for g in GROUPS
        )
        print(f"  {label:<12} {out[kind]:>7.0f}/s ({min(rates):.0f}..{max(rates):.0f})  {cpu}")
    total = [p.usage for p in phases]
    steal = sum(u.steal for u in total)
    whole = sum(u.total for u in total)
    print(f"steal time over the measured phases: {100 * steal / whole if whole else 0:.1f}% of the CPUs")
    return out


@dataclass
class Database:
    """A database the phases run against: an autocommit connection for its counters, its name, and SQL
    counting what the benchmarked work leaves there (claims issued, redemptions made), so PostgreSQL's
    counters are given per effect, answers still in flight at a phase's end included."""

    conn: Any
    name: str
    effects: str


class Rounds:
    """Runs phases: reads the database's counters around each, prints it, and keeps it for the medians
    (warm-up phases are run the same way but neither printed nor kept)."""

    def __init__(self, meter: CpuMeter) -> None:
        self.meter = meter
        self.phases: list[Phase] = []
        self.warm: list[Phase] = []

    def run(
        self,
        kind: str,
        label: str,
        go: Callable[[], tuple[Result, Usage]],
        db: Database,
        servers: set[int],
        warm: bool = False,
    ) -> Phase:
        """Run one phase against `db`, with `servers` (gunicorn masters) as the server under test."""
        self.meter.server_pids, self.meter.database = servers, db.name
        before = pg_counters(db.conn, db.name)
        done_before = db.conn.execute(db.effects).fetchone()[0]
        result, usage = go()
        time.sleep(1.2)  # backends report their counters within a second of going idle
        after = pg_counters(db.conn, db.name)
        done = db.conn.execute(db.effects).fetchone()[0] - done_before
        p = Phase(kind, label, result, usage, {k: after[k] - before[k] for k in after}, done)
        if warm:
            self.warm.append(p)
        else:
            print_phase(p)
            self.phases.append(p)
        return p

    def prime(
        self,
        kind: str,
        go: Callable[[], tuple[Result, Usage]],
        db: Database,
        servers: set[int],
        tries: int = 4,
    ) -> None:
        """Short unmeasured runs right before a measured phase, until the answers come evenly (p90 under
        2.5 x p50): whatever the server does after a pause (the key ring reloads after 30 s, which every
        thread does at once) happens here, and the phase measures the steady state."""
        for _ in range(tries):
            p = self.run(kind, "prime", go, db, servers, warm=True)
            lat = p.result.latency_ms
            if p.result.counted and lat.get("p90", 0) < 2.5 * max(lat.get("p50", 0), 1.0):
                return

    def interleave(
        self,
        args: argparse.Namespace,
        phases: dict[str, Callable[[float], tuple[Result, Usage]]],
        labels: dict[str, str],
        real_db: Database,
        floor_db: Database,
        real_pid: int,
        floor_pid: int,
    ) -> None:
        """Warm up, then `args.rounds` rounds of A the route, B its floor, C pgbench (when `phases` has
        "pg"), D /healthz, each primed first unless `--no-prime`. `phases` maps route, floor, pg and
        healthz to a run of that many seconds; `labels` names each one's phase."""
        real, flo, both = {real_pid}, {floor_pid}, {real_pid, floor_pid}
        where = {"route": (real_db, real), "floor": (floor_db, flo), "healthz": (real_db, real)}
        # Warm-up: imports, pools, caches of merchants, programmes, keys and products.
        for kind in ("healthz", "route", "floor"):
            self.run(kind, "warm-up", lambda go=phases[kind]: go(3), *where[kind], warm=True)
        for r in range(1, args.rounds + 1):
            for letter, kind in zip("ABCD", ("route", "floor", "pg", "healthz"), strict=True):
                if kind not in phases:
                    continue
                go = phases[kind]
                if kind == "pg":  # both servers idle meanwhile: what they spend anyway
                    db, servers = floor_db, both
                else:
                    db, servers = where[kind]
                    if not args.no_prime:
                        self.prime(kind, lambda go=go: go(2), db, servers)
                self.run(kind, f"[{r}] {letter} {labels[kind]}", lambda go=go: go(args.seconds), db, servers)
            print()

    def answered(self, kind: str, status: str = "201") -> int:
        """Answers with `status` the client saw in the phases of `kind`, warm-ups included."""
        return sum(p.result.statuses.get(status, 0) for p in self.phases + self.warm if p.kind == kind)

    def count(self, kind: str) -> int:
        return sum(1 for p in self.phases + self.warm if p.kind == kind)


def deal(items: Sequence[bytes], threads: int) -> list[list[bytes]]:
    """Deal requests out to wrk's threads in turn."""
    return [list(items[t::threads]) for t in range(threads)]


def closes(i: int) -> bool:
    """Whether the i-th request (in dealing order) closes its connection."""
    return i % CLOSE_EVERY == CLOSE_EVERY - 1


def healthz_lanes(threads: int) -> list[list[bytes]]:
    """GET /healthz for every wrk thread, cycled; the last of every CLOSE_EVERY closes its connection."""
    return [
        [raw_request("GET", "/healthz", {}, close=i == CLOSE_EVERY - 1) for i in range(CLOSE_EVERY)]
        for _ in range(threads)
    ]


def result_line(name: str, medians: dict[str, float]) -> str:
    n, f, pg, h = medians["route"], medians["floor"], medians["pg"], medians["healthz"]
    return (
        f"{name}_per_s={n:.0f} floor_per_s={f:.0f} pg_per_s={pg:.0f} healthz_per_s={h:.0f} "
        f"ratio_floor={n / f if f else 0:.2f} ratio_healthz={n / h if h else 0:.2f}"
    )


def keep_logs(args: argparse.Namespace, var_dir: Path) -> None:
    """Copy the servers' logs to --log-dir, when given."""
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
        for name in ("app.log", "floor.log"):
            if (var_dir / name).exists():
                shutil.copy(var_dir / name, args.log_dir / name)
