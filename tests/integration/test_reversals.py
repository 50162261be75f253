"""Reversals: partial returns, clawback below the minimum spend, full reversals, redeeming again."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from tests.helpers import problem_code
from tests.redemption_support import World, assert_books_balance, item, make_world
from voucher_service.adapters.db.models import (
    AuditEntry,
    LedgerEntry,
    Redemption,
    RedemptionLine,
    Reversal,
    RevocationEvent,
    Voucher,
)

REVERSAL_FIELDS = {"reversal_id", "redemption_id", "clawback_fen", "discount_fen", "voucher_status"}


@pytest.fixture
def world(admin: Any, ctx: Any) -> World:
    return make_world(admin, ctx)


def redeemed(world: World, items: list[dict[str, Any]] | None = None) -> tuple[str, str, str]:
    """Redeem a T50 voucher (minimum 15000) for rice 4 x 5000 + tea 1 x 3000 + an uncertified line."""
    c = world.catalog
    voucher_id, token = world.voucher("T50")
    basket = items or [item(c.rice, 4, 5000), item(c.tea, 1, 3000), item(c.unknown, 2, 1000)]
    resp = world.redeem(token, basket)
    assert resp.status_code == 201, resp.get_json()
    return voucher_id, token, resp.get_json()["redemption_id"]


def state(ctx: Any, voucher_id: str, redemption_id: str) -> tuple[str, str, int, list[int]]:
    with ctx.sessions() as s:
        r = s.get(Redemption, redemption_id)
        lines = s.scalars(
            select(RedemptionLine)
            .where(RedemptionLine.redemption_id == redemption_id)
            .order_by(RedemptionLine.index)
        )
        return (
            s.get(Voucher, voucher_id).status,
            r.status,
            r.clawed_back_fen,
            [x.returned_quantity for x in lines],
        )


def test_partial_return_that_still_meets_the_minimum_claws_nothing_back(world: World, ctx: Any) -> None:
    voucher_id, _, rid = redeemed(world)
    resp = world.reverse(rid, {"lines": [{"index": 0, "quantity": 1}, {"index": 2, "quantity": 2}]})
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert set(body) == REVERSAL_FIELDS
    assert (body["redemption_id"], body["clawback_fen"], body["discount_fen"], body["voucher_status"]) == (
        rid,
        0,
        5000,
        "redeemed",
    )
    assert state(ctx, voucher_id, rid) == ("redeemed", "active", 0, [1, 0, 2])
    assert_books_balance(ctx, world.program_id)


def test_partial_return_below_the_minimum_claws_back_everything_and_restores_the_voucher(
    world: World, ctx: Any
) -> None:
    voucher_id, _, rid = redeemed(world)
    # 3 x 5000 + 3000 = 18000 remain after one rice: still >= 15000
    assert world.reverse(rid, {"lines": [{"index": 0, "quantity": 1}]}).get_json()["clawback_fen"] == 0
    # then the tea goes back: 15000 remain, still enough; one more rice makes 10000: below the minimum
    assert world.reverse(rid, {"lines": [{"index": 1, "quantity": 1}]}).get_json()["clawback_fen"] == 0
    resp = world.reverse(rid, {"lines": [{"index": 0, "quantity": 1}]})
    assert resp.status_code == 201
    assert {k: v for k, v in resp.get_json().items() if k != "reversal_id"} == {
        "redemption_id": rid,
        "clawback_fen": 5000,
        "discount_fen": 0,
        "voucher_status": "issued",
    }
    assert state(ctx, voucher_id, rid) == ("issued", "reversed", 5000, [2, 1, 0])
    with ctx.sessions() as s:
        moves = s.execute(
            select(LedgerEntry.kind, LedgerEntry.from_bucket, LedgerEntry.to_bucket, LedgerEntry.amount_fen)
            .where(LedgerEntry.voucher_id == voucher_id)
            .order_by(LedgerEntry.id)
        ).all()
        assert [tuple(m) for m in moves][-1] == ("clawback", "redeemed", "outstanding", 5000)
        kinds = list(
            s.scalars(
                select(RevocationEvent.kind)
                .where(RevocationEvent.voucher_id == voucher_id)
                .order_by(RevocationEvent.id)
            )
        )
        assert kinds == ["redeemed", "restored"]
        assert len(list(s.scalars(select(Reversal).where(Reversal.redemption_id == rid)))) == 3
        actions = list(s.scalars(select(AuditEntry.action).where(AuditEntry.entity_id == rid)))
        assert actions.count("redemption.reversed") == 3
    assert_books_balance(ctx, world.program_id)


@pytest.mark.parametrize("body", [{}, None, {"lines": None}])
def test_full_reversal_returns_everything_left(world: World, ctx: Any, body: Any) -> None:
    voucher_id, _, rid = redeemed(world)
    assert world.reverse(rid, {"lines": [{"index": 2, "quantity": 1}]}).get_json()["clawback_fen"] == 0
    if body is None:  # no body at all
        from tests.helpers import merchant_headers

        path = f"/api/v1/redemptions/{rid}/reversals"
        headers = merchant_headers(world.merchant.id, world.merchant.secret, "POST", path, b"")
        headers["Idempotency-Key"] = "empty-body"
        resp = world.merchant.client.post(path, data=b"", headers=headers)
    else:
        resp = world.reverse(rid, body)
    assert resp.status_code == 201, resp.get_json()
    assert (resp.get_json()["clawback_fen"], resp.get_json()["voucher_status"]) == (5000, "issued")
    assert state(ctx, voucher_id, rid) == ("issued", "reversed", 5000, [4, 1, 2])
    with ctx.sessions() as s:
        last = s.scalars(
            select(Reversal)
            .where(Reversal.redemption_id == rid)
            .order_by(Reversal.created_at.desc(), Reversal.id)
        ).all()
        assert {tuple(sorted(x.items())) for r in last for x in r.lines or []} >= {
            (("index", 0), ("quantity", 4)),
            (("index", 1), ("quantity", 1)),
            (("index", 2), ("quantity", 1)),
        }
    again = world.reverse(rid)
    assert again.status_code == 409 and problem_code(again) == "invalid_state"


def test_a_restored_voucher_can_be_redeemed_again(world: World, ctx: Any) -> None:
    voucher_id, token, rid = redeemed(world)
    assert world.reverse(rid).get_json()["voucher_status"] == "issued"
    resp = world.redeem(token, [item(world.catalog.rice, 3, 5000)])
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["redemption_id"] != rid
    with ctx.sessions() as s:
        statuses = sorted(s.scalars(select(Redemption.status).where(Redemption.voucher_id == voucher_id)))
        assert statuses == ["active", "reversed"]
        assert s.get(Voucher, voucher_id).status == "redeemed"
    assert_books_balance(ctx, world.program_id)


def test_a_voucher_past_its_end_goes_to_expired_when_clawed_back(world: World, ctx: Any) -> None:
    now = ctx.now()
    voucher_id, token = world.voucher(valid_from=now, expires_at=now + dt.timedelta(hours=1))
    resp = world.redeem(token, [item(world.catalog.rice, 3, 5000)])
    assert resp.status_code == 201
    rid = resp.get_json()["redemption_id"]
    ctx.clock = lambda: now + dt.timedelta(hours=2)
    out = world.reverse(rid, {"lines": [{"index": 0, "quantity": 1}]}).get_json()
    assert (out["clawback_fen"], out["voucher_status"]) == (5000, "expired")
    with ctx.sessions() as s:
        assert s.get(Voucher, voucher_id).status == "expired"
        last = s.execute(
            select(LedgerEntry.from_bucket, LedgerEntry.to_bucket)
            .where(LedgerEntry.voucher_id == voucher_id)
            .order_by(LedgerEntry.id.desc())
            .limit(1)
        ).one()
        assert tuple(last) == ("redeemed", "expired")
        assert "restored" not in list(
            s.scalars(select(RevocationEvent.kind).where(RevocationEvent.voucher_id == voucher_id))
        )
    assert_books_balance(ctx, world.program_id)


def test_only_the_redeeming_merchant_may_reverse(world: World, admin: Any, ctx: Any) -> None:
    voucher_id, _, rid = redeemed(world)
    other = admin.create_merchant(name="另一家", enrol_in=world.program_id)
    resp = world.reverse(rid, merchant=other)
    assert resp.status_code == 403 and problem_code(resp) == "forbidden"
    resp = world.reverse("no-such-redemption")
    assert resp.status_code == 404 and problem_code(resp) == "not_found"
    assert state(ctx, voucher_id, rid) == ("redeemed", "active", 0, [0, 0, 0])


@pytest.mark.parametrize(
    "lines",
    [
        [{"index": 0, "quantity": 5}],
        [{"index": 9, "quantity": 1}],
        [{"index": 0, "quantity": 1}, {"index": 0, "quantity": 1}],
        [{"index": 0, "quantity": 0}],
        [{"index": -1, "quantity": 1}],
        [{"index": 0}],
        [],
        "all",
    ],
)
def test_impossible_returns_are_validation_errors_and_change_nothing(
    world: World, ctx: Any, lines: Any
) -> None:
    voucher_id, _, rid = redeemed(world)
    resp = world.reverse(rid, {"lines": lines})
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"
    assert state(ctx, voucher_id, rid) == ("redeemed", "active", 0, [0, 0, 0])


def test_returning_more_than_is_left_after_earlier_returns_is_refused(world: World, ctx: Any) -> None:
    voucher_id, _, rid = redeemed(world)
    assert world.reverse(rid, {"lines": [{"index": 2, "quantity": 2}]}).status_code == 201
    resp = world.reverse(rid, {"lines": [{"index": 2, "quantity": 1}]})
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"


def test_a_reversal_needs_an_idempotency_key_and_replays_byte_for_byte(world: World, ctx: Any) -> None:
    _, _, rid = redeemed(world)
    path = f"/api/v1/redemptions/{rid}/reversals"
    resp = world.merchant.post(path, {})
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"
    first = world.reverse(rid, {"lines": [{"index": 2, "quantity": 1}]}, key="return-1")
    second = world.reverse(rid, {"lines": [{"index": 2, "quantity": 1}]}, key="return-1")
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.data == second.data
    with ctx.sessions() as s:
        assert len(list(s.scalars(select(Reversal).where(Reversal.redemption_id == rid)))) == 1
        line = s.get(RedemptionLine, (rid, 2))
        assert line.returned_quantity == 1
    reused = world.reverse(rid, {"lines": [{"index": 2, "quantity": 2}]}, key="return-1")
    assert reused.status_code == 422 and problem_code(reused) == "idempotency_key_reused"


def test_merchants_cannot_reverse_each_others_redemptions_even_with_the_same_key(
    world: World, admin: Any, ctx: Any
) -> None:
    _, _, rid = redeemed(world)
    other = admin.create_merchant(name="另一家", enrol_in=world.program_id)
    assert world.reverse(rid, merchant=other, key="shared-key").status_code == 403
    assert world.reverse(rid, key="shared-key").status_code == 201
