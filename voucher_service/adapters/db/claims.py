"""The statements of a claim, built with SQLAlchemy Core from the models, kept to few round trips.

PostgreSQL (the rush configuration) does a claim in two statements: one counts the claim against the
holder's limit and locks a pool voucher with SKIP LOCKED; the other issues that voucher and appends
its ledger movement and audit entry (data-modifying CTEs). SQLite, serialised by its write lock,
runs the same statements one at a time. Both take the same parameters, built here from the domain's
values; the statements are built once at import (SQLAlchemy then compiles each once per dialect).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Select, Update, bindparam, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from voucher_service.adapters.db.engine import is_postgres
from voucher_service.adapters.db.models import AuditEntry, HolderClaimCount, LedgerEntry, Program, Voucher
from voucher_service.adapters.db.rows import OnDriver, built_once, insert_row, param, row_params, table_of
from voucher_service.domain.states import ProgramStatus, VoucherStatus

_COUNTS = table_of(HolderClaimCount)
_VOUCHERS = table_of(Voucher)
_LEDGER = table_of(LedgerEntry)
_AUDIT = table_of(AuditEntry)


def _count_claim(insert_of: Callable[[Any], Any]) -> Any:
    """Count one claim for the holder unless it has reached the limit; returns a row when counted."""
    stmt = insert_of(_COUNTS).values(
        program_id=bindparam("program_id"), holder_hash=bindparam("holder_hash"), claimed=1
    )
    return stmt.on_conflict_do_update(
        index_elements=[_COUNTS.c.program_id, _COUNTS.c.holder_hash],
        set_={"claimed": _COUNTS.c.claimed + 1},
        where=_COUNTS.c.claimed < bindparam("per_person_limit"),
    ).returning(_COUNTS.c.claimed)


# One available voucher of the tier, while the programme is active.
_POOL = (
    select(Voucher.id)
    .join(Program, Program.id == Voucher.program_id)
    .where(
        Voucher.program_id == bindparam("program_id"),
        Voucher.tier_code == bindparam("tier_code"),
        Voucher.status == VoucherStatus.AVAILABLE,
        Program.status == ProgramStatus.ACTIVE,
    )
    .limit(1)
)

SQLITE_COUNT = built_once(_count_claim(sqlite_insert))
_counted = _count_claim(pg_insert).cte("counted")
PG_RESERVE = built_once(
    select(
        exists(_counted.select()).label("counted"),
        _POOL.where(exists(_counted.select()))
        .with_for_update(of=Voucher, skip_locked=True)
        .scalar_subquery()
        .label("voucher_id"),
    )
)
SQLITE_POOL = built_once(_POOL.where())
_PG_RESERVE = OnDriver(PG_RESERVE)


@dataclass(frozen=True)
class IssuedVoucher:
    """The columns a claim sets on the voucher it takes (named as the model's columns)."""

    status: str
    holder_hash: str
    claimed_by_merchant_id: str | None
    claimed_at: dt.datetime
    valid_from: dt.datetime
    expires_at: dt.datetime
    kid: str
    token: str
    status_changed_at: dt.datetime


_ISSUED = tuple(IssuedVoucher.__dataclass_fields__)


def _issue_voucher() -> Update:
    return (
        update(Voucher)
        .where(Voucher.id == bindparam("voucher_id"), Voucher.status == VoucherStatus.AVAILABLE)
        .values({name: param(_VOUCHERS, "v_", name) for name in _ISSUED})
    )


SQLITE_ISSUE = built_once(_issue_voucher())
SQLITE_MOVE = built_once(insert_row(_LEDGER, "g_"))
SQLITE_AUDIT = built_once(insert_row(_AUDIT, "a_"))


def _pg_issue() -> Select[Any]:
    taken = _issue_voucher().returning(Voucher.id).cte("taken")
    moved = insert_row(_LEDGER, "g_", source=taken).cte("moved")
    audited = insert_row(_AUDIT, "a_", source=taken).cte("audited")
    return select(func.count()).select_from(taken).add_cte(moved, audited)


PG_ISSUE = built_once(_pg_issue())
_PG_ISSUE = OnDriver(PG_ISSUE)


class Reservation(NamedTuple):
    """The outcome of reserving: whether the holder was under the limit, and the locked voucher."""

    counted: bool
    voucher_id: str | None


@dataclass(frozen=True)
class Issue:
    """Everything that issuing a reserved voucher writes: the voucher's new columns, and its ledger and
    audit rows (column values of those models)."""

    voucher_id: str
    voucher: IssuedVoucher
    ledger: Mapping[str, Any]
    audit: Mapping[str, Any]


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
    conn = s.connection()
    if is_postgres(s):
        counted, voucher_id = _PG_RESERVE.one(conn, params)
        return Reservation(bool(counted), voucher_id)
    if conn.execute(SQLITE_COUNT, params).first() is None:
        return Reservation(False, None)
    # No SKIP LOCKED here: BEGIN IMMEDIATE holds SQLite's write lock for the whole transaction.
    return Reservation(True, conn.execute(SQLITE_POOL, params).scalar())


def issue(s: Session, claim: Issue) -> None:
    """Mark the reserved voucher issued and append its ledger movement and audit entry."""
    params: dict[str, Any] = {
        "voucher_id": claim.voucher_id,
        **{f"v_{k}": getattr(claim.voucher, k) for k in _ISSUED},
        **row_params(_LEDGER, "g_", claim.ledger),
        **row_params(_AUDIT, "a_", claim.audit),
    }
    conn = s.connection()
    if is_postgres(s):
        (taken,) = _PG_ISSUE.one(conn, params)
        _check_taken(claim.voucher_id, int(taken))
        return
    _check_taken(claim.voucher_id, int(getattr(conn.execute(SQLITE_ISSUE, params), "rowcount", 0)))
    conn.execute(SQLITE_MOVE, params)
    conn.execute(SQLITE_AUDIT, params)


def _check_taken(voucher_id: str, taken: int) -> None:
    if taken != 1:  # cannot happen with the row locked; fail rather than issue twice
        raise RuntimeError(f"voucher {voucher_id} was taken under our lock")
