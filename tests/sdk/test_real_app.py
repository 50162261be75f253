"""The SDK against the real app, served over HTTP by werkzeug on a free port (tests/sdk/conftest.py).

Tests that need routes another area is still building skip themselves until the app declares them.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from merchant_sdk import (
    Claim,
    OfflineTerminal,
    ThresholdNotMet,
    TokenMalformed,
    Unauthorized,
    VoucherAlreadyRedeemed,
    VoucherClient,
    VoucherRevoked,
)
from tests.sdk.conftest import LiveApp
from tests.sdk.support import GTIN_OIL, GTIN_RICE, GTIN_TEA, needs_offline_redemption_service, needs_routes
from voucher_service.adapters.db.models import OfflineRecord, Redemption
from voucher_service.services import offline_sync, registry

HEADER = (
    "certification_no,certification_type,product_name,category,supplier_id,supplier_name,county_code,"
    "county_name,gtins,valid_from,valid_to,status"
)
REGISTRY_CSV = f"""{HEADER}
GX-001,guangxi,巴马香米 5kg,grain,S1,巴马供应商,451227,巴马瑶族自治县,{GTIN_RICE},2020-01-01,2099-12-31,active
NA-002,national,山茶油 1L,oil,S2,凤山供应商,451223,凤山县,{GTIN_OIL},2020-01-01,2099-12-31,active
GX-003,guangxi,六堡茶,tea,S3,苍梧供应商,450421,苍梧县,{GTIN_TEA},2020-01-01,2099-12-31,suspended
"""
BASKET = [{"gtin": GTIN_RICE, "quantity": 3, "unit_price_fen": 5990, "name": "巴马香米 5kg"}]
CORE = needs_routes("GET /api/v1/merchant/programs", "POST /api/v1/merchants", "POST /api/v1/programs")
CLAIMS = needs_routes("POST /api/v1/programs/<program_id>/claims", "GET /api/v1/keys")
REDEEM = needs_routes(
    "POST /api/v1/redemptions",
    "POST /api/v1/redemptions/preview",
    "POST /api/v1/redemptions/<redemption_id>/reversals",
    "GET /api/v1/redemptions",
)
OFFLINE_SERVICE = needs_offline_redemption_service()
OFFLINE = needs_routes(
    "GET /api/v1/programs/<program_id>/revocations",
    "GET /api/v1/products/snapshot",
    "POST /api/v1/merchants/<merchant_id>/terminals",
    "POST /api/v1/offline-redemptions",
)


@dataclass
class World:
    live: LiveApp
    program: dict
    merchant_id: str
    secret: str
    client: VoucherClient

    def claim(self, tier: str = "T50") -> Claim:
        return self.client.claim(self.program["id"], tier, holder_ref=f"user-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def world(live_app: LiveApp) -> Iterator[World]:
    """A running programme, a platform merchant enrolled in it (online and offline), and the registry."""
    registry.import_products(live_app.ctx, REGISTRY_CSV.encode(), "sdk-tests")
    program = live_app.admin.create_program()
    merchant = live_app.admin.create_merchant(platform=True, enrol_in=program["id"])
    client = live_app.client(merchant.id, merchant.secret)
    yield World(live_app, program, merchant.id, merchant.secret, client)
    client.close()


@CORE
def test_signed_requests_are_accepted_and_programmes_listed(world: World) -> None:
    (p,) = world.client.programs()
    assert p.id == world.program["id"] and p.status == "active" and p.timezone == "Asia/Shanghai"
    assert {(t.code, t.face_value_fen, t.min_spend_fen) for t in p.tiers} == {
        ("T50", 5000, 15000),
        ("T20", 2000, 6000),
    }
    assert p.eligibility == {"certification_types": ["national", "guangxi", "shenzhen"], "county_codes": None}
    assert p.offline == {"max_offline_fen_per_terminal": 500_000, "max_offline_hours": 24}
    assert set(p.channels) == {"online", "offline"}


@CORE
def test_a_wrong_secret_is_unauthorized(world: World) -> None:
    with world.live.client(world.merchant_id, "not-the-secret") as bad, pytest.raises(Unauthorized) as info:
        bad.programs()
    assert info.value.status == 401 and info.value.request_id


@CORE
@CLAIMS
def test_a_platform_claim_gives_a_token_the_sdk_verifies_offline(world: World) -> None:
    claim = world.claim("T20")
    assert claim.token.startswith("VC1:") and claim.face_value_fen == 2000
    claims = world.client.verify(claim.token)
    assert (claims.voucher_id, claims.program_id, claims.tier) == (
        claim.voucher_id,
        world.program["id"],
        "T20",
    )


@CORE
@CLAIMS
@REDEEM
def test_preview_redeem_idempotency_reverse_and_listing(world: World) -> None:
    c = world.client
    token = world.claim().token
    preview = c.preview(token, BASKET, order_id="O-1")
    assert preview.redemption_id is None and preview.discount_fen == 5000
    first = c.redeem(token, BASKET, order_id="O-1", idempotency_key="key-O-1")
    assert first.discount_fen == 5000 and first.lines[0].certification_no == "GX-001"
    assert first.receipt and first.receipt.startswith("VR1:")
    again = c.redeem(token, BASKET, order_id="O-1", idempotency_key="key-O-1")
    assert again == first  # the stored answer, replayed
    with pytest.raises(VoucherAlreadyRedeemed):
        c.redeem(token, BASKET, order_id="O-1")  # a new key: a second redemption is refused
    reversal = c.reverse(first.redemption_id or "")
    assert reversal.redemption_id == first.redemption_id and reversal.clawback_fen == 5000
    assert first.redemption_id in {r.redemption_id for r in c.redemptions()}


@CORE
@CLAIMS
@REDEEM
def test_redemptions_follows_every_page(world: World) -> None:
    ids = {
        world.client.redeem(world.claim().token, BASKET, order_id=f"P-{i}").redemption_id for i in range(3)
    }
    seen_pages: list[str] = []
    original = world.client.request

    def spy(method, path, **kw):  # type: ignore[no-untyped-def]
        if path == "/api/v1/redemptions":
            seen_pages.append(str(kw.get("query")))
            kw["query"] = {**(kw.get("query") or {}), "limit": "1"}
        return original(method, path, **kw)

    world.client.request = spy  # type: ignore[method-assign]
    assert {r.redemption_id for r in world.client.redemptions()} == ids
    assert len(seen_pages) >= 3


@CORE
@CLAIMS
@REDEEM
def test_the_servers_refusals_arrive_as_their_classes(world: World) -> None:
    with pytest.raises(TokenMalformed):
        world.client.redeem("VC1:garbage!", BASKET, order_id="E-1")
    with pytest.raises(ThresholdNotMet) as info:
        world.client.redeem(
            world.claim().token, [{"gtin": GTIN_RICE, "quantity": 1, "unit_price_fen": 100}], order_id="E-2"
        )
    assert info.value.lines[0]["eligible"] is True


@pytest.fixture
def terminal(world: World, tmp_path: Path) -> Iterator[OfflineTerminal]:
    t = OfflineTerminal(world.client, "till-A", str(tmp_path / "till-A.sqlite3"))
    yield t
    t.close()


@CORE
@CLAIMS
@REDEEM
@OFFLINE
@OFFLINE_SERVICE
def test_an_offline_redemption_syncs_into_a_redemption(world: World, terminal: OfflineTerminal) -> None:
    token = world.claim().token
    terminal.refresh()
    basket = BASKET + [
        {"gtin": GTIN_OIL, "quantity": 1, "unit_price_fen": 3999},
        {"gtin": GTIN_TEA, "quantity": 1, "unit_price_fen": 1000},
    ]
    offline = terminal.redeem(token, basket, order_id="TILL-1")
    report = terminal.sync()
    assert [(r.seq, r.status, r.code) for r in report.results] == [(1, "accepted", None)]
    redemption_id = report.results[0].redemption_id
    listed = {r.redemption_id: r for r in world.client.redemptions()}
    online_view = listed[redemption_id]
    assert online_view.channel == "offline" and online_view.terminal_id == "till-A"
    # The till computed what the service computes.
    assert (online_view.discount_fen, online_view.eligible_total_fen) == (
        offline.discount_fen,
        offline.eligible_total_fen,
    )
    assert [(ln.eligible, ln.reason, ln.discount_share_fen) for ln in online_view.lines] == [
        (ln.eligible, ln.reason, ln.discount_share_fen) for ln in offline.lines
    ]
    assert terminal.sync().results == []


@CORE
@CLAIMS
@REDEEM
@OFFLINE
@OFFLINE_SERVICE
def test_a_record_whose_answer_was_lost_comes_back_duplicate(world: World, terminal: OfflineTerminal) -> None:
    terminal.refresh()
    terminal.redeem(world.claim().token, BASKET, order_id="TILL-2")
    first = terminal.sync().results[0]
    with sqlite3.connect(terminal.journal.path) as db:  # as if the answer had never arrived
        db.execute("UPDATE records SET status = NULL, code = NULL, redemption_id = NULL")
    again = terminal.sync().results[0]
    assert (again.status, again.redemption_id) == ("duplicate", first.redemption_id)
    with world.live.ctx.sessions() as s:
        assert len(list(s.scalars(select(Redemption).where(Redemption.channel == "offline")))) == 1


@CORE
@CLAIMS
@REDEEM
@OFFLINE
@OFFLINE_SERVICE
def test_a_voucher_spent_online_and_offline_is_a_recorded_conflict(
    world: World, terminal: OfflineTerminal
) -> None:
    token = world.claim().token
    terminal.refresh()  # before the online redemption: the till cannot know
    world.client.redeem(token, BASKET, order_id="WEB-1")
    terminal.redeem(token, BASKET, order_id="TILL-3")
    (result,) = terminal.sync().results
    assert (result.status, result.code, result.redemption_id) == (
        "conflict",
        "voucher_already_redeemed",
        None,
    )
    with world.live.ctx.sessions() as s:
        row = s.get(OfflineRecord, (world.merchant_id, "till-A", 1))
        assert row is not None and row.status == "conflict" and row.order_id == "TILL-3"
    # After the next refresh the revocation list knows the voucher.
    terminal.refresh()
    other = OfflineTerminal(
        world.client, "till-B", str(Path(terminal.journal.path).with_name("till-B.sqlite3"))
    )
    other.refresh()
    with pytest.raises(VoucherRevoked):
        other.redeem(token, BASKET, order_id="TILL-4")
    other.close()


@CORE
@CLAIMS
@REDEEM
@OFFLINE
@OFFLINE_SERVICE
def test_a_tampered_journal_is_rejected_and_nothing_of_it_recorded(
    world: World, terminal: OfflineTerminal
) -> None:
    import json

    terminal.refresh()
    for i in range(3):
        terminal.redeem(world.claim().token, BASKET, order_id=f"TILL-T{i}")
    with sqlite3.connect(terminal.journal.path) as db:
        payload = json.loads(db.execute("SELECT payload FROM records WHERE seq = 2").fetchone()[0])
        payload["items"][0]["quantity"] = 30
        db.execute("UPDATE records SET payload = ? WHERE seq = 2", (json.dumps(payload),))
    results = terminal.sync().results
    assert [(r.seq, r.status, r.code) for r in results] == [
        (1, "accepted", None),
        (2, "rejected", offline_sync.BAD_HASH),
        (3, "rejected", offline_sync.AFTER_REJECTED),
    ]
    with world.live.ctx.sessions() as s:
        stored = list(s.scalars(select(OfflineRecord.seq).where(OfflineRecord.terminal_id == "till-A")))
        assert stored == [1]
        assert len(list(s.scalars(select(Redemption).where(Redemption.channel == "offline")))) == 1


@REDEEM
def test_a_key_held_by_a_dead_attempt_is_retried_by_the_sdk_until_its_lease_lapses(world: World) -> None:
    import datetime as dt
    import json
    import time

    from voucher_service.adapters.db.models import IdempotencyRecord
    from voucher_service.services import idempotency

    ctx = world.live.ctx
    body = {"token": world.claim().token, "order_id": "DEAD-1", "channel": "online", "items": BASKET}
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()  # as the SDK sends it
    route = "POST /api/v1/redemptions"
    with ctx.sessions.begin() as s:  # the lease row of an attempt whose worker died 4 s into a 6 s lease
        s.add(
            IdempotencyRecord(
                merchant_id=world.merchant_id,
                key="dead-attempt",
                route=route,
                request_sha256=idempotency.fingerprint(route, raw),
                state="in_progress",
                locked_until=ctx.now() + dt.timedelta(seconds=2),
                created_at=ctx.now(),
            )
        )
    with world.live.client(world.merchant_id, world.secret, max_retries=4) as client:
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            time.sleep(seconds)

        client._sleep = sleep
        got = client.request("POST", "/api/v1/redemptions", json_body=body, idempotency_key="dead-attempt")
    assert got["order_id"] == "DEAD-1" and got["discount_fen"] > 0
    assert slept and all(1 <= s <= 6 for s in slept), slept  # as the 409s' Retry-After said
    with ctx.sessions() as s:
        assert len(list(s.scalars(select(Redemption).where(Redemption.order_id == "DEAD-1")))) == 1
