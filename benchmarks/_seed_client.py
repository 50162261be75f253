"""The seed-scale benchmark's load client and meters.

- `run_requests`: pre-built HTTP/1.1 requests (bytes) sent over many keep-alive connections from one
  asyncio loop, so that the client costs a few tens of microseconds per request and is not the limit;
  each answer is kept as (status, code, body) for the caller to read.
- `CpuMeter`: CPU seconds of the processes that serve a phase (gunicorn's master and workers, the
  PostgreSQL backends connected to the run's database and the server's own processes, the Redis server,
  this client), read from /proc/<pid>/stat every second during the phase.
- `machine_state`: load average and steal time, since the machine is shared.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Answer:
    """One response: status, the problem's `code` (errors only) and the raw body."""

    status: int
    code: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Outcome:
    """What one batch of requests got, in the order they were given."""

    answers: list[Answer] = field(default_factory=list)
    seconds: float = 0.0
    sign_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def statuses(self) -> Counter[str]:
        return Counter(f"{a.status}" + (f":{a.code}" if a.code else "") for a in self.answers)


def signed_request(
    host: str, method: str, path: str, body: bytes, merchant_id: str, secret: str, extra: str = ""
) -> bytes:
    """A complete HTTP/1.1 request signed as the contract's merchant requests are (fresh nonce)."""
    ts, nonce = str(int(time.time())), secrets.token_hex(12)
    canonical = f"{method}\n{path}\n{ts}\n{nonce}\n{hashlib.sha256(body).hexdigest()}"
    sig = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Voucher-Merchant: {merchant_id}\r\nX-Voucher-Timestamp: {ts}\r\n"
        f"X-Voucher-Nonce: {nonce}\r\nX-Voucher-Signature: v1={sig}\r\n{extra}\r\n"
    )
    return head.encode() + body


def bearer_request(host: str, method: str, path: str, body: bytes, token: str | None) -> bytes:
    """A complete HTTP/1.1 JSON request, with a consumer's bearer token when given."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{auth}\r\n"
    )
    return head.encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[Answer, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    body = await reader.readexactly(length) if length else b""
    code = ""
    if status >= 400 and body[:1] == b"{":
        code = str(json.loads(body).get("code", ""))
    return Answer(status, code, body), close


async def _lane(
    host: str,
    port: int,
    requests: Sequence[bytes],
    next_index: Callable[[], int],
    answers: list[Answer | None],
    latencies: list[float],
    reconnect_every: int,
) -> None:
    reader = writer = None
    sent = 0
    while (i := next_index()) < len(requests):
        request = requests[i]
        for attempt in range(3):
            try:
                if writer is None or (reconnect_every and sent and sent % reconnect_every == 0):
                    if writer is not None:
                        writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                t0 = time.monotonic()
                writer.write(request)
                answer, close = await _read_answer(reader)
                latencies.append(time.monotonic() - t0)
                answers[i] = answer
                sent += 1
                if close:
                    writer.close()
                    writer = None
                break
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                # A keep-alive connection the server closed between requests: reconnect and resend.
                # Every request carries a nonce and (for money) an Idempotency-Key, so a resend is safe.
                if writer is not None:
                    writer.close()
                writer = None
                if attempt == 2:
                    answers[i] = Answer(599, f"client:{type(exc).__name__}", b"")
    if writer is not None:
        writer.close()


def run_requests(
    host: str,
    port: int,
    requests: Sequence[bytes],
    connections: int = 64,
    reconnect_every: int = 200,
) -> Outcome:
    """Send every request once over `connections` keep-alive connections; answers in request order.

    Connections are re-opened every `reconnect_every` requests: gunicorn's gthread worker keeps the
    connections it accepted, and one worker often wins most of a simultaneous burst.
    """
    answers: list[Answer | None] = [None] * len(requests)
    latencies: list[float] = []
    counter = iter(range(len(requests) + connections * 2))

    def next_index() -> int:
        return next(counter)

    async def main() -> None:
        await asyncio.gather(
            *(
                _lane(host, port, requests, next_index, answers, latencies, reconnect_every)
                for _ in range(min(connections, len(requests)) or 1)
            )
        )

    t0 = time.monotonic()
    asyncio.run(main())
    out = Outcome([a or Answer(599, "client:unsent", b"") for a in answers], time.monotonic() - t0)
    out.latencies = latencies
    return out


class SignedAhead(Sequence[bytes]):
    """Requests 0..count-1 built (signed) `ahead` at a time, just before the lanes reach them.

    A request's timestamp is then at most `ahead / rate` seconds old when it is sent, far inside the
    service's ±300 s window whatever the phase's length, and signing never stalls the lanes for long
    (1,000 requests take ~20 ms). Each built request is handed out once and then forgotten.
    """

    def __init__(self, count: int, build: Callable[[int], bytes], ahead: int = 1000) -> None:
        self.total, self.build, self.ahead = count, build, ahead
        self.built: dict[int, bytes] = {}
        self.next_to_build = 0
        self.sign_seconds = 0.0

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i: int) -> bytes:  # type: ignore[override]
        if i not in self.built:
            t0 = time.monotonic()
            stop = min(self.total, max(i + 1, self.next_to_build + self.ahead))
            for j in range(self.next_to_build, stop):
                self.built[j] = self.build(j)
            self.next_to_build = stop
            self.sign_seconds += time.monotonic() - t0
        return self.built.pop(i)


def run_signed_batches(
    host: str,
    port: int,
    count: int,
    build: Callable[[int], bytes],
    connections: int = 64,
) -> Outcome:
    """Send requests 0..count-1, each built by `build(i)` (signed) shortly before it is sent."""
    requests = SignedAhead(count, build)
    out = run_requests(host, port, requests, connections)
    out.sign_seconds = requests.sign_seconds
    return out


def percentiles(latencies: Sequence[float]) -> str:
    """p50/p90/p99 in milliseconds."""
    if not latencies:
        return "-"
    lat = sorted(latencies)
    pick = [lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1000 for p in (50, 90, 99)]
    return f"p50 {pick[0]:.0f} ms, p90 {pick[1]:.0f} ms, p99 {pick[2]:.0f} ms"


# ----------------------------------------------------------------------------------------- meters


def _cpu_ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


def children(pid: int) -> list[int]:
    """The direct children of a process (gunicorn's workers)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


@dataclass
class CpuMeter:
    """CPU seconds per group of processes between start() and stop().

    The groups are sampled every `interval` seconds while the phase runs, so a process that ends inside
    the phase counts up to its last sample (a pool's overflow or recycled PostgreSQL connection, an
    autovacuum worker); one that appears counts from zero."""

    groups: dict[str, Callable[[], Iterable[int]]]
    interval: float = 1.0
    before: dict[str, dict[int, int]] = field(default_factory=dict)
    last: dict[str, dict[int, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _sampler: threading.Thread | None = field(default=None, init=False, repr=False)

    def _sample(self) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = {}
        for name, pids in self.groups.items():
            ticks = {}
            for pid in set(pids()):
                t = _cpu_ticks(pid)
                if t is not None:
                    ticks[pid] = t
            out[name] = ticks
        return out

    def _remember(self, seen: dict[str, dict[int, int]]) -> None:
        for name, ticks in seen.items():
            self.last.setdefault(name, {}).update(ticks)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._remember(self._sample())

    def start(self) -> CpuMeter:
        self.before = self._sample()
        self.last = {name: dict(ticks) for name, ticks in self.before.items()}
        self.wall = time.monotonic()
        self._stop.clear()
        self._sampler = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
        self._sampler.start()
        return self

    def stop(self) -> CpuMeter:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
        self._remember(self._sample())
        self.wall = time.monotonic() - self.wall
        for name, ticks in self.last.items():
            old = self.before.get(name, {})
            self.seconds[name] = sum(t - old.get(pid, 0) for pid, t in ticks.items()) / CLK_TCK
        return self


def _proc_stat_cpu() -> list[int]:
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    return [int(x) for x in first[1:]]


@dataclass
class MachineMeter:
    """Load average and the share of CPU time stolen by the hypervisor, over an interval."""

    start_cpu: list[int] = field(default_factory=_proc_stat_cpu)

    def read(self) -> dict[str, float]:
        now = _proc_stat_cpu()
        delta = [b - a for a, b in zip(self.start_cpu, now, strict=False)]
        total = sum(delta) or 1
        load = os.getloadavg()
        # /proc/stat cpu: user nice system idle iowait irq softirq steal guest guest_nice
        return {
            "load1": load[0],
            "load5": load[1],
            "load15": load[2],
            "steal_pct": 100.0 * delta[7] / total if len(delta) > 7 else 0.0,
            "idle_pct": 100.0 * (delta[3] + delta[4]) / total,
            "busy_pct": 100.0 * (total - delta[3] - delta[4] - (delta[7] if len(delta) > 7 else 0)) / total,
        }
