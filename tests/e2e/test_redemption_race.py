"""One voucher, 32 simultaneous checkouts at two merchants: exactly one redemption, whatever the database."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.helpers import Admin, MerchantCaller, problem_code
from tests.redemption_support import assert_books_balance, checkout, item, make_world
from voucher_service.adapters.db.models import LedgerEntry, Redemption, RevocationEvent, Voucher

THREADS = 32


def race(app: Any, admin: Admin) -> None:
    ctx = app.extensions["voucher"]
    world = make_world(admin, ctx)
    second = admin.create_merchant(name="第二家", enrol_in=world.program_id)
    voucher_id, token = world.voucher()
    merchants = [world.merchant, second]
    gate = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def checkout_at(i: int) -> None:
        m = merchants[i % 2]
        caller = MerchantCaller(app.test_client(), m.id, m.secret)  # a client per thread
        body = checkout(token, [item(world.catalog.rice, 3, 5000)], order_id=f"RACE-{i}")
        gate.wait()
        results[i] = caller.post("/api/v1/redemptions", body, headers={"Idempotency-Key": f"race-{i}"})

    threads = [threading.Thread(target=checkout_at, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    statuses = Counter(r.status_code for r in results)
    assert statuses == {201: 1, 409: THREADS - 1}, statuses
    assert {problem_code(r) for r in results if r.status_code == 409} == {"voucher_already_redeemed"}
    winner = next(r for r in results if r.status_code == 201).get_json()
    with ctx.sessions() as s:
        rows = list(s.scalars(select(Redemption).where(Redemption.voucher_id == voucher_id)))
        assert [r.id for r in rows] == [winner["redemption_id"]]
        assert s.get(Voucher, voucher_id).status == "redeemed"
        assert (
            s.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.voucher_id == voucher_id, LedgerEntry.kind == "redeem")
            )
            == 1
        )
        assert (
            s.scalar(
                select(func.count())
                .select_from(RevocationEvent)
                .where(RevocationEvent.voucher_id == voucher_id)
            )
            == 1
        )
    assert_books_balance(ctx, world.program_id)


@pytest.mark.slow
@pytest.mark.postgres
def test_one_voucher_is_redeemed_once_under_a_race_on_postgresql(pg_app: Any, pg_admin: Admin) -> None:
    race(pg_app, pg_admin)


@pytest.mark.slow
def test_one_voucher_is_redeemed_once_under_a_race_on_sqlite(app: Any, admin: Admin) -> None:
    race(app, admin)
