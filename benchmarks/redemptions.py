#!/usr/bin/env python3
"""Redemptions per second, against the floor of the same SQL, pgbench and /healthz, in one run.

Creates a fresh PostgreSQL database (dropped at the end), loads the seed-scale registry (3,552
products) through the import service, activates a programme and issues --vouchers signed vouchers for
the real route (tier T20), plus issued vouchers for the floor (tier FLOOR) and pgbench (tier PGB).
Serves the service and the floor app (benchmarks/floor_app.py) under the same gunicorn settings
(2 workers x 8 gthread threads by default, ports 8700-8799), then runs --rounds rounds of four
--seconds phases with the same client concurrency (wrk with requests prepared and signed before each
phase; pgbench -M prepared), every redemption a distinct voucher with its own Idempotency-Key and a
3-line basket (two certified products and one uncertified line):
  A. the real route: a merchant's signed POST /api/v1/redemptions;
  B. the floor: the route's statements and two commits (the idempotency lease, then the checkout read
     and the redemption's write) through psycopg (no auth, validation, Redis, token check);
  C. pgbench running those statements as a custom script (the database's own limit);
  D. GET /healthz of the service.
Each phase prints its rate, CPU ms per request of gunicorn, PostgreSQL, Redis and the client, the
machine's steal time, and PostgreSQL's commits and rows per request; then the medians, and last:
redemptions_per_s=N floor_per_s=F pg_per_s=P healthz_per_s=H ratio_floor=R ratio_healthz=Q

    python benchmarks/redemptions.py [--seconds 10] [--rounds 3] [--connections 32] [--vouchers 15000]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import secrets
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from sqlalchemy import create_engine, func, insert, select, update  # noqa: E402

from benchmarks import _floor_sql as floor_sql  # noqa: E402
from benchmarks._load import (  # noqa: E402
    PGBENCH_MISSING,
    WRK_MISSING,
    CpuMeter,
    Database,
    Result,
    Rounds,
    Usage,
    add_load_options,
    closes,
    healthz_lanes,
    keep_logs,
    pgbench_path,
    pgbench_script,
    print_summary,
    raw_request,
    result_line,
    run_pgbench,
    run_wrk,
    signed_headers,
    to_pgbench,
    wrk_available,
)
from benchmarks._server import (  # noqa: E402
    PG_ADMIN_URL,
    REDIS_URL,
    database_copy,
    service_and_floor,
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
PG_CASTS = {
    "locked_until": "timestamptz",
    "created_at": "timestamptz",
    "at": "timestamptz",
    "now": "timestamptz",
    "response_status": "int",
    "response_body": "bytea",
    "order_total_fen": "bigint",
    "eligible_total_fen": "bigint",
    "discount_fen": "bigint",
}


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


def request_body(target: Target, token: str, n: int) -> bytes:
    """The JSON body of the n-th redemption: a distinct order and a 3-line basket."""
    body = {
        "token": token,
        "order_id": f"B-{secrets.token_hex(8)}",
        "channel": "online",
        "terminal_id": None,
        "items": _basket(target, n),
    }
    return json.dumps(body).encode()


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


def issued_pool(conn: psycopg.Connection[Any], program_id: str, tier: str, prefix: str, count: int) -> None:
    """`count` issued vouchers with ids prefix1..prefixN in one statement (the floor's and pgbench's:
    neither checks a token, so they need none)."""
    conn.execute(
        """INSERT INTO vouchers (id, program_id, tier_code, face_value_fen, min_spend_fen, status,
               holder_hash, claimed_at, valid_from, expires_at, status_changed_at)
           SELECT %(prefix)s || g, %(program)s, %(tier)s, %(face)s, %(min)s, 'issued', md5(g::text),
               now(), now(), now() + interval '30 days', now()
           FROM generate_series(1, %(count)s) AS g""",
        {
            "prefix": prefix,
            "program": program_id,
            "tier": tier,
            "face": FACE_FEN,
            "min": MIN_SPEND_FEN,
            "count": count,
        },
    )
    conn.execute("ANALYZE vouchers")


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


def verify(settings: Settings, program_id: str, answered: int, in_flight: int) -> str:
    """The real route's books (tier T20) against the 201s the client saw (plus those still in flight
    when a phase ended, which the service completes all the same)."""
    engine = create_engine(settings.database_url)
    real = select(Voucher.id).where(Voucher.program_id == program_id, Voucher.tier_code == "T20")
    with engine.connect() as conn:
        rows = conn.scalar(
            select(func.count()).select_from(Redemption).where(Redemption.voucher_id.in_(real))
        )
        redeemed = conn.scalar(
            select(func.count())
            .select_from(Voucher)
            .where(Voucher.program_id == program_id, Voucher.tier_code == "T20", Voucher.status == "redeemed")
        )
        fen = conn.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_fen), 0)).where(
                LedgerEntry.kind == "redeem", LedgerEntry.voucher_id.in_(real)
            )
        )
    engine.dispose()
    rows, redeemed = rows or 0, redeemed or 0
    ok = rows == redeemed and answered <= rows <= answered + in_flight and fen == rows * FACE_FEN
    return (
        f"database: {rows} redemptions, {redeemed} vouchers redeemed, {fen} fen moved; the client saw "
        f"{answered} 201s (+ at most {in_flight} in flight): {'consistent' if ok else 'MISMATCH'}"
    )


class Requests:
    """Prepares each phase's requests just before it, from the vouchers not used yet; vouchers whose
    request wrk never sent go back to the queue."""

    def __init__(
        self, target: Target, program_id: str, tokens: list[str], floor_ids: list[str], threads: int
    ) -> None:
        self.target, self.program_id, self.threads = target, program_id, threads
        self.tokens, self.floor_ids = deque(tokens), deque(floor_ids)
        self.n = 0

    def _take(self, queue: deque[str], count: int) -> list[list[str]]:
        taken = [queue.popleft() for _ in range(min(count, len(queue)))]
        return [taken[t :: self.threads] for t in range(self.threads)]

    @staticmethod
    def give_back(queue: deque[str], lanes: list[list[str]], result: Result) -> None:
        for lane, sent in zip(lanes, result.sent_per_thread, strict=False):
            queue.extendleft(reversed(lane[sent:]))

    def route(self, count: int) -> tuple[list[list[str]], list[list[bytes]]]:
        path, t = "/api/v1/redemptions", self.target
        lanes = self._take(self.tokens, count)
        out = []
        for lane in lanes:
            reqs = []
            for i, token in enumerate(lane):
                self.n += 1
                body = request_body(t, token, self.n)
                headers = signed_headers(
                    t.merchant_id, t.secret, path, body, **{"Idempotency-Key": secrets.token_hex(16)}
                )
                reqs.append(raw_request("POST", path, headers, body, closes(i)))
            out.append(reqs)
        return lanes, out

    def floor(self, count: int) -> tuple[list[list[str]], list[list[bytes]]]:
        lanes = self._take(self.floor_ids, count)
        out = []
        for lane in lanes:
            reqs = []
            for i, voucher_id in enumerate(lane):
                self.n += 1
                body = {
                    "voucher_id": voucher_id,
                    "program_id": self.program_id,
                    "merchant_id": self.target.merchant_id,
                    "order_id": f"F-{secrets.token_hex(8)}",
                    "items": _basket(self.target, self.n),
                }
                headers = {"Content-Type": "application/json", "Idempotency-Key": secrets.token_hex(16)}
                reqs.append(
                    raw_request("POST", "/floor/redemptions", headers, json.dumps(body).encode(), closes(i))
                )
            out.append(reqs)
        return lanes, out


def pg_script() -> str:
    """The redemption's two transactions for pgbench; client c's i-th redemption takes voucher
    pgb<base + c + clients * i>, so no two clients share one."""
    vid = "('pgb' || CAST(:vn AS text))"
    key = "('key-' || CAST(:vn AS text))"
    names = {
        "voucher_id": vid,
        "key": key,
        "idem_key": key,
        "order_id": key,
        "terminal_id": "CAST(NULL AS text)",
    }
    names["redemption_id"] = "CAST(gen_random_uuid() AS text)"
    lease = to_pgbench(floor_sql.INSERT_LEASE, PG_CASTS, names)
    facts = to_pgbench(floor_sql.CHECKOUT_FACTS, PG_CASTS, names)
    redeem = to_pgbench(floor_sql.REDEEM_IDEMPOTENT, PG_CASTS, names)
    prelude = "\\set vn :base + :client_id + :clients * :i\n\\set i :i + 1"
    return pgbench_script([[lease + ";"], [facts + ";", redeem + ";"]], prelude=prelude)


def pg_variables(program_id: str, merchant_id: str, gtins: list[str], clients: int) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    basket = _basket(Target("", 0, gtins=tuple(gtins)), 1)
    lines = [
        {
            "index": n,
            "gtin": item["gtin"].rjust(14, "0"),
            "sku": None,
            "name": item.get("name"),
            "quantity": item["quantity"],
            "unit_price_fen": item["unit_price_fen"],
            "line_total_fen": item["quantity"] * item["unit_price_fen"],
            "eligible": n < 2,
            "reason": None if n < 2 else "not_certified",
            "certification_no": None,
            "county_code": None,
            "discount_share_fen": 0,
        }
        for n, item in enumerate(basket)
    ]
    total = sum(x["line_total_fen"] for x in lines)
    body = json.dumps(
        {"lines": lines, "discount_fen": FACE_FEN, "order_total_fen": total}, ensure_ascii=False
    )
    return {
        "base": "1",
        "i": "0",
        "clients": str(clients),
        "merchant_id": merchant_id,
        "program_id": program_id,
        "route": "POST /api/v1/redemptions",
        "request_sha256": hashlib.sha256(body.encode()).hexdigest(),
        "locked_until": (now + dt.timedelta(hours=2)).isoformat(),
        "created_at": now.isoformat(),
        "gtins": "{" + ",".join(x["gtin"] for x in lines) + "}",
        "response_status": "201",
        "response_body": body,
        "idem_merchant_id": merchant_id,
        "allowed": "{issued}",
        "at": now.isoformat(),
        "now": now.isoformat(),
        "channel": "online",
        "order_total_fen": str(total),
        "eligible_total_fen": str(total - 1200),
        "discount_fen": str(FACE_FEN),
        "receipt": "R-pgbench",
        "source": "online",
        "actor": f"merchant:{merchant_id}",
        "lines": json.dumps(lines, ensure_ascii=False),
        "audit_data": json.dumps({"order_id": "pgbench", "discount_fen": FACE_FEN}),
    }


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    # A SIGTERM (timeout, a CI limit) unwinds like an exception: servers stopped, databases dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vouchers", type=int, default=30_000, help="signed vouchers for the real route")
    parser.add_argument("--floor-pool", type=int, default=60_000, help="issued vouchers for the floor")
    parser.add_argument("--pg-pool", type=int, default=150_000, help="issued vouchers for pgbench")
    parser.add_argument("--prepare-rate", type=int, default=1_500, help="real requests prepared per second")
    parser.add_argument("--prepare-floor-rate", type=int, default=3_000, help="floor requests per second")
    add_load_options(parser, PG_ADMIN_URL, REDIS_URL)
    args = parser.parse_args()
    if not wrk_available():
        print(WRK_MISSING)
        return 2
    if pgbench_path() is None:
        print(PGBENCH_MISSING)
    with throwaway_settings(args.pg_admin_url, args.redis_url, "redeem") as settings:
        if args.signing_key_scrypt_n:
            settings = dataclasses.replace(settings, signing_key_scrypt_n=args.signing_key_scrypt_n)
            print(f"signing key encrypted with scrypt n={args.signing_key_scrypt_n} (not production's)")
        return run(args, settings)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Seed, copy the database for the floor, serve both apps, run the interleaved rounds, report."""
    t_start = time.monotonic()
    program_id, merchant, tokens, gtins = seed(settings, args.vouchers)
    # The floor and pgbench work on a copy of the seeded database: the service's audit sealer never
    # sees their audit entries, and each side's PostgreSQL counters are its own.
    with database_copy(args.pg_admin_url, settings.database_url, "floor") as floor_url:
        return measure(args, settings, floor_url, Seeded(program_id, merchant, tokens, gtins), t_start)


@dataclass(frozen=True)
class Seeded:
    program_id: str
    merchant: dict[str, Any]
    tokens: list[str]
    gtins: list[str]


def measure(
    args: argparse.Namespace, settings: Settings, floor_url: str, seeded: Seeded, t_start: float
) -> int:
    program_id, merchant, gtins = seeded.program_id, seeded.merchant, seeded.gtins
    real_url = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    floor_url = floor_url.replace("postgresql+psycopg://", "postgresql://")
    effects = "SELECT count(*) FROM redemptions"
    real_db = Database(psycopg.connect(real_url, autocommit=True), real_url.rsplit("/", 1)[1], effects)
    floor_db = Database(psycopg.connect(floor_url, autocommit=True), floor_url.rsplit("/", 1)[1], effects)
    issued_pool(floor_db.conn, program_id, "FLOOR", "flr", args.floor_pool)
    issued_pool(floor_db.conn, program_id, "PGB", "pgb", args.pg_pool)
    c, w = args.connections, args.client_threads
    pgc = args.pg_clients or args.workers * args.threads
    pg_vars = pg_variables(program_id, merchant["id"], gtins, pgc)
    script = pg_script()
    env = settings_env(settings)
    print(
        f"gunicorn {args.workers} workers x {args.threads} gthread threads for the service and the floor app; "
        f"clients: wrk -t{w} -c{c}, pgbench -c{pgc} -j{w} -M prepared; {args.rounds} rounds of "
        f"{args.seconds:.0f} s phases; baskets of 3 lines over {len(gtins)} certified GTINs; "
        f"{os.cpu_count()} CPUs shared with whatever else runs"
    )
    has_pgbench = pgbench_path() is not None
    meter = CpuMeter(real_url)
    rounds = Rounds(meter)
    try:
        with service_and_floor(
            env, floor_url, workers=args.workers, threads=args.threads, log_dir=settings.var_dir
        ) as ((real_port, real_pid), (floor_port, floor_pid)):
            target = Target("127.0.0.1", real_port, merchant["id"], merchant["api_secret"], tuple(gtins))
            floor_ids = [f"flr{n}" for n in range(1, args.floor_pool + 1)]
            requests = Requests(target, program_id, seeded.tokens, floor_ids, w)
            try:

                def route(seconds: float) -> tuple[Result, Usage]:
                    lanes, reqs = requests.route(int(args.prepare_rate * seconds))
                    result, usage = run_wrk(real_port, reqs, seconds, c, "201", meter)
                    requests.give_back(requests.tokens, lanes, result)
                    if not requests.tokens:
                        result.note = "the signed vouchers ran out: raise --vouchers"
                    return result, usage

                def floor(seconds: float) -> tuple[Result, Usage]:
                    lanes, reqs = requests.floor(int(args.prepare_floor_rate * seconds))
                    result, usage = run_wrk(floor_port, reqs, seconds, c, "201", meter)
                    requests.give_back(requests.floor_ids, lanes, result)
                    if not requests.floor_ids:
                        result.note = "the floor's vouchers ran out: raise --floor-pool"
                    return result, usage

                def pgbench(seconds: float) -> tuple[Result, Usage]:
                    out = run_pgbench(floor_url, script, pg_vars, seconds, pgc, w, meter)
                    used = floor_db.conn.execute(
                        "SELECT max(substr(id, 4)::bigint) FROM vouchers"
                        " WHERE tier_code = 'PGB' AND status = 'redeemed'"
                    ).fetchone()
                    pg_vars["base"] = str(int(used[0] or 0) + 1 if used else 1)
                    if int(pg_vars["base"]) + pgc > args.pg_pool:
                        out[0].note = "pgbench's pool of vouchers ran out: raise --pg-pool"
                    return out

                def healthz(seconds: float) -> tuple[Result, Usage]:
                    return run_wrk(real_port, healthz_lanes(w), seconds, c, None, meter, cycle=True)

                phases = {"route": route, "floor": floor, "healthz": healthz}
                if has_pgbench:
                    phases["pg"] = pgbench
                labels = {
                    "route": "redemptions POST /redemptions",
                    "floor": "floor POST /floor/redemptions (psycopg)",
                    "pg": "pgbench -M prepared, the redemption's two transactions",
                    "healthz": "GET /healthz",
                }
                rounds.interleave(args, phases, labels, real_db, floor_db, real_pid, floor_pid)
            finally:
                keep_logs(args, settings.var_dir)
    finally:
        for conn in (real_db.conn, floor_db.conn, meter.pg):
            conn.close()
    print(verify(settings, program_id, rounds.answered("route"), c * rounds.count("route")))
    medians = print_summary(rounds.phases, "redemptions")
    if not has_pgbench:
        print(PGBENCH_MISSING)
    print(f"took {time.monotonic() - t_start:.0f} s")
    print(result_line("redemptions", medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
