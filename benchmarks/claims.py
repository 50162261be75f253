#!/usr/bin/env python3
"""Claims per second, against the floor of the same SQL, pgbench and /healthz, in one run.

Creates a fresh PostgreSQL database (dropped at the end) with an active programme whose tiers hold the
pools: RUSH for the real route, FLOOR for the floor app, PGB for pgbench. Serves the service and the
floor app (benchmarks/floor_app.py) under the same gunicorn settings (2 workers x 8 gthread threads by
default, ports 8700-8799), then runs --rounds rounds of four --seconds phases with the same client
concurrency (wrk with requests prepared and signed before each phase; pgbench -M prepared):
  A. the real route: a platform merchant's signed POST /api/v1/programs/{id}/claims, distinct holders;
  B. the floor: the same two statements and one commit through psycopg (no auth, validation, Redis);
  C. pgbench running those statements as a custom script (the database's own limit);
  D. GET /healthz of the service.
Each phase prints its rate, CPU ms per request of gunicorn, PostgreSQL, Redis and the client, the
machine's steal time, and PostgreSQL's commits and rows per request; then the medians, and last:
claims_per_s=N floor_per_s=F pg_per_s=P healthz_per_s=H ratio_floor=R ratio_healthz=Q

    python benchmarks/claims.py [--seconds 10] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from sqlalchemy import create_engine, func, select  # noqa: E402

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
    deal,
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
from voucher_service.adapters.db.models import LedgerEntry, Voucher  # noqa: E402
from voucher_service.config import Settings  # noqa: E402
from voucher_service.domain.programs import ProgramSpec, TierSpec  # noqa: E402
from voucher_service.services import merchants, programs  # noqa: E402
from voucher_service.services.context import ServiceContext  # noqa: E402
from voucher_service.services.keys import ensure_signing_keys  # noqa: E402

FACE_FEN, MIN_SPEND_FEN, PER_PERSON = 2000, 6000, 2
# A token as long as the service's (the floor and pgbench write one of the same size).
TOKEN = "v1." + "A" * 236
PG_CASTS = {
    "now": "timestamptz",
    "valid_from": "timestamptz",
    "expires_at": "timestamptz",
    "per_person_limit": "int",
}


def seed(settings: Settings, quantity: int) -> tuple[str, dict[str, Any]]:
    """Schema, keys, an active programme (RUSH of `quantity`, small FLOOR and PGB tiers), a platform."""
    ctx = ServiceContext.build(settings)
    try:
        upgrade(ctx.engine)
        ensure_signing_keys(ctx)
        now = ctx.now()
        spec = ProgramSpec(
            name="benchmark",
            budget_fen=FACE_FEN * (quantity + 2),
            starts_at=now.replace(year=now.year - 1),
            ends_at=now.replace(year=now.year + 1),
            voucher_validity_days=30,
            per_person_limit=PER_PERSON,
            channels=("online",),
            tiers=(
                TierSpec("RUSH", FACE_FEN, MIN_SPEND_FEN, quantity),
                TierSpec("FLOOR", FACE_FEN, MIN_SPEND_FEN, 1),
                TierSpec("PGB", FACE_FEN, MIN_SPEND_FEN, 1),
            ),
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


def top_up(conn: psycopg.Connection[Any], program_id: str, tier: str, count: int) -> None:
    """Add `count` available vouchers to a tier's pool in one statement (the floor's and pgbench's
    pools; the real route's is minted by the service)."""
    conn.execute(
        """INSERT INTO vouchers (id, program_id, tier_code, face_value_fen, min_spend_fen, status)
           SELECT gen_random_uuid()::text, %s, %s, %s, %s, 'available' FROM generate_series(1, %s)""",
        (program_id, tier, FACE_FEN, MIN_SPEND_FEN, count),
    )
    conn.execute("ANALYZE vouchers")


def verify(settings: Settings, program_id: str, answered: int, in_flight: int) -> str:
    """The real route's books: RUSH vouchers issued and fen claimed, against the 201s the client saw
    (wrk stops at the end of a phase without reading the answers still in flight, at most one per
    connection, which the service completes all the same)."""
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        issued = conn.scalar(
            select(func.count())
            .select_from(Voucher)
            .where(Voucher.program_id == program_id, Voucher.tier_code == "RUSH", Voucher.status == "issued")
        )
        fen = conn.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_fen), 0)).where(
                LedgerEntry.program_id == program_id, LedgerEntry.kind == "claim", LedgerEntry.ref == "RUSH"
            )
        )
    engine.dispose()
    ok = answered <= (issued or 0) <= answered + in_flight and fen == (issued or 0) * FACE_FEN
    return (
        f"database: {issued} RUSH vouchers issued, {fen} fen claimed; the client saw {answered} 201s "
        f"(+ at most {in_flight} in flight): {'consistent' if ok else 'MISMATCH'}"
    )


def pg_script() -> str:
    """The claim's transaction for pgbench: RESERVE (its voucher id kept with \\gset), ISSUE."""
    holder = "md5(CAST(:client_id AS text) || '-' || CAST(:h AS text))"
    reserve = to_pgbench(floor_sql.RESERVE, PG_CASTS, {"holder_hash": holder})
    issue = to_pgbench(floor_sql.ISSUE, PG_CASTS, {"holder_hash": holder})
    return pgbench_script([[reserve + " \\gset", issue + ";"]], prelude="\\set h random(1, 1000000000000000)")


class Requests:
    """Prepares each phase's requests, dealt out to wrk's threads, just before the phase."""

    def __init__(self, program_id: str, platform: dict[str, Any], threads: int) -> None:
        self.program_id, self.platform, self.threads = program_id, platform, threads
        self.n = 0

    def route(self, count: int) -> list[list[bytes]]:
        path = f"/api/v1/programs/{self.program_id}/claims"
        pid, secret = self.platform["id"], self.platform["api_secret"]
        reqs = []
        for i in range(count):
            self.n += 1
            body = json.dumps({"tier": "RUSH", "holder_ref": f"r-{self.n}"}).encode()
            headers = signed_headers(pid, secret, path, body)
            reqs.append(raw_request("POST", path, headers, body, closes(i // self.threads)))
        return deal(reqs, self.threads)

    def floor(self, count: int) -> list[list[bytes]]:
        reqs = []
        for i in range(count):
            self.n += 1
            body = {
                "program_id": self.program_id,
                "tier": "FLOOR",
                "holder_ref": f"f-{self.n}",
                "merchant_id": self.platform["id"],
                "per_person_limit": PER_PERSON,
                "token": TOKEN,
            }
            headers = {"Content-Type": "application/json"}
            reqs.append(
                raw_request(
                    "POST", "/floor/claims", headers, json.dumps(body).encode(), closes(i // self.threads)
                )
            )
        return deal(reqs, self.threads)


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    # A SIGTERM (timeout, a CI limit) unwinds like an exception: servers stopped, databases dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quantity", type=int, default=40_000, help="vouchers in the real route's pool")
    parser.add_argument("--floor-pool", type=int, default=100_000, help="vouchers in the floor's pool")
    parser.add_argument("--pg-pool", type=int, default=200_000, help="vouchers in pgbench's pool")
    parser.add_argument("--prepare-rate", type=int, default=2_000, help="real requests prepared per second")
    parser.add_argument("--prepare-floor-rate", type=int, default=4_000, help="floor requests per second")
    add_load_options(parser, PG_ADMIN_URL, REDIS_URL)
    args = parser.parse_args()
    if not wrk_available():
        print(WRK_MISSING)
        return 2
    if pgbench_path() is None:
        print(PGBENCH_MISSING)
    with throwaway_settings(args.pg_admin_url, args.redis_url, "claims") as settings:
        if args.signing_key_scrypt_n:
            settings = dataclasses.replace(settings, signing_key_scrypt_n=args.signing_key_scrypt_n)
            print(f"signing key encrypted with scrypt n={args.signing_key_scrypt_n} (not production's)")
        return run(args, settings)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Seed, copy the database for the floor, serve both apps, run the interleaved rounds, report."""
    t_start = time.monotonic()
    program_id, platform = seed(settings, args.quantity)
    # The floor and pgbench work on a copy of the seeded database: the service's audit sealer never
    # sees their audit entries, and each side's PostgreSQL counters are its own.
    with database_copy(args.pg_admin_url, settings.database_url, "floor") as floor_url:
        return measure(args, settings, floor_url, program_id, platform, t_start)


def measure(
    args: argparse.Namespace,
    settings: Settings,
    floor_url: str,
    program_id: str,
    platform: dict[str, Any],
    t_start: float,
) -> int:
    real_url = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    floor_url = floor_url.replace("postgresql+psycopg://", "postgresql://")
    effects = "SELECT count(*) FROM ledger_entries WHERE kind = 'claim'"
    real_db = Database(psycopg.connect(real_url, autocommit=True), real_url.rsplit("/", 1)[1], effects)
    floor_db = Database(psycopg.connect(floor_url, autocommit=True), floor_url.rsplit("/", 1)[1], effects)
    top_up(floor_db.conn, program_id, "FLOOR", args.floor_pool)
    top_up(floor_db.conn, program_id, "PGB", args.pg_pool)
    now = dt.datetime.now(dt.UTC)
    pg_vars = {
        "program_id": program_id,
        "tier_code": "PGB",
        "per_person_limit": str(PER_PERSON),
        "merchant_id": platform["id"],
        "now": now.isoformat(),
        "valid_from": now.isoformat(),
        "expires_at": (now + dt.timedelta(days=30)).isoformat(),
        "kid": "floor",
        "token": TOKEN,
        "actor": f"merchant:{platform['id']}",
        "audit_data": json.dumps({"program_id": program_id, "tier": "PGB", "merchant_id": platform["id"]}),
    }
    script = pg_script()
    env = settings_env(settings, VOUCHER_CLAIM_RATE_PER_MINUTE=str(10**9))
    c, w = args.connections, args.client_threads
    pgc = args.pg_clients or args.workers * args.threads
    print(
        f"gunicorn {args.workers} workers x {args.threads} gthread threads for the service and the floor app; "
        f"clients: wrk -t{w} -c{c}, pgbench -c{pgc} -j{w} -M prepared; {args.rounds} rounds of "
        f"{args.seconds:.0f} s phases; {os.cpu_count()} CPUs shared with whatever else runs"
    )
    requests = Requests(program_id, platform, w)
    has_pgbench = pgbench_path() is not None
    meter = CpuMeter(real_url)
    rounds = Rounds(meter)
    try:
        with service_and_floor(
            env, floor_url, workers=args.workers, threads=args.threads, log_dir=settings.var_dir
        ) as ((real_port, real_pid), (floor_port, floor_pid)):
            try:

                def route(seconds: float) -> tuple[Result, Usage]:
                    lanes = requests.route(int(args.prepare_rate * seconds))
                    return run_wrk(real_port, lanes, seconds, c, "201", meter)

                def floor(seconds: float) -> tuple[Result, Usage]:
                    lanes = requests.floor(int(args.prepare_floor_rate * seconds))
                    return run_wrk(floor_port, lanes, seconds, c, "201", meter)

                def pgbench(seconds: float) -> tuple[Result, Usage]:
                    return run_pgbench(floor_url, script, pg_vars, seconds, pgc, w, meter)

                def healthz(seconds: float) -> tuple[Result, Usage]:
                    return run_wrk(real_port, healthz_lanes(w), seconds, c, None, meter, cycle=True)

                phases = {"route": route, "floor": floor, "healthz": healthz}
                if has_pgbench:
                    phases["pg"] = pgbench
                labels = {
                    "route": "claims POST /programs/{id}/claims",
                    "floor": "floor POST /floor/claims (psycopg)",
                    "pg": "pgbench -M prepared, the claim's transaction",
                    "healthz": "GET /healthz",
                }
                rounds.interleave(args, phases, labels, real_db, floor_db, real_pid, floor_pid)
            finally:
                keep_logs(args, settings.var_dir)
    finally:
        for conn in (real_db.conn, floor_db.conn, meter.pg):
            conn.close()
    print(verify(settings, program_id, rounds.answered("route"), c * rounds.count("route")))
    medians = print_summary(rounds.phases, "claims")
    if not has_pgbench:
        print(PGBENCH_MISSING)
    print(f"took {time.monotonic() - t_start:.0f} s")
    print(result_line("claims", medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
