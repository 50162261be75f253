"""The set-based SQL of a reconciliation run: one statement per step, the same text on PostgreSQL and
SQLite (CTEs, hash-friendly aggregates and anti-joins, a window function over the few unmatched lines),
working on the statement staged for the run.

Terms used below
- claim: a staged statement row that says something of a redemption (`redeemed` or `reversed`);
  WeChat Pay refund rows (`refund`) are summed per order instead.
- duplicate: a claim whose order, or whose voucher claimed as redeemed, appeared on an earlier line;
  the first occurrence still counts, so each ledger redemption is matched at most once.
- ledger: the redemptions of the run's programme and merchant (any time; `in_period` marks the window).

Columns of the models are named through their `Column` objects (adapters.db.rows), never typed out:
an INSERT ... SELECT pairs each column with the expression that fills it (`insert_select_sql`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from voucher_service.adapters.db.models import (
    ReconciliationItem,
    ReconciliationMatch,
    Redemption,
    StatementRow,
    UTCDateTime,
)
from voucher_service.adapters.db.rows import columns, insert_select_sql, names, qualified, table_of
from voucher_service.domain.states import OfflineVerdict, RedemptionStatus

CATEGORIES = (
    "amount_mismatch",
    "missing_in_ledger",
    "missing_in_statement",
    "duplicate_in_statement",
    "reversed_in_ledger",
    "double_spend",
    "refunded_in_statement",
)
SET_ASIDE = ("already_settled", "reversed_agreed", "out_of_period", "unrelated")

ITEMS = table_of(ReconciliationItem)
MATCHES_TABLE = table_of(ReconciliationMatch)
STAGING = table_of(StatementRow)
ITEM, R, S = ITEMS.c, table_of(Redemption).c, STAGING.c
ACTIVE = f"'{RedemptionStatus.ACTIVE}'"  # a redemption's status as SQL text
CONFLICT = f"'{OfflineVerdict.CONFLICT}'"  # an offline record's
RUN = "CAST(:run AS VARCHAR(36))"

_IN_PERIOD = "r.redeemed_at >= :start AND r.redeemed_at < :end"

_REFUNDS = """
refunds AS (
  SELECT f.order_id, SUM(f.paid_fen) AS refunded_fen
  FROM statement_staging f
  WHERE f.run_id = :run AND f.status = 'refund'
  GROUP BY f.order_id
)"""

# The programme's and merchant's redemptions of the orders of a few lines (`{lines}`), materialised:
# a small table to join, on SQLite too (which has no index on the order to look them up by).
_LEDGER = f"""
ledger AS MATERIALIZED (
  SELECT {qualified("r", (R.id, R.voucher_id, R.order_id, R.discount_fen, R.order_total_fen, R.status, R.redeemed_at))},
         CASE WHEN {{in_period}} THEN 1 ELSE 0 END AS in_period
  FROM redemptions r
  WHERE r.program_id = :p AND r.merchant_id = :m AND r.order_id IN (SELECT c.order_id FROM {{lines}} c)
)"""

# Claims for which the ledger has nothing, under the order and voucher of an offline double spend:
# those are that double spend (reported once, by DOUBLE_SPEND), whatever else they look like.
_OFFLINE_CONFLICT = f"""EXISTS (
        SELECT 1 FROM offline_records o
        WHERE o.program_id = :p AND o.merchant_id = :m AND o.status = {CONFLICT}
          AND o.order_id = {{c}}.order_id AND ({{c}}.voucher_id IS NULL OR o.voucher_id = {{c}}.voucher_id)
          AND COALESCE(o.redeemed_at, o.received_at) >= :start
          AND COALESCE(o.redeemed_at, o.received_at) < :end)"""

# Step 1, duplicates. Hash aggregates find the orders (and the vouchers claimed as redeemed) that
# appear on more than one line, with their first line; every later line is a duplicate. Few survive
# the HAVING, so everything after this step only anti-joins a handful of rows.
DUPLICATES = (
    insert_select_sql(
        ITEMS,
        {
            ITEM.run_id: RUN,
            ITEM.category: "'duplicate_in_statement'",
            ITEM.line_no: "k.line_no",
            ITEM.voucher_id: "COALESCE(k.voucher_id, k.l_voucher)",
            ITEM.order_id: "k.order_id",
            ITEM.redemption_id: "k.rid",
            ITEM.ledger_discount_fen: "k.l_discount",
            ITEM.statement_discount_fen: "COALESCE(k.discount_fen, k.l_total - k.paid_fen)",
            ITEM.detail: "'same order or voucher as line ' || CAST(k.duplicate_of AS TEXT)",
        },
        with_=f"""WITH repeated_orders AS MATERIALIZED (
  SELECT o.order_id, MIN(o.line_no) AS first_line
  FROM statement_staging o
  WHERE o.run_id = :run AND o.status <> 'refund'
  GROUP BY o.order_id
  HAVING COUNT(*) > 1
),
repeated_vouchers AS MATERIALIZED (
  SELECT v.voucher_id, MIN(v.line_no) AS first_line
  FROM statement_staging v
  WHERE v.run_id = :run AND v.status = 'redeemed' AND v.voucher_id IS NOT NULL
  GROUP BY v.voucher_id
  HAVING COUNT(*) > 1
),
dups AS MATERIALIZED (
  SELECT {qualified("s", (S.line_no, S.order_id, S.voucher_id, S.discount_fen, S.paid_fen))},
         CASE WHEN s.line_no > fo.first_line THEN fo.first_line ELSE fv.first_line END AS duplicate_of,
         CASE WHEN s.line_no > fo.first_line THEN 1 ELSE 0 END AS order_repeated
  FROM statement_staging s
  LEFT JOIN repeated_orders fo ON fo.order_id = s.order_id
  LEFT JOIN repeated_vouchers fv ON fv.voucher_id = s.voucher_id
  WHERE s.run_id = :run AND s.status <> 'refund'
    AND (s.order_id IN (SELECT order_id FROM repeated_orders)
         OR s.voucher_id IN (SELECT voucher_id FROM repeated_vouchers))
    AND (s.line_no > fo.first_line OR (s.status = 'redeemed' AND s.line_no > fv.first_line))
),
{_LEDGER.format(in_period=_IN_PERIOD, lines="dups").strip()},
candidates AS (
  SELECT d.*, l.id AS rid, l.voucher_id AS l_voucher, l.discount_fen AS l_discount, l.order_total_fen AS l_total,
         ROW_NUMBER() OVER (PARTITION BY d.line_no
                            ORDER BY CASE WHEN l.status = {ACTIVE} THEN 0 ELSE 1 END,
                                     l.redeemed_at DESC, l.id) AS rn
  FROM dups d
  LEFT JOIN ledger l ON l.order_id = d.order_id AND (d.voucher_id IS NULL OR l.voucher_id = d.voucher_id)
)
""",
    )
    + f"""FROM candidates k
WHERE k.rn = 1
  AND NOT (k.order_repeated = 0 AND k.rid IS NULL AND {_OFFLINE_CONFLICT.format(c="k")})
"""
)

# Step 1b: the duplicates' staged lines leave the claims, so later steps need no anti-join for them.
SET_DUPLICATES_ASIDE = """
UPDATE statement_staging SET status = 'duplicate'
WHERE run_id = :run AND line_no IN (SELECT d.line_no FROM reconciliation_items d
                                    WHERE d.run_id = :run AND d.category = 'duplicate_in_statement')
"""

# Step 1c, refunds: the orders the bill refunds (its refund and revocation rows of every file, whatever
# day they are from), against the period's active redemptions of those orders. Refunded in full (at
# least what the consumer paid: order total less the discount) or leaving the order below the tier's
# minimum spend (order total less the refunds; the eligible part can only be less), the discount should
# have been clawed back: `refunded_in_statement`, held, never payable in this run.
REFUNDED = (
    insert_select_sql(
        ITEMS,
        {
            ITEM.run_id: RUN,
            ITEM.category: "'refunded_in_statement'",
            ITEM.line_no: "f.first_line",
            ITEM.voucher_id: "r.voucher_id",
            ITEM.order_id: "r.order_id",
            ITEM.redemption_id: "r.id",
            ITEM.ledger_discount_fen: "r.discount_fen",
            ITEM.statement_discount_fen: "NULL",
            ITEM.detail: """CASE WHEN f.refunded_fen >= r.order_total_fen - r.discount_fen
            THEN 'the bill refunds the order in full (' || CAST(f.refunded_fen AS TEXT) || ' fen of '
                 || CAST(r.order_total_fen - r.discount_fen AS TEXT) || ' paid); the redemption is active here'
            ELSE 'the bill refunds ' || CAST(f.refunded_fen AS TEXT) || ' fen: the order keeps '
                 || CAST(r.order_total_fen - f.refunded_fen AS TEXT) || ', below the minimum spend '
                 || CAST(v.min_spend_fen AS TEXT) || '; the redemption is active here'
       END""",
        },
        with_="""WITH refunds AS MATERIALIZED (
  SELECT f.order_id, SUM(f.paid_fen) AS refunded_fen, MIN(f.line_no) AS first_line
  FROM statement_staging f
  WHERE f.run_id = :run AND f.status = 'refund'
  GROUP BY f.order_id
)
""",
    )
    + f"""FROM refunds f
JOIN redemptions r ON r.order_id = f.order_id
JOIN vouchers v ON v.id = r.voucher_id
WHERE r.program_id = :p AND r.merchant_id = :m AND r.status = {ACTIVE} AND {_IN_PERIOD}
  AND (f.refunded_fen >= r.order_total_fen - r.discount_fen OR r.order_total_fen - f.refunded_fen < v.min_spend_fen)
"""
)

# Step 2, payable matches: an undisputed claim, the active redemption it names in the period, the same
# discount, not paid yet. Inserted in key order, so the primary key grows at its right edge.
MATCHES = (
    insert_select_sql(
        MATCHES_TABLE,
        {
            MATCHES_TABLE.c.run_id: RUN,
            MATCHES_TABLE.c.redemption_id: "r.id",
            MATCHES_TABLE.c.discount_fen: "r.discount_fen",
            MATCHES_TABLE.c.line_no: "s.line_no",
        },
        with_=f"WITH {_REFUNDS.strip()}\n",
    )
    + f"""FROM statement_staging s
JOIN redemptions r ON r.order_id = s.order_id AND (s.voucher_id IS NULL OR r.voucher_id = s.voucher_id)
LEFT JOIN refunds f ON f.order_id = s.order_id
WHERE s.run_id = :run AND s.status = 'redeemed'
  AND r.program_id = :p AND r.merchant_id = :m AND r.status = {ACTIVE} AND {_IN_PERIOD}
  AND (f.refunded_fen IS NULL
       OR (f.refunded_fen < s.paid_fen
           AND NOT EXISTS (SELECT 1 FROM reconciliation_items i
                           WHERE i.run_id = :run AND i.redemption_id = r.id
                             AND i.category = 'refunded_in_statement')))
  AND COALESCE(s.discount_fen, r.order_total_fen - s.paid_fen) = r.discount_fen
  AND NOT EXISTS (SELECT 1 FROM settled_redemptions x WHERE x.redemption_id = r.id)
ORDER BY r.id
"""
)

# Step 3, every other claim: the few lines neither matched nor duplicated. The CASE order is the
# precedence of the verdicts.
STATEMENT_ITEMS = (
    insert_select_sql(
        ITEMS,
        {
            ITEM.run_id: RUN,
            ITEM.category: "k.category",
            ITEM.line_no: "k.line_no",
            ITEM.voucher_id: "COALESCE(k.voucher_id, k.l_voucher)",
            ITEM.order_id: "k.order_id",
            ITEM.redemption_id: "k.rid",
            ITEM.ledger_discount_fen: "k.l_discount",
            ITEM.statement_discount_fen: "k.s_discount",
            ITEM.detail: """CASE k.category
         WHEN 'out_of_period' THEN CASE WHEN k.rid IS NULL THEN 'statement time outside the period'
                                        ELSE 'redeemed outside the period' END
         WHEN 'unrelated' THEN 'no voucher redemption for this order'
         WHEN 'missing_in_ledger' THEN 'never recorded for this programme and merchant'
         WHEN 'reversed_agreed' THEN 'reversed on both sides'
         WHEN 'reversed_in_ledger' THEN 'claimed as redeemed; the redemption was reversed here'
         WHEN 'already_settled' THEN 'paid in an earlier settlement'
         WHEN 'amount_mismatch' THEN CASE
           WHEN k.status = 'reversed' THEN 'the statement says reversed; the redemption is active here'
           WHEN k.says = 'reversed' THEN 'the bill refunds the order in full ('
                || CAST(k.refunded_fen AS TEXT) || ' fen); the redemption is active here'
           WHEN k.paid_fen IS NOT NULL THEN 'the bill shows ' || CAST(k.paid_fen AS TEXT)
                || ' fen paid; order total ' || CAST(k.l_total AS TEXT) || ' less the discount is '
                || CAST(k.l_total - k.l_discount AS TEXT)
           ELSE 'the discounts differ' END
       END""",
        },
        # every staged column but the run's id, of the lines neither matched nor duplicated
        with_=f"""WITH {_REFUNDS.strip()},
pending AS MATERIALIZED (
  SELECT {qualified("s", (c for c in columns(STAGING) if c is not S.run_id))}
  FROM statement_staging s
  WHERE s.run_id = :run AND s.status IN ('redeemed', 'reversed')
    -- NOT IN over an uncorrelated list: a hashed subplan on PostgreSQL, one temporary b-tree on SQLite
    AND s.line_no NOT IN (SELECT x.line_no FROM reconciliation_matches x
                          WHERE x.run_id = :run AND x.line_no IS NOT NULL)
),
{_LEDGER.format(in_period=_IN_PERIOD, lines="pending").strip()},
candidates AS (
  SELECT c.*, COALESCE(f.refunded_fen, 0) AS refunded_fen,
         l.id AS rid, l.voucher_id AS l_voucher, l.status AS l_status, l.discount_fen AS l_discount,
         l.order_total_fen AS l_total, l.in_period, x.redemption_id AS settled,
         ROW_NUMBER() OVER (PARTITION BY c.line_no
                            ORDER BY CASE WHEN l.status = {ACTIVE} THEN 0 ELSE 1 END,
                                     l.redeemed_at DESC, l.id) AS rn
  FROM pending c
  LEFT JOIN ledger l ON l.order_id = c.order_id AND (c.voucher_id IS NULL OR l.voucher_id = c.voucher_id)
  LEFT JOIN refunds f ON f.order_id = c.order_id
  LEFT JOIN settled_redemptions x ON x.redemption_id = l.id
),
judged AS (
  SELECT k.*,
         CASE WHEN k.status = 'reversed' OR (k.paid_fen IS NOT NULL AND k.refunded_fen >= k.paid_fen)
              THEN 'reversed' ELSE 'redeemed' END AS says,
         COALESCE(k.discount_fen, k.l_total - k.paid_fen) AS s_discount
  FROM candidates k
  -- a claim naming an active redemption ignores reversed ones of the same order and voucher
  WHERE k.rn = 1 OR k.l_status = {ACTIVE}
),
classified AS (
  SELECT j.*,
    CASE
      WHEN j.rid IS NULL AND {_OFFLINE_CONFLICT.format(c="j")} THEN 'double_spend'
      WHEN j.rid IS NULL AND (j.redeemed_at < :start_text OR j.redeemed_at >= :end_text) THEN 'out_of_period'
      WHEN j.rid IS NULL AND :fmt = 'wechatpay' THEN 'unrelated'
      WHEN j.rid IS NULL THEN 'missing_in_ledger'
      WHEN j.in_period = 0 THEN 'out_of_period'
      WHEN j.l_status <> {ACTIVE} AND j.says = 'reversed' THEN 'reversed_agreed'
      WHEN j.l_status <> {ACTIVE} THEN 'reversed_in_ledger'
      WHEN EXISTS (SELECT 1 FROM reconciliation_items i WHERE i.run_id = :run AND i.redemption_id = j.rid
                   AND i.category = 'refunded_in_statement') THEN 'refunded'
      WHEN j.says = 'reversed' OR j.s_discount <> j.l_discount THEN 'amount_mismatch'
      WHEN j.settled IS NOT NULL THEN 'already_settled'
      ELSE 'matched'
    END AS category
  FROM judged j
)
""",
    )
    + """FROM classified k
WHERE k.category NOT IN ('matched', 'double_spend', 'refunded')
"""
)

MISSING_IN_STATEMENT = (
    insert_select_sql(
        ITEMS,
        {
            ITEM.run_id: RUN,
            ITEM.category: "'missing_in_statement'",
            ITEM.line_no: "NULL",
            ITEM.voucher_id: "r.voucher_id",
            ITEM.order_id: "r.order_id",
            ITEM.redemption_id: "r.id",
            ITEM.ledger_discount_fen: "r.discount_fen",
            ITEM.statement_discount_fen: "NULL",
            ITEM.detail: "'recorded here, not claimed in the statement'",
        },
    )
    + f"""FROM redemptions r
WHERE r.program_id = :p AND r.merchant_id = :m AND r.status = {ACTIVE} AND {_IN_PERIOD}
  AND NOT EXISTS (SELECT 1 FROM reconciliation_matches x WHERE x.run_id = :run AND x.redemption_id = r.id)
  AND NOT EXISTS (SELECT 1 FROM reconciliation_items i
                  WHERE i.run_id = :run AND i.redemption_id = r.id AND i.category <> 'duplicate_in_statement')
"""
)

# One row per offline conflict (a voucher the till redeemed offline that was already redeemed), with
# the first statement line of that order when the statement claims it.
DOUBLE_SPEND = (
    insert_select_sql(
        ITEMS,
        {
            ITEM.run_id: RUN,
            ITEM.category: "'double_spend'",
            ITEM.line_no: """(SELECT MIN(s.line_no) FROM statement_staging s
        WHERE s.run_id = :run AND s.order_id = o.order_id AND s.status IN ('redeemed', 'reversed')
          AND (s.voucher_id IS NULL OR s.voucher_id = o.voucher_id))""",
            ITEM.voucher_id: "o.voucher_id",
            ITEM.order_id: "o.order_id",
            ITEM.redemption_id: "NULL",
            ITEM.ledger_discount_fen: "w.discount_fen",
            ITEM.statement_discount_fen: "o.discount_fen",
            ITEM.detail: """'offline terminal ' || o.terminal_id || ' record ' || CAST(o.seq AS TEXT)
         || ': voucher already redeemed' || COALESCE(' by redemption ' || w.id, '')""",
        },
    )
    + f"""FROM offline_records o
LEFT JOIN redemptions w ON w.voucher_id = o.voucher_id AND w.status = {ACTIVE}
WHERE o.program_id = :p AND o.merchant_id = :m AND o.status = {CONFLICT}
  AND COALESCE(o.redeemed_at, o.received_at) >= :start AND COALESCE(o.redeemed_at, o.received_at) < :end
"""
)

ITEM_COUNTS = """
SELECT category, COUNT(*), COALESCE(SUM(ledger_discount_fen), 0), COALESCE(SUM(statement_discount_fen), 0)
FROM reconciliation_items WHERE run_id = :run GROUP BY category
"""

MATCH_TOTALS = """
SELECT COUNT(*), COALESCE(SUM(discount_fen), 0) FROM reconciliation_matches WHERE run_id = :run
"""
CLEAR_STAGING = "DELETE FROM statement_staging WHERE run_id = :run"

# Discrepancies in the order of the contract's categories, then by line; deterministic for reruns.
# The columns of a discrepancy, in the order of the CSV's (reconciliation_files.DISCREPANCY_COLUMNS).
DISCREPANCY_FIELDS = (
    ITEM.category,
    ITEM.voucher_id,
    ITEM.order_id,
    ITEM.ledger_discount_fen,
    ITEM.statement_discount_fen,
    ITEM.detail,
    ITEM.line_no,
    ITEM.redemption_id,
)
DISCREPANCIES = f"""
SELECT {names(DISCREPANCY_FIELDS)}
FROM reconciliation_items
WHERE run_id = :run AND category IN ('amount_mismatch', 'missing_in_ledger', 'missing_in_statement',
                                     'duplicate_in_statement', 'reversed_in_ledger', 'double_spend',
                                     'refunded_in_statement')
ORDER BY CASE category WHEN 'amount_mismatch' THEN 1 WHEN 'missing_in_ledger' THEN 2
                       WHEN 'missing_in_statement' THEN 3 WHEN 'duplicate_in_statement' THEN 4
                       WHEN 'reversed_in_ledger' THEN 5 WHEN 'double_spend' THEN 6 ELSE 7 END,
         CASE WHEN line_no IS NULL THEN 1 ELSE 0 END,
         {names((ITEM.line_no, ITEM.order_id, ITEM.voucher_id, ITEM.redemption_id, ITEM.detail))}
"""


def statement(sql: str) -> TextClause:
    """A SQL text whose time bounds bind as UTC datetimes on both databases."""
    clause = text(sql)
    binds = [bindparam(name, type_=UTCDateTime()) for name in ("start", "end") if _uses(sql, name)]
    return clause.bindparams(*binds) if binds else clause


def _uses(sql: str, name: str) -> bool:
    return re.search(rf":{name}\b", sql) is not None


STEPS = (
    ("duplicates", DUPLICATES),
    ("duplicates set aside", SET_DUPLICATES_ASIDE),
    ("refunds", REFUNDED),
    ("payable matches", MATCHES),
    ("statement rows", STATEMENT_ITEMS),
    ("missing in statement", MISSING_IN_STATEMENT),
    ("double spends", DOUBLE_SPEND),
)


def run_steps(s: Session, params: dict[str, Any], announce: Callable[[str], None] = lambda _: None) -> None:
    """Classify the staged statement against the ledger: matches first, then every category."""
    for name, sql in STEPS:
        if sql is REFUNDED and params.get("fmt") == "native":
            continue  # a native statement has no refund rows: no pass over its staged rows for them
        announce(name)
        s.execute(statement(sql), _only(sql, params))
        if sql is MATCHES:
            analyze(s, "reconciliation_matches")


def analyze(s: Session, table: str) -> None:
    """Refresh PostgreSQL's statistics of a table just filled in this transaction, so the next steps
    plan hash joins over a million rows rather than nested loops over what looked like an empty table."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text(f"ANALYZE {table}"))


def _only(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if _uses(sql, k)}


def window_params(start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """The period's bounds as datetimes (ledger columns) and RFC 3339 text (staged statement times)."""
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return {"start": start, "end": end, "start_text": start.strftime(fmt), "end_text": end.strftime(fmt)}
