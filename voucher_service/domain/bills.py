"""Payment providers' merchant bills parsed into statement rows: the WeChat Pay trade bill (交易账单) of
every bill type, and the Alipay 业务明细 (trade detail) bill.

Pure and streaming like `domain.statements`: the parsers take lines of text and yield one
`StatementLine` per payment or refund; every problem raises `StatementError` with the physical line.
Amounts in yuan become fen exactly (ASCII digits only, never through a float).

Layouts (see docs/reconciliation.md for the sources):
- WeChat Pay `ALL`, `SUCCESS` and `REFUND` bills (v2 /pay/downloadbill, v3 /v3/bill/tradebill and the
  merchant platform's download are the same text), current and pre-2018 columns: a header row, detail
  rows whose every field starts with a backtick, then a summary header and its row of values. Columns are
  found by name; the bill type is told by the header (退款申请时间 only in REFUND bills, no refund amount
  column in SUCCESS bills).
- Alipay 业务明细: `#` comment lines, the header row, the detail rows (values padded with tabs), `#`
  comment lines with the totals.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from voucher_service.domain.clock import DEFAULT_TZ, rfc3339
from voucher_service.domain.statements import MAX_ORDER_ID, Seen, StatementError, StatementLine

YUAN_RE = re.compile(r"^(-?)([0-9]{1,15})(?:\.([0-9]{1,2}))?$")
COUNT_RE = re.compile(r"^[0-9]{1,12}$")
CURRENCY_PREFIXES = ("¥", "￥")  # U+00A5 and the fullwidth U+FFE5, both seen in exported bills
PREFACE_MAX = 20

WX_TIME, WX_ORDER, WX_STATE = "交易时间", "商户订单号", "交易状态"
WX_TRANSACTION, WX_REFUND_ID, WX_OUT_REFUND = "微信订单号", "微信退款单号", "商户退款单号"
WX_REFUND_APPLIED_AT = "退款申请时间"  # only the REFUND bill has it
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

AP_TRADE_NO, AP_ORDER, AP_KIND = "支付宝交易号", "商户订单号", "业务类型"
AP_CREATED, AP_FINISHED = "创建时间", "完成时间"
AP_ORDER_AMOUNT, AP_RECEIVED = "订单金额（元）", "商家实收（元）"
AP_REFUND_BATCH = ("退款批次号/请求号", "退款批次号")
# The parts of a refund besides what the merchant gives back itself: Alipay's and the merchant's
# promotions refunded with it. Their sum is the refund against the 订单金额 paid.
AP_REFUND_PARTS = ("商家实收（元）", "支付宝红包（元）", "集分宝（元）", "支付宝优惠（元）", "商家优惠（元）")
AP_ACCOUNT_BILL_MARK = "账务流水号"  # the 账务明细 (account) bill, which this parser does not read
AP_TOTALS_RE = re.compile(r"^#\s*(交易|退款)合计[：:]\s*([0-9]+)\s*笔")


# ---------------------------------------------------------------- common


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Physical lines without their line ending, numbered from 1; decoding failures name the line."""
    it = iter(lines)
    line_no = 0
    while True:
        line_no += 1
        try:
            raw = next(it)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise StatementError(line_no, _undecodable(exc)) from None
        # A BOM may open the file, or the header after a title line when a tool joined two texts.
        yield line_no, raw.rstrip("\r\n").lstrip("\ufeff")


def _undecodable(exc: UnicodeDecodeError) -> str:
    name = exc.encoding.lower().replace("_", "-")
    if name.startswith("utf-8"):
        return "the file is not UTF-8 text: its first 64 KiB are, this line is not (is the rest GBK?)"
    if name in ("gb18030", "gbk", "gb2312"):
        return "the file is neither UTF-8 nor GBK/GB18030 text (undecodable bytes on this line)"
    return f"the file is not {exc.encoding} text"


def _cell(cell: str) -> str:
    # Providers put a backtick (WeChat) or a tab (Alipay) around values so Excel keeps long numbers.
    cell = cell.strip()
    return cell[1:].strip() if cell.startswith("`") else cell


def _split(line_no: int, text: str) -> list[str]:
    """One line's fields. WeChat Pay starts every value with a backtick, so a row is split on ",`" and a
    comma or quote inside 商品名称 stays in its field; a line without backticks (a header, or a file a
    spreadsheet saved again) is read as one CSV record."""
    stripped = text.strip()
    if stripped.startswith("`"):
        return [c.strip() for c in stripped[1:].split(",`")]
    try:
        row = next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        raise StatementError(line_no, f"malformed CSV: {exc}") from None
    return [_cell(c) for c in row]


def yuan_to_fen(line_no: int, name: str, text: str, *, negative: bool = False) -> int:
    """A yuan amount ('0.10', '1234.56', '¥5', '￥-3.00') in fen, exactly; ASCII digits only."""
    value = text.strip()
    for prefix in CURRENCY_PREFIXES:
        if value.startswith(prefix):
            value = value[len(prefix) :].strip()
    match = YUAN_RE.match(value)
    if not match:
        raise StatementError(line_no, f"bad amount in {name}: {text!r} is not yuan with at most two decimals")
    sign, whole, frac = match.groups()
    fen = int(whole) * 100 + int((frac or "").ljust(2, "0"))
    if sign and fen:
        if not negative:
            raise StatementError(line_no, f"bad amount in {name}: {text!r} is negative")
        return -fen
    return fen


def _local_time(line_no: int, name: str, text: str, zone: ZoneInfo) -> str:
    try:
        day, clock = text.split()
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", day) or not re.fullmatch(
            r"[0-9]{2}:[0-9]{2}:[0-9]{2}", clock
        ):
            raise ValueError(text)
        local = dt.datetime.fromisoformat(f"{day}T{clock}")
    except ValueError:
        raise StatementError(line_no, f"{name} {text!r} is not yyyy-MM-dd HH:mm:ss") from None
    try:
        return rfc3339(local.replace(tzinfo=zone).astimezone(dt.UTC)) or ""
    except OverflowError:  # 0001-01-01 00:00:00 in Asia/Shanghai is before year 1 in UTC
        raise StatementError(line_no, f"{name} {text!r} is outside the calendar in UTC") from None


def _order(line_no: int, text: str) -> str:
    if not text or len(text) > MAX_ORDER_ID:
        raise StatementError(line_no, f"商户订单号 must be 1-{MAX_ORDER_ID} characters")
    return text


def _fresh(seen: Seen | None, key: str) -> bool:
    return seen is None or seen.first(key)


# ---------------------------------------------------------------- WeChat Pay trade bill


@dataclass
class _WxLayout:
    kind: str  # ALL, SUCCESS or REFUND
    width: int
    time: int
    order: int
    state: int
    amount: int
    refund: int | None  # None in a SUCCESS bill
    transaction: int | None
    refund_id: int | None
    out_refund: int | None
    totals: dict[str, int]  # detail column name -> index, for the summary check


def _wx_layout(line_no: int, names: list[str]) -> _WxLayout:
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in index:
            raise StatementError(line_no, f"bad header: column {name!r} appears twice")
        if name:
            index[name] = i
    missing = [n for n in (WX_TIME, WX_ORDER, WX_STATE) if n not in index]
    amount = next((index[n] for n in WX_ORDER_AMOUNT if n in index), None)
    refund = next((index[n] for n in WX_REFUND_AMOUNT if n in index), None)
    if amount is None:
        missing.append("订单金额")
    if missing or amount is None:
        raise StatementError(line_no, f"bad header: the trade bill has no column(s) {', '.join(missing)}")
    if WX_REFUND_APPLIED_AT in index:
        kind = "REFUND"
        if refund is None:
            raise StatementError(line_no, "bad header: a REFUND bill without 申请退款金额 or 退款金额")
    else:
        kind = "ALL" if refund is not None else "SUCCESS"
    totals = {name: index[name] for name in WX_TOTALS.values() if name in index}
    return _WxLayout(
        kind,
        len(names),
        index[WX_TIME],
        index[WX_ORDER],
        index[WX_STATE],
        amount,
        refund,
        index.get(WX_TRANSACTION),
        index.get(WX_REFUND_ID),
        index.get(WX_OUT_REFUND),
        totals,
    )


def _wx_find_header(lines: Iterator[tuple[int, str]]) -> tuple[int, list[str]]:
    # Downloads from the merchant platform may carry a title line or two before the header row.
    seen = 0
    for line_no, text in lines:
        if not text.strip():
            continue
        cells = _split(line_no, text)
        if cells and cells[0] == WX_TIME:
            return line_no, cells
        seen += 1
        if seen >= PREFACE_MAX:
            break
    raise StatementError(1, "bad header: not a WeChat Pay trade bill (no header row starting with 交易时间)")


def parse_wechatpay(
    lines: Iterable[str], tz: str = DEFAULT_TZ, seen: Seen | None = None
) -> Iterator[StatementLine]:
    """Parse a WeChat Pay trade bill (ALL, SUCCESS or REFUND; current or pre-2018 columns).

    SUCCESS rows become `redeemed` rows paying 订单金额; REFUND rows `refund` rows of 申请退款金额
    (退款金额 in pre-2018 bills); REVOKED (a payment cancelled) a `refund` of 申请退款金额, or of the
    whole 订单金额 when that column is empty or zero. Every row of a REFUND bill is a refund. Times
    are local (`tz`). The summary must agree with the rows (count and every total it gives). With
    `seen`, a payment (微信订单号) or refund (微信退款单号) already read is skipped.
    """
    zone = ZoneInfo(tz)
    numbered = _numbered(lines)
    header_line, names = _wx_find_header(numbered)
    lay = _wx_layout(header_line, names)
    count = 0
    sums = dict.fromkeys(lay.totals, 0)
    last = header_line
    for line_no, text in numbered:
        last = line_no
        if not text.strip():
            continue
        cells = _split(line_no, text)
        if cells[0] == WX_SUMMARY_FIRST:
            _wx_check_summary(line_no, cells, numbered, count, sums)
            return
        if len(cells) != lay.width:
            raise StatementError(
                line_no,
                f"expected {lay.width} fields, found {len(cells)} (a {lay.kind} bill: every field starts "
                "with a backtick)",
            )
        for name, i in lay.totals.items():
            sums[name] += yuan_to_fen(line_no, name, cells[i])
        count += 1
        line, key = _wx_line(line_no, cells, lay, zone)
        if _fresh(seen, key):
            yield line
    raise StatementError(last + 1, f"the bill ends without its summary rows ({WX_SUMMARY_FIRST},...)")


def _wx_line(line_no: int, cells: list[str], lay: _WxLayout, zone: ZoneInfo) -> tuple[StatementLine, str]:
    order_id = _order(line_no, cells[lay.order])
    at = _local_time(line_no, WX_TIME, cells[lay.time], zone)
    state = cells[lay.state]
    transaction = cells[lay.transaction] if lay.transaction is not None else ""
    paid = yuan_to_fen(line_no, "订单金额", cells[lay.amount])
    requested = yuan_to_fen(line_no, "申请退款金额", cells[lay.refund]) if lay.refund is not None else 0
    if state == "REVOKED":
        # A payment cancelled: the amount given back sits in 申请退款金额 (订单金额 may be 0 there).
        line = StatementLine(line_no, order_id, None, at, None, "refund", requested or paid)
        return line, f"wx:revoked:{transaction or order_id}:{line.paid_fen}"
    if lay.kind == "REFUND" or state == "REFUND":
        refund_id = next(
            (
                cells[i]
                for i in (lay.refund_id, lay.out_refund)
                if i is not None and cells[i] not in ("", "0")
            ),
            f"{order_id}@{cells[lay.time]}:{requested}",
        )
        return StatementLine(line_no, order_id, None, at, None, "refund", requested), f"wx:refund:{refund_id}"
    if state == "SUCCESS":
        line = StatementLine(line_no, order_id, None, at, None, "redeemed", paid)
        return line, f"wx:pay:{transaction or order_id + '@' + cells[lay.time]}"
    raise StatementError(
        line_no,
        f"unknown status {state!r} in 交易状态 (expected SUCCESS, REFUND or REVOKED in a {lay.kind} bill)",
    )


def _wx_check_summary(
    line_no: int, names: list[str], lines: Iterator[tuple[int, str]], count: int, sums: dict[str, int]
) -> None:
    values_at = next(((n, t) for n, t in lines if t.strip()), None)
    if values_at is None:
        raise StatementError(line_no + 1, "the summary header is not followed by its values")
    values_line, values_text = values_at
    values = _split(values_line, values_text)
    if len(values) < len(names):
        raise StatementError(values_line, f"expected {len(names)} summary fields, found {len(values)}")
    for name, value in zip(names, values, strict=False):
        if name == WX_SUMMARY_FIRST:
            if not COUNT_RE.match(value) or int(value) != count:
                raise StatementError(
                    values_line, f"{WX_SUMMARY_FIRST} says {value}, the bill has {count} rows"
                )
        elif WX_TOTALS.get(name) in sums:
            total = yuan_to_fen(values_line, name, value)
            detail = WX_TOTALS[name]
            if total != sums[detail]:
                raise StatementError(
                    values_line,
                    f"{name} says {value}, the {detail} column adds up to "
                    f"{sums[detail] // 100}.{sums[detail] % 100:02d}",
                )
    for extra_line, text in lines:
        if text.strip():
            raise StatementError(extra_line, "unexpected content after the summary rows")


# ---------------------------------------------------------------- Alipay 业务明细


def _ap_name(cell: str) -> str:
    # Column names with ASCII or fullwidth parentheses and stray spaces are the same column.
    return cell.strip().replace("(", "（").replace(")", "）").replace(" ", "")


@dataclass
class _ApLayout:
    width: int
    trade_no: int
    order: int
    kind: int
    created: int | None
    finished: int | None
    amount: int
    batch: int | None
    parts: list[tuple[str, int]]


def _ap_layout(line_no: int, row: list[str]) -> _ApLayout:
    names = [_ap_name(c) for c in row]
    if AP_ACCOUNT_BILL_MARK in names:
        raise StatementError(
            line_no,
            "this is the Alipay 账务明细 (account) bill; reconcile the 业务明细 (trade) bill of the same zip",
        )
    index = {name: i for i, name in enumerate(names) if name}
    required = (AP_TRADE_NO, AP_ORDER, AP_KIND, AP_ORDER_AMOUNT, AP_RECEIVED)
    missing = [n for n in required if n not in index]
    if AP_CREATED not in index and AP_FINISHED not in index:
        missing.append(AP_FINISHED)
    if missing:
        raise StatementError(line_no, f"bad header: the 业务明细 bill has no column(s) {', '.join(missing)}")
    return _ApLayout(
        len(names),
        index[AP_TRADE_NO],
        index[AP_ORDER],
        index[AP_KIND],
        index.get(AP_CREATED),
        index.get(AP_FINISHED),
        index[AP_ORDER_AMOUNT],
        next((index[n] for n in AP_REFUND_BATCH if n in index), None),
        [(n, index[n]) for n in AP_REFUND_PARTS if n in index],
    )


def _ap_row(line_no: int, text: str) -> list[str]:
    try:
        row = next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        raise StatementError(line_no, f"malformed CSV: {exc}") from None
    return [_cell(c) for c in row]


def parse_alipay(
    lines: Iterable[str], tz: str = DEFAULT_TZ, seen: Seen | None = None
) -> Iterator[StatementLine]:
    """Parse an Alipay 业务明细 bill: `#` lines, the header, the rows, `#` lines with the totals.

    业务类型 交易 rows become `redeemed` rows paying 订单金额（元）; 退款 rows `refund` rows of the
    refund's parts (商家实收 and the promotions refunded with it, negative in the bill, summed as a
    positive amount). Times (完成时间, else 创建时间) are local (`tz`). The `#交易合计：N笔` and
    `#退款合计：N笔` lines, when present, must agree with the rows. With `seen`, a payment (支付宝交易号)
    or refund (its 退款批次号) already read is skipped.
    """
    zone = ZoneInfo(tz)
    numbered = _numbered(lines)
    header: tuple[int, list[str]] | None = None
    preface = 0
    for line_no, text in numbered:
        if not text.strip() or text.lstrip().startswith("#"):
            preface += 1
            if preface > PREFACE_MAX:
                break
            continue
        header = (line_no, _ap_row(line_no, text))
        break
    if header is None:
        raise StatementError(1, "bad header: not an Alipay 业务明细 bill (no header row after the # lines)")
    lay = _ap_layout(*header)
    counts = {"交易": 0, "退款": 0}
    ended = False
    last = header[0]
    for line_no, text in numbered:
        last = line_no
        stripped = text.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            ended = True
            _ap_check_totals(line_no, stripped, counts)
            continue
        if ended:
            raise StatementError(line_no, "a table row after the bill's closing # lines")
        row = _ap_row(line_no, text)
        if len(row) != lay.width:
            raise StatementError(line_no, f"expected {lay.width} fields, found {len(row)}")
        line, key = _ap_line(line_no, row, lay, zone)
        counts["交易" if line.status == "redeemed" else "退款"] += 1
        if _fresh(seen, key):
            yield line
    if not ended:
        raise StatementError(
            last + 1, "the bill ends without its closing # lines (业务明细列表结束): truncated?"
        )


def _ap_line(line_no: int, row: list[str], lay: _ApLayout, zone: ZoneInfo) -> tuple[StatementLine, str]:
    order_id = _order(line_no, row[lay.order])
    trade_no = row[lay.trade_no]
    finished = row[lay.finished] if lay.finished is not None else ""
    created = row[lay.created] if lay.created is not None else ""
    when, name = (finished, AP_FINISHED) if finished else (created, AP_CREATED)
    at = _local_time(line_no, name, when, zone)
    kind = row[lay.kind]
    if kind == "交易":
        paid = yuan_to_fen(line_no, AP_ORDER_AMOUNT, row[lay.amount])
        return StatementLine(
            line_no, order_id, None, at, None, "redeemed", paid
        ), f"ap:pay:{trade_no or order_id}"
    if kind == "退款":
        refunded = sum(abs(yuan_to_fen(line_no, n, row[i] or "0", negative=True)) for n, i in lay.parts)
        batch = row[lay.batch] if lay.batch is not None else ""
        key = f"ap:refund:{trade_no}:{batch or when}:{refunded}"
        return StatementLine(line_no, order_id, None, at, None, "refund", refunded), key
    raise StatementError(line_no, f"unknown 业务类型 {kind!r} (expected 交易 or 退款)")


def _ap_check_totals(line_no: int, text: str, counts: dict[str, int]) -> None:
    match = AP_TOTALS_RE.match(text)
    if match and int(match.group(2)) != counts[match.group(1)]:
        kind, said = match.group(1), match.group(2)
        raise StatementError(line_no, f"{kind}合计 says {said} 笔, the bill has {counts[kind]} {kind} rows")
