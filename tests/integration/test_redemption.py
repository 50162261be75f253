"""Redeeming at checkout: the 201, every reason and error, preview, listing, revocations, offline records."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.helpers import problem_code
from tests.redemption_support import (
    World,
    add_product,
    assert_books_balance,
    checkout,
    item,
    make_world,
    map_sku,
    random_gtin,
)
from voucher_service.adapters.db.models import (
    AuditEntry,
    IdempotencyRecord,
    LedgerEntry,
    Redemption,
    RedemptionLine,
    RevocationEvent,
    Voucher,
)
from voucher_service.adapters.signing import encode_token, generate_private_key, kid_bytes_for, parse_token
from voucher_service.domain.money import split_proportionally
from voucher_service.domain.tokens import CLAIM_DISCOUNT, CLAIM_REDEMPTION, CLAIM_VOUCHER, VoucherClaims
from voucher_service.services.redemption import record_offline_redemption

REDEMPTION_FIELDS = {
    "redemption_id",
    "voucher_id",
    "program_id",
    "merchant_id",
    "order_id",
    "channel",
    "order_total_fen",
    "eligible_total_fen",
    "discount_fen",
    "redeemed_at",
    "lines",
    "receipt",
}
LINE_FIELDS = {
    "index",
    "gtin",
    "eligible",
    "reason",
    "certification_no",
    "county_code",
    "line_total_fen",
    "discount_share_fen",
}


@pytest.fixture
def world(admin: Any, ctx: Any) -> World:
    return make_world(admin, ctx)


def counts(ctx: Any) -> dict[str, int]:
    with ctx.sessions() as s:
        return {
            m.__name__: s.scalar(select(func.count()).select_from(m)) or 0
            for m in (Redemption, RedemptionLine, IdempotencyRecord, LedgerEntry, AuditEntry, RevocationEvent)
        }


def test_redemption_answers_the_contract_fields_and_records_everything(world: World, ctx: Any) -> None:
    c = world.catalog
    voucher_id, token = world.voucher("T50")
    items = [item(c.rice, 2, 5990, name="巴马香米 5kg"), item(c.tea, 1, 4000), item(c.unknown, 3, 1000)]
    resp = world.redeem(token, items, order_id="M-20261129-0001")
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert set(body) == REDEMPTION_FIELDS
    assert all(set(line) == LINE_FIELDS for line in body["lines"])
    assert (body["voucher_id"], body["program_id"], body["merchant_id"]) == (
        voucher_id,
        world.program_id,
        world.merchant.id,
    )
    assert (body["order_id"], body["channel"]) == ("M-20261129-0001", "online")
    assert (body["order_total_fen"], body["eligible_total_fen"], body["discount_fen"]) == (18980, 15980, 5000)
    assert [x["index"] for x in body["lines"]] == [0, 1, 2]
    assert [x["eligible"] for x in body["lines"]] == [True, True, False]
    assert [x["reason"] for x in body["lines"]] == [None, None, "not_certified"]
    assert [x["certification_no"] for x in body["lines"]] == [c.rice_cert, c.tea_cert, None]
    assert [x["county_code"] for x in body["lines"]] == ["451227", "450100", None]
    assert [x["discount_share_fen"] for x in body["lines"]] == split_proportionally(5000, [11980, 4000]) + [0]
    assert body["redeemed_at"].endswith("Z")
    receipt = parse_token(body["receipt"], "VR1:")
    key = ctx.keys.find(receipt.kid_b64)
    assert key is not None and receipt.verify(key.public_key)
    assert receipt.payload[CLAIM_REDEMPTION] == body["redemption_id"]
    assert (receipt.payload[CLAIM_VOUCHER], receipt.payload[CLAIM_DISCOUNT]) == (voucher_id, 5000)
    with ctx.sessions() as s:
        assert s.get(Voucher, voucher_id).status == "redeemed"
        r = s.get(Redemption, body["redemption_id"])
        assert (r.status, r.source, r.discount_fen, r.receipt) == ("active", "online", 5000, body["receipt"])
        lines = list(
            s.scalars(
                select(RedemptionLine)
                .where(RedemptionLine.redemption_id == r.id)
                .order_by(RedemptionLine.index)
            )
        )
        assert [(x.county_code, x.certification_no, x.quantity, x.name) for x in lines][0] == (
            "451227",
            c.rice_cert,
            2,
            "巴马香米 5kg",
        )
        kinds = list(s.scalars(select(RevocationEvent.kind).where(RevocationEvent.voucher_id == voucher_id)))
        assert kinds == ["redeemed"]
        moves = s.execute(
            select(
                LedgerEntry.kind, LedgerEntry.from_bucket, LedgerEntry.to_bucket, LedgerEntry.amount_fen
            ).where(LedgerEntry.voucher_id == voucher_id, LedgerEntry.kind == "redeem")
        ).all()
        assert [tuple(m) for m in moves] == [("redeem", "outstanding", "redeemed", 5000)]
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "redemption.created", AuditEntry.entity_id == r.id)
            )
            == 1
        )
        stored = s.scalar(select(IdempotencyRecord).where(IdempotencyRecord.merchant_id == world.merchant.id))
        assert (stored.state, stored.response_status, bytes(stored.response_body)) == ("done", 201, resp.data)
    assert_books_balance(ctx, world.program_id)


def test_each_reason_appears_on_its_line(world: World, ctx: Any) -> None:
    c = world.catalog
    map_sku(ctx, world.merchant.id, "SKU-OK", c.rice_cert)
    map_sku(ctx, world.merchant.id, "SKU-PENDING", c.rice_cert, status="pending")
    items = [
        item(c.rice, 3, 5000),
        item(c.unknown),
        item(c.expired),
        item(c.suspended),
        item(c.revoked),
        item(c.bad),
        item(None, sku="SKU-NOPE"),
        item(None, sku="SKU-PENDING"),
        item(None, sku="SKU-OK"),
        item("0" + c.tea),  # the same GTIN written as GTIN-14
    ]
    voucher_id, token = world.voucher()
    resp = world.redeem(token, items)
    assert resp.status_code == 201, resp.get_json()
    reasons = [x["reason"] for x in resp.get_json()["lines"]]
    assert reasons == [
        None,
        "not_certified",
        "certification_expired",
        "certification_suspended",
        "certification_revoked",
        "invalid_gtin",
        "sku_not_mapped",
        "sku_not_mapped",
        None,
        None,
    ]
    assert resp.get_json()["lines"][8]["certification_no"] == c.rice_cert


def test_out_of_scope_type_and_county(admin: Any, ctx: Any) -> None:
    w = make_world(
        admin,
        ctx,
        eligibility={"certification_types": ["guangxi", "shenzhen"], "county_codes": ["451227", "440300"]},
    )
    c = w.catalog
    far = random_gtin()
    add_product(ctx, f"GX-FAR-{far}", [far], county_code="450300")
    _, token = w.voucher()
    resp = w.merchant.post(
        "/api/v1/redemptions/preview",
        checkout(token, [item(c.rice, 4, 5000), item(c.tea), item(far), item(c.shenzhen)]),
    )
    assert resp.status_code == 200, resp.get_json()
    assert [x["reason"] for x in resp.get_json()["lines"]] == [None, "out_of_scope", "out_of_scope", None]


def test_certification_validity_is_judged_on_the_calendar_day_in_the_programme_time_zone(
    world: World, ctx: Any
) -> None:
    # 17:30 UTC on 10 December is already 11 December in Asia/Shanghai.
    ctx.clock = lambda: dt.datetime(2026, 12, 10, 17, 30, tzinfo=dt.UTC)
    ended, started = random_gtin(), random_gtin()
    add_product(ctx, f"ENDED-{ended}", [ended], valid_to=dt.date(2026, 12, 10))
    add_product(ctx, f"STARTED-{started}", [started], valid_from=dt.date(2026, 12, 11))
    _, token = world.voucher()
    resp = world.merchant.post(
        "/api/v1/redemptions/preview", checkout(token, [item(ended, 1, 9000), item(started, 1, 9000)])
    )
    assert resp.status_code == 422
    assert [x["reason"] for x in resp.get_json()["lines"]] == ["certification_expired", None]


def test_threshold_not_met_carries_the_line_verdicts(world: World, ctx: Any) -> None:
    c = world.catalog
    _, token = world.voucher("T50")
    resp = world.redeem(token, [item(c.rice, 1, 14999), item(c.unknown, 1, 90000)])
    assert resp.status_code == 422 and problem_code(resp) == "threshold_not_met"
    lines = resp.get_json()["lines"]
    assert [
        (x["index"], x["eligible"], x["reason"], x["line_total_fen"], x["discount_share_fen"]) for x in lines
    ] == [(0, True, None, 14999, 0), (1, False, "not_certified", 90000, 0)]
    assert counts(ctx)["Redemption"] == 0


def test_no_eligible_items(world: World) -> None:
    _, token = world.voucher()
    resp = world.redeem(token, [item(world.catalog.unknown, 10, 90000)])
    assert resp.status_code == 422 and problem_code(resp) == "no_eligible_items"


def test_preview_answers_without_id_or_receipt_and_changes_nothing(world: World, ctx: Any) -> None:
    voucher_id, token = world.voucher()
    before = counts(ctx)
    body = checkout(token, [item(world.catalog.rice, 3, 5000)])
    resp = world.merchant.post(
        "/api/v1/redemptions/preview", body, headers={"Idempotency-Key": "preview-key"}
    )
    assert resp.status_code == 200, resp.get_json()
    out = resp.get_json()
    assert set(out) == REDEMPTION_FIELDS - {"redemption_id", "receipt"}
    assert out["discount_fen"] == 5000 and out["lines"][0]["discount_share_fen"] == 5000
    assert counts(ctx) == before
    with ctx.sessions() as s:
        assert s.get(Voucher, voucher_id).status == "issued"
    # the same key may then be used for the real redemption
    assert world.redeem(token, body["items"], key="preview-key").status_code == 201
    again = world.merchant.post("/api/v1/redemptions/preview", body)
    assert again.status_code == 409 and problem_code(again) == "voucher_already_redeemed"


def foreign_token(program_id: str, voucher_id: str) -> str:
    key = generate_private_key()
    now = int(time.time())
    claims = VoucherClaims(voucher_id, program_id, "T50", 5000, 15000, now, now, now + 86400)
    return encode_token(key, kid_bytes_for(key.public_key()), claims.to_cbor_map())


def test_token_errors(world: World, ctx: Any) -> None:
    rice = [item(world.catalog.rice, 3, 5000)]
    for text in ("hello", "VC1:@@@not-base45", "VC1:" + "A" * 30):
        resp = world.redeem(text, rice)
        assert resp.status_code == 400 and problem_code(resp) == "token_malformed", text
    voucher_id, _ = world.voucher()
    resp = world.redeem(foreign_token(world.program_id, voucher_id), rice)
    assert resp.status_code == 422 and problem_code(resp) == "token_invalid"
    # a genuine signature over a voucher of another programme (or none) is not a voucher either
    from voucher_service.services.tokens import sign_voucher

    now = ctx.now()
    forged, _ = sign_voucher(
        ctx,
        voucher_id=voucher_id,
        program_id="another-programme",
        tier="T50",
        face_value_fen=5000,
        min_spend_fen=15000,
        issued_at=now,
        valid_from=now,
        expires_at=now + dt.timedelta(days=1),
    )
    resp = world.redeem(forged, rice)
    assert resp.status_code == 422 and problem_code(resp) == "token_invalid"


def test_enrolment_and_channel_errors(world: World, admin: Any) -> None:
    rice = [item(world.catalog.rice, 3, 5000)]
    _, token = world.voucher()
    outsider = admin.create_merchant(name="未入驻商户")
    resp = world.redeem(token, rice, merchant=outsider)
    assert resp.status_code == 403 and problem_code(resp) == "merchant_not_enrolled"
    offline_only = admin.create_merchant(name="线下店", channels=("offline",), enrol_in=world.program_id)
    resp = world.redeem(token, rice, merchant=offline_only, channel="online")
    assert resp.status_code == 403 and problem_code(resp) == "merchant_not_enrolled"
    assert world.redeem(token, rice, merchant=offline_only, channel="offline").status_code == 201


def test_a_programme_without_the_channel_refuses_it(admin: Any, ctx: Any) -> None:
    w = make_world(admin, ctx, channels=["online"])
    _, token = w.voucher()
    resp = w.redeem(token, [item(w.catalog.rice, 3, 5000)], channel="offline")
    assert resp.status_code == 403 and problem_code(resp) == "merchant_not_enrolled"


def test_a_suspended_programme_refuses_redemptions(world: World, admin: Any) -> None:
    _, token = world.voucher()
    assert admin.post(f"/api/v1/programs/{world.program_id}/suspend").status_code == 200
    resp = world.redeem(token, [item(world.catalog.rice, 3, 5000)])
    assert resp.status_code == 409 and problem_code(resp) == "program_not_active"


def set_status(ctx: Any, voucher_id: str, status: str) -> None:
    with ctx.sessions.begin() as s:
        s.execute(update(Voucher).where(Voucher.id == voucher_id).values(status=status))


def test_voucher_state_errors(world: World, ctx: Any) -> None:
    rice = [item(world.catalog.rice, 3, 5000)]
    now = ctx.now()
    void_id, void_token = world.voucher()
    set_status(ctx, void_id, "void")
    resp = world.redeem(void_token, rice)
    assert resp.status_code == 422 and problem_code(resp) == "voucher_void"
    _, old_token = world.voucher(
        valid_from=now - dt.timedelta(days=40), expires_at=now - dt.timedelta(days=10)
    )
    resp = world.redeem(old_token, rice)
    assert resp.status_code == 422 and problem_code(resp) == "voucher_expired"
    swept_id, swept_token = world.voucher()
    set_status(ctx, swept_id, "expired")
    resp = world.redeem(swept_token, rice)
    assert resp.status_code == 422 and problem_code(resp) == "voucher_expired"
    _, future_token = world.voucher(
        valid_from=now + dt.timedelta(days=1), expires_at=now + dt.timedelta(days=5)
    )
    resp = world.redeem(future_token, rice)
    assert resp.status_code == 422 and problem_code(resp) == "voucher_not_yet_valid"
    _, token = world.voucher()
    assert world.redeem(token, rice).status_code == 201
    resp = world.redeem(token, rice)
    assert resp.status_code == 409 and problem_code(resp) == "voucher_already_redeemed"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("order_id"),
        lambda b: b.update(order_id=""),
        lambda b: b.update(order_id="x" * 129),
        lambda b: b.update(channel="mobile"),
        lambda b: b.update(items=[]),
        lambda b: b.update(items=b["items"] * 201),
        lambda b: b["items"][0].update(quantity=0),
        lambda b: b["items"][0].update(quantity=1.0),
        lambda b: b["items"][0].update(unit_price_fen=59.9),
        lambda b: b["items"][0].update(unit_price_fen=-1),
        lambda b: b["items"][0].update(unit_price_fen="5990"),
        lambda b: b["items"][0].pop("gtin"),
        lambda b: b["items"][0].update(colour="red"),
        lambda b: b.update(token=12345),
    ],
)
def test_bodies_that_do_not_match_the_schema_are_validation_errors(world: World, mutate: Any) -> None:
    body = checkout("VC1:whatever", [item(world.catalog.rice, 3, 5000)])
    mutate(body)
    resp = world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "k-validation"})
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"
    assert resp.get_json()["errors"]


def test_the_idempotency_key_header_is_required(world: World) -> None:
    _, token = world.voucher()
    body = checkout(token, [item(world.catalog.rice, 3, 5000)])
    for headers in ({}, {"Idempotency-Key": ""}, {"Idempotency-Key": "k" * 256}):
        resp = world.merchant.post("/api/v1/redemptions", body, headers=headers)
        assert resp.status_code == 400 and problem_code(resp) == "validation_error"
        assert resp.get_json()["errors"][0]["field"] == "Idempotency-Key"
    assert (
        world.merchant.post("/api/v1/redemptions", body, headers={"Idempotency-Key": "k" * 255}).status_code
        == 201
    )


def test_unsigned_requests_are_unauthorized(world: World, client: Any) -> None:
    resp = client.post("/api/v1/redemptions", json={}, headers={"Idempotency-Key": "k"})
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"


# ---------------------------------------------------------------- reading redemptions


def redeem_n(world: World, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        _, token = world.voucher("T20")
        resp = world.redeem(token, [item(world.catalog.rice, 2, 3000)])
        assert resp.status_code == 201, resp.get_json()
        ids.append(resp.get_json()["redemption_id"])
    return ids


def test_listing_pages_newest_first_and_shows_only_the_merchants_own(
    world: World, admin: Any, ctx: Any
) -> None:
    ids = redeem_n(world, 5)
    other = admin.create_merchant(name="另一家", enrol_in=world.program_id)
    _, token = world.voucher("T20")
    assert world.redeem(token, [item(world.catalog.rice, 2, 3000)], merchant=other).status_code == 201
    seen: list[dict[str, Any]] = []
    path = "/api/v1/redemptions?limit=2"
    pages = 0
    while path:
        resp = world.merchant.get(path)
        assert resp.status_code == 200, resp.get_json()
        page = resp.get_json()
        seen.extend(page["redemptions"])
        pages += 1
        path = f"/api/v1/redemptions?limit=2&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert pages == 3
    assert sorted(r["redemption_id"] for r in seen) == sorted(ids)
    keys = [(r["redeemed_at"], r["redemption_id"]) for r in seen]
    assert keys == sorted(keys, reverse=True)
    assert all(r["status"] == "active" and r["receipt"].startswith("VR1:") for r in seen)
    theirs = other.get("/api/v1/redemptions").get_json()["redemptions"]
    assert len(theirs) == 1 and theirs[0]["merchant_id"] == other.id


def test_listing_filters_by_period(world: World, ctx: Any) -> None:
    ctx.clock = lambda: dt.datetime(2026, 12, 10, 15, 0, tzinfo=dt.UTC)  # 23:00 on the 10th in Shanghai
    (first,) = redeem_n(world, 1)
    ctx.clock = lambda: dt.datetime(2026, 12, 10, 16, 30, tzinfo=dt.UTC)  # 00:30 on the 11th in Shanghai
    (second,) = redeem_n(world, 1)

    def ids(query: str) -> list[str]:
        resp = world.merchant.get(f"/api/v1/redemptions?{query}")
        assert resp.status_code == 200, resp.get_json()
        return [r["redemption_id"] for r in resp.get_json()["redemptions"]]

    assert ids("from=2026-12-10&to=2026-12-10") == [first]
    assert ids("from=2026-12-11") == [second]
    assert ids("from=2026-12-10T15:30:00Z&to=2026-12-10T17:00:00Z") == [second]
    assert ids("to=2026-12-10T15:00:00Z") == []
    for bad in ("from=yesterday", "to=2026-13-01", "cursor=%%%", "limit=0", "limit=abc"):
        resp = world.merchant.get(f"/api/v1/redemptions?{bad}")
        assert resp.status_code == 400 and problem_code(resp) == "validation_error", bad


def test_one_redemption_is_visible_to_its_merchant_only(world: World, admin: Any) -> None:
    (rid,) = redeem_n(world, 1)
    resp = world.merchant.get(f"/api/v1/redemptions/{rid}")
    assert resp.status_code == 200 and resp.get_json()["redemption_id"] == rid
    assert resp.get_json()["lines"][0]["quantity"] == 2
    other = admin.create_merchant(name="另一家", enrol_in=world.program_id)
    assert problem_code(other.get(f"/api/v1/redemptions/{rid}")) == "forbidden"
    assert problem_code(world.merchant.get("/api/v1/redemptions/nope")) == "not_found"


# ---------------------------------------------------------------- revocations feed


def test_revocations_feed_lists_redeemed_and_voided_vouchers_since_a_version(
    world: World, admin: Any, ctx: Any
) -> None:
    feed = f"/api/v1/programs/{world.program_id}/revocations"
    empty = world.merchant.get(feed).get_json()
    assert empty == {"version": 0, "voucher_ids": [], "restored_voucher_ids": []}
    first_id, token = world.voucher()
    assert world.redeem(token, [item(world.catalog.rice, 3, 5000)]).status_code == 201
    v1 = world.merchant.get(f"{feed}?since=0").get_json()
    assert v1["voucher_ids"] == [first_id] and v1["version"] > 0
    voided_id, _ = world.voucher()
    with ctx.sessions.begin() as s:
        s.add(
            RevocationEvent(
                program_id=world.program_id, voucher_id=voided_id, kind="void", created_at=ctx.now()
            )
        )
    v2 = world.merchant.get(f"{feed}?since={v1['version']}").get_json()
    assert v2["voucher_ids"] == [voided_id] and v2["version"] > v1["version"]
    assert world.merchant.get(f"{feed}?since={v2['version']}").get_json() == {
        "version": v2["version"],
        "voucher_ids": [],
        "restored_voucher_ids": [],
    }
    # a full clawback gives the voucher back: it is no longer revoked
    rid = world.merchant.get("/api/v1/redemptions").get_json()["redemptions"][0]["redemption_id"]
    assert world.reverse(rid).get_json()["voucher_status"] == "issued"
    v3 = world.merchant.get(f"{feed}?since=0").get_json()
    assert v3["voucher_ids"] == [voided_id] and v3["restored_voucher_ids"] == [first_id]
    outsider = admin.create_merchant(name="未入驻商户")
    assert problem_code(outsider.get(feed)) == "merchant_not_enrolled"
    assert problem_code(world.merchant.get("/api/v1/programs/nope/revocations")) == "not_found"
    assert problem_code(world.merchant.get(f"{feed}?since=-1")) == "validation_error"


# ---------------------------------------------------------------- offline records


def offline_payload(
    token: str, voucher_id: str, items: list[dict[str, Any]], redeemed_at: str
) -> dict[str, Any]:
    return {
        "token": token,
        "voucher_id": voucher_id,
        "order_id": "T-0001",
        "items": items,
        "redeemed_at": redeemed_at,
    }


def test_offline_record_is_judged_at_its_own_time(world: World, ctx: Any) -> None:
    now = ctx.now()
    voucher_id, token = world.voucher(valid_from=now, expires_at=now + dt.timedelta(hours=1))
    ctx.clock = lambda: now + dt.timedelta(hours=3)  # the till syncs after the voucher's end
    set_status(ctx, voucher_id, "expired")  # and the expiry sweep has run meanwhile
    with ctx.sessions.begin() as s:
        s.execute(update(LedgerEntry).where(LedgerEntry.voucher_id == voucher_id).values(to_bucket="expired"))
    at = (now + dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload = offline_payload(token, voucher_id, [item(world.catalog.rice, 3, 5000)], at)
    with ctx.sessions.begin() as s:
        status, code, rid = record_offline_redemption(ctx, s, world.merchant.id, "till-1", payload)
    assert (status, code) == ("accepted", None) and rid
    with ctx.sessions() as s:
        r = s.get(Redemption, rid)
        assert (r.source, r.channel, r.terminal_id, r.discount_fen) == ("offline", "offline", "till-1", 5000)
        assert r.redeemed_at == now + dt.timedelta(minutes=30)
        assert s.get(Voucher, voucher_id).status == "redeemed"
    assert_books_balance(ctx, world.program_id)
    with ctx.sessions.begin() as s:
        assert record_offline_redemption(ctx, s, world.merchant.id, "till-2", payload) == (
            "conflict",
            "voucher_already_redeemed",
            None,
        )


def test_offline_record_refusals_are_answers_not_exceptions(world: World, ctx: Any, admin: Any) -> None:
    voucher_id, token = world.voucher()
    other_id, _ = world.voucher()
    at = ctx.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    rice = [item(world.catalog.rice, 3, 5000)]
    online_only = admin.create_merchant(name="网店", channels=("online",), enrol_in=world.program_id)
    cases = [
        (world.merchant.id, offline_payload(token, other_id, rice, at), "token_invalid"),
        (world.merchant.id, offline_payload("VC1:zz", voucher_id, rice, at), "token_malformed"),
        (online_only.id, offline_payload(token, voucher_id, rice, at), "merchant_not_enrolled"),
        (
            world.merchant.id,
            offline_payload(token, voucher_id, [item(world.catalog.rice, 1, 10)], at),
            "threshold_not_met",
        ),
        (world.merchant.id, offline_payload(token, voucher_id, rice, "yesterday"), "validation_error"),
        (
            world.merchant.id,
            offline_payload(token, voucher_id, [{"gtin": world.catalog.rice}], at),
            "validation_error",
        ),
        (
            world.merchant.id,
            offline_payload(token, voucher_id, rice, "2099-01-01T00:00:00Z"),
            "validation_error",
        ),
    ]
    for merchant_id, payload, expected in cases:
        with ctx.sessions.begin() as s:
            assert record_offline_redemption(ctx, s, merchant_id, "till-1", payload) == (
                "rejected",
                expected,
                None,
            )
    with ctx.sessions() as s:
        assert s.get(Voucher, voucher_id).status == "issued"
        assert s.scalar(select(func.count()).select_from(Redemption)) == 0


def test_the_openapi_document_describes_the_redemption_routes(client: Any) -> None:
    doc = json.loads(client.get("/api/v1/openapi.json").data)
    assert {
        "/api/v1/redemptions",
        "/api/v1/redemptions/preview",
        "/api/v1/redemptions/{redemption_id}",
        "/api/v1/redemptions/{redemption_id}/reversals",
        "/api/v1/programs/{program_id}/revocations",
    } <= set(doc["paths"])
    assert "newest first" in doc["paths"]["/api/v1/redemptions"]["get"]["summary"]
