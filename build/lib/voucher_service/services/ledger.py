"""Budget movements between buckets, in fen, appended in the transaction of the state change."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import LedgerEntry

BUCKETS = ("unallocated", "unclaimed", "outstanding", "redeemed", "expired", "void")


def move(
    session: Session,
    *,
    program_id: str,
    kind: str,
    from_bucket: str,
    to_bucket: str,
    amount_fen: int,
    at: dt.datetime,
    voucher_id: str | None = None,
    ref: str | None = None,
) -> None:
    """Append one movement of `amount_fen` from one bucket to another."""
    if from_bucket not in BUCKETS or to_bucket not in BUCKETS:
        raise ValueError(f"unknown bucket in {from_bucket} -> {to_bucket}")
    if not isinstance(amount_fen, int) or amount_fen < 0:
        raise ValueError("amount_fen must be a non-negative int")
    session.add(
        LedgerEntry(
            program_id=program_id,
            voucher_id=voucher_id,
            kind=kind,
            from_bucket=from_bucket,
            to_bucket=to_bucket,
            amount_fen=amount_fen,
            ref=ref,
            created_at=at,
        )
    )
