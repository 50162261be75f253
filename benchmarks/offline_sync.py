#!/usr/bin/env python3
"""What one offline record synced by a till costs, against an online redemption of the same basket.

Creates a fresh PostgreSQL database (dropped at the end), loads the seed-scale registry, activates a
programme with the offline channel, enrols a merchant, registers a terminal and issues signed vouchers.
Then, through the real app (Flask's test client, in process; the audit sealer off):
  baseline  --baseline online redemptions (POST /api/v1/redemptions, Idempotency-Key, a 3-line basket);
  history   --history records synced by the terminal in uploads of 500 (not measured);
  sync      --batches uploads of --batch-size records (POST /api/v1/offline-redemptions), the records
            made after the history's last upload, as a till that synced before.
Records and requests are made and signed before each measured phase. Each phase prints, per record (or
per redemption): statements sent (SQLAlchemy engine events), PostgreSQL's tuples fetched and returned,
buffer reads (blks_hit + blks_read) and commits of this database (pg_stat_database deltas; the app's
connections are closed after the phase so their counters are flushed), and CPU ms of this process (the
app and the test client) and of the database's backends; then the ratios sync / baseline.
`--explain` runs EXPLAIN (ANALYZE, BUFFERS) on every statement one more synced record sends (in a
transaction rolled back) and prints the plans of those that read the most buffers.

    python benchmarks/offline_sync.py [--history 2000] [--batches 3] [--batch-size 100] [--explain]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from sqlalchemy import Engine, event, text  # noqa: E402

from benchmarks import redemptions as redemptions_bench  # noqa: E402
from benchmarks._load import signed_headers  # noqa: E402
from benchmarks._server import PG_ADMIN_URL, REDIS_URL, throwaway_settings  # noqa: E402
from voucher_service.adapters import signing  # noqa: E402
from voucher_service.adapters.db.migrate import upgrade  # noqa: E402
from voucher_service.config import Settings  # noqa: E402
from voucher_service.domain.clock import local_date  # noqa: E402
from voucher_service.domain.programs import ProgramSpec, TierSpec  # noqa: E402
from voucher_service.domain.registry_generator import generate_registry, registry_csv  # noqa: E402
from voucher_service.services import merchants, offline_sync, programs, registry  # noqa: E402
from voucher_service.services.context import ServiceContext  # noqa: E402
from voucher_service.services.keys import ensure_signing_keys  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
FACE_FEN, MIN_SPEND_FEN = redemptions_bench.FACE_FEN, redemptions_bench.MIN_SPEND_FEN
TERMINAL = "till-bench-1"
COUNTERS = ("tup_fetched", "tup_returned", "blks_hit", "blks_read", "xact_commit")


@dataclass
class Shop:
    program_id: str
    merchant: dict[str, Any]
    tokens: list[tuple[str, str]]  # (voucher_id, token)
    gtins: list[str]


def seed(settings: Settings, vouchers: int, till_key: Any) -> Shop:
    """Schema, keys, registry, an active programme (online + offline), an enrolled merchant with the
    terminal, and `vouchers` issued vouchers' tokens."""
    ctx = ServiceContext.build(settings)
    try:
        upgrade(ctx.engine)
        ensure_signing_keys(ctx)
        registry.import_products(ctx, registry_csv(generate_registry(1)).encode(), "bench")
        now = ctx.now()
        spec = ProgramSpec(
            name="offline benchmark",
            budget_fen=FACE_FEN * vouchers,
            starts_at=now.replace(year=now.year - 1),
            ends_at=now.replace(year=now.year + 1),
            voucher_validity_days=30,
            per_person_limit=2,
            channels=("online", "offline"),
            tiers=(TierSpec("T20", FACE_FEN, MIN_SPEND_FEN, vouchers),),
            certification_types=("national", "guangxi", "shenzhen"),
            county_codes=None,
            targets=(),
            max_offline_fen_per_terminal=FACE_FEN * vouchers,
            max_offline_hours=24,
        )
        program = programs.create_program(ctx, spec, "bench")
        merchant = merchants.create_merchant(ctx, "offline shop", ["online", "offline"], False, "bench")
        merchants.enrol_merchant(ctx, program["id"], merchant["id"], "bench")
        programs.activate_program(ctx, program["id"], "bench")
        merchants.register_terminal(
            ctx, merchant["id"], TERMINAL, signing.public_jwk(till_key.public_key()), "bench", None
        )
        tokens = redemptions_bench.issue(ctx, program["id"], vouchers)
        ids = [_voucher_id(ctx, t) for t in tokens]
        gtins = redemptions_bench.eligible_gtins(ctx, local_date(now))
    finally:
        ctx.engine.dispose()
    return Shop(program["id"], merchant, list(zip(ids, tokens, strict=True)), gtins)


def _voucher_id(ctx: ServiceContext, token: str) -> str:
    from voucher_service.services.tokens import verify_voucher_token

    return verify_voucher_token(ctx, token).voucher_id


class Till:
    """A terminal's journal, written as docs/merchant-sdk.md ("Offline record format") says."""

    def __init__(self, key: Any) -> None:
        self.key = key
        self.seq, self.head = 0, offline_sync.GENESIS_HASH

    def record(self, payload: dict[str, Any]) -> dict[str, Any]:
        seq = self.seq + 1
        message = offline_sync.chained_bytes(self.head, seq, payload)
        record_hash = hashlib.sha256(message).hexdigest()
        signature = signing.b64url(signing.sign_es256_raw(self.key, message))
        record = {
            "seq": seq,
            "prev_hash": self.head,
            "record_hash": record_hash,
            "signature": signature,
            "payload": payload,
        }
        self.seq, self.head = seq, record_hash
        return record


def basket(shop: Shop, n: int) -> list[dict[str, Any]]:
    target = redemptions_bench.Target("", 0, gtins=tuple(shop.gtins))
    return redemptions_bench._basket(target, n)


def offline_payload(shop: Shop, n: int, voucher: tuple[str, str], at: dt.datetime) -> dict[str, Any]:
    items = basket(shop, n)
    eligible = sum(i["quantity"] * i["unit_price_fen"] for i in items[:2])
    return {
        "token": voucher[1],
        "voucher_id": voucher[0],
        "program_id": shop.program_id,
        "order_id": f"OFF-{n}-{secrets.token_hex(4)}",
        "items": items,
        "eligible_total_fen": eligible,
        "discount_fen": FACE_FEN,
        "lines": [],
        "redeemed_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "terminal_id": TERMINAL,
    }


# ---------------------------------------------------------------- measuring


class Statements:
    """Counts (and, when asked, keeps) the statements the app's engine sends."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self.kept: list[tuple[str, Any]] | None = None
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        self.count += 1
        if self.kept is not None:
            self.kept.append((statement, params))


def _ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


@dataclass
class Figures:
    label: str
    n: int
    statements: int
    counters: dict[str, int]
    app_cpu_s: float
    pg_cpu_s: float

    def per(self) -> dict[str, float]:
        c = self.counters
        return {
            "statements": self.statements / self.n,
            "tup_fetched": c["tup_fetched"] / self.n,
            "tup_returned": c["tup_returned"] / self.n,
            "buffers": (c["blks_hit"] + c["blks_read"]) / self.n,
            "commits": c["xact_commit"] / self.n,
            "app_cpu_ms": 1000 * self.app_cpu_s / self.n,
            "pg_cpu_ms": 1000 * self.pg_cpu_s / self.n,
        }


class Meter:
    """pg_stat_database deltas of the benchmark's database, and CPU of this process and its backends."""

    def __init__(self, database_url: str, engine: Engine, statements: Statements) -> None:
        self.database = database_url.rsplit("/", 1)[1]
        self.conn = psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql"), autocommit=True)
        self.engine = engine
        self.statements = statements

    def _counters(self) -> dict[str, int]:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute(
            f"SELECT {', '.join(COUNTERS)} FROM pg_stat_database WHERE datname = %s", (self.database,)
        ).fetchone()
        assert row is not None
        return dict(zip(COUNTERS, (int(x) for x in row), strict=True))

    def _backends(self) -> dict[int, int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'",
            (self.database,),
        ).fetchall()
        return {int(pid): _ticks(int(pid)) for (pid,) in rows}

    def _settle(self) -> dict[str, int]:
        """Close the app's connections (a backend flushes its statistics as it exits), then read."""
        self.engine.dispose()
        time.sleep(0.3)
        before = self._counters()
        while True:  # until the exited backends' counters have all arrived
            time.sleep(0.3)
            now = self._counters()
            if now == before:
                return now
            before = now

    def measure(self, label: str, n: int, run: Callable[[], None]) -> Figures:
        start = self._settle()
        # Open the pool's connection before the clock starts, so its backend is counted from the start.
        with self.engine.connect() as c:
            c.execute(text("SELECT 1"))
        backends0 = self._backends()
        statements0 = self.statements.count
        cpu0 = time.process_time()
        run()
        app_cpu = time.process_time() - cpu0
        statements = self.statements.count - statements0
        backends1 = self._backends()
        pg_ticks = sum(t - backends0.get(pid, 0) for pid, t in backends1.items())
        end = self._settle()
        counters = {k: end[k] - start[k] for k in COUNTERS}
        counters["xact_commit"] -= 1  # the SELECT 1 above
        return Figures(label, n, statements, counters, app_cpu, pg_ticks / CLK_TCK)


def show(f: Figures) -> None:
    p = f.per()
    print(
        f"{f.label:<10} n={f.n:<5} per record: statements={p['statements']:.1f} "
        f"tup_fetched={p['tup_fetched']:.1f} tup_returned={p['tup_returned']:.1f} "
        f"buffers={p['buffers']:.1f} commits={p['commits']:.2f} "
        f"app_cpu_ms={p['app_cpu_ms']:.2f} pg_cpu_ms={p['pg_cpu_ms']:.2f}"
    )


# ---------------------------------------------------------------- EXPLAIN


def explain(database_url: str, kept: list[tuple[str, Any]], top: int) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) each statement again in one transaction that is rolled back; print the
    buffers of each and the plans of the `top` that read the most."""
    rows: list[tuple[int, str, str]] = []
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        for statement, params in kept:
            head = " ".join(statement.split())
            if head.upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
                continue
            try:
                with conn.transaction():  # a savepoint: a failing statement does not end the others
                    plan = conn.execute(
                        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params
                    ).fetchone()
            except psycopg.Error as exc:
                print(f"  (not explained: {type(exc).__name__}: {head[:120]})")
                continue
            assert plan is not None
            root = plan[0][0]["Plan"]
            buffers = int(root.get("Shared Hit Blocks", 0)) + int(root.get("Shared Read Blocks", 0))
            text_plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params).fetchall()
            rows.append((buffers, head, "\n".join("      " + r[0] for r in text_plan)))
        conn.rollback()
    print(f"== EXPLAIN (ANALYZE, BUFFERS) of the {len(rows)} statements of one synced record")
    for buffers, head, _ in rows:
        print(f"  buffers={buffers:<6} {head[:150]}")
    for buffers, head, plan in sorted(rows, key=lambda r: -r[0])[:top]:
        print(f"-- {buffers} buffers: {head[:300]}")
        print(plan)


# ---------------------------------------------------------------- the run


def run(args: argparse.Namespace, settings: Settings) -> int:
    from voucher_service import create_app

    till = Till(signing.generate_private_key())
    synced = args.batches * args.batch_size
    needed = args.baseline + args.history + synced + 1 + 4
    t0 = time.monotonic()
    shop = seed(settings, needed, till.key)
    print(f"seeded {needed} vouchers in {time.monotonic() - t0:.1f} s")
    vouchers = iter(shop.tokens)
    app = create_app(settings, start_sealer=False)
    engine = app.extensions["voucher"].engine
    statements = Statements(engine)
    meter = Meter(settings.database_url, engine, statements)
    client = app.test_client()
    merchant_id, secret = shop.merchant["id"], shop.merchant["api_secret"]

    def post(path: str, body: bytes, **extra: str) -> Any:
        return client.post(path, data=body, headers=signed_headers(merchant_id, secret, path, body, **extra))

    def upload(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = json.dumps({"terminal_id": TERMINAL, "records": records}).encode()
        resp = post("/api/v1/offline-redemptions", body)
        assert resp.status_code == 200, resp.get_json()
        results = resp.get_json()["results"]
        bad = [r for r in results if r["status"] != "accepted"]
        assert not bad, bad[:3]
        return results

    def online_bodies(count: int) -> list[bytes]:
        return [
            json.dumps(
                {
                    "token": next(vouchers)[1],
                    "order_id": f"ON-{n}-{secrets.token_hex(4)}",
                    "channel": "online",
                    "terminal_id": None,
                    "items": basket(shop, n),
                }
            ).encode()
            for n in range(count)
        ]

    def redeem(bodies: list[bytes]) -> None:
        for body in bodies:
            resp = post("/api/v1/redemptions", body, **{"Idempotency-Key": secrets.token_hex(16)})
            assert resp.status_code == 201, resp.get_json()

    def records(count: int) -> list[dict[str, Any]]:
        at = dt.datetime.now(dt.UTC)
        return [till.record(offline_payload(shop, n, next(vouchers), at)) for n in range(count)]

    # Warm-up (caches, key ring, prepared statements), unmeasured.
    redeem(online_bodies(2))
    upload(records(2))

    bodies = online_bodies(args.baseline)
    baseline = meter.measure("online", args.baseline, lambda: redeem(bodies))
    show(baseline)

    t0 = time.monotonic()
    left = args.history
    while left > 0:
        chunk = min(left, offline_sync.MAX_RECORDS_PER_UPLOAD)
        upload(records(chunk))
        left -= chunk
    print(f"history: {args.history} records synced in {time.monotonic() - t0:.1f} s (not measured)")
    time.sleep(1.1)  # the measured records are made after the history's last upload (whole seconds)

    batches = [records(args.batch_size) for _ in range(args.batches)]

    def sync() -> None:
        for batch in batches:
            upload(batch)

    synced_figures = meter.measure("sync", synced, sync)
    show(synced_figures)

    b, s = baseline.per(), synced_figures.per()
    ratios = {k: s[k] / b[k] if b[k] else float("inf") for k in b}
    print("ratio sync/online: " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items() if k != "commits"))
    if args.explain:
        statements.kept = []
        upload(records(1))
        kept, statements.kept = statements.kept, None
        engine.dispose()
        explain(settings.database_url, kept, args.top)
    engine.dispose()
    meter.conn.close()
    print(
        f"history={args.history} sync_tup_fetched_per_record={s['tup_fetched']:.1f} "
        f"online_tup_fetched={b['tup_fetched']:.1f} sync_buffers_per_record={s['buffers']:.1f} "
        f"online_buffers={b['buffers']:.1f} sync_statements_per_record={s['statements']:.1f} "
        f"online_statements={b['statements']:.1f} ratio_cpu_app={ratios['app_cpu_ms']:.2f} "
        f"ratio_cpu_pg={ratios['pg_cpu_ms']:.2f} ratio_tup_fetched={ratios['tup_fetched']:.2f}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=2000, help="records the terminal synced before")
    parser.add_argument("--batches", type=int, default=3, help="measured uploads")
    parser.add_argument("--batch-size", type=int, default=100, help="records per measured upload")
    parser.add_argument("--baseline", type=int, default=100, help="online redemptions measured")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN the statements of one record")
    parser.add_argument("--top", type=int, default=3, help="plans printed with --explain")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args()
    with throwaway_settings(args.pg_admin_url, args.redis_url, "offsync") as settings:
        return run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
