"""The demo's books add up after claims, redemptions, reversals and an expiry run, and audit says so;
a tampered database makes audit fail and say where. On PostgreSQL, through the HTTP API and the CLI."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, text

from tests.conftest import REDIS_URL, make_settings, prepare
from tests.helpers import MerchantCaller, consumer_headers
from voucher_service import create_app
from voucher_service.adapters.db.models import CertifiedProduct, Program, Voucher
from voucher_service.cli import CliState, run
from voucher_service.domain.clock import local_date
from voucher_service.services.demo import seed_demo


def _cli(ctx, *args: str) -> int:
    state = CliState()
    state._ctx = ctx
    return run(list(args), obj=state)


@pytest.fixture
def demo(tmp_path: Path, pg_database_factory):
    settings = make_settings(tmp_path, pg_database_factory(), REDIS_URL)
    prepare(settings).engine.dispose()
    app = create_app(settings)
    ctx = app.extensions["voucher"]
    seeded = seed_demo(ctx, scale=0.001)
    yield app, ctx, seeded
    ctx.engine.dispose()


def _basket(ctx, program_id: str, today: dt.date) -> list[dict]:
    with ctx.sessions() as s:
        scope = s.get(Program, program_id).eligibility
        query = select(CertifiedProduct).where(
            CertifiedProduct.status == "active",
            CertifiedProduct.valid_from <= today,
            CertifiedProduct.valid_to >= today,
            CertifiedProduct.certification_type.in_(scope["certification_types"]),
        )
        if scope["county_codes"] is not None:
            query = query.where(CertifiedProduct.county_code.in_(scope["county_codes"]))
        products = s.scalars(query.order_by(CertifiedProduct.certification_no).limit(2)).all()
    return [
        {"gtin": products[0].gtins[0], "quantity": 2, "unit_price_fen": 6000},
        {"gtin": products[1].gtins[0], "quantity": 1, "unit_price_fen": 4000},
        {"gtin": "6970000000007", "quantity": 1, "unit_price_fen": 1000},
    ]


def test_demo_books_audit_clean_after_activity_and_fail_when_tampered(demo, capsys):
    app, ctx, seeded = demo
    client = app.test_client()
    pid = seeded["program_id"]
    shop_info = next(m for m in seeded["merchants"] if not m["platform"] and "online" in m["channels"])
    shop = MerchantCaller(client, shop_info["id"], shop_info["api_secret"])
    basket = _basket(ctx, pid, local_date(dt.datetime.now(dt.UTC)))  # the programme's calendar day

    tokens = []
    for phone in ("13900139000", "13900139001", "13900139002", "13900139003"):
        headers = consumer_headers(client, ctx.settings.sms_outbox, phone)
        resp = client.post(f"/api/v1/programs/{pid}/claims", json={"tier": "T50"}, headers=headers)
        assert resp.status_code == 201, resp.get_json()
        tokens.append(resp.get_json()["token"])
    redemptions = []
    for i, token in enumerate(tokens[:3]):
        resp = shop.post(
            "/api/v1/redemptions",
            {"token": token, "order_id": f"D-{i}", "channel": "online", "items": basket},
            headers={"Idempotency-Key": f"d-{i}"},
        )
        assert resp.status_code == 201, (resp.get_json().get("lines"), basket)
        redemptions.append(resp.get_json())
    # A partial return that keeps the minimum spend claws nothing back; a full reversal claws it all back.
    partial = shop.post(
        f"/api/v1/redemptions/{redemptions[0]['redemption_id']}/reversals",
        {"lines": [{"index": 2, "quantity": 1}]},
        headers={"Idempotency-Key": "r-0"},
    )
    assert partial.status_code == 201 and partial.get_json()["clawback_fen"] == 0
    full = shop.post(
        f"/api/v1/redemptions/{redemptions[1]['redemption_id']}/reversals",
        {},
        headers={"Idempotency-Key": "r-1"},
    )
    assert full.status_code == 201 and full.get_json()["clawback_fen"] == 5000
    assert full.get_json()["voucher_status"] == "issued"

    # Expiry, a month and a day later, with the value of expired vouchers recycled to the pools.
    later = dataclasses.replace(ctx)
    later.clock = lambda: dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=31)
    assert _cli(later, "expire", "--program", pid, "--recycle") == 0
    with ctx.sessions() as s:
        assert s.scalar(select(Voucher.status).where(Voucher.status == "expired").limit(1)) == "expired"

    capsys.readouterr()
    assert _cli(ctx, "audit") == 0, capsys.readouterr()
    assert _cli(ctx, "audit", "--program", pid) == 0

    with ctx.engine.begin() as conn:
        conn.execute(
            text("UPDATE redemptions SET discount_fen = discount_fen - 1 WHERE id = :id"),
            {"id": redemptions[2]["redemption_id"]},
        )
    capsys.readouterr()
    assert _cli(ctx, "audit") == 1
    said = capsys.readouterr()
    assert pid in said.out + said.err and "redeemed" in said.out + said.err
    with ctx.engine.begin() as conn:
        conn.execute(
            text("UPDATE redemptions SET discount_fen = discount_fen + 1 WHERE id = :id"),
            {"id": redemptions[2]["redemption_id"]},
        )
        conn.execute(text("UPDATE audit_log SET actor = 'someone else' WHERE seq = 3"))
    capsys.readouterr()
    assert _cli(ctx, "audit") == 1
    said = capsys.readouterr()
    assert "seq 3" in said.out + said.err
