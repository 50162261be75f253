#!/usr/bin/env python3
"""Claims per second under a rush, against a trivial endpoint of the same app as the baseline.

Starts gunicorn (2 workers, gthread) on a fresh PostgreSQL database (created here, dropped at the
end) with Redis, then, with the same client concurrency:
  1. baseline: GET /healthz (JSON, no database) for a fixed time;
  2. claims: a platform merchant claims for distinct holders (signed requests) until a tier of
     --quantity vouchers sells out.
Prints details and, as its last line: claims_per_s=N baseline_per_s=M ratio=R

    python benchmarks/claims.py [--quantity 20000] [--procs 4] [--threads 8] [--time-limit 120]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, func, select  # noqa: E402

from benchmarks._load import Phase, add_load_options, describe, drive, signed_headers  # noqa: E402
from benchmarks._server import (  # noqa: E402
    PG_ADMIN_URL,
    REDIS_URL,
    gunicorn_server,
    settings_env,
    throwaway_settings,
)
from voucher_service.adapters.db.migrate import upgrade  # noqa: E402
from voucher_service.adapters.db.models import LedgerEntry, Voucher  # noqa: E402
from voucher_service.config import Settings  # noqa: E402
from voucher_service.domain.programs import ProgramSpec, TierSpec  # noqa: E402
from voucher_service.services import merchants, programs  # noqa: E402
from voucher_service.services.context import ServiceContext  # noqa: E402
from voucher_service.services.keys import ensure_signing_keys  # noqa: E402

FACE_FEN = 2000


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    mode: str  # healthz | claims
    program_id: str = ""
    tier: str = ""
    merchant_id: str = ""
    secret: str = ""


def _client_thread(
    target: Target, tag: str, stop: Any, seconds: float, cap: int, go: Any, out: Phase, lock: threading.Lock
) -> None:
    conn = http.client.HTTPConnection(target.host, target.port, timeout=60)
    path = f"/api/v1/programs/{target.program_id}/claims"
    go.wait()
    deadline = time.monotonic() + seconds
    n = 0
    while not stop.is_set() and n < cap and time.monotonic() < deadline:
        t0 = time.monotonic()
        if target.mode == "healthz":
            conn.request("GET", "/healthz")
        else:
            body = json.dumps({"tier": target.tier, "holder_ref": f"{tag}-{n}"}).encode()
            conn.request(
                "POST", path, body=body, headers=signed_headers(target.merchant_id, target.secret, path, body)
            )
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.monotonic() - t0
        key = str(resp.status)
        if resp.status >= 400:
            key += ":" + json.loads(data).get("code", "")
        if key == "409:tier_sold_out":
            stop.set()  # the rush is over
        with lock:
            out.statuses[key] += 1
            out.latencies.append(elapsed)
        n += 1
    conn.close()


def run_phase(target: Target, procs: int, threads: int, seconds: float, cap_per_thread: int) -> Phase:
    """Drive the server from procs x threads keep-alive connections until a sold-out answer, the time
    limit or the per-connection cap; merge what they saw."""
    stop = mp.get_context("fork").Event()
    work = [
        [(target, f"p{p}t{t}", stop, seconds, cap_per_thread) for t in range(threads)] for p in range(procs)
    ]
    return drive(_client_thread, work)


def seed(settings: Settings, quantity: int) -> tuple[str, dict[str, Any]]:
    """Schema, keys, an active programme (WARM tier for warm-up, RUSH tier of `quantity`), a platform."""
    ctx = ServiceContext.build(settings)
    try:
        upgrade(ctx.engine)
        ensure_signing_keys(ctx)
        now = ctx.now()
        spec = ProgramSpec(
            name="benchmark",
            budget_fen=FACE_FEN * (quantity + 2000),
            starts_at=now.replace(year=now.year - 1),
            ends_at=now.replace(year=now.year + 1),
            voucher_validity_days=30,
            per_person_limit=2,
            channels=("online",),
            tiers=(TierSpec("WARM", FACE_FEN, 6000, 2000), TierSpec("RUSH", FACE_FEN, 6000, quantity)),
            certification_types=("national",),
            county_codes=None,
            targets=(),
            max_offline_fen_per_terminal=0,
            max_offline_hours=0,
        )
        program = programs.create_program(ctx, spec, "bench")
        platform = merchants.create_merchant(ctx, "benchmark platform", ["online"], True, "bench")
        merchants.enrol_merchant(ctx, program["id"], platform["id"], "bench")
        programs.activate_program(ctx, program["id"], "bench")
    finally:
        ctx.engine.dispose()
    return program["id"], platform


def verify(settings: Settings, program_id: str, quantity: int) -> str:
    """Check the books after the rush: issued vouchers and claimed fen."""
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        issued = conn.scalar(
            select(func.count())
            .select_from(Voucher)
            .where(Voucher.program_id == program_id, Voucher.tier_code == "RUSH", Voucher.status == "issued")
        )
        fen = conn.scalar(
            select(func.sum(LedgerEntry.amount_fen)).where(
                LedgerEntry.program_id == program_id, LedgerEntry.kind == "claim", LedgerEntry.ref == "RUSH"
            )
        )
    engine.dispose()
    ok = issued == quantity and fen == quantity * FACE_FEN
    return (
        f"database: {issued} RUSH vouchers issued, {fen} fen claimed ({'as expected' if ok else 'MISMATCH'})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quantity", type=int, default=20_000, help="vouchers in the tier that sells out")
    add_load_options(parser, "claim rush", PG_ADMIN_URL, REDIS_URL)
    args = parser.parse_args()

    with throwaway_settings(args.pg_admin_url, args.redis_url, "claims") as settings:
        return run(args, settings)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Seed, serve, measure both phases and print the result line."""
    program_id, platform = seed(settings, args.quantity)
    env = settings_env(settings, VOUCHER_CLAIM_RATE_PER_MINUTE=str(10**9))
    concurrency = args.procs * args.threads
    print(
        f"gunicorn 2 workers x 8 threads on PostgreSQL + Redis; client: {args.procs} processes x "
        f"{args.threads} keep-alive connections = {concurrency}; {os.cpu_count()} CPUs shared by all"
    )
    with gunicorn_server(env, workers=2, threads=8, log_path=settings.var_dir / "gunicorn.log") as base_url:
        url = urlsplit(base_url)
        host, port = url.hostname or "127.0.0.1", int(url.port or 80)
        health = Target(host, port, "healthz")
        claims = Target(host, port, "claims", program_id, "RUSH", platform["id"], platform["api_secret"])
        # Warm up both workers: imports, connection pools, caches of merchants, programmes and keys.
        run_phase(health, args.procs, args.threads, 2.0, 50)
        run_phase(
            Target(host, port, "claims", program_id, "WARM", platform["id"], platform["api_secret"]),
            args.procs,
            args.threads,
            30.0,
            2000 // concurrency,
        )
        baseline = describe(
            "baseline GET /healthz", run_phase(health, args.procs, args.threads, args.baseline_seconds, 10**9)
        )
        cap = (args.quantity * 3 // 2) // concurrency + 1  # a bounded number of requests
        rush = run_phase(claims, args.procs, args.threads, args.time_limit, cap)
    issued = rush.statuses.get("201", 0)
    elapsed = rush.ended - rush.started
    describe("claims POST /programs/{id}/claims", rush)
    print(verify(settings, program_id, args.quantity))
    errors = sum(n for k, n in rush.statuses.items() if k.startswith("5"))
    if issued != args.quantity or errors:
        print(f"WARNING: {issued} of {args.quantity} issued, {errors} server errors (time limit or failures)")
    claims_per_s = issued / elapsed
    print(
        f"claims_per_s={claims_per_s:.0f} baseline_per_s={baseline:.0f} ratio={claims_per_s / baseline:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
