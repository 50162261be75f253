"""Parsing the providers' bills: every WeChat Pay bill type and the Alipay 业务明细 (layouts and their
sources in tests/bill_files.py)."""

from __future__ import annotations

import io

import pytest

from tests.bill_files import AlipayBill, WxBill
from voucher_service.domain.bills import parse_alipay, parse_wechatpay, yuan_to_fen
from voucher_service.domain.statements import Seen, StatementError, StatementLine


def wx(text: str, seen: Seen | None = None) -> list[StatementLine]:
    return list(parse_wechatpay(io.StringIO(text, newline=""), "Asia/Shanghai", seen))


def ap(text: str, seen: Seen | None = None) -> list[StatementLine]:
    return list(parse_alipay(io.StringIO(text, newline=""), "Asia/Shanghai", seen))


def test_a_success_bill_has_no_refund_columns_and_is_read():
    bill = WxBill("SUCCESS").pay("M-1", 10).pay("M-2", 123_456)
    assert len(bill.columns) == 20
    assert [(r.order_id, r.status, r.paid_fen) for r in wx(bill.text())] == [
        ("M-1", "redeemed", 10),
        ("M-2", "redeemed", 123_456),
    ]


def test_every_row_of_a_refund_bill_is_a_refund_of_its_requested_amount():
    bill = WxBill("REFUND", day="2026-12-08").refund("M-1", 10_000).refund("M-2", 2)
    assert len(bill.columns) == 29
    rows = wx(bill.text())
    assert [(r.order_id, r.status, r.paid_fen, r.redeemed_at) for r in rows] == [
        ("M-1", "refund", 10_000, "2026-12-08T10:00:00Z"),
        ("M-2", "refund", 2, "2026-12-08T10:00:00Z"),
    ]


def test_commas_and_quotes_in_the_product_name_stay_in_their_field():
    bill = (
        WxBill("ALL")
        .pay("M-1", 5_010, product='巴马香米, 5kg "特级",长寿村')
        .refund("M-1", 10, product="a,b")
    )
    assert [(r.status, r.paid_fen) for r in wx(bill.text())] == [("redeemed", 5_010), ("refund", 10)]


def test_fees_with_five_decimals_and_negative_refund_fees_do_not_disturb_the_amounts():
    bill = WxBill("ALL").pay("M-1", 10).pay("M-2", 123_456).refund("M-2", 333, fee="-0.02000")
    text = bill.text()
    assert "`-0.02000," in text and "`7.38796,`" in text  # 手续费总金额 = 0.00060 + 7.40736 - 0.02000
    assert [(r.status, r.paid_fen) for r in wx(text)] == [
        ("redeemed", 10),
        ("redeemed", 123_456),
        ("refund", 333),
    ]


def test_a_revoked_row_gives_back_its_requested_refund_amount():
    bill = WxBill("ALL").pay("M-1", 9_000).refund("M-1", 9_000, state="REVOKED")
    assert [(r.status, r.paid_fen) for r in wx(bill.text())] == [("redeemed", 9_000), ("refund", 9_000)]


def test_fullwidth_and_halfwidth_yuan_signs_are_accepted_and_other_digits_refused():
    assert yuan_to_fen(1, "x", "￥1234.56") == yuan_to_fen(1, "x", "¥1234.56") == 123_456
    assert yuan_to_fen(1, "x", "0.1") == 10
    assert yuan_to_fen(1, "x", "-0.02", negative=True) == -2
    for bad in ("１２.００", "١٢.00", "1.234", "1e3", "-0.02", "", "²"):
        with pytest.raises(StatementError):
            yuan_to_fen(1, "x", bad)


def test_the_same_payment_or_refund_read_twice_is_one_row():
    bill = WxBill("ALL").pay("M-1", 100, txn="4200000001").refund("M-1", 50, refund_id="5030000001")
    seen = Seen()
    assert len(wx(bill.text(), seen)) == 2
    assert wx(bill.text(), seen) == [] and seen.repeated == 2
    success = WxBill("SUCCESS").pay("M-1", 100, txn="4200000001")
    assert wx(success.text(), seen) == [] and seen.repeated == 3


@pytest.mark.parametrize(
    ("bill", "mutate", "line_no", "words"),
    [
        (WxBill("SUCCESS").pay("M-1", 100), lambda t: t.replace("`SUCCESS", "`CLOSED", 1), 2, "'CLOSED'"),
        (
            WxBill("REFUND").refund("M-1", 100),
            lambda t: t.replace(",申请退款金额", ",x", 1).replace(",退款金额", ",y", 1),
            1,
            "退款金额",
        ),
        (
            WxBill("SUCCESS").pay("M-1", 100),
            lambda t: t.replace("`M-1,", "`M-1,`x,", 1),
            2,
            "expected 20 fields, found 21",
        ),
        (WxBill("ALL").pay("M-1", 100), lambda t: t.replace("`1.00,", "`1.001,", 1), 2, "bad amount"),
        (WxBill("ALL").pay("M-1", 100), lambda t: t.replace("`1,", "`2,", 1), 4, "总交易单数 says 2"),
    ],
)
def test_wechat_errors_name_the_line_and_the_reason(bill, mutate, line_no, words):
    with pytest.raises(StatementError) as caught:
        wx(mutate(bill.text()))
    assert caught.value.line_no == line_no and words in caught.value.message, caught.value


def test_an_alipay_bill_gives_payments_and_refunds_with_its_comment_lines_checked():
    bill = AlipayBill().pay("A-1", 10).pay("A-2", 123_456, product='米,"特级"')
    bill.refund("A-2", bill.trade_no("A-2"), 123_456, 100_000)
    rows = ap(bill.text())
    assert [(r.line_no, r.order_id, r.status, r.paid_fen, r.redeemed_at) for r in rows] == [
        (6, "A-1", "redeemed", 10, "2026-12-05T04:30:00Z"),
        (7, "A-2", "redeemed", 123_456, "2026-12-05T04:30:00Z"),
        (8, "A-2", "refund", 100_000, "2026-12-05T10:00:00Z"),
    ]


@pytest.mark.parametrize(
    ("mutate", "line_no", "words"),
    [
        (lambda t: t.replace("#交易合计：2笔", "#交易合计：3笔"), 9, "交易合计 says 3"),
        (lambda t: t.split("#-----------------------------------------业务明细列表结束")[0], 8, "truncated"),
        (lambda t: t.replace("商户订单号", "订单号", 1), 5, "商户订单号"),
        (lambda t: t.replace("支付宝交易号", "账务流水号", 1), 5, "账务明细"),
        (lambda t: t.replace("交易\t", "转账\t", 1), 6, "unknown 业务类型"),
    ],
)
def test_alipay_errors_name_the_line_and_the_reason(mutate, line_no, words):
    text = mutate(AlipayBill().pay("A-1", 10).pay("A-2", 20).text())
    with pytest.raises(StatementError) as caught:
        ap(text)
    assert caught.value.line_no == line_no and words in caught.value.message, caught.value
