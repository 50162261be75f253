"""Offline tills resolve lines through the merchant's admin-approved SKU mappings, as the service does
(the real app over HTTP: tests/sdk/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from merchant_sdk import NoEligibleItems, OfflineTerminal
from merchant_sdk._models import RedemptionLine
from tests.sdk.conftest import LiveApp
from tests.sdk.support import GTIN_OIL, GTIN_RICE, GTIN_TEA, GTIN_UNKNOWN
from tests.sdk.test_real_app import CLAIMS, CORE, OFFLINE, OFFLINE_SERVICE, REDEEM, REGISTRY_CSV, World
from voucher_service.services import registry

RICE_SKU, OIL_SKU, TEA_SKU = "RICE/5KG", "OIL-1L", "TEA-250G"
INVALID_GTIN = GTIN_RICE[:-1] + str((int(GTIN_RICE[-1]) + 1) % 10)  # a wrong check digit
pytestmark = [CORE, CLAIMS, REDEEM, OFFLINE, OFFLINE_SERVICE]


@pytest.fixture
def world(live_app: LiveApp) -> Iterator[World]:
    """A running programme, a platform merchant enrolled in it (online and offline), and the registry."""
    registry.import_products(live_app.ctx, REGISTRY_CSV.encode(), "sdk-tests")
    program = live_app.admin.create_program()
    merchant = live_app.admin.create_merchant(platform=True, enrol_in=program["id"])
    client = live_app.client(merchant.id, merchant.secret)
    yield World(live_app, program, merchant.id, merchant.secret, client)
    client.close()


@pytest.fixture
def terminal(world: World, tmp_path: Path) -> Iterator[OfflineTerminal]:
    t = OfflineTerminal(world.client, "till-S", str(tmp_path / "till-S.sqlite3"))
    yield t
    t.close()


def request_mapping(world: World, sku: str, certification_no: str) -> None:
    """The merchant asks for the mapping (pending until an admin decides)."""
    answer = world.client.request(
        "POST", "/api/v1/sku-mappings", json_body={"sku": sku, "certification_no": certification_no}
    )
    assert answer["status"] == "pending"


def decide(world: World, sku: str, verdict: str) -> None:
    """An admin approves or rejects the merchant's mapping."""
    resp = world.live.admin.post(f"/api/v1/sku-mappings/{world.merchant_id}/{sku}/{verdict}")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == ("approved" if verdict == "approve" else "rejected")


def verdicts(lines: list[RedemptionLine]) -> list[tuple[Any, ...]]:
    return [
        (ln.index, ln.eligible, ln.reason, ln.certification_no, ln.county_code, ln.discount_share_fen)
        for ln in lines
    ]


def claim_token(world: World) -> str:
    return world.client.claim(world.program["id"], "T50", holder_ref=f"user-{uuid.uuid4().hex[:10]}").token


def test_programs_route_lists_only_approved_mappings_sorted_by_sku(world: World) -> None:
    request_mapping(world, TEA_SKU, "GX-003")
    request_mapping(world, RICE_SKU, "GX-001")
    request_mapping(world, OIL_SKU, "NA-002")
    decide(world, TEA_SKU, "approve")
    decide(world, RICE_SKU, "approve")  # OIL_SKU stays pending
    answer = world.client.request("GET", "/api/v1/merchant/programs")
    assert answer["sku_mappings"] == [
        {"sku": RICE_SKU, "certification_no": "GX-001"},
        {"sku": TEA_SKU, "certification_no": "GX-003"},
    ]
    assert [p["id"] for p in answer["programs"]] == [world.program["id"]]
    schema = world.live.app.test_client().get("/api/v1/openapi.json").get_json()
    listing = schema["components"]["schemas"]["MerchantProgramList"]
    assert "sku_mappings" in listing["properties"] and "sku_mappings" in listing["required"]


def test_a_sku_only_line_counts_offline_and_the_service_agrees(
    world: World, terminal: OfflineTerminal
) -> None:
    request_mapping(world, RICE_SKU, "GX-001")
    request_mapping(world, OIL_SKU, "NA-002")
    request_mapping(world, TEA_SKU, "GX-003")
    decide(world, RICE_SKU, "approve")
    decide(world, TEA_SKU, "approve")  # OIL_SKU stays pending
    terminal.refresh()
    basket: list[dict[str, Any]] = [
        {"sku": RICE_SKU, "quantity": 3, "unit_price_fen": 5990},  # SKU only, approved -> GX-001
        {"sku": OIL_SKU, "quantity": 1, "unit_price_fen": 3999},  # pending -> sku_not_mapped
        {"gtin": GTIN_UNKNOWN, "sku": RICE_SKU, "quantity": 1, "unit_price_fen": 1000},  # unknown GTIN: SKU
        {"gtin": GTIN_OIL, "sku": TEA_SKU, "quantity": 1, "unit_price_fen": 2000},  # known GTIN wins
        {"gtin": GTIN_TEA, "sku": RICE_SKU, "quantity": 1, "unit_price_fen": 700},  # known, suspended
        {"gtin": INVALID_GTIN, "sku": RICE_SKU, "quantity": 1, "unit_price_fen": 500},  # invalid_gtin
        {"sku": TEA_SKU, "quantity": 1, "unit_price_fen": 300},  # approved, product suspended
        {"gtin": GTIN_UNKNOWN, "sku": OIL_SKU, "quantity": 1, "unit_price_fen": 100},  # not_certified
    ]
    token = claim_token(world)
    online_preview = world.client.preview(token, basket, order_id="SKU-PREVIEW")
    offline = terminal.redeem(token, basket, order_id="TILL-SKU-1")
    assert [(ln.eligible, ln.reason) for ln in offline.lines] == [
        (True, None),
        (False, "sku_not_mapped"),
        (True, None),
        (True, None),
        (False, "certification_suspended"),
        (False, "invalid_gtin"),
        (False, "certification_suspended"),
        (False, "not_certified"),
    ]
    assert [ln.certification_no for ln in offline.lines[:4]] == ["GX-001", None, "GX-001", "NA-002"]
    assert offline.eligible_total_fen == 3 * 5990 + 1000 + 2000 and offline.discount_fen == 5000
    assert verdicts(offline.lines) == verdicts(online_preview.lines)

    (result,) = terminal.sync().results
    assert (result.status, result.code) == ("accepted", None)
    stored = {r.redemption_id: r for r in world.client.redemptions()}[result.redemption_id]
    assert stored.channel == "offline" and stored.terminal_id == "till-S"
    assert (stored.discount_fen, stored.eligible_total_fen, stored.order_total_fen) == (
        offline.discount_fen,
        offline.eligible_total_fen,
        offline.order_total_fen,
    )
    assert verdicts(stored.lines) == verdicts(offline.lines)


def test_a_pending_mapping_stays_ineligible_offline_until_approved_and_refreshed(
    world: World, terminal: OfflineTerminal
) -> None:
    request_mapping(world, RICE_SKU, "GX-001")
    terminal.refresh()
    basket = [{"sku": RICE_SKU, "quantity": 3, "unit_price_fen": 5990}]
    token = claim_token(world)
    with pytest.raises(NoEligibleItems) as online:
        world.client.preview(token, basket, order_id="PENDING-ONLINE")
    with pytest.raises(NoEligibleItems) as offline:
        terminal.redeem(token, basket, order_id="PENDING-OFFLINE")
    offline_lines = offline.value.body["lines"]
    assert [(ln["eligible"], ln["reason"]) for ln in offline_lines] == [(False, "sku_not_mapped")]
    assert [(ln["eligible"], ln["reason"]) for ln in online.value.body["lines"]] == [
        (ln["eligible"], ln["reason"]) for ln in offline_lines
    ]

    decide(world, RICE_SKU, "approve")
    with pytest.raises(NoEligibleItems):  # the till knows only what its last refresh fetched
        terminal.redeem(token, basket, order_id="PENDING-OFFLINE-2")
    terminal.refresh()
    redeemed = terminal.redeem(token, basket, order_id="APPROVED-OFFLINE")
    assert redeemed.discount_fen == 5000 and redeemed.lines[0].certification_no == "GX-001"

    # Withdrawing the approval takes the mapping off the till at its next refresh (the set is replaced).
    decide(world, RICE_SKU, "reject")
    terminal.refresh()
    with pytest.raises(NoEligibleItems) as withdrawn:
        terminal.redeem(claim_token(world), basket, order_id="REJECTED-OFFLINE")
    assert withdrawn.value.body["lines"][0]["reason"] == "sku_not_mapped"
