"""The writes of a redemption on PostgreSQL in one statement (data-modifying CTEs), like claims.py.

One round trip does what the ORM path does in seven: complete the Idempotency-Key (only while this
attempt still holds its lease), move the voucher to `redeemed` (only from an allowed state and before
it expires), and, only if both happened, insert the redemption, its lines, the revocation event, the
ledger movement and the audit entry. Exactly once is still the database's: the conditional UPDATE
under row locks, then the partial unique index on active redemptions. SQLite keeps the ORM path.
The statements are text() built once at import, so nothing is compiled per request.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import JSON, BigInteger, String, text
from sqlalchemy.orm import Session

from voucher_service.adapters.db.engine import is_postgres
from voucher_service.adapters.db.models import Redemption, RedemptionLine, UTCDateTime

# The voucher is locked first (FOR UPDATE re-reads it if a concurrent transaction changed it), so the
# state it is taken from is the one it really had: that names the ledger bucket the value leaves.
_WRITES = """
locked AS (
    SELECT id, status FROM vouchers
    WHERE id = :voucher_id AND status = ANY(CAST(:allowed AS varchar[])) AND expires_at > :at
      AND recycled_at IS NULL AND {guard}
    FOR UPDATE
), taken AS (
    UPDATE vouchers v SET status = 'redeemed', status_changed_at = :now
    FROM locked WHERE v.id = locked.id
    RETURNING locked.status AS from_status
), redeemed AS (
    INSERT INTO redemptions (id, voucher_id, program_id, merchant_id, order_id, channel, terminal_id,
        order_total_fen, eligible_total_fen, discount_fen, clawed_back_fen, status, redeemed_at, receipt,
        source)
    SELECT :redemption_id, :voucher_id, :program_id, :merchant_id, :order_id, :channel, :terminal_id,
        :order_total_fen, :eligible_total_fen, :discount_fen, 0, 'active', :at, :receipt, :source
    FROM taken
    RETURNING id
), lined AS (
    INSERT INTO redemption_lines (redemption_id, "index", gtin, sku, name, quantity, unit_price_fen,
        line_total_fen, eligible, reason, certification_no, county_code, discount_share_fen,
        returned_quantity)
    SELECT r.id, l."index", l.gtin, l.sku, l.name, l.quantity, l.unit_price_fen, l.line_total_fen,
        l.eligible, l.reason, l.certification_no, l.county_code, l.discount_share_fen, 0
    FROM redeemed r CROSS JOIN json_to_recordset(CAST(:lines AS json)) AS l("index" int, gtin text,
        sku text, name text, quantity int, unit_price_fen bigint, line_total_fen bigint, eligible boolean,
        reason text, certification_no text, county_code text, discount_share_fen bigint)
), revoked AS (
    INSERT INTO revocation_events (program_id, voucher_id, kind, created_at)
    SELECT :program_id, :voucher_id, 'redeemed', :now FROM redeemed
), moved AS (
    INSERT INTO ledger_entries
        (program_id, voucher_id, kind, from_bucket, to_bucket, amount_fen, ref, created_at)
    SELECT :program_id, :voucher_id, 'redeem',
        CASE taken.from_status WHEN 'issued' THEN 'outstanding' ELSE 'expired' END, 'redeemed',
        :discount_fen, redeemed.id, :now
    FROM taken CROSS JOIN redeemed
), audited AS (
    INSERT INTO audit_log (at, actor, action, entity, entity_id, data)
    SELECT :now, :actor, 'redemption.created', 'redemption', redeemed.id, CAST(:audit_data AS JSON)
    FROM redeemed
)
"""

# With an Idempotency-Key: the answer is stored only while our lease holds, and nothing else is
# written unless it was (a lost lease means another attempt may commit the effect instead).
PG_REDEEM_IDEMPOTENT = text(
    """
WITH finished AS (
    UPDATE idempotency_records SET state = 'done', response_status = :response_status,
        response_body = :response_body
    WHERE merchant_id = :idem_merchant_id AND key = :idem_key AND state = 'in_progress'
      AND locked_until = :locked_until
    RETURNING 1
), """
    + _WRITES.format(guard="EXISTS (SELECT 1 FROM finished)")
    + """
SELECT EXISTS (SELECT 1 FROM finished) AS finished, (SELECT from_status FROM taken) AS from_status
"""
)

PG_REDEEM = text(
    "WITH "
    + _WRITES.format(guard="TRUE")
    + """
SELECT TRUE AS finished, (SELECT from_status FROM taken) AS from_status
"""
)

# What checkout judges, in one row: the voucher, its programme, and the merchant's channels when it is
# enrolled in that programme (NULL when not). Plain SQL with typed columns: valid on both backends,
# compiled once, and no ORM identity map to fill. On PostgreSQL the same row also carries the basket's
# products (by 14-digit GTIN), so checkout reads everything it judges in one round trip and one snapshot.
_FACTS = """
SELECT v.id, v.program_id, v.status, v.tier_code, v.face_value_fen, v.min_spend_fen, v.valid_from,
       v.expires_at, p.status AS program_status, p.channels AS program_channels, p.starts_at, p.ends_at,
       p.activated_at, p.eligibility, p.timezone, m.channels AS merchant_channels{products}
FROM vouchers v
JOIN programs p ON p.id = v.program_id
LEFT JOIN program_merchants e ON e.program_id = p.id AND e.merchant_id = :merchant_id
LEFT JOIN merchants m ON m.id = e.merchant_id
WHERE v.id = :voucher_id
"""
_PRODUCTS = """,
       (SELECT json_agg(json_build_array(g.gtin, c.certification_no, c.certification_type, c.county_code,
                                         c.valid_from, c.valid_to, c.status))
        FROM product_gtins g JOIN certified_products c ON c.certification_no = g.certification_no
        WHERE g.gtin = ANY(CAST(:gtins AS varchar[]))) AS products"""
_FACT_TYPES: dict[str, Any] = dict(
    id=String,
    program_id=String,
    status=String,
    tier_code=String,
    face_value_fen=BigInteger,
    min_spend_fen=BigInteger,
    valid_from=UTCDateTime,
    expires_at=UTCDateTime,
    program_status=String,
    program_channels=JSON,
    starts_at=UTCDateTime,
    ends_at=UTCDateTime,
    activated_at=UTCDateTime,
    eligibility=JSON,
    timezone=String,
    merchant_channels=JSON,
)
CHECKOUT_FACTS = text(_FACTS.format(products="")).columns(**_FACT_TYPES)
PG_CHECKOUT_FACTS = text(_FACTS.format(products=_PRODUCTS)).columns(**_FACT_TYPES, products=JSON)


class ProductFacts(NamedTuple):
    """What checkout judges a certified product by."""

    certification_no: str
    certification_type: str
    county_code: str
    valid_from: dt.date
    valid_to: dt.date
    status: str


@dataclass(frozen=True)
class VoucherFacts:
    """The voucher as checkout judges it."""

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
    """The voucher's programme as checkout judges it."""

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
    `products` (by 14-digit GTIN) None where the caller must look them up itself (SQLite)."""

    voucher: VoucherFacts
    program: ProgramFacts
    merchant_channels: list[str] | None
    products: dict[str, ProductFacts] | None


def checkout_facts(
    s: Session, voucher_id: str, merchant_id: str, gtins14: Sequence[str]
) -> CheckoutFacts | None:
    """The voucher, its programme and the merchant's enrolled channels (on PostgreSQL also the basket's
    products) in the session's transaction; None when there is no such voucher."""
    params = {"voucher_id": voucher_id, "merchant_id": merchant_id}
    postgres = is_postgres(s)
    if postgres:
        row = s.connection().execute(PG_CHECKOUT_FACTS, {**params, "gtins": list(gtins14)}).first()
    else:
        row = s.connection().execute(CHECKOUT_FACTS, params).first()
    if row is None:
        return None
    products: dict[str, ProductFacts] | None = None
    if postgres:
        products = {}
        for gtin, no, kind, county, valid_from, valid_to, status in row.products or []:
            products[gtin] = ProductFacts(
                no, kind, county, dt.date.fromisoformat(valid_from), dt.date.fromisoformat(valid_to), status
            )
    voucher = VoucherFacts(
        row.id,
        row.program_id,
        row.status,
        row.tier_code,
        row.face_value_fen,
        row.min_spend_fen,
        row.valid_from,
        row.expires_at,
    )
    program = ProgramFacts(
        row.program_id,
        row.program_status,
        row.program_channels,
        row.starts_at,
        row.ends_at,
        row.activated_at,
        row.eligibility,
        row.timezone,
    )
    return CheckoutFacts(voucher, program, row.merchant_channels, products)


_LINE_FIELDS = (
    "index",
    "gtin",
    "sku",
    "name",
    "quantity",
    "unit_price_fen",
    "line_total_fen",
    "eligible",
    "reason",
    "certification_no",
    "county_code",
    "discount_share_fen",
)


class Completion(NamedTuple):
    """The idempotency row to complete: only while `locked_until` is still its lease end."""

    merchant_id: str
    key: str
    locked_until: dt.datetime
    status: int
    body: bytes


class Written(NamedTuple):
    """What the statement did: whether the key was completed, and the state the voucher was taken from."""

    finished: bool
    from_status: str | None


@dataclass(frozen=True)
class RedemptionWrite:
    """Everything one redemption writes."""

    redemption: Redemption
    lines: Sequence[RedemptionLine]
    allowed: Sequence[str]
    now: dt.datetime
    actor: str
    audit_data: dict[str, Any]
    completion: Completion | None


def write_redemption(s: Session, w: RedemptionWrite) -> Written:
    """Run the one-statement redemption in the session's transaction (PostgreSQL only)."""
    r = w.redemption
    params: dict[str, Any] = {
        "voucher_id": r.voucher_id,
        "allowed": list(w.allowed),
        "at": r.redeemed_at,
        "now": w.now,
        "redemption_id": r.id,
        "program_id": r.program_id,
        "merchant_id": r.merchant_id,
        "order_id": r.order_id,
        "channel": r.channel,
        "terminal_id": r.terminal_id,
        "order_total_fen": r.order_total_fen,
        "eligible_total_fen": r.eligible_total_fen,
        "discount_fen": r.discount_fen,
        "receipt": r.receipt,
        "source": r.source,
        "actor": w.actor,
        "lines": json.dumps([{f: getattr(x, f) for f in _LINE_FIELDS} for x in w.lines], ensure_ascii=False),
        "audit_data": json.dumps(w.audit_data, ensure_ascii=False),
    }
    statement = PG_REDEEM
    if w.completion is not None:
        c = w.completion
        statement = PG_REDEEM_IDEMPOTENT
        params.update(
            idem_merchant_id=c.merchant_id,
            idem_key=c.key,
            locked_until=c.locked_until,
            response_status=c.status,
            response_body=c.body,
        )
    row = s.connection().execute(statement, params).one()
    return Written(bool(row.finished), row.from_status)
