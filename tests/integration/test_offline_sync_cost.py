"""What a synced offline record costs PostgreSQL does not grow with the terminal's history.

The same upload (the same records, made after the terminal's last upload) is synced by a terminal with
100 and by one with 2,000 records stored before, each in its own programme; PostgreSQL's own counters
(pg_stat_database of a private database) and the statements the app sends are compared per record.
Before the fix, the offline period's two queries read every stored record of the terminal (and every
accepted record of the programme): ~4,300 tuples per record at 2,000. No timing is asserted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, insert

from tests.conftest import REDIS_URL, make_settings
from tests.helpers import Admin, issue_test_voucher
from tests.integration.test_offline_sync import CSV, Till, register, upload
from voucher_service import create_app
from voucher_service.adapters.db.models import OfflineRecord
from voucher_service.services import registry
from voucher_service.services.credentials import create_admin_token

pytestmark = pytest.mark.postgres

RECORDS = 20
COUNTERS = ("tup_fetched", "tup_returned", "blks_hit", "blks_read")


def _history(ctx: Any, merchant_id: str, till: Till, program_id: str, count: int) -> None:
    """`count` accepted records of the terminal, uploaded an hour ago, and the till's chain after them."""
    earlier = ctx.now() - dt.timedelta(hours=1)
    rows, head = [], till.head
    for seq in range(1, count + 1):
        record_hash = hashlib.sha256(f"{head}{seq}".encode()).hexdigest()
        rows.append(
            {
                "merchant_id": merchant_id,
                "terminal_id": till.terminal_id,
                "seq": seq,
                "record_hash": record_hash,
                "prev_hash": head,
                "voucher_id": None,
                "program_id": program_id,
                "order_id": f"old-{seq}",
                "discount_fen": 5000,
                "redeemed_at": earlier - dt.timedelta(minutes=5),
                "payload": {},
                "status": "accepted",
                "code": None,
                "redemption_id": None,
                "received_at": earlier,
            }
        )
        head = record_hash
    with ctx.sessions.begin() as s:
        s.execute(insert(OfflineRecord), rows)
    till.seq, till.head = count, head


class Counters:
    """pg_stat_database of the test's own database; the app's connections are closed before each read
    (a backend flushes its statistics as it exits)."""

    def __init__(self, url: str, ctx: Any) -> None:
        self.conn = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True)
        self.database = url.rsplit("/", 1)[1]
        self.ctx = ctx

    def read(self) -> dict[str, int]:
        self.ctx.engine.dispose()
        last: dict[str, int] = {}
        for _ in range(50):  # until the exited backends' counters have all arrived
            time.sleep(0.2)
            self.conn.execute("SELECT pg_stat_clear_snapshot()")
            row = self.conn.execute(
                f"SELECT {', '.join(COUNTERS)} FROM pg_stat_database WHERE datname = %s", (self.database,)
            ).fetchone()
            assert row is not None
            now = dict(zip(COUNTERS, (int(x) for x in row), strict=True))
            if now == last:
                return now
            last = now
        return last


def _per_record(
    counters: Counters, statements: list[int], sync: Callable[[], list[tuple[int, str, Any]]]
) -> dict[str, float]:
    before, sent = counters.read(), statements[0]
    results = sync()
    assert [st for _, st, _ in results] == ["accepted"] * RECORDS, results
    after, sent = counters.read(), statements[0] - sent
    per = {k: (after[k] - before[k]) / RECORDS for k in COUNTERS}
    per["buffers"] = per.pop("blks_hit") + per.pop("blks_read")
    per["statements"] = sent / RECORDS
    return per


def test_a_synced_record_costs_the_same_after_100_or_2000_earlier_records(
    pg_database_factory: Any, tmp_path: Path
) -> None:
    url = pg_database_factory(migrated=True)
    app = create_app(make_settings(tmp_path, url, REDIS_URL), start_sealer=False)
    ctx = app.extensions["voucher"]
    statements = [0]

    @event.listens_for(ctx.engine, "before_cursor_execute")
    def _count(*_args: Any) -> None:
        statements[0] += 1

    admin = Admin(app.test_client(), create_admin_token(ctx, "tester"))
    registry.import_products(ctx, CSV.encode(), "tests")
    counters = Counters(url, ctx)
    figures = {}
    try:
        for history in (100, 2000):
            program = admin.create_program()
            merchant = admin.create_merchant(enrol_in=program["id"])
            till = Till(f"till-{history}")
            register(admin, merchant, till)
            _history(ctx, merchant.id, till, program["id"], history)
            records = []
            for i in range(RECORDS):
                voucher_id, token = issue_test_voucher(ctx, program["id"], "T20", holder=f"h-{history}-{i}")
                payload = till.payload(
                    token=token, voucher_id=voucher_id, program_id=program["id"], order_id=f"T-{i}"
                )
                payload["discount_fen"] = 2000
                records.append(till.record(payload))
            figures[history] = _per_record(
                counters, statements, lambda m=merchant, t=till, r=records: upload(m, t.terminal_id, r)
            )
    finally:
        counters.conn.close()
        ctx.engine.dispose()
    small, large = figures[100], figures[2000]
    # The same work per record whatever came before (the first upload also fills the app's caches): a
    # little slack for the catalog reads PostgreSQL makes itself, never the 1,900 more stored records.
    assert large["statements"] <= small["statements"], figures
    for key in ("tup_fetched", "tup_returned", "buffers"):
        assert large[key] <= small[key] * 1.25 + 10, (key, figures)
    # And bounded outright: what an online redemption reads, give or take (about 30 tuples).
    assert large["tup_fetched"] < 150, figures
