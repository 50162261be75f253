"""The claim, redemption and return write paths write identical rows on SQLite and PostgreSQL.

Both databases run statements built from the same models (one CTE statement on PostgreSQL, the same
inserts step by step on SQLite). The same scenario, through the API with one clock, must leave the same
rows in every table it touches, once each database's ids are replaced by their role. SQLite always runs
(fast suite); PostgreSQL joins, and the two are compared, when VOUCHER_TEST_PG_ADMIN_URL is set.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from typing import Any

import pytest
from sqlalchemy import Table, select

from tests.helpers import Admin
from tests.redemption_support import Catalog, add_product, item, random_gtin
from voucher_service.adapters.db.models import (
    AuditEntry,
    HolderClaimCount,
    IdempotencyRecord,
    LedgerEntry,
    Redemption,
    RedemptionLine,
    Reversal,
    RevocationEvent,
    Voucher,
)

# Values that differ between two runs by nature (signatures, random keys), not by what was written.
_OPAQUE = {"token", "kid", "receipt", "request_sha256"}


def _catalog() -> Catalog:
    tag = secrets.token_hex(4)
    return Catalog(
        rice=random_gtin(),
        tea=random_gtin(),
        expired=random_gtin(),
        suspended=random_gtin(),
        revoked=random_gtin(),
        shenzhen=random_gtin(),
        unknown=random_gtin(),
        rice_cert=f"GX-RICE-{tag}",
        tea_cert=f"NAT-TEA-{tag}",
    )


def _scenario(admin: Admin, ctx: Any, c: Catalog, at: dt.datetime) -> dict[str, Any]:
    """Two platform claims (one with an Idempotency-Key, retried), a redemption, a partial return and a
    return of the rest (which claws the discount back); every row they wrote, ids named by role."""
    ctx.clock = lambda: at
    program = admin.create_program(per_person_limit=3)
    platform = admin.create_merchant("平台商户", platform=True, enrol_in=program["id"])
    add_product(ctx, c.rice_cert, [c.rice])
    add_product(ctx, c.tea_cert, [c.tea], certification_type="national", county_code="450100")
    names: dict[str, str] = {program["id"]: "<program>", platform.id: "<merchant>"}

    claims = f"/api/v1/programs/{program['id']}/claims"
    ctx.clock = lambda: at + dt.timedelta(seconds=10)
    first = platform.post(claims, {"tier": "T50", "holder_ref": "u1"}, headers={"Idempotency-Key": "c-1"})
    again = platform.post(claims, {"tier": "T50", "holder_ref": "u1"}, headers={"Idempotency-Key": "c-1"})
    second = platform.post(claims, {"tier": "T50", "holder_ref": "u1"})
    assert (first.status_code, again.status_code, second.status_code) == (201, 201, 201)
    assert first.data == again.data
    v1, v2 = first.get_json(), second.get_json()
    names.update({v1["voucher_id"]: "<v1>", v2["voucher_id"]: "<v2>"})

    ctx.clock = lambda: at + dt.timedelta(seconds=20)
    basket = [
        item(c.rice, 2, 5990, name="巴马香米 5kg"),
        item(c.tea, 1, 4000, sku="SKU-X"),
        item(c.unknown, 3, 1000, name="普通商品"),
    ]
    body = {"token": v1["token"], "order_id": "ORDER-1", "channel": "online", "terminal_id": "POS-7"}
    redeemed = platform.post(
        "/api/v1/redemptions", {**body, "items": basket}, headers={"Idempotency-Key": "r-1"}
    )
    assert redeemed.status_code == 201, redeemed.get_json()
    names[redeemed.get_json()["redemption_id"]] = "<redemption>"
    path = f"/api/v1/redemptions/{redeemed.get_json()['redemption_id']}/reversals"

    ctx.clock = lambda: at + dt.timedelta(seconds=30)
    part = platform.post(path, {"lines": [{"index": 2, "quantity": 1}]}, headers={"Idempotency-Key": "x-1"})
    ctx.clock = lambda: at + dt.timedelta(seconds=40)
    rest = platform.post(path, {}, headers={"Idempotency-Key": "x-2"})
    assert (part.status_code, rest.status_code) == (201, 201), (part.get_json(), rest.get_json())
    assert rest.get_json()["clawback_fen"] > 0
    names.update(
        {part.get_json()["reversal_id"]: "<reversal-1>", rest.get_json()["reversal_id"]: "<reversal-2>"}
    )
    return _rows(ctx, program["id"], platform.id, names)


def _rows(ctx: Any, program_id: str, merchant_id: str, names: dict[str, str]) -> dict[str, Any]:
    with ctx.sessions() as s:
        for holder in s.scalars(select(Voucher.holder_hash).where(Voucher.holder_hash.is_not(None))):
            names.setdefault(holder, "<holder>")
            names.setdefault(holder[:12], "<holder12>")

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (None if k in _OPAQUE else norm(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, bytes):
            return norm(json.loads(value))
        if isinstance(value, str):
            for real, role in names.items():
                value = value.replace(real, role)
        return value

    def table(model: Any, *where: Any, order: Any = None) -> list[dict[str, Any]]:
        t: Table = model.__table__
        keep = [c for c in t.columns if c is not t.autoincrement_column and c.name not in _OPAQUE]
        with ctx.sessions() as s:
            rows = s.execute(select(*keep).where(*where)).mappings().all()
        out = [norm(dict(r)) for r in rows]
        return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))

    redemption_ids = select(Redemption.id).where(Redemption.program_id == program_id)
    vouchers = table(Voucher, Voucher.program_id == program_id, Voucher.status != "available")
    return {
        "vouchers": vouchers,
        "pool_left": len(table(Voucher, Voucher.program_id == program_id, Voucher.status == "available")),
        "claim_counts": table(HolderClaimCount, HolderClaimCount.program_id == program_id),
        "redemptions": table(Redemption, Redemption.program_id == program_id),
        "lines": table(RedemptionLine, RedemptionLine.redemption_id.in_(redemption_ids)),
        "reversals": table(Reversal, Reversal.redemption_id.in_(redemption_ids)),
        "events": table(RevocationEvent, RevocationEvent.program_id == program_id),
        "ledger": table(LedgerEntry, LedgerEntry.program_id == program_id, LedgerEntry.kind != "mint"),
        "audit": table(
            AuditEntry,
            AuditEntry.action.in_(("voucher.claimed", "redemption.created", "redemption.reversed")),
            AuditEntry.actor.like(f"%{merchant_id}%"),
        ),
        "keys": table(IdempotencyRecord, IdempotencyRecord.merchant_id == merchant_id),
    }


def _check_has_teeth(rows: dict[str, Any]) -> None:
    assert [v["status"] for v in rows["vouchers"]] == ["issued", "issued"]  # v1 came back to its holder
    assert rows["claim_counts"] == [{"program_id": "<program>", "holder_hash": "<holder>", "claimed": 2}]
    assert len(rows["lines"]) == 3 and len(rows["reversals"]) == 2
    assert {r["status"] for r in rows["redemptions"]} == {"reversed"}
    assert sorted(e["kind"] for e in rows["events"]) == ["redeemed", "restored"]
    kinds = sorted((e["kind"], e["from_bucket"], e["to_bucket"]) for e in rows["ledger"])
    assert kinds == [
        ("claim", "unclaimed", "outstanding"),
        ("claim", "unclaimed", "outstanding"),
        ("clawback", "redeemed", "outstanding"),
        ("redeem", "outstanding", "redeemed"),
    ]
    assert len(rows["audit"]) == 5 and len(rows["keys"]) == 4
    assert all(k["state"] == "done" and k["response_status"] == 201 for k in rows["keys"])


def test_claims_redemptions_and_returns_write_identical_rows_on_both_databases(
    admin: Admin, ctx: Any, request: pytest.FixtureRequest
) -> None:
    c = _catalog()
    at = dt.datetime.now(dt.UTC).replace(microsecond=250000) + dt.timedelta(seconds=5)
    lite = _scenario(admin, ctx, c, at)
    _check_has_teeth(lite)
    if not os.environ.get("VOUCHER_TEST_PG_ADMIN_URL"):
        return  # no PostgreSQL here: SQLite alone (the rows above were still checked)
    pg_admin = request.getfixturevalue("pg_admin")
    pg_ctx = request.getfixturevalue("pg_app").extensions["voucher"]
    pg = _scenario(pg_admin, pg_ctx, c, at)
    for name in lite:
        assert pg[name] == lite[name], name
