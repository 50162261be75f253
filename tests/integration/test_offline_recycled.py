"""An offline redemption of a voucher that expired since and whose value was recycled to the pool is a
double spend (a conflict kept for reconciliation), never a second draw on the budget."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from tests.redemption_support import item, make_world
from voucher_service.adapters.db.models import Program, Voucher
from voucher_service.domain.clock import rfc3339
from voucher_service.services.redemption import record_offline_redemption


@pytest.fixture(params=["app", "pg_app"])
def world(request):
    app = request.getfixturevalue(request.param)
    admin = request.getfixturevalue("admin" if request.param == "app" else "pg_admin")
    return make_world(admin, app.extensions["voucher"])


@pytest.mark.parametrize("recycled", [False, True])
def test_an_expired_voucher_redeemed_offline_before_expiry(world, recycled):
    ctx = world.ctx
    now = ctx.now()
    voucher_id, token = world.voucher(
        valid_from=now - dt.timedelta(days=2), expires_at=now - dt.timedelta(hours=1)
    )
    with ctx.sessions.begin() as s:
        # History: the programme ran for days, the voucher expired an hour ago (and maybe was recycled).
        s.execute(
            update(Program)
            .where(Program.id == world.program_id)
            .values(activated_at=now - dt.timedelta(days=3))
        )
        s.execute(
            update(Voucher)
            .where(Voucher.id == voucher_id)
            .values(status="expired", recycled_at=now if recycled else None)
        )
    payload = {
        "token": token,
        "voucher_id": voucher_id,
        "order_id": "POS-1",
        "redeemed_at": rfc3339(now - dt.timedelta(hours=2)),
        "items": [item(world.catalog.rice, 4, 5000)],
    }
    with ctx.sessions.begin() as s:
        status, code, redemption_id = record_offline_redemption(ctx, s, world.merchant.id, "till-1", payload)
    if recycled:
        assert (status, code, redemption_id) == ("conflict", "voucher_already_redeemed", None)
    else:
        assert status == "accepted" and redemption_id is not None
