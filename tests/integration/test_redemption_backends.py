"""PostgreSQL writes a redemption in one statement, SQLite through the ORM: both must write the same rows."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.helpers import Admin, problem_code
from tests.redemption_support import Catalog, World, add_product, checkout, item, map_sku, random_gtin
from voucher_service.adapters.db.models import (
    AuditEntry,
    IdempotencyRecord,
    LedgerEntry,
    Redemption,
    RedemptionLine,
    RevocationEvent,
    Voucher,
)
from voucher_service.services.redemption import record_offline_redemption

pytestmark = pytest.mark.postgres


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


def _load(ctx: Any, c: Catalog) -> None:
    add_product(ctx, c.rice_cert, [c.rice])
    add_product(ctx, c.tea_cert, [c.tea], certification_type="national", county_code="450100")
    add_product(ctx, f"{c.rice_cert}-OLD", [c.expired], valid_to=dt.date(2021, 12, 31))
    add_product(ctx, f"{c.rice_cert}-SUS", [c.suspended], status="suspended")


def _world(admin: Admin, ctx: Any, c: Catalog) -> World:
    program = admin.create_program()
    merchant = admin.create_merchant(enrol_in=program["id"])
    _load(ctx, c)
    map_sku(ctx, merchant.id, "SKU-TEA-1", c.tea_cert)
    return World(admin, ctx, program, merchant, c)


def _basket(c: Catalog) -> list[dict[str, Any]]:
    return [
        item(c.rice, 2, 5990, name="巴马香米 5kg"),
        item(c.tea, 1, 4000, sku="SKU-X"),
        item(None, 1, 2500, sku="SKU-TEA-1", name="茶"),
        item(c.expired, 1, 1000),
        item(c.suspended, 2, 700),
        item(c.unknown, 3, 1000, name="普通商品"),
    ]


def _rows(ctx: Any, redemption_id: str, names: dict[str, str]) -> dict[str, Any]:
    """Every row the redemption wrote, with this database's ids replaced by their role."""

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        return names.get(value, value) if isinstance(value, str) else value

    def cols(row: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        return {k: norm(getattr(row, k)) for k in row.__table__.columns.keys() if k not in skip}

    voucher_id = next(k for k, v in names.items() if v == "<voucher>")
    with ctx.sessions() as s:
        r = s.get(Redemption, redemption_id)
        lines = s.scalars(
            select(RedemptionLine)
            .where(RedemptionLine.redemption_id == redemption_id)
            .order_by(RedemptionLine.index)
        )
        ledger = s.scalars(select(LedgerEntry).where(LedgerEntry.ref == redemption_id))
        audit = s.scalars(select(AuditEntry).where(AuditEntry.entity_id == redemption_id))
        events = s.scalars(select(RevocationEvent).where(RevocationEvent.voucher_id == voucher_id))
        voucher = s.get(Voucher, voucher_id)
        assert r is not None and voucher is not None
        return {
            "redemption": cols(r, skip=("receipt",)),
            "lines": [cols(x) for x in lines],
            "ledger": [cols(x, skip=("id",)) for x in ledger],
            "audit": [cols(x, skip=("id",)) for x in audit],
            "events": [cols(x, skip=("id",)) for x in events],
            "voucher": (voucher.status, voucher.status_changed_at),
        }


def _redeem_online(world: World, c: Catalog, at: dt.datetime) -> tuple[dict[str, Any], bytes]:
    world.ctx.clock = lambda: at
    voucher_id, token = world.voucher("T50")
    key = secrets.token_hex(16)
    resp = world.redeem(token, _basket(c), key=key, order_id="ORDER-1", terminal_id="POS-7")
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    with world.ctx.sessions() as s:
        stored = s.get(IdempotencyRecord, (world.merchant.id, key))
        assert stored is not None and stored.state == "done" and stored.response_status == 201
        assert bytes(stored.response_body or b"") == resp.data
    names = {
        voucher_id: "<voucher>",
        world.program_id: "<program>",
        world.merchant.id: "<merchant>",
        f"merchant:{world.merchant.id}": "merchant:<merchant>",
        body["redemption_id"]: "<redemption>",
    }
    return _rows(world.ctx, body["redemption_id"], names), resp.data


def test_postgres_and_sqlite_write_identical_rows_for_the_same_redemption(
    admin: Admin, ctx: Any, pg_admin: Admin, pg_app: Any
) -> None:
    c = _catalog()
    at = ctx.now().replace(microsecond=123000)
    lite = _world(admin, ctx, c)
    pg = _world(pg_admin, pg_app.extensions["voucher"], c)
    lite_rows, _ = _redeem_online(lite, c, at)
    pg_rows, _ = _redeem_online(pg, c, at)
    assert pg_rows == lite_rows
    # The comparison has teeth: every kind of row was written, and the books moved the discount.
    assert len(pg_rows["lines"]) == 6 and len(pg_rows["ledger"]) == 1 and len(pg_rows["audit"]) == 1
    assert pg_rows["events"] == [
        {"program_id": "<program>", "voucher_id": "<voucher>", "kind": "redeemed", "created_at": at}
    ]
    assert pg_rows["ledger"][0]["from_bucket"] == "outstanding"
    assert pg_rows["ledger"][0]["amount_fen"] == pg_rows["redemption"]["discount_fen"] > 0
    assert pg_rows["audit"][0]["data"]["terminal_id"] == "POS-7"
    assert pg_rows["voucher"] == ("redeemed", at)


def _redeem_offline_expired(world: World, c: Catalog, base: dt.datetime) -> dict[str, Any]:
    """An offline record made while the voucher was valid, uploaded after it expired."""
    ctx = world.ctx
    ctx.clock = lambda: base
    voucher_id, token = world.voucher("T50", expires_at=base + dt.timedelta(hours=3))
    redeemed_at = base + dt.timedelta(hours=1)
    ctx.clock = lambda: base + dt.timedelta(hours=4)
    with ctx.sessions.begin() as s:
        s.execute(update(Voucher).where(Voucher.id == voucher_id).values(status="expired"))
    payload = {
        "token": token,
        "order_id": "OFF-1",
        "voucher_id": voucher_id,
        "items": _basket(c),
        "redeemed_at": redeemed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with ctx.sessions.begin() as s:
        status, code, redemption_id = record_offline_redemption(ctx, s, world.merchant.id, "TILL-1", payload)
    assert (status, code) == ("accepted", None), (status, code)
    assert redemption_id is not None
    names = {
        voucher_id: "<voucher>",
        world.program_id: "<program>",
        world.merchant.id: "<merchant>",
        f"merchant:{world.merchant.id}": "merchant:<merchant>",
        redemption_id: "<redemption>",
    }
    return _rows(ctx, redemption_id, names)


def test_an_offline_redemption_of_an_expired_voucher_writes_identical_rows_too(
    admin: Admin, ctx: Any, pg_admin: Admin, pg_app: Any
) -> None:
    c = _catalog()
    base = ctx.now().replace(microsecond=0) + dt.timedelta(seconds=5)  # after the programmes' activation
    lite_rows = _redeem_offline_expired(_world(admin, ctx, c), c, base)
    pg_rows = _redeem_offline_expired(_world(pg_admin, pg_app.extensions["voucher"], c), c, base)
    assert pg_rows == lite_rows
    assert pg_rows["ledger"][0]["from_bucket"] == "expired"  # the bucket of the state it was taken from
    assert pg_rows["redemption"]["source"] == "offline"


def test_a_second_redemption_of_the_voucher_is_refused_the_same_way_on_both(
    admin: Admin, ctx: Any, pg_admin: Admin, pg_app: Any
) -> None:
    c = _catalog()
    for world in (_world(admin, ctx, c), _world(pg_admin, pg_app.extensions["voucher"], c)):
        _, token = world.voucher("T50")
        assert world.redeem(token, _basket(c)).status_code == 201
        again = world.redeem(token, _basket(c))
        assert again.status_code == 409 and problem_code(again) == "voucher_already_redeemed"


def test_the_partial_unique_index_still_guards_on_both(
    admin: Admin, ctx: Any, pg_admin: Admin, pg_app: Any
) -> None:
    c = _catalog()
    for world in (_world(admin, ctx, c), _world(pg_admin, pg_app.extensions["voucher"], c)):
        voucher_id, token = world.voucher("T50")
        assert world.redeem(token, _basket(c)).status_code == 201
        with world.ctx.sessions.begin() as s:  # a voucher row wrongly put back: the index must still refuse
            s.execute(update(Voucher).where(Voucher.id == voucher_id).values(status="issued"))
        again = world.redeem(token, _basket(c))
        assert again.status_code == 409 and problem_code(again) == "voucher_already_redeemed"
        with world.ctx.sessions() as s:
            assert len(list(s.scalars(select(Redemption).where(Redemption.voucher_id == voucher_id)))) == 1
            assert (
                len(
                    list(
                        s.scalars(
                            select(LedgerEntry).where(
                                LedgerEntry.voucher_id == voucher_id, LedgerEntry.kind == "redeem"
                            )
                        )
                    )
                )
                == 1
            )


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ("redeemed", 409, "voucher_already_redeemed"),
        ("void", 422, "voucher_void"),
    ],
)
def test_a_change_after_the_checks_stops_the_one_statement_write(
    pg_admin: Admin, pg_app: Any, monkeypatch: Any, change: str, status: int, code: str
) -> None:
    """Another transaction commits between the checks and the write: nothing of the redemption is written."""
    from voucher_service.services import redemption

    ctx = pg_app.extensions["voucher"]
    c = _catalog()
    world = _world(pg_admin, ctx, c)
    voucher_id, token = world.voucher("T50")
    key = secrets.token_hex(16)
    checked = redemption._check_voucher

    def check_then_interfere(*args: Any) -> None:
        checked(*args)
        with ctx.sessions.begin() as s:  # another connection, committed before our write
            s.execute(update(Voucher).where(Voucher.id == voucher_id).values(status=change))

    monkeypatch.setattr(redemption, "_check_voucher", check_then_interfere)
    resp = world.redeem(token, _basket(c), key=key)
    assert resp.status_code == status and problem_code(resp) == code
    with ctx.sessions() as s:
        assert s.scalars(select(Redemption).where(Redemption.voucher_id == voucher_id)).first() is None
        assert (
            s.scalars(
                select(LedgerEntry).where(LedgerEntry.voucher_id == voucher_id, LedgerEntry.kind == "redeem")
            ).first()
            is None
        )
        assert (
            s.scalars(select(RevocationEvent).where(RevocationEvent.voucher_id == voucher_id)).first() is None
        )
        assert s.get(Voucher, voucher_id).status == change  # type: ignore[union-attr]


def test_a_retry_while_the_redemption_runs_is_in_progress_and_leaves_no_marker_behind(
    pg_admin: Admin, pg_app: Any, monkeypatch: Any
) -> None:
    """The key is taken in the redemption's own transaction: while it runs, a retry with the key is told
    it is in progress (it cannot take the key over), and nothing of the key is visible outside it."""
    from voucher_service.services import redemption

    ctx = pg_app.extensions["voucher"]
    c = _catalog()
    world = _world(pg_admin, ctx, c)
    _, token = world.voucher("T50")
    key = secrets.token_hex(16)
    checked = redemption._check_voucher
    seen: list[Any] = []

    def check_then_retry(*args: Any) -> None:
        checked(*args)
        with ctx.sessions() as s:  # another connection: no in-progress row committed before the effect
            seen.append(s.get(IdempotencyRecord, (world.merchant.id, key)))
        seen.append(world.redeem(token, _basket(c), key=key, order_id="ORDER-R"))

    monkeypatch.setattr(redemption, "_check_voucher", check_then_retry)
    first = world.redeem(token, _basket(c), key=key, order_id="ORDER-R")
    monkeypatch.setattr(redemption, "_check_voucher", checked)
    assert first.status_code == 201, first.get_json()
    marker, retry = seen
    assert marker is None
    assert retry.status_code == 409 and problem_code(retry) == "idempotency_in_progress"
    assert int(retry.headers["Retry-After"]) >= 1
    again = world.redeem(token, _basket(c), key=key, order_id="ORDER-R")
    assert again.status_code == 201 and again.data == first.data


def test_a_redemption_with_a_key_commits_once(pg_admin: Admin, pg_app: Any) -> None:
    from sqlalchemy import event

    ctx = pg_app.extensions["voucher"]
    c = _catalog()
    world = _world(pg_admin, ctx, c)
    _, token = world.voucher("T50")
    preview = checkout(token, _basket(c))
    assert world.merchant.post("/api/v1/redemptions/preview", preview).status_code == 200  # warm caches
    commits: list[int] = []
    statements: list[str] = []
    event.listen(ctx.engine, "before_cursor_execute", lambda *a: statements.append(a[2][:60]))
    event.listen(ctx.engine, "commit", lambda _conn: commits.append(1) or statements.append("COMMIT"))
    resp = world.redeem(token, _basket(c), key=secrets.token_hex(16))
    assert resp.status_code == 201, resp.get_json()
    assert len(commits) == 1, statements  # the key, the effect and the answer together
