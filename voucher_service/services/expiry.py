"""Expiry of claimed vouchers past their time, and recycling their value into the tiers' pools.

Expiring is one set-based UPDATE per programme; each voucher it touches gets its `expire` movement
(outstanding -> expired) in the same transaction. Recycling gives each expired voucher's value back
to its tier as a fresh `available` pool row with a new id (a `recycle` movement, expired -> unclaimed);
the expired row stays, marked `recycled_at`, for the record. An offline till may still redeem a voucher
it accepted before expiry when it syncs, so a voucher is recycled only once the programme's
`max_offline_hours` have passed since it expired.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import LedgerEntry, Program, Voucher
from voucher_service.domain.errors import NotFound
from voucher_service.domain.states import VoucherStatus, check_transition
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext
from voucher_service.services.programs import forget_gates, sold_out_keys

CHUNK = 5_000


def expire_vouchers(
    ctx: ServiceContext, actor: str, program_id: str | None = None, recycle: bool = False
) -> list[dict[str, Any]]:
    """Expire issued vouchers past `expires_at` (and recycle expired ones); one result per programme."""
    now = ctx.now()
    with ctx.sessions() as s:
        query = select(Program.id, Program.max_offline_hours).order_by(Program.created_at, Program.id)
        if program_id is not None:
            query = query.where(Program.id == program_id)
        programs = s.execute(query).all()
    if program_id is not None and not programs:
        raise NotFound(f"No programme {program_id}.")
    results = []
    for pid, offline_hours in programs:
        with ctx.sessions.begin() as s:
            result = _expire_program(s, pid, now)
            if recycle:
                result.update(_recycle_program(s, pid, now, now - dt.timedelta(hours=offline_hours)))
            else:
                result.update(recycled=0, recycled_fen=0, tiers=[])
            if result["expired"] or result["recycled"]:
                audit_log.record(
                    s,
                    actor,
                    "vouchers.expired",
                    "program",
                    pid,
                    {k: result[k] for k in ("expired", "expired_fen", "recycled", "recycled_fen")},
                    now,
                )
        if result["tiers"]:
            # Fresh pool rows: claims of a tier that had sold out may succeed again.
            forget_gates(ctx, [k for code in result["tiers"] for k in sold_out_keys(pid, code)])
        results.append({"program_id": pid, **{k: v for k, v in result.items() if k != "tiers"}})
    return results


def _expire_program(s: Session, program_id: str, now: dt.datetime) -> dict[str, Any]:
    rows = s.execute(
        update(Voucher)
        .where(
            Voucher.program_id == program_id,
            Voucher.status == VoucherStatus.ISSUED,
            Voucher.expires_at <= now,
        )
        .values(status=check_transition(VoucherStatus.ISSUED, VoucherStatus.EXPIRED), status_changed_at=now)
        .returning(Voucher.id, Voucher.face_value_fen)
        .execution_options(synchronize_session=False)
    ).all()
    _movements(
        s,
        [
            {
                "program_id": program_id,
                "voucher_id": vid,
                "kind": "expire",
                "from_bucket": "outstanding",
                "to_bucket": "expired",
                "amount_fen": face,
                "ref": None,
                "created_at": now,
            }
            for vid, face in rows
        ],
    )
    return {"expired": len(rows), "expired_fen": sum(face for _, face in rows)}


def _recycle_program(
    s: Session, program_id: str, now: dt.datetime, expired_before: dt.datetime
) -> dict[str, Any]:
    rows = s.execute(
        update(Voucher)
        .where(
            Voucher.program_id == program_id,
            Voucher.status == VoucherStatus.EXPIRED,
            Voucher.recycled_at.is_(None),
            Voucher.expires_at <= expired_before,
        )
        .values(recycled_at=now)
        .returning(Voucher.id, Voucher.tier_code, Voucher.face_value_fen, Voucher.min_spend_fen)
        .execution_options(synchronize_session=False)
    ).all()
    fresh = [(str(uuid.uuid4()), old, tier, face, min_spend) for old, tier, face, min_spend in rows]
    for start in range(0, len(fresh), CHUNK):
        s.execute(
            insert(Voucher),
            [
                {
                    "id": new,
                    "program_id": program_id,
                    "tier_code": tier,
                    "face_value_fen": face,
                    "min_spend_fen": min_spend,
                    "status": check_transition(None, VoucherStatus.AVAILABLE),
                }
                for new, _, tier, face, min_spend in fresh[start : start + CHUNK]
            ],
        )
    _movements(
        s,
        [
            {
                "program_id": program_id,
                "voucher_id": old,
                "kind": "recycle",
                "from_bucket": "expired",
                "to_bucket": "unclaimed",
                "amount_fen": face,
                "ref": new,
                "created_at": now,
            }
            for new, old, _, face, _ in fresh
        ],
    )
    return {
        "recycled": len(fresh),
        "recycled_fen": sum(f[3] for f in fresh),
        "tiers": sorted({f[2] for f in fresh}),
    }


def _movements(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    # The rows services.ledger.move would append, written in bulk: one per voucher touched.
    for start in range(0, len(rows), CHUNK):
        s.execute(insert(LedgerEntry), list(rows[start : start + CHUNK]))
