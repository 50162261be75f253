#!/usr/bin/env python3
"""Redemptions per second at checkout, against a trivial endpoint of the same app as the baseline.

Creates a fresh PostgreSQL database (dropped at the end), loads the seed-scale registry (3,552
products) through the import service, activates a programme and issues --vouchers vouchers, then
serves the app with gunicorn (2 workers, gthread) and Redis and, with the same client concurrency:
  1. baseline: GET /healthz (JSON, no database) for a fixed time;
  2. redemptions: signed POST /redemptions of distinct vouchers, each with its own Idempotency-Key,
     for a 3-line basket (two certified products and one uncertified line).
Prints details and, as its last line: redemptions_per_s=N baseline_per_s=M ratio=R

    python benchmarks/redemptions.py [--vouchers 12000] [--procs 4] [--threads 8] [--time-limit 120]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, func, insert, select, update  # noqa: E402

from benchmarks._load import Phase, add_load_options, describe, drive, signed_headers  # noqa: E402
from benchmarks._server import (  # noqa: E402
    PG_ADMIN_URL,
    REDIS_URL,
    gunicorn_server,
    settings_env,
    throwaway_settings,
)
from voucher_service.adapters.db.migrate import upgrade  # noqa: E402
from voucher_service.adapters.db.models import (  # noqa: E402
    CertifiedProduct,
    LedgerEntry,
    ProductGtin,
    Redemption,
    Voucher,
)
from voucher_service.config import Settings  # noqa: E402
from voucher_service.domain.clock import local_date  # noqa: E402
from voucher_service.domain.gtin import with_check_digit  # noqa: E402
from voucher_service.domain.programs import ProgramSpec, TierSpec  # noqa: E402
from voucher_service.domain.registry_generator import generate_registry, registry_csv  # noqa: E402
from voucher_service.services import merchants, programs, registry  # noqa: E402
from voucher_service.services.context import ServiceContext  # noqa: E402
from voucher_service.services.keys import ensure_signing_keys  # noqa: E402
from voucher_service.services.tokens import sign_voucher  # noqa: E402

FACE_FEN, MIN_SPEND_FEN = 2000, 6000
UNCERTIFIED_GTIN = with_check_digit("697000000000")
RECONNECT_EVERY = 50


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    merchant_id: str = ""
    secret: str = ""
    gtins: tuple[str, ...] = ()


def _basket(target: Target, n: int) -> list[dict[str, Any]]:
    a, b = target.gtins[n % len(target.gtins)], target.gtins[(n * 7 + 3) % len(target.gtins)]
    return [
        {"gtin": a, "name": "认证商品", "quantity": 2, "unit_price_fen": 2590},
        {"gtin": b, "quantity": 1, "unit_price_fen": 3990},
        {"gtin": UNCERTIFIED_GTIN, "name": "普通商品", "quantity": 1, "unit_price_fen": 1200},
    ]


def _client_thread(
    target: Target, tokens: list[str], deadline: float, go: Any, out: Phase, lock: threading.Lock
) -> None:
    conn = http.client.HTTPConnection(target.host, target.port, timeout=60)
    path = "/api/v1/redemptions"
    go.wait()
    for n, token in enumerate(tokens):
        if time.monotonic() > deadline:
            break
        if n and n % RECONNECT_EVERY == 0:
            # Tills come and go: new connections keep both workers busy (a worker keeps the keep-alive
            # connections it accepted, and one worker often wins most of a simultaneous burst).
            conn.close()
        t0 = time.monotonic()
        if not token:
            conn.request("GET", "/healthz")
        else:
            body = json.dumps(
                {
                    "token": token,
                    "order_id": f"B-{secrets.token_hex(8)}",
                    "channel": "online",
                    "terminal_id": None,
                    "items": _basket(target, n),
                }
            ).encode()
            headers = signed_headers(
                target.merchant_id, target.secret, path, body, **{"Idempotency-Key": secrets.token_hex(16)}
            )
            conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.monotonic() - t0
        key = str(resp.status) + (":" + json.loads(data).get("code", "") if resp.status >= 400 else "")
        with lock:
            out.statuses[key] += 1
            out.latencies.append(elapsed)
    conn.close()


def run_phase(target: Target, work: list[list[list[str]]], seconds: float) -> Phase:
    """Drive the server: one client process per entry of `work`, one keep-alive connection per token list
    (an empty token means GET /healthz)."""
    deadline = time.monotonic() + seconds + 2
    return drive(_client_thread, [[(target, tokens, deadline) for tokens in lanes] for lanes in work])


def split_work(tokens: list[str], procs: int, threads: int) -> list[list[list[str]]]:
    """Deal the tokens out to procs x threads connections, so no two clients share a voucher."""
    lanes = procs * threads
    return [[tokens[p * threads + t :: lanes] for t in range(threads)] for p in range(procs)]


def seed(settings: Settings, vouchers: int) -> tuple[str, dict[str, Any], list[str], list[str]]:
    """Schema, keys, registry, an active programme with an enrolled merchant, issued vouchers' tokens."""
    ctx = ServiceContext.build(settings)
    try:
        upgrade(ctx.engine)
        ensure_signing_keys(ctx)
        result = registry.import_products(ctx, registry_csv(generate_registry(1)).encode(), "bench")
        print(f"registry: {result.total} products imported")
        now = ctx.now()
        spec = ProgramSpec(
            name="benchmark",
            budget_fen=FACE_FEN * vouchers,
            starts_at=now.replace(year=now.year - 1),
            ends_at=now.replace(year=now.year + 1),
            voucher_validity_days=30,
            per_person_limit=2,
            channels=("online",),
            tiers=(TierSpec("T20", FACE_FEN, MIN_SPEND_FEN, vouchers),),
            certification_types=("national", "guangxi", "shenzhen"),
            county_codes=None,
            targets=(),
            max_offline_fen_per_terminal=0,
            max_offline_hours=0,
        )
        program = programs.create_program(ctx, spec, "bench")
        merchant = merchants.create_merchant(ctx, "benchmark shop", ["online"], False, "bench")
        merchants.enrol_merchant(ctx, program["id"], merchant["id"], "bench")
        programs.activate_program(ctx, program["id"], "bench")
        tokens = issue(ctx, program["id"], vouchers)
        gtins = eligible_gtins(ctx, local_date(now))  # the programme's calendar day (Asia/Shanghai)
    finally:
        ctx.engine.dispose()
    return program["id"], merchant, tokens, gtins


def issue(ctx: ServiceContext, program_id: str, count: int) -> list[str]:
    """Issue `count` vouchers in bulk (the claim route is measured by benchmarks/claims.py)."""
    now = ctx.now()
    ctx.keys.active()
    with ctx.sessions.begin() as s:
        ids = list(
            s.scalars(
                select(Voucher.id)
                .where(Voucher.program_id == program_id, Voucher.status == "available")
                .limit(count)
            )
        )
        expires = now + dt.timedelta(days=30)
        rows, tokens = [], []
        for vid in ids:
            token, kid = sign_voucher(
                ctx,
                voucher_id=vid,
                program_id=program_id,
                tier="T20",
                face_value_fen=FACE_FEN,
                min_spend_fen=MIN_SPEND_FEN,
                issued_at=now,
                valid_from=now,
                expires_at=expires,
            )
            tokens.append(token)
            rows.append(
                {
                    "id": vid,
                    "status": "issued",
                    "holder_hash": hashlib.sha256(vid.encode()).hexdigest(),
                    "claimed_at": now,
                    "valid_from": now,
                    "expires_at": expires,
                    "kid": kid,
                    "token": token,
                    "status_changed_at": now,
                }
            )
        s.execute(update(Voucher), rows)
        s.execute(
            insert(LedgerEntry),
            [
                {
                    "program_id": program_id,
                    "voucher_id": vid,
                    "kind": "claim",
                    "from_bucket": "unclaimed",
                    "to_bucket": "outstanding",
                    "amount_fen": FACE_FEN,
                    "ref": "T20",
                    "created_at": now,
                }
                for vid in ids
            ],
        )
    return tokens


def eligible_gtins(ctx: ServiceContext, today: dt.date, limit: int = 400) -> list[str]:
    """GTINs of active products certified today (13-digit form, as a till scans them)."""
    with ctx.sessions() as s:
        rows = s.scalars(
            select(ProductGtin.gtin)
            .join(CertifiedProduct, CertifiedProduct.certification_no == ProductGtin.certification_no)
            .where(
                CertifiedProduct.status == "active",
                CertifiedProduct.valid_from <= today,
                CertifiedProduct.valid_to >= today,
            )
            .order_by(ProductGtin.gtin)
            .limit(limit)
        )
        return [g[1:] if g.startswith("0") else g for g in rows]


def verify(settings: Settings, program_id: str, created: int) -> str:
    """Check the database agrees with what the clients were told."""
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = conn.scalar(
            select(func.count()).select_from(Redemption).where(Redemption.program_id == program_id)
        )
        redeemed = conn.scalar(
            select(func.count())
            .select_from(Voucher)
            .where(Voucher.program_id == program_id, Voucher.status == "redeemed")
        )
        fen = conn.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_fen), 0)).where(
                LedgerEntry.program_id == program_id, LedgerEntry.kind == "redeem"
            )
        )
    engine.dispose()
    ok = rows == redeemed == created and fen == created * FACE_FEN
    return (
        f"database: {rows} redemptions, {redeemed} vouchers redeemed, {fen} fen moved "
        f"({'matches the 201s' if ok else 'MISMATCH'})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--vouchers", type=int, default=12_000, help="vouchers issued (some warm the server up)"
    )
    parser.add_argument("--warmup", type=int, default=1_000, help="of which used to warm the server up")
    add_load_options(parser, "redemption phase", PG_ADMIN_URL, REDIS_URL)
    args = parser.parse_args()
    with throwaway_settings(args.pg_admin_url, args.redis_url, "redeem") as settings:
        return run(args, settings)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Seed, serve, measure both phases and print the result line."""
    program_id, merchant, tokens, gtins = seed(settings, args.vouchers)
    env = settings_env(settings)
    concurrency = args.procs * args.threads
    print(
        f"gunicorn 2 workers x 8 threads on PostgreSQL + Redis; client: {args.procs} processes x "
        f"{args.threads} keep-alive connections = {concurrency}; {os.cpu_count()} CPUs shared by all; "
        f"baskets of 3 lines over {len(gtins)} certified GTINs"
    )
    warm, measured = tokens[: args.warmup], tokens[args.warmup :]
    with gunicorn_server(env, workers=2, threads=8, log_path=settings.var_dir / "gunicorn.log") as base_url:
        url = urlsplit(base_url)
        target = Target(
            url.hostname or "127.0.0.1",
            int(url.port or 80),
            merchant["id"],
            merchant["api_secret"],
            tuple(gtins),
        )
        run_phase(target, split_work([""] * 2000, args.procs, args.threads), 5.0)
        describe(
            "warm-up redemptions", run_phase(target, split_work(warm, args.procs, args.threads), 60.0), "201"
        )
        baseline = describe(
            "baseline GET /healthz",
            run_phase(target, split_work([""] * 10**6, args.procs, args.threads), args.baseline_seconds),
        )
        rush = run_phase(target, split_work(measured, args.procs, args.threads), args.time_limit)
    per_s = describe("redemptions POST /redemptions", rush, "201")
    created = rush.statuses.get("201", 0)
    print(verify(settings, program_id, created + args.warmup))
    if created != len(measured) or any(k.startswith("5") for k in rush.statuses):
        print(f"WARNING: {created} of {len(measured)} redeemed (time limit or failures)")
    print(f"redemptions_per_s={per_s:.0f} baseline_per_s={baseline:.0f} ratio={per_s / baseline:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
