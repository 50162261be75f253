"""The audit log: appended unsealed on the hot path, sealed in order by one writer, tamper-evident."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, update

from voucher_service.adapters.db.models import AuditEntry
from voucher_service.services import audit_log


def _append(ctx, n, action="test.event"):
    now = dt.datetime.now(dt.UTC)
    with ctx.sessions.begin() as s:
        for i in range(n):
            audit_log.record(s, "tester", action, "thing", str(i), {"i": i, "amount_fen": 100 * i}, now)


def test_sealed_chain_verifies(ctx):
    _append(ctx, 30)
    assert audit_log.seal_all(ctx.sessions) >= 30
    with ctx.sessions() as s:
        report = audit_log.verify_chain(s)
    assert report.ok, report.problems
    assert report.entries >= 30


def test_entries_committed_after_a_seal_are_chained_after_it(ctx):
    _append(ctx, 3)
    audit_log.seal_all(ctx.sessions)
    _append(ctx, 2, action="late")
    audit_log.seal_all(ctx.sessions)
    with ctx.sessions() as s:
        seqs = list(s.scalars(select(AuditEntry.seq).where(AuditEntry.action == "late")))
        assert all(q is not None for q in seqs)
        assert audit_log.verify_chain(s).ok


def test_an_edited_entry_is_found(ctx):
    _append(ctx, 5)
    audit_log.seal_all(ctx.sessions)
    with ctx.sessions.begin() as s:
        target = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "test.event").order_by(AuditEntry.seq)
        ).all()[2]
        s.execute(update(AuditEntry).where(AuditEntry.id == target.id).values(data={"i": 2, "amount_fen": 1}))
        seq = target.seq
    with ctx.sessions() as s:
        report = audit_log.verify_chain(s)
    assert not report.ok
    assert any(f"seq {seq}" in p and "altered" in p for p in report.problems), report.problems


def test_a_deleted_entry_is_found(ctx):
    _append(ctx, 5)
    audit_log.seal_all(ctx.sessions)
    with ctx.sessions.begin() as s:
        target = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "test.event").order_by(AuditEntry.seq)
        ).all()[1]
        s.execute(delete(AuditEntry).where(AuditEntry.id == target.id))
    with ctx.sessions() as s:
        report = audit_log.verify_chain(s)
    assert not report.ok
    assert any("missing" in p for p in report.problems), report.problems


def test_deleting_the_last_entries_breaks_the_seal(ctx):
    _append(ctx, 5)
    audit_log.seal_all(ctx.sessions)
    with ctx.sessions.begin() as s:
        last = s.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1))
        s.execute(delete(AuditEntry).where(AuditEntry.seq == last))
    with ctx.sessions() as s:
        report = audit_log.verify_chain(s)
    assert any("seal" in p for p in report.problems), report.problems


def test_seal_on_postgres_is_single_writer(pg_app):
    ctx = pg_app.extensions["voucher"]
    _append(ctx, 10)
    audit_log.seal_all(ctx.sessions)
    with ctx.sessions() as s:
        assert audit_log.verify_chain(s).ok
