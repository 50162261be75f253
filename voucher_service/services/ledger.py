"""Budget movements between buckets, in fen, appended in the transaction of the state change."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import LedgerEntry
from voucher_service.domain.books import BUCKETS

__all__ = ["BUCKETS", "entry", "move"]


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
    session.add(
        LedgerEntry(
            **entry(
                program_id=program_id,
                kind=kind,
                from_bucket=from_bucket,
                to_bucket=to_bucket,
                amount_fen=amount_fen,
                at=at,
                voucher_id=voucher_id,
                ref=ref,
            )
        )
    )


def entry(
    *,
    program_id: str,
    kind: str,
    from_bucket: str,
    to_bucket: str,
    amount_fen: int,
    at: dt.datetime,
    voucher_id: str | None = None,
    ref: str | None = None,
) -> dict[str, Any]:
    """The column values of one movement, checked (for write paths that insert them with Core)."""
    if from_bucket not in BUCKETS or to_bucket not in BUCKETS:
        raise ValueError(f"unknown bucket in {from_bucket} -> {to_bucket}")
    if not isinstance(amount_fen, int) or amount_fen < 0:
        raise ValueError("amount_fen must be a non-negative int")
    return {
        "program_id": program_id,
        "voucher_id": voucher_id,
        "kind": kind,
        "from_bucket": from_bucket,
        "to_bucket": to_bucket,
        "amount_fen": amount_fen,
        "ref": ref,
        "created_at": at,
    }
