"""Merchant statements parsed into rows: the native CSV here; the WeChat Pay trade bill (交易账单) and the
Alipay 业务明细 bill in `domain.bills`.

Pure: the parsers take lines of text (any iterable of str, e.g. an open text file) and yield one
`StatementLine` per detail row, streaming, so a file of millions of rows is never held in memory.
Every problem raises `StatementError` carrying the physical line number. Amounts in yuan are turned
into fen exactly with `money.parse_yuan`, never through a float.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from voucher_service.domain.clock import DEFAULT_TZ, parse_rfc3339, rfc3339

FORMATS = ("native", "wechatpay", "alipay")
NATIVE_REQUIRED = ("order_id", "voucher_id", "redeemed_at", "discount_fen", "status")
NATIVE_OPTIONAL = ("order_total_fen", "channel", "terminal_id")
NATIVE_STATUSES = ("redeemed", "reversed")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
FEN_RE = re.compile(r"^[0-9]{1,18}$")
UTC_TEXT_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
MAX_ORDER_ID = 128
MAX_TERMINAL_ID = 64


class StatementLine(NamedTuple):
    """One detail row of a statement (a named tuple: millions are made, in the order of the staging columns).

    status: `redeemed` / `reversed` (what the row claims of a redemption) or `refund` (a WeChat Pay
    refund or revocation of an order's payment). `discount_fen` is the claimed discount (native);
    `paid_fen` what the consumer paid through WeChat Pay (payment rows) or got back (refund rows).
    """

    line_no: int
    order_id: str
    voucher_id: str | None
    redeemed_at: str | None  # RFC 3339 UTC
    discount_fen: int | None
    status: str
    paid_fen: int | None


class StatementError(ValueError):
    """The statement cannot be used; `line_no` says where."""

    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no
        self.message = message


class Seen:
    """The payments and refunds already read in a run (WeChat Pay and Alipay rows carry their own ids):
    the same one in a second file (or twice in one) is one row, not a duplicate claim."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.repeated = 0

    def first(self, key: str) -> bool:
        """True the first time `key` is seen; counts the repeats."""
        if key in self.keys:
            self.repeated += 1
            return False
        self.keys.add(key)
        return True


def parse_statement(
    fmt: str, lines: Iterable[str], tz: str = DEFAULT_TZ, seen: Seen | None = None
) -> Iterator[StatementLine]:
    """Parse a statement of format `native`, `wechatpay` or `alipay` into rows."""
    if fmt == "native":
        return parse_native(lines)
    from voucher_service.domain import bills

    if fmt == "wechatpay":
        return bills.parse_wechatpay(lines, tz, seen)
    if fmt == "alipay":
        return bills.parse_alipay(lines, tz, seen)
    raise ValueError(f"unknown statement format {fmt!r}")


def _records(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the physical line each one ends on; decoding and CSV errors name the line."""
    reader = csv.reader(lines, strict=True)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise StatementError(reader.line_num + 1, "the file is not UTF-8 text") from None
        except csv.Error as exc:
            raise StatementError(reader.line_num, f"malformed CSV: {exc}") from None
        yield reader.line_num, row


def _blank(row: list[str]) -> bool:
    return not row or (not row[0].strip() and all(not cell.strip() for cell in row))


# ---------------------------------------------------------------- native


def _native_header(line_no: int, row: list[str]) -> dict[str, int]:
    names = [cell.strip().lstrip("\ufeff").strip() for cell in row]
    columns: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in columns:
            raise StatementError(line_no, f"bad header: column {name!r} appears twice")
        if name not in NATIVE_REQUIRED and name not in NATIVE_OPTIONAL:
            raise StatementError(
                line_no,
                f"bad header: unknown column {name!r} (expected "
                f"{','.join(NATIVE_REQUIRED)} and optionally {','.join(NATIVE_OPTIONAL)})",
            )
        columns[name] = i
    missing = [n for n in NATIVE_REQUIRED if n not in columns]
    if missing:
        raise StatementError(line_no, f"bad header: missing column(s) {', '.join(missing)}")
    return columns


def _fen(line_no: int, name: str, text: str) -> int:
    if not FEN_RE.match(text):
        raise StatementError(line_no, f"bad amount in {name}: {text!r} is not a whole number of fen")
    return int(text)


def parse_native(lines: Iterable[str]) -> Iterator[StatementLine]:
    """Parse the native CSV (`order_id,voucher_id,redeemed_at,discount_fen,status` + optional columns)."""
    records = _records(lines)
    header = next(((n, r) for n, r in records if not _blank(r)), None)
    if header is None:
        raise StatementError(1, "bad header: the file is empty")
    cols = _native_header(*header)
    width = len(header[1])
    i_order, i_voucher, i_at = cols["order_id"], cols["voucher_id"], cols["redeemed_at"]
    i_discount, i_status = cols["discount_fen"], cols["status"]
    optional = [(name, cols[name]) for name in NATIVE_OPTIONAL if name in cols]
    for line_no, row in records:
        if _blank(row):
            continue
        if len(row) != width:
            raise StatementError(line_no, f"expected {width} fields, found {len(row)}")
        order_id = row[i_order].strip()
        if not order_id or len(order_id) > MAX_ORDER_ID:
            raise StatementError(line_no, f"order_id must be 1-{MAX_ORDER_ID} characters")
        voucher_id = row[i_voucher].strip().lower()
        if not UUID_RE.match(voucher_id):
            raise StatementError(line_no, f"voucher_id {row[i_voucher].strip()!r} is not a voucher id (UUID)")
        try:
            redeemed_at = _utc_text(row[i_at].strip())
        except ValueError:
            bad = row[i_at].strip()
            raise StatementError(line_no, f"redeemed_at {bad!r} is not an RFC 3339 time") from None
        discount = _fen(line_no, "discount_fen", row[i_discount].strip())
        status = row[i_status].strip()
        if status not in NATIVE_STATUSES:
            raise StatementError(line_no, f"unknown status {status!r} (expected redeemed or reversed)")
        for name, index in optional:
            _check_optional(line_no, name, row[index].strip())
        yield StatementLine(line_no, order_id, voucher_id, redeemed_at, discount, status, None)


def _utc_text(text: str) -> str:
    """Normalise an RFC 3339 time to `YYYY-MM-DDTHH:MM:SSZ`; text already in that form is only validated."""
    if UTC_TEXT_RE.match(text):
        dt.datetime.fromisoformat(text[:-1])  # raises ValueError for a day or hour that does not exist
        return text
    return rfc3339(parse_rfc3339(text)) or ""


def _check_optional(line_no: int, name: str, value: str) -> None:
    if not value:
        return
    if name == "order_total_fen":
        _fen(line_no, name, value)
    elif name == "channel" and value not in ("online", "offline"):
        raise StatementError(line_no, f"channel {value!r} is not online or offline")
    elif name == "terminal_id" and len(value) > MAX_TERMINAL_ID:
        raise StatementError(line_no, f"terminal_id is longer than {MAX_TERMINAL_ID} characters")
