"""Merchant statements parsed into rows: the native CSV and the WeChat Pay trade bill (交易账单).

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
from dataclasses import dataclass
from typing import NamedTuple
from zoneinfo import ZoneInfo

from voucher_service.domain.clock import DEFAULT_TZ, parse_rfc3339, rfc3339
from voucher_service.domain.money import parse_yuan

FORMATS = ("native", "wechatpay")
NATIVE_REQUIRED = ("order_id", "voucher_id", "redeemed_at", "discount_fen", "status")
NATIVE_OPTIONAL = ("order_total_fen", "channel", "terminal_id")
NATIVE_STATUSES = ("redeemed", "reversed")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
FEN_RE = re.compile(r"^[0-9]{1,18}$")
UTC_TEXT_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
MAX_ORDER_ID = 128
MAX_TERMINAL_ID = 64

# The WeChat Pay trade bill (bill_type ALL, as the merchant platform and /pay/downloadbill give it).
WX_TIME, WX_ORDER, WX_STATE = "交易时间", "商户订单号", "交易状态"
WX_ORDER_AMOUNT = ("订单金额", "总金额")  # current layout first; 总金额 in bills of the pre-2018 layout
WX_REFUND_AMOUNT = ("申请退款金额", "退款金额")
WX_SUMMARY_FIRST = "总交易单数"
# Summary column -> the detail column it totals (current and pre-2018 layouts).
WX_TOTALS = {
    "应结订单总金额": "应结订单金额",
    "退款总金额": "退款金额",
    "订单总金额": "订单金额",
    "申请退款总金额": "申请退款金额",
    "总交易额": "总金额",
    "总退款金额": "退款金额",
}
WX_PREFACE_MAX = 20


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


def parse_statement(fmt: str, lines: Iterable[str], tz: str = DEFAULT_TZ) -> Iterator[StatementLine]:
    """Parse a statement of format `native` or `wechatpay` into rows."""
    if fmt == "native":
        return parse_native(lines)
    if fmt == "wechatpay":
        return parse_wechatpay(lines, tz)
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


# ---------------------------------------------------------------- WeChat Pay trade bill


def _wx_cell(cell: str) -> str:
    # Every detail and summary field carries one leading backtick so Excel keeps long numbers intact.
    cell = cell.strip().lstrip("\ufeff")
    return cell[1:].strip() if cell.startswith("`") else cell


@dataclass
class _WxLayout:
    width: int
    time: int
    order: int
    state: int
    amount: int
    refund: int
    totals: dict[str, int]  # detail column name -> index, for the summary check


def _wx_layout(line_no: int, row: list[str]) -> _WxLayout:
    names = [_wx_cell(c) for c in row]
    index = {name: i for i, name in enumerate(names) if name}
    missing = [n for n in (WX_TIME, WX_ORDER, WX_STATE) if n not in index]
    amount = next((index[n] for n in WX_ORDER_AMOUNT if n in index), None)
    refund = next((index[n] for n in WX_REFUND_AMOUNT if n in index), None)
    if amount is None:
        missing.append("订单金额")
    if refund is None:
        missing.append("申请退款金额")
    if missing or amount is None or refund is None:
        raise StatementError(line_no, f"bad header: the trade bill has no column(s) {', '.join(missing)}")
    totals = {name: index[name] for name in WX_TOTALS.values() if name in index}
    return _WxLayout(len(row), index[WX_TIME], index[WX_ORDER], index[WX_STATE], amount, refund, totals)


def _yuan(line_no: int, name: str, text: str) -> int:
    try:
        fen = parse_yuan(text)
    except ValueError:
        message = f"bad amount in {name}: {text!r} is not yuan with two decimals"
        raise StatementError(line_no, message) from None
    if fen < 0:
        raise StatementError(line_no, f"bad amount in {name}: {text!r} is negative")
    return fen


def _wx_time(line_no: int, text: str, zone: ZoneInfo) -> str:
    try:
        day, clock = text.split()
        local = dt.datetime.fromisoformat(f"{day}T{clock}")
    except ValueError:
        raise StatementError(line_no, f"交易时间 {text!r} is not yyyy-MM-dd HH:mm:ss") from None
    if local.tzinfo is not None:
        raise StatementError(line_no, f"交易时间 {text!r} is not yyyy-MM-dd HH:mm:ss")
    return rfc3339(local.replace(tzinfo=zone).astimezone(dt.UTC)) or ""


def _wx_find_header(records: Iterator[tuple[int, list[str]]]) -> tuple[int, list[str]]:
    # Downloads from the merchant platform may carry a title line or two before the header row.
    seen = 0
    for line_no, row in records:
        if _blank(row):
            continue
        if _wx_cell(row[0]) == WX_TIME:
            return line_no, row
        seen += 1
        if seen >= WX_PREFACE_MAX:
            break
    raise StatementError(1, "bad header: not a WeChat Pay trade bill (no header row starting with 交易时间)")


def parse_wechatpay(lines: Iterable[str], tz: str = DEFAULT_TZ) -> Iterator[StatementLine]:
    """Parse a WeChat Pay trade bill: backtick-prefixed detail rows, then the summary header and values.

    SUCCESS rows become `redeemed` rows paying 订单金额; REFUND rows `refund` rows of 申请退款金额;
    REVOKED (a payment cancelled) a `refund` of the whole 订单金额. Times are local (`tz`). The
    summary must agree with the rows (count and every total it gives), or the file is refused.
    """
    zone = ZoneInfo(tz)
    records = _records(lines)
    header_line, header = _wx_find_header(records)
    lay = _wx_layout(header_line, header)
    count = 0
    sums = dict.fromkeys(lay.totals, 0)
    last = header_line
    for line_no, row in records:
        last = line_no
        if _blank(row):
            continue
        if _wx_cell(row[0]) == WX_SUMMARY_FIRST:
            _wx_check_summary(line_no, row, records, count, sums)
            return
        if len(row) != lay.width:
            raise StatementError(line_no, f"expected {lay.width} fields, found {len(row)}")
        cells = [_wx_cell(c) for c in row]
        for name, i in lay.totals.items():
            sums[name] += _yuan(line_no, name, cells[i])
        count += 1
        yield _wx_line(line_no, cells, lay, zone)
    raise StatementError(last + 1, f"the bill ends without its summary rows ({WX_SUMMARY_FIRST},...)")


def _wx_line(line_no: int, cells: list[str], lay: _WxLayout, zone: ZoneInfo) -> StatementLine:
    order_id = cells[lay.order]
    if not order_id or len(order_id) > MAX_ORDER_ID:
        raise StatementError(line_no, f"商户订单号 must be 1-{MAX_ORDER_ID} characters")
    at = _wx_time(line_no, cells[lay.time], zone)
    state = cells[lay.state]
    if state == "SUCCESS":
        return StatementLine(
            line_no, order_id, None, at, None, "redeemed", _yuan(line_no, "订单金额", cells[lay.amount])
        )
    if state == "REFUND":
        return StatementLine(
            line_no, order_id, None, at, None, "refund", _yuan(line_no, "申请退款金额", cells[lay.refund])
        )
    if state == "REVOKED":
        return StatementLine(
            line_no, order_id, None, at, None, "refund", _yuan(line_no, "订单金额", cells[lay.amount])
        )
    raise StatementError(line_no, f"unknown status {state!r} in 交易状态 (expected SUCCESS, REFUND, REVOKED)")


def _wx_check_summary(
    line_no: int,
    header: list[str],
    records: Iterator[tuple[int, list[str]]],
    count: int,
    sums: dict[str, int],
) -> None:
    names = [_wx_cell(c) for c in header]
    values_at = next(((n, r) for n, r in records if not _blank(r)), None)
    if values_at is None:
        raise StatementError(line_no + 1, "the summary header is not followed by its values")
    values_line, values_row = values_at
    values = [_wx_cell(c) for c in values_row]
    if len(values) < len(names):
        raise StatementError(values_line, f"expected {len(names)} summary fields, found {len(values)}")
    for name, value in zip(names, values, strict=False):
        if name == WX_SUMMARY_FIRST:
            if not value.isdigit() or int(value) != count:
                message = f"{WX_SUMMARY_FIRST} says {value}, the bill has {count} rows"
                raise StatementError(values_line, message)
        elif WX_TOTALS.get(name) in sums:
            total = _yuan(values_line, name, value)
            detail = WX_TOTALS[name]
            if total != sums[detail]:
                raise StatementError(
                    values_line,
                    f"{name} says {value}, the {detail} column adds up to "
                    f"{sums[detail] // 100}.{sums[detail] % 100:02d}",
                )
    for extra_line, row in records:
        if not _blank(row):
            raise StatementError(extra_line, "unexpected content after the summary rows")
