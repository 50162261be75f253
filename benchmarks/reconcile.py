"""Reconciliation at scale: 1,000,000 ledger redemptions against a 1,000,000-row native statement.

Creates a fresh PostgreSQL database (dropped at the end), fills it with generate_series, writes the
statement file with planted discrepancies (streamed, never held in memory), then measures in the same
run the baseline (merely bulk-loading the statement: parse + COPY into statement_staging, rolled back)
and the whole `reconcile` (load, set-based matching, the four output files). Last line:

    reconcile_s=N load_s=M ratio=R peak_rss_mb=P

Environment: VOUCHER_TEST_PG_ADMIN_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres),
BENCH_ROWS (default 1000000).
"""

from __future__ import annotations

import hashlib
import os
import resource
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._server import PG_ADMIN_URL  # noqa: E402
from voucher_service.adapters.db.migrate import upgrade  # noqa: E402
from voucher_service.config import Settings  # noqa: E402
from voucher_service.domain.statements import parse_statement  # noqa: E402
from voucher_service.services import reconciliation  # noqa: E402
from voucher_service.services.context import ServiceContext  # noqa: E402

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
PROGRAM, MERCHANT = "bench-program", "mch_bench"
BASE = "2026-12-01 00:00:00+00"
T = TypeVar("T")

SEED = f"""
INSERT INTO programs (id, name, budget_fen, starts_at, ends_at, voucher_validity_days, per_person_limit, channels,
                      eligibility, max_offline_fen_per_terminal, max_offline_hours, timezone, status, created_at,
                      activated_at)
VALUES ('{PROGRAM}', 'benchmark', 100000000000, '{BASE}', '2027-01-31 23:59:59+00', 30, 2, '["online"]',
        '{{"certification_types": ["national"], "county_codes": null}}', 500000, 24, 'Asia/Shanghai', 'active',
        now(), now());
INSERT INTO tiers (program_id, code, face_value_fen, min_spend_fen, quantity, position)
VALUES ('{PROGRAM}', 'T50', 5000, 15000, {ROWS}, 0);
INSERT INTO merchants (id, name, channels, platform, secret_ciphertext, created_at)
VALUES ('{MERCHANT}', '巴马特产店', '["online"]', false, '\\x00', now());
INSERT INTO vouchers (id, program_id, tier_code, face_value_fen, min_spend_fen, status)
SELECT md5('v' || i)::uuid::text, '{PROGRAM}', 'T50', 5000, 15000, 'redeemed' FROM generate_series(1, {ROWS}) i;
INSERT INTO redemptions (id, voucher_id, program_id, merchant_id, order_id, channel, order_total_fen,
                         eligible_total_fen, discount_fen, clawed_back_fen, status, redeemed_at, receipt, source)
SELECT md5('r' || i)::uuid::text, md5('v' || i)::uuid::text, '{PROGRAM}', '{MERCHANT}', 'ORD-' || i, 'online',
       18000, 15000, 5000, 0, CASE WHEN i % 5000 = 13 THEN 'reversed' ELSE 'active' END,
       timestamptz '{BASE}' + (i % 30) * interval '1 day' + (i % 36000) * interval '1 second', 'VR1:bench', 'online'
FROM generate_series(1, {ROWS}) i;
INSERT INTO redemption_lines (redemption_id, index, quantity, unit_price_fen, line_total_fen, eligible,
                              county_code, discount_share_fen, returned_quantity)
SELECT md5('r' || i)::uuid::text, 0, 2, 7500, 15000, true, (ARRAY['451227','451002','451024'])[1 + i % 3],
       5000, 0
FROM generate_series(1, {ROWS}) i;
INSERT INTO offline_records (merchant_id, terminal_id, seq, record_hash, prev_hash, voucher_id, program_id,
                             order_id, discount_fen, redeemed_at, payload, status, code, received_at)
SELECT '{MERCHANT}', 'till-1', i, repeat('0', 64), repeat('0', 64), md5('v' || (i * 7919))::uuid::text,
       '{PROGRAM}', 'OFF-' || i, 5000, timestamptz '{BASE}' + i * interval '1 hour', '{{}}', 'conflict',
       'voucher_already_redeemed', timestamptz '{BASE}' + i * interval '1 hour'
FROM generate_series(1, 100) i;
"""


def voucher_id(i: int) -> str:
    return str(uuid.UUID(hashlib.md5(f"v{i}".encode()).hexdigest()))


def redeemed_at(i: int) -> str:
    day, second = 1 + i % 30, i % 36000
    return f"2026-12-{day:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"


def write_statement(path: Path) -> dict[str, int]:
    """Stream the statement: every redemption once, with discrepancies of each kind planted."""
    planted = {
        "amount_mismatch": 0,
        "missing_in_statement": 0,
        "missing_in_ledger": 0,
        "duplicate_in_statement": 0,
    }
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("order_id,voucher_id,redeemed_at,discount_fen,status\n")
        for i in range(1, ROWS + 1):
            if i % 2000 == 7:
                planted["missing_in_statement"] += 1
                continue
            discount = 5000
            if i % 1000 == 3:
                discount = 4999
                planted["amount_mismatch"] += 1
            line = f"ORD-{i},{voucher_id(i)},{redeemed_at(i)},{discount},redeemed\n"
            fh.write(line)
            if i % 2000 == 11:
                fh.write(line)
                planted["duplicate_in_statement"] += 1
            if i % 2000 == 17:
                fh.write(f"GHOST-{i},{uuid.uuid4()},{redeemed_at(i)},5000,redeemed\n")
                planted["missing_in_ledger"] += 1
    return planted


def settings_for(url: str, var_dir: Path) -> Settings:
    return Settings(
        database_url=url,
        redis_url=None,
        env="test",
        secret_key="bench-" + "x" * 40,
        signing_key_passphrase="bench",
        sms_outbox=None,
        var_dir=var_dir,
    )


class StageClock:
    """Records when each step of a run starts (the reconcile service announces its steps)."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def rows(self, rows: Iterable[T]) -> Iterable[T]:
        return rows

    def stage(self, name: str) -> None:
        self.marks.append((name, time.perf_counter()))

    def durations(self, end: float) -> list[tuple[str, float]]:
        marks = self.marks[:-1]  # the last mark is the caller's "commit" at the end
        ends = [t for _, t in marks[1:]] + [end]
        return [(name, stop - start) for (name, start), stop in zip(marks, ends, strict=True)]


def vacuum(ctx: ServiceContext, table: str) -> None:
    with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM ANALYZE {table}")


def measure_load(ctx: ServiceContext, statement: Path) -> float:
    """The baseline: stream, parse and COPY the statement into staging, nothing else (rolled back)."""
    started = time.perf_counter()
    stream, hashing = reconciliation.open_statement(statement, "native")
    with stream, ctx.sessions() as s, s.begin():
        rows = reconciliation.stage_statement(s, "bench-load", parse_statement("native", stream))
        hashing.drain()
        s.rollback()
    elapsed = time.perf_counter() - started
    print(f"load: {rows} rows in {elapsed:.2f} s", flush=True)
    return elapsed


def main() -> None:
    name = f"vbench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run(url, Path(tmp))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(url: str, tmp: Path) -> None:
    ctx = ServiceContext.build(settings_for(url, tmp))
    upgrade(ctx.engine)
    started = time.perf_counter()
    with ctx.engine.begin() as conn:
        conn.connection.driver_connection.execute(SEED)  # type: ignore[union-attr]  # no placeholders
    vacuum(ctx, "")  # the steady state of a live database: tables vacuumed, statistics known
    print(f"seeded {ROWS} redemptions in {time.perf_counter() - started:.1f} s", flush=True)
    statement = tmp / "statement.csv"
    planted = write_statement(statement)
    print(f"statement: {statement.stat().st_size / 1e6:.0f} MB, planted {planted}", flush=True)

    vacuum(ctx, "statement_staging")
    load_s = measure_load(ctx, statement)
    vacuum(ctx, "statement_staging")  # both measurements start from the same clean staging table
    req = reconciliation.ReconcileRequest(
        program_id=PROGRAM, merchant_id=MERCHANT, statement=statement, out_dir=tmp / "out", actor="benchmark"
    )
    stages = StageClock()
    started = time.perf_counter()
    result = reconciliation.reconcile(ctx, req, stages)
    reconcile_s = time.perf_counter() - started
    stages.stage("commit")
    print(
        "stages: "
        + ", ".join(f"{name} {secs:.2f} s" for name, secs in stages.durations(started + reconcile_s))
    )
    if result.error:
        raise SystemExit(f"reconcile failed: {result.error}")
    s = result.summary
    print(
        f"reconcile: exit {result.exit_code}, matched {s['matched']}, categories {s['categories']}",
        flush=True,
    )
    expected_reversed = ROWS // 5000 + (1 if ROWS % 5000 >= 13 else 0)
    assert s["categories"]["reversed_in_ledger"] == expected_reversed, s
    for category, n in planted.items():
        assert s["categories"][category] == n, (category, n, s["categories"])
    assert s["categories"]["double_spend"] == 100
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ctx.engine.dispose()
    print(
        f"reconcile_s={reconcile_s:.2f} load_s={load_s:.2f} ratio={reconcile_s / load_s:.2f} "
        f"peak_rss_mb={peak_mb:.0f}"
    )


if __name__ == "__main__":
    main()
