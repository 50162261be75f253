"""The statements of a claim, kept to as few round trips as the database allows.

PostgreSQL (the rush configuration) does a claim in two statements: one counts the claim against the
holder's limit and locks a pool voucher with SKIP LOCKED; the other issues that voucher and appends
its ledger movement and audit entry (data-modifying CTEs). SQLite, serialised by its write lock,
runs the same steps one statement at a time, and the service appends the books through the ORM.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from voucher_service.adapters.db.engine import is_postgres
from voucher_service.adapters.db.models import HolderClaimCount, Program, Voucher

PG_RESERVE = text("""
WITH counted AS (
    INSERT INTO holder_claim_counts AS h (program_id, holder_hash, claimed)
    VALUES (:program_id, :holder_hash, 1)
    ON CONFLICT (program_id, holder_hash) DO UPDATE SET claimed = h.claimed + 1
    WHERE h.claimed < :per_person_limit
    RETURNING claimed
)
SELECT EXISTS (SELECT 1 FROM counted) AS counted,
       (SELECT v.id FROM vouchers v JOIN programs p ON p.id = v.program_id
        WHERE v.program_id = :program_id AND v.tier_code = :tier_code AND v.status = 'available'
          AND p.status = 'active' AND EXISTS (SELECT 1 FROM counted)
        LIMIT 1 FOR UPDATE OF v SKIP LOCKED) AS voucher_id
""")

PG_ISSUE = text("""
WITH taken AS (
    UPDATE vouchers SET status = 'issued', holder_hash = :holder_hash,
        claimed_by_merchant_id = :merchant_id, claimed_at = :now, valid_from = :valid_from,
        expires_at = :expires_at, kid = :kid, token = :token, status_changed_at = :now
    WHERE id = :voucher_id AND status = 'available'
    RETURNING id, program_id, tier_code, face_value_fen
), moved AS (
    INSERT INTO ledger_entries
        (program_id, voucher_id, kind, from_bucket, to_bucket, amount_fen, ref, created_at)
    SELECT program_id, id, 'claim', 'unclaimed', 'outstanding', face_value_fen, tier_code, :now FROM taken
), audited AS (
    INSERT INTO audit_log (at, actor, action, entity, entity_id, data)
    SELECT :now, :actor, 'voucher.claimed', 'voucher', id, CAST(:audit_data AS JSON) FROM taken
)
SELECT count(*) FROM taken
""")


class Reservation(NamedTuple):
    """The outcome of reserving: whether the holder was under the limit, and the locked voucher."""

    counted: bool
    voucher_id: str | None


@dataclass(frozen=True)
class Issue:
    """Everything that issuing a reserved voucher writes."""

    voucher_id: str
    holder_hash: str
    merchant_id: str | None
    now: dt.datetime
    valid_from: dt.datetime
    expires_at: dt.datetime
    kid: str
    token: str
    actor: str
    audit_data: dict[str, Any]


def reserve(
    s: Session, program_id: str, tier_code: str, holder_hash: str, per_person_limit: int
) -> Reservation:
    """Count a claim against the holder's limit and lock one available voucher of an active programme."""
    params = {
        "program_id": program_id,
        "tier_code": tier_code,
        "holder_hash": holder_hash,
        "per_person_limit": per_person_limit,
    }
    if is_postgres(s):
        row = s.connection().execute(PG_RESERVE, params).one()
        return Reservation(bool(row.counted), row.voucher_id)
    counted = s.execute(
        sqlite_insert(HolderClaimCount)
        .values(program_id=program_id, holder_hash=holder_hash, claimed=1)
        .on_conflict_do_update(
            index_elements=[HolderClaimCount.program_id, HolderClaimCount.holder_hash],
            set_={"claimed": HolderClaimCount.claimed + 1},
            where=HolderClaimCount.claimed < per_person_limit,
        )
        .returning(HolderClaimCount.claimed)
    ).first()
    if counted is None:
        return Reservation(False, None)
    # No SKIP LOCKED here: BEGIN IMMEDIATE holds SQLite's write lock for the whole transaction.
    voucher_id = s.scalar(
        select(Voucher.id)
        .join(Program, Program.id == Voucher.program_id)
        .where(
            Voucher.program_id == program_id,
            Voucher.tier_code == tier_code,
            Voucher.status == "available",
            Program.status == "active",
        )
        .limit(1)
    )
    return Reservation(True, voucher_id)


def issue(s: Session, claim: Issue) -> bool:
    """Mark the reserved voucher issued; on PostgreSQL also append its ledger and audit entries.

    Return whether the books were written too (when not, the caller appends them).
    """
    if is_postgres(s):
        params = {
            "voucher_id": claim.voucher_id,
            "holder_hash": claim.holder_hash,
            "merchant_id": claim.merchant_id,
            "now": claim.now,
            "valid_from": claim.valid_from,
            "expires_at": claim.expires_at,
            "kid": claim.kid,
            "token": claim.token,
            "actor": claim.actor,
            "audit_data": json.dumps(claim.audit_data, ensure_ascii=False),
        }
        taken = s.connection().execute(PG_ISSUE, params).scalar_one()
        _check_taken(claim.voucher_id, int(taken))
        return True
    result = s.execute(
        update(Voucher)
        .where(Voucher.id == claim.voucher_id, Voucher.status == "available")
        .values(
            status="issued",
            holder_hash=claim.holder_hash,
            claimed_by_merchant_id=claim.merchant_id,
            claimed_at=claim.now,
            valid_from=claim.valid_from,
            expires_at=claim.expires_at,
            kid=claim.kid,
            token=claim.token,
            status_changed_at=claim.now,
        )
        .execution_options(synchronize_session=False)
    )
    _check_taken(claim.voucher_id, int(getattr(result, "rowcount", 0)))
    return False


def _check_taken(voucher_id: str, taken: int) -> None:
    if taken != 1:  # cannot happen with the row locked; fail rather than issue twice
        raise RuntimeError(f"voucher {voucher_id} was taken under our lock")
