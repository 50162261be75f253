"""The load client shared by the HTTP benchmarks: client processes x keep-alive connection threads,
signed merchant requests, and a summary of what the clients saw."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import multiprocessing as mp
import secrets
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Phase:
    """What the clients saw in one phase."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


def add_load_options(parser: argparse.ArgumentParser, phase: str, pg_admin_url: str, redis_url: str) -> None:
    """The options every HTTP benchmark takes: client shape, phase lengths, and the servers to use."""
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--threads", type=int, default=8, help="connections per client process")
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument(
        "--time-limit", type=float, default=120.0, help=f"seconds the {phase} may take at most"
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


def _client_process(
    connection: Callable[..., None], lanes: Sequence[tuple[Any, ...]], go: Any, results: Any
) -> None:
    out, lock = Phase(), threading.Lock()
    threads = [threading.Thread(target=connection, args=(*lane, go, out, lock)) for lane in lanes]
    for t in threads:
        t.start()
    go.wait()
    out.started = time.monotonic()
    for t in threads:
        t.join()
    out.ended = time.monotonic()
    results.put(out)


def drive(connection: Callable[..., None], work: Sequence[Sequence[tuple[Any, ...]]]) -> Phase:
    """One client process per entry of `work`, one thread per lane calling
    `connection(*lane, go, out, lock)`; all start together; return the merged phase."""
    ctx = mp.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    children = [ctx.Process(target=_client_process, args=(connection, lanes, go, results)) for lanes in work]
    for c in children:
        c.start()
    time.sleep(1.0)  # let every connection reach the start line
    go.set()
    merged = Phase(started=time.monotonic())
    for _ in children:
        part = results.get()
        merged.statuses.update(part.statuses)
        merged.latencies.extend(part.latencies)
        merged.ended = max(merged.ended, part.ended)
    for c in children:
        c.join()
    return merged


def describe(name: str, phase: Phase, count_status: str | None = None) -> float:
    """Print a phase's throughput and latency; return the rate of `count_status` (or of all) answers."""
    total = sum(phase.statuses.values())
    counted = phase.statuses.get(count_status, 0) if count_status else total
    elapsed = phase.ended - phase.started
    lat = sorted(phase.latencies) or [0.0]
    pct = {p: lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1000 for p in (50, 90, 99)}
    mean = statistics.fmean(lat) * 1000
    print(f"{name}: {total} requests in {elapsed:.2f} s = {total / elapsed:.0f}/s; {dict(phase.statuses)}")
    print(f"  latency ms: p50 {pct[50]:.1f}, p90 {pct[90]:.1f}, p99 {pct[99]:.1f}, mean {mean:.1f}")
    return counted / elapsed
