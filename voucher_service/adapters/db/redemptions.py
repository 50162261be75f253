"""The reads and writes of a redemption, built with SQLAlchemy Core from the models.

PostgreSQL writes a redemption in one statement (data-modifying CTEs): complete the Idempotency-Key
(only while this attempt still holds its lease), move the voucher to `redeemed` (only from an allowed
state and before it expires), and, only if both happened, insert the redemption, its lines, the
revocation event, the ledger movement and the audit entry. SQLite, which has no data-modifying CTEs,
runs the same inserts one at a time, from the same parameters. Exactly once is still the database's:
the conditional UPDATE under row locks, then the partial unique index on active redemptions. The
statements are built once at import, so SQLAlchemy compiles each once per dialect.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from sqlalchemy import (
    ARRAY,
    CursorResult,
    Select,
    String,
    any_,
    bindparam,
    case,
    column,
    exists,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from voucher_service.adapters.db.engine import is_postgres
from voucher_service.adapters.db.models import (
    AuditEntry,
    CertifiedProduct,
    Enrolment,
    IdempotencyRecord,
    LedgerEntry,
    Merchant,
    ProductGtin,
    Program,
    Redemption,
    RedemptionLine,
    RegistryImport,
    RevocationEvent,
    UTCDateTime,
    Voucher,
)
from voucher_service.adapters.db.rows import OnDriver, built_once, columns, insert_row, row_params, table_of
from voucher_service.domain.books import BUCKET_OF_REDEEMABLE_STATUS
from voucher_service.domain.states import IdempotencyState, VoucherStatus


class AlreadyRedeemed(Exception):
    """The partial unique index refused a second active redemption of the voucher."""


# ---------------------------------------------------------------- what checkout judges


class ProductFacts(NamedTuple):
    """What checkout judges a certified product by (named as the model's columns)."""

    certification_no: str
    certification_type: str
    county_code: str
    valid_from: dt.date
    valid_to: dt.date
    status: str


@dataclass(frozen=True)
class VoucherFacts:
    """The voucher as checkout judges it (named as the model's columns)."""

    id: str
    program_id: str
    status: str
    tier_code: str
    face_value_fen: int
    min_spend_fen: int
    valid_from: dt.datetime | None
    expires_at: dt.datetime | None


@dataclass(frozen=True)
class ProgramFacts:
    """The voucher's programme as checkout judges it (named as the model's columns)."""

    id: str
    status: str
    channels: list[str]
    starts_at: dt.datetime
    ends_at: dt.datetime
    activated_at: dt.datetime | None
    eligibility: dict[str, Any]
    timezone: str


class CheckoutFacts(NamedTuple):
    """What one read gives checkout; `merchant_channels` is None when the merchant is not enrolled, and
    `registry_version` names the registry snapshot (the last import) the basket is judged against."""

    voucher: VoucherFacts
    program: ProgramFacts
    merchant_channels: list[str] | None
    registry_version: int


_VOUCHER_FIELDS = [f.name for f in fields(VoucherFacts)]
_PROGRAM_FIELDS = [f.name for f in fields(ProgramFacts)]

# The voucher, its programme, the merchant's channels when it is enrolled in that programme (NULL when
# not) and the registry's version (its last import: the primary key's index answers it), in one row; the
# columns are the facts' fields, so a field added there is read here.
CHECKOUT_FACTS = built_once(
    select(
        *[Voucher.__table__.c[f] for f in _VOUCHER_FIELDS],
        *[Program.__table__.c[f].label(f"p_{f}") for f in _PROGRAM_FIELDS],
        Merchant.channels.label("merchant_channels"),
        select(func.coalesce(func.max(RegistryImport.seq), 0)).scalar_subquery().label("registry_version"),
    )
    .join(Program, Program.id == Voucher.program_id)
    .outerjoin(
        Enrolment, (Enrolment.program_id == Program.id) & (Enrolment.merchant_id == bindparam("merchant_id"))
    )
    .outerjoin(Merchant, Merchant.id == Enrolment.merchant_id)
    .where(Voucher.id == bindparam("voucher_id"))
)


_PG_CHECKOUT_FACTS = OnDriver(CHECKOUT_FACTS)


def products_of_gtins() -> Select[Any]:
    """The products (ProductFacts columns) of the 14-digit GTINs in the `gtins` array, with their GTIN."""
    product_cols = [CertifiedProduct.__table__.c[f] for f in ProductFacts._fields]
    return (
        select(ProductGtin.gtin, *product_cols)
        .join(CertifiedProduct, CertifiedProduct.certification_no == ProductGtin.certification_no)
        .where(ProductGtin.gtin == any_(bindparam("gtins", type_=ARRAY(String))))
    )


def checkout_facts(s: Session, voucher_id: str, merchant_id: str) -> CheckoutFacts | None:
    """The voucher, its programme, the merchant's enrolled channels and the registry version, in the
    session's transaction; None when there is no such voucher."""
    params = {"voucher_id": voucher_id, "merchant_id": merchant_id}
    conn = s.connection()
    if is_postgres(s):
        row = _PG_CHECKOUT_FACTS.first(conn, params)
    else:
        found = conn.execute(CHECKOUT_FACTS, params).first()
        row = None if found is None else tuple(found)
    if row is None:
        return None
    # The statement's columns: the voucher's fields, the programme's, the channels, the version.
    nv, np_ = len(_VOUCHER_FIELDS), len(_PROGRAM_FIELDS)
    voucher = VoucherFacts(*row[:nv])
    program = ProgramFacts(*row[nv : nv + np_])
    return CheckoutFacts(voucher, program, row[nv + np_], int(row[nv + np_ + 1]))


# ---------------------------------------------------------------- writing


_REDEMPTIONS = table_of(Redemption)
_LINES = table_of(RedemptionLine)
_EVENTS = table_of(RevocationEvent)
_LEDGER = table_of(LedgerEntry)
_AUDIT = table_of(AuditEntry)
_LINE_COLUMNS = [c for c in columns(_LINES) if c.name != "redemption_id"]

_now = bindparam("now", type_=UTCDateTime)


def _complete_key() -> Any:
    """Store the answer under the key, only while `locked_until` is still this attempt's lease end."""
    return (
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.merchant_id == bindparam("idem_merchant_id"),
            IdempotencyRecord.key == bindparam("idem_key"),
            IdempotencyRecord.state == IdempotencyState.IN_PROGRESS,
            IdempotencyRecord.locked_until == bindparam("idem_locked_until", type_=UTCDateTime),
        )
        .values(
            state=IdempotencyState.DONE,
            response_status=bindparam("idem_status"),
            response_body=bindparam("idem_body"),
        )
    )


def _pg_redeem(idempotent: bool) -> Select[Any]:
    finished = _complete_key().returning(IdempotencyRecord.key).cte("finished") if idempotent else None
    guard = exists(finished.select()) if finished is not None else true()
    # The voucher is locked first (FOR UPDATE re-reads it if a concurrent transaction changed it), so the
    # state it is taken from is the one it really had: that names the ledger bucket the value leaves.
    locked = (
        select(Voucher.id, Voucher.status)
        .where(
            Voucher.id == bindparam("voucher_id"),
            Voucher.status == any_(bindparam("allowed", type_=ARRAY(String))),
            Voucher.expires_at > bindparam("at", type_=UTCDateTime),
            Voucher.recycled_at.is_(None),
            guard,
        )
        .with_for_update()
        .cte("locked")
    )
    taken = (
        update(Voucher)
        .where(Voucher.id == locked.c.id)
        .values(status=VoucherStatus.REDEEMED, status_changed_at=_now)
        .returning(locked.c.status.label("from_status"))
        .cte("taken")
    )
    redeemed = insert_row(_REDEMPTIONS, "r_", source=taken).returning(Redemption.id).cte("redeemed")
    basket = (
        func.unnest(*[bindparam(f"l_{c.name}", type_=ARRAY(c.type)) for c in _LINE_COLUMNS])
        .table_valued(*[column(c.name, c.type) for c in _LINE_COLUMNS])
        .render_derived(name="basket")
    )
    lined = insert(RedemptionLine).from_select(
        ["redemption_id", *[c.name for c in _LINE_COLUMNS]],
        select(redeemed.c.id, *[basket.c[c.name] for c in _LINE_COLUMNS]).select_from(
            redeemed.join(basket, true())
        ),
    )
    bucket = case(BUCKET_OF_REDEEMABLE_STATUS, value=taken.c.from_status)
    writes = [
        lined.cte("lined"),
        insert_row(_EVENTS, "e_", source=redeemed).cte("revoked"),
        insert_row(_LEDGER, "g_", computed={"from_bucket": bucket}, source=taken).cte("moved"),
        insert_row(_AUDIT, "a_", source=redeemed).cte("audited"),
    ]
    return select(
        guard.label("finished"), select(taken.c.from_status).scalar_subquery().label("from_status")
    ).add_cte(*writes)


PG_REDEEM = built_once(_pg_redeem(idempotent=False))
PG_REDEEM_IDEMPOTENT = built_once(_pg_redeem(idempotent=True))
_PG_WRITES = {False: OnDriver(PG_REDEEM), True: OnDriver(PG_REDEEM_IDEMPOTENT)}

SQLITE_COMPLETE = built_once(_complete_key())
SQLITE_TAKE = built_once(
    update(Voucher)
    # A recycled voucher's value is back in its tier's pool: taking it again would spend it twice.
    .where(
        Voucher.id == bindparam("voucher_id"),
        Voucher.status == bindparam("from_status"),
        Voucher.expires_at > bindparam("at", type_=UTCDateTime),
        Voucher.recycled_at.is_(None),
    )
    .values(status=VoucherStatus.REDEEMED, status_changed_at=_now)
)
SQLITE_REDEMPTION = built_once(insert_row(_REDEMPTIONS, "r_"))
SQLITE_LINE = built_once(insert(RedemptionLine))
SQLITE_EVENT = built_once(insert_row(_EVENTS, "e_"))
SQLITE_MOVE = built_once(insert_row(_LEDGER, "g_"))
SQLITE_AUDIT = built_once(insert_row(_AUDIT, "a_"))


class Completion(NamedTuple):
    """The idempotency row to complete: only while `locked_until` is still its lease end."""

    merchant_id: str
    key: str
    locked_until: dt.datetime
    status: int
    body: bytes


class Written(NamedTuple):
    """What the write did: whether the key was completed, and the state the voucher was taken from
    (None: it could not be taken)."""

    finished: bool
    from_status: str | None


@dataclass(frozen=True)
class RedemptionWrite:
    """Everything one redemption writes, as column values of the models (the ledger row without its
    `from_bucket`, which follows from the state the voucher is taken from)."""

    redemption: Mapping[str, Any]
    lines: Sequence[Mapping[str, Any]]
    event: Mapping[str, Any]
    ledger: Mapping[str, Any]
    audit: Mapping[str, Any]
    allowed: Sequence[str]
    now: dt.datetime
    completion: Completion | None


def _params(w: RedemptionWrite) -> dict[str, Any]:
    r = w.redemption
    params: dict[str, Any] = {
        "voucher_id": r["voucher_id"],
        "at": r["redeemed_at"],
        "now": w.now,
        **row_params(_REDEMPTIONS, "r_", r),
        **row_params(_EVENTS, "e_", w.event),
        **row_params(_LEDGER, "g_", {**w.ledger, "from_bucket": None}),
        **row_params(_AUDIT, "a_", w.audit),
    }
    if w.completion is not None:
        c = w.completion
        params.update(
            idem_merchant_id=c.merchant_id,
            idem_key=c.key,
            idem_locked_until=c.locked_until,
            idem_status=c.status,
            idem_body=c.body,
        )
    return params


def write_redemption(s: Session, w: RedemptionWrite) -> Written:
    """Write the redemption in the session's transaction: on PostgreSQL in one statement, on SQLite step
    by step; raise AlreadyRedeemed when the unique index refuses it."""
    params = _params(w)
    conn = s.connection()
    try:
        if is_postgres(s):
            lines = [row_params(_LINES, "", x) for x in w.lines]
            params.update({f"l_{c.name}": [x[c.name] for x in lines] for c in _LINE_COLUMNS})
            params["allowed"] = list(w.allowed)
            finished, from_status = _PG_WRITES[w.completion is not None].one(conn, params)
            return Written(bool(finished), from_status)
        return _write_step_by_step(s, w, params)
    except IntegrityError as exc:
        if "uq_redemptions_active_voucher" not in str(exc.orig) and "redemptions.voucher_id" not in str(
            exc.orig
        ):
            raise
        raise AlreadyRedeemed() from None


def _write_step_by_step(s: Session, w: RedemptionWrite, params: dict[str, Any]) -> Written:
    conn = s.connection()
    if w.completion is not None:  # first: a lost lease stops us before any effect
        if _rowcount(conn.execute(SQLITE_COMPLETE, params)) != 1:
            return Written(False, None)
    from_status = next(
        (
            status
            for status in w.allowed
            if _rowcount(conn.execute(SQLITE_TAKE, {**params, "from_status": status})) == 1
        ),
        None,
    )
    if from_status is None:
        return Written(True, None)
    conn.execute(SQLITE_REDEMPTION, params)
    conn.execute(SQLITE_LINE, [row_params(_LINES, "", x) for x in w.lines])
    conn.execute(SQLITE_EVENT, params)
    conn.execute(SQLITE_MOVE, {**params, "g_from_bucket": BUCKET_OF_REDEEMABLE_STATUS[from_status]})
    conn.execute(SQLITE_AUDIT, params)
    return Written(True, from_status)


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)
