"""`voucher-admin audit`: the budget identity, two ways, and the audit chain; expiry and recycling keep it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from tests.conftest import REDIS_URL, make_settings
from tests.helpers import Admin
from tests.integration.books_fixtures import BACKENDS, DAY1, Books, BooksEnv
from voucher_service import create_app
from voucher_service.adapters.db.models import AuditEntry, LedgerEntry, Redemption, Voucher
from voucher_service.services.credentials import create_admin_token
from voucher_service.services.programs import sold_out_key


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A programme on a database of its own: these tests tamper with the audit log, which is global."""
    if request.param == "sqlite":
        app = request.getfixturevalue("app")
    else:
        url = request.getfixturevalue("pg_database_factory")(migrated=True)
        app = create_app(make_settings(tmp_path, url, REDIS_URL))
    ctx = app.extensions["voucher"]
    admin = Admin(app.test_client(), create_admin_token(ctx, "auditor"))
    program = admin.create_program()
    merchant = admin.create_merchant(enrol_in=program["id"])
    yield BooksEnv(request.param, ctx, admin, program, merchant, Books(ctx, program["id"], merchant.id))
    if request.param != "sqlite":
        ctx.engine.dispose()


def busy(env: BooksEnv) -> dict[str, Any]:
    """Claims, redemptions, a reversal and a voucher redeemed again after its reversal."""
    b = env.books
    b.claim()
    b.claim("T20")
    kept = b.redeem("A-1")
    undone = b.redeem("A-2", tier="T20")
    b.reverse(undone.id)
    again = b.redeem("A-3", voucher_id=undone.voucher_id)
    return {"kept": kept, "undone": undone, "again": again}


def audit(env: BooksEnv) -> int:
    return env.cli("audit", "--program", env.program["id"])


def test_clean_books_and_chain_pass(env, capsys):
    busy(env)
    assert env.cli("audit") == 0
    out = capsys.readouterr().out
    assert f"programme {env.program['id']} ok: budget 1000000000 = unallocated 999000000" in out
    assert "redeemed 7000" in out and "outstanding 7000" in out
    assert "audit chain:" in out and "ok" in out.splitlines()[-1]


def test_an_edited_audit_entry_is_found_by_its_seq(env, capsys):
    busy(env)
    assert audit(env) == 0
    with env.ctx.sessions.begin() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.seq == 2)).one()
        entry_id = entry.id
        s.execute(update(AuditEntry).where(AuditEntry.id == entry_id).values(data={"name": "forged"}))
    capsys.readouterr()
    assert audit(env) == 1
    assert f"audit entry seq 2 (id {entry_id}) was altered" in capsys.readouterr().err


def test_a_deleted_audit_entry_is_found(env, capsys):
    busy(env)
    assert audit(env) == 0
    with env.ctx.sessions.begin() as s:
        s.execute(delete(AuditEntry).where(AuditEntry.seq == 1))
    capsys.readouterr()
    assert audit(env) == 1
    assert "seq 1..1 are missing" in capsys.readouterr().err


def test_a_deleted_last_audit_entry_breaks_its_seal(env, capsys):
    busy(env)
    assert audit(env) == 0
    with env.ctx.sessions.begin() as s:
        last = s.scalar(select(func.max(AuditEntry.seq)))
        s.execute(delete(AuditEntry).where(AuditEntry.seq == last))
    capsys.readouterr()
    assert audit(env) == 1
    assert f"covers seq {last}, which is missing" in capsys.readouterr().err


def test_a_changed_ledger_amount_is_found_with_the_bucket_and_the_entry(env, capsys):
    found = busy(env)
    with env.ctx.sessions.begin() as s:
        entry = s.scalars(
            select(LedgerEntry).where(
                LedgerEntry.kind == "redeem", LedgerEntry.voucher_id == found["kept"].voucher_id
            )
        ).one()
        entry.amount_fen = 4000
        entry_id = entry.id
    assert audit(env) == 1
    err = capsys.readouterr().err
    assert f"programme {env.program['id']}" in err
    assert "bucket outstanding: ledger 8000 fen, state 7000 fen" in err
    assert "bucket redeemed: ledger 6000 fen, state 7000 fen" in err
    assert f"ledger entry {entry_id} (redeem, voucher {found['kept'].voucher_id}): 4000 fen" in err


def test_a_changed_redemption_discount_is_found(env, capsys):
    found = busy(env)
    with env.ctx.sessions.begin() as s:
        s.execute(update(Redemption).where(Redemption.id == found["again"].id).values(discount_fen=2500))
    assert audit(env) == 1
    err = capsys.readouterr().err
    assert "redeemed vouchers' face value 7000 fen, active redemptions' discounts 7500 fen" in err
    assert f"redemption {found['again'].id} (voucher {found['again'].voucher_id}): discount 2500 fen" in err


def test_an_unknown_programme_is_an_error(env, capsys):
    assert env.cli("audit", "--program", "nope") == 2
    assert "No programme nope" in capsys.readouterr().err


def test_expiry_and_recycling_keep_the_identity(env, capsys):
    b = env.books
    stale = [b.claim(at=DAY1, days=30) for _ in range(3)]
    used = b.redeem("E-1", voucher_id=stale[0])
    fresh = b.claim(at=DAY1 + dt.timedelta(days=20), days=30)
    pid = env.program["id"]
    env.ctx.store.set(sold_out_key(pid, "T50"), b"1")

    env.ctx.clock = lambda: DAY1 + dt.timedelta(days=30, hours=1)
    assert env.cli("expire", "--program", pid, "--recycle") == 0
    assert "expired 2 (10000 fen), recycled 0 (0 fen)" in capsys.readouterr().out  # within the offline grace
    assert audit(env) == 0
    assert env.ctx.store.get(sold_out_key(pid, "T50")) == b"1"

    env.ctx.clock = lambda: DAY1 + dt.timedelta(days=32)
    assert env.cli("expire", "--program", pid, "--recycle") == 0
    assert "expired 0 (0 fen), recycled 2 (10000 fen)" in capsys.readouterr().out
    assert audit(env) == 0
    assert env.ctx.store.get(sold_out_key(pid, "T50")) is None
    with env.ctx.sessions() as s:
        status = dict(
            s.execute(select(Voucher.id, Voucher.status).where(Voucher.id.in_([*stale, fresh]))).all()
        )
        assert status == {stale[0]: "redeemed", stale[1]: "expired", stale[2]: "expired", fresh: "issued"}
        available = s.scalar(
            select(func.count())
            .select_from(Voucher)
            .where(Voucher.program_id == pid, Voucher.tier_code == "T50", Voucher.status == "available")
        )
        assert available == 100 - 4 + 2
        kinds = dict(
            s.execute(
                select(LedgerEntry.kind, func.count())
                .where(LedgerEntry.program_id == pid)
                .group_by(LedgerEntry.kind)
            ).all()
        )
        assert (kinds["expire"], kinds["recycle"]) == (2, 2)
        audits = s.scalars(
            select(AuditEntry.data).where(
                AuditEntry.action == "vouchers.expired", AuditEntry.entity_id == pid
            )
        ).all()
        assert [a["expired"] for a in audits] == [2, 0] and [a["recycled"] for a in audits] == [0, 2]
    assert env.cli("expire", "--program", pid, "--recycle") == 0
    assert "expired 0 (0 fen), recycled 0 (0 fen)" in capsys.readouterr().out
    assert used.discount_fen == 5000
