"""The server is the authority over offline records: a till's own checks are a convenience.

Records are judged against the programme's suspensions, its `max_offline_hours` (counted from the
terminal's last refresh the server saw) and its `max_offline_fen_per_terminal` (per offline period:
the records made since the terminal's last upload before them), whatever the till claims to have checked.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from tests.helpers import Admin, MerchantCaller, issue_test_voucher
from tests.integration.test_offline_sync import CSV, Till, register, upload
from voucher_service.adapters.db.models import OfflineRecord, Terminal
from voucher_service.services import offline_sync, registry


def _at(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record(ctx: Any, till: Till, program_id: str, at: dt.datetime, order_id: str) -> dict[str, Any]:
    voucher_id, token = issue_test_voucher(ctx, program_id, "T50", holder=order_id)
    payload = till.payload(token=token, voucher_id=voucher_id, program_id=program_id, order_id=order_id)
    payload["redeemed_at"] = _at(at)
    return till.record(payload)


@pytest.fixture
def shop(ctx: Any, admin: Admin) -> Any:
    def make(**offline: int) -> tuple[MerchantCaller, Till, dict[str, Any]]:
        registry.import_products(ctx, CSV.encode(), "tests")
        limits = {"max_offline_fen_per_terminal": 500_000, "max_offline_hours": 24, **offline}
        program = admin.create_program(offline=limits)
        merchant = admin.create_merchant(enrol_in=program["id"])
        till = Till()
        register(admin, merchant, till)
        return merchant, till, program

    return make


def test_a_record_dated_while_the_programme_was_suspended_is_rejected(
    ctx: Any, admin: Admin, shop: Any
) -> None:
    merchant, till, program = shop()
    t0 = ctx.now()
    records = [
        _record(ctx, till, program["id"], t0 + dt.timedelta(minutes=5), "before"),
        _record(ctx, till, program["id"], t0 + dt.timedelta(minutes=15), "during"),
        _record(ctx, till, program["id"], t0 + dt.timedelta(minutes=25), "after"),
    ]
    ctx.clock = lambda: t0 + dt.timedelta(minutes=10)
    assert admin.post(f"/api/v1/programs/{program['id']}/suspend").status_code == 200
    ctx.clock = lambda: t0 + dt.timedelta(minutes=20)
    assert admin.post(f"/api/v1/programs/{program['id']}/activate").status_code == 200
    ctx.clock = lambda: t0 + dt.timedelta(minutes=30)
    assert upload(merchant, till.terminal_id, records) == [
        (1, "accepted", None),
        (2, "rejected", "program_not_active"),
        (3, "accepted", None),
    ]


def test_a_record_dated_after_a_suspension_that_still_lasts_is_rejected(
    ctx: Any, admin: Admin, shop: Any
) -> None:
    merchant, till, program = shop()
    t0 = ctx.now()
    record = _record(ctx, till, program["id"], t0 + dt.timedelta(minutes=15), "during")
    ctx.clock = lambda: t0 + dt.timedelta(minutes=10)
    assert admin.post(f"/api/v1/programs/{program['id']}/suspend").status_code == 200
    ctx.clock = lambda: t0 + dt.timedelta(minutes=20)
    assert upload(merchant, till.terminal_id, [record]) == [(1, "rejected", "program_not_active")]


def test_the_server_caps_a_terminals_offline_discounts_earliest_records_first(ctx: Any, shop: Any) -> None:
    merchant, till, program = shop(max_offline_fen_per_terminal=10_000)  # two T50 vouchers
    t0 = ctx.now()
    records = [
        _record(ctx, till, program["id"], t0 + dt.timedelta(seconds=10 + i), f"o-{i}") for i in range(4)
    ]
    ctx.clock = lambda: t0 + dt.timedelta(seconds=60)
    results = upload(merchant, till.terminal_id, list(reversed(records)))  # judged in seq order anyway
    assert results == [
        (1, "accepted", None),
        (2, "accepted", None),
        (3, "rejected", "offline_limit_exceeded"),
        (4, "rejected", "offline_limit_exceeded"),
    ]


def test_uploading_one_record_at_a_time_does_not_reset_the_cap(ctx: Any, shop: Any) -> None:
    merchant, till, program = shop(max_offline_fen_per_terminal=5_000)
    t0 = ctx.now()
    made_offline = [
        _record(ctx, till, program["id"], t0 + dt.timedelta(seconds=10 + i), f"o-{i}") for i in range(3)
    ]
    ctx.clock = lambda: t0 + dt.timedelta(seconds=60)
    assert upload(merchant, till.terminal_id, made_offline[:1]) == [(1, "accepted", None)]
    assert upload(merchant, till.terminal_id, made_offline[1:2]) == [
        (2, "rejected", "offline_limit_exceeded")
    ]
    assert upload(merchant, till.terminal_id, made_offline[2:]) == [(3, "rejected", "offline_limit_exceeded")]
    # A record made after the last upload starts a new offline period (uploaded a little later).
    later = _record(ctx, till, program["id"], t0 + dt.timedelta(seconds=62), "after-sync")
    ctx.clock = lambda: t0 + dt.timedelta(seconds=70)
    assert upload(merchant, till.terminal_id, [later]) == [(4, "accepted", None)]


def test_an_offline_period_uploaded_in_two_parts_is_capped_as_one(ctx: Any, shop: Any) -> None:
    merchant, till, program = shop(max_offline_fen_per_terminal=10_000)  # two T50 vouchers
    t0 = ctx.now()
    made_offline = [
        _record(ctx, till, program["id"], t0 + dt.timedelta(seconds=10 + i), f"o-{i}") for i in range(4)
    ]
    # Three made after the first part was received, one after the second: issued beforehand.
    later = [_record(ctx, till, program["id"], t0 + dt.timedelta(seconds=s), f"l-{s}") for s in (65, 66, 75)]
    ctx.clock = lambda: t0 + dt.timedelta(seconds=60)
    assert upload(merchant, till.terminal_id, made_offline[:2]) == [
        (1, "accepted", None),
        (2, "accepted", None),
    ]
    # Made before the first part was received: the same period, whose first two records are stored.
    ctx.clock = lambda: t0 + dt.timedelta(seconds=70)
    assert upload(merchant, till.terminal_id, made_offline[2:]) == [
        (3, "rejected", "offline_limit_exceeded"),
        (4, "rejected", "offline_limit_exceeded"),
    ]
    # After the first part (received at 60 s): a new period. The one made at 75 s belongs to the period
    # after the second part (received at 70 s), which the two made at 65 and 66 s already fill, though
    # they are stored by the same upload.
    ctx.clock = lambda: t0 + dt.timedelta(seconds=80)
    assert upload(merchant, till.terminal_id, later) == [
        (5, "accepted", None),
        (6, "accepted", None),
        (7, "rejected", "offline_limit_exceeded"),
    ]


def test_an_uploads_offline_periods_are_the_periods_the_database_holds(ctx: Any) -> None:
    """The rules of one upload keep what it stored and read only the records before it: the discount of
    each record's period must be the one read from all stored records, whatever the record times, the
    receiving clock (here it also runs backwards) or another upload storing records in between."""
    rng = random.Random(20261203)
    merchant_id, terminal_id, programs = "mch_period", "till-period", ("p-1", "p-2")
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

    received: list[dt.datetime] = []

    def store(seq: int, received_at: dt.datetime) -> offline_sync._PeriodRow:
        received.append(received_at)
        row = offline_sync._PeriodRow(
            seq,
            received_at,
            rng.choice(programs),
            rng.choice(["accepted", "accepted", "rejected"]),
            100 * seq,
        )
        with ctx.sessions.begin() as s:
            s.add(
                OfflineRecord(
                    merchant_id=merchant_id,
                    terminal_id=terminal_id,
                    seq=seq,
                    record_hash=f"{seq:064x}",
                    prev_hash=f"{seq - 1:064x}",
                    program_id=row.program_id,
                    discount_fen=row.discount_fen,
                    payload={},
                    status=row.status,
                    received_at=received_at,
                )
            )
        return row

    def from_database(program_id: str, at: dt.datetime) -> int:
        with ctx.sessions() as s:
            synced = offline_sync._synced_through(s, merchant_id, terminal_id, at, None)
            return offline_sync._accepted_discount_fen(s, merchant_id, terminal_id, program_id, synced, None)

    seq, checked = 0, 0
    for upload_no in range(12):
        started = t0 + dt.timedelta(minutes=10 * upload_no + rng.randrange(8))
        rules = offline_sync.offline_rules(merchant_id, terminal_id, started)
        for _ in range(rng.randrange(1, 9)):
            if rng.random() < 0.2:  # another upload of the terminal stores one in between
                seq += 1
                store(seq, started + dt.timedelta(seconds=rng.randrange(-30, 30)))
            at = started - dt.timedelta(minutes=rng.randrange(0, 45), seconds=rng.randrange(60))
            if received and rng.random() < 0.3:  # just when a record was received
                at = rng.choice(received[-10:])
            program_id = rng.choice(programs)
            with ctx.sessions() as s:
                rules.chain_head(seq)
                got = rules._period_discount_fen(s, program_id, min(at, started))
            assert got == from_database(program_id, min(at, started)), (upload_no, seq, at)
            checked += got > 0
            seq += 1
            rules.stored(store(seq, started + dt.timedelta(seconds=rng.randrange(-5, 10))))
    assert checked > 10  # the periods were not all empty


def test_a_record_dated_beyond_max_offline_hours_after_the_last_refresh_is_rejected(
    ctx: Any, shop: Any
) -> None:
    merchant, till, program = shop(max_offline_hours=24)
    t0 = ctx.now()  # the terminal was registered (and never refreshed) at t0
    stale = _record(ctx, till, program["id"], t0 + dt.timedelta(hours=25), "stale")
    ctx.clock = lambda: t0 + dt.timedelta(hours=25, minutes=1)
    assert upload(merchant, till.terminal_id, [stale]) == [(1, "rejected", "offline_refresh_required")]

    # The terminal refreshes (fetches what a till needs, naming itself): the server records when.
    ctx.clock = lambda: t0 + dt.timedelta(hours=26)
    resp = merchant.get(f"/api/v1/merchant/programs?terminal_id={till.terminal_id}")
    assert resp.status_code == 200
    with ctx.sessions() as s:
        row = s.get(Terminal, (merchant.id, till.terminal_id))
        assert row.last_refresh_at == t0 + dt.timedelta(hours=26)
    fresh = _record(ctx, till, program["id"], t0 + dt.timedelta(hours=27), "fresh")
    ctx.clock = lambda: t0 + dt.timedelta(hours=27, minutes=1)
    assert upload(merchant, till.terminal_id, [fresh]) == [(2, "accepted", None)]


def test_a_refresh_naming_an_unknown_terminal_changes_nothing_and_is_not_an_error(
    ctx: Any, shop: Any
) -> None:
    merchant, till, _ = shop()
    assert merchant.get("/api/v1/merchant/programs?terminal_id=nobody").status_code == 200
    assert merchant.get("/api/v1/merchant/programs?terminal_id=" + "x" * 65).status_code == 400
    with ctx.sessions() as s:
        assert s.get(Terminal, (merchant.id, till.terminal_id)).last_refresh_at is None
