"""Checkout keeps the registry facts of a basket per registry version: a second checkout of the same
products reads no product rows, and an import (a new version) is seen at once."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, update

from tests.redemption_support import World, item, make_world
from voucher_service.adapters.db.models import CertifiedProduct, RegistryImport


@pytest.fixture
def world(admin: Any, ctx: Any) -> World:
    return make_world(admin, ctx)


def _product_reads(engine: Any) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "product_gtins" in statement:
            seen.append(statement)

    return seen


def _preview(world: World, token: str) -> Any:
    body = {
        "token": token,
        "order_id": "P-1",
        "channel": "online",
        "items": [item(world.catalog.rice, 3, 5000)],
    }
    resp = world.merchant.post("/api/v1/redemptions/preview", body)
    assert resp.status_code in (200, 422), resp.get_json()
    return resp


def test_the_basket_products_are_read_once_per_registry_version(world: World, ctx: Any) -> None:
    _, token = world.voucher()
    reads = _product_reads(ctx.engine)
    assert _preview(world, token).status_code == 200
    first = len(reads)
    assert first >= 1
    assert _preview(world, token).status_code == 200
    assert len(reads) == first  # the second checkout read no product rows

    # An import changes the registry and bumps its version: the next checkout sees the change.
    with ctx.sessions.begin() as s:
        s.execute(
            update(CertifiedProduct)
            .where(CertifiedProduct.certification_no == world.catalog.rice_cert)
            .values(status="suspended")
        )
        s.add(RegistryImport(file_sha256="0" * 64, created=0, updated=1, unchanged=0, imported_at=ctx.now()))
    refused = _preview(world, token)
    assert refused.status_code == 422 and refused.get_json()["code"] == "no_eligible_items"
    assert len(reads) > first
    assert world.redeem(token, [item(world.catalog.rice, 3, 5000)]).status_code == 422
