"""Parsing merchants' statements: the native CSV and the WeChat Pay trade bill."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_service.domain.bills import parse_wechatpay
from voucher_service.domain.statements import StatementError, StatementLine, parse_native

V1 = "0f8fad5b-d9cb-469f-a165-70867728950e"
V2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
NATIVE = "order_id,voucher_id,redeemed_at,discount_fen,status"
WX_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
    "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
WX_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
PAY = (
    "`2026-12-05 12:30:00,`wx2421b1c4370ec43b,`1900000109,`0,`,`4200001234567890,`{order},`oUpF8uMuAJO,"
    "`JSAPI,`SUCCESS,`OTHERS,`CNY,`{amount},`0.00,`0,`0,`0.00,`0.00,`,`,`巴马香米,`,`0.00600,`0.60%,`{amount},"
    "`0.00,`"
)
REFUND = (
    "`2026-12-05 23:10:05,`wx2421b1c4370ec43b,`1900000109,`0,`,`4200001234567890,`{order},`oUpF8uMuAJO,"
    "`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50300012345,`R-{order},`{amount},`0.00,`ORIGINAL,`SUCCESS,"
    "`巴马香米,`,`-0.00600,`0.60%,`0.00,`{amount},`"
)


def native(*rows: str) -> list[StatementLine]:
    return list(parse_native(io.StringIO("\n".join([NATIVE, *rows]) + "\n")))


def native_error(*lines: str) -> StatementError:
    with pytest.raises(StatementError) as caught:
        list(parse_native(io.StringIO("\n".join(lines) + "\n")))
    return caught.value


def wx(*lines: str, tz: str = "Asia/Shanghai") -> list[StatementLine]:
    return list(parse_wechatpay(io.StringIO("\r\n".join(lines) + "\r\n"), tz))


def wx_error(*lines: str) -> StatementError:
    with pytest.raises(StatementError) as caught:
        wx(*lines)
    return caught.value


def test_native_rows_with_optional_columns_and_blank_lines():
    text = (
        "\ufefforder_id,voucher_id,redeemed_at,discount_fen,status,order_total_fen,channel,terminal_id\n"
        f"M-1,{V1.upper()},2026-12-05T12:30:00+08:00,5000,redeemed,15990,offline,till-1\n"
        "\n"
        f"M-2,{V2},2026-12-05T04:31:00Z,2000,reversed,,,\n"
    )
    assert list(parse_native(io.StringIO(text))) == [
        StatementLine(2, "M-1", V1, "2026-12-05T04:30:00Z", 5000, "redeemed", None),
        StatementLine(4, "M-2", V2, "2026-12-05T04:31:00Z", 2000, "reversed", None),
    ]


def test_native_columns_may_come_in_any_order():
    rows = list(
        parse_native(
            io.StringIO(
                f"status,discount_fen,order_id,redeemed_at,voucher_id\n"
                f"redeemed,5000,M-1,2026-12-05T04:30:00Z,{V1}\n"
            )
        )
    )
    assert rows == [StatementLine(2, "M-1", V1, "2026-12-05T04:30:00Z", 5000, "redeemed", None)]


@pytest.mark.parametrize(
    ("lines", "line_no", "words"),
    [
        ([""], 1, "empty"),
        (["order_id,voucher_id,redeemed_at,discount,status"], 1, "unknown column 'discount'"),
        (["order_id,voucher_id,redeemed_at,status"], 1, "missing column(s) discount_fen"),
        ([NATIVE + ",status"], 1, "appears twice"),
        ([NATIVE, f"M-1,{V1},2026-12-05T04:30:00Z,50.00,redeemed"], 2, "bad amount"),
        ([NATIVE, f"M-1,{V1},2026-12-05T04:30:00Z,-5,redeemed"], 2, "bad amount"),
        ([NATIVE, f"M-1,{V1},2026-12-05T04:30:00Z,５０００,redeemed"], 2, "bad amount"),
        ([NATIVE, f"M-1,{V1},2026-12-05T04:30:00Z,,redeemed"], 2, "bad amount"),
        ([NATIVE, "", f"M-1,{V1},2026-12-05T04:30:00Z,5000,REDEEMED"], 3, "unknown status 'REDEEMED'"),
        ([NATIVE, f"M-1,{V1},2026-12-05T04:30:00,5000,redeemed"], 2, "RFC 3339"),
        ([NATIVE, f"M-1,{V1[:-1]},2026-12-05T04:30:00Z,5000,redeemed"], 2, "voucher id"),
        ([NATIVE, f",{V1},2026-12-05T04:30:00Z,5000,redeemed"], 2, "order_id"),
        ([NATIVE, f"{'x' * 129},{V1},2026-12-05T04:30:00Z,5000,redeemed"], 2, "order_id"),
        ([NATIVE, f"M-1,{V1},2026-12-05T04:30:00Z,5000"], 2, "expected 5 fields, found 4"),
        ([NATIVE + ",channel", f"M-1,{V1},2026-12-05T04:30:00Z,5000,redeemed,mail"], 2, "channel"),
        ([NATIVE, f'M-1,{V1},2026-12-05T04:30:00Z,5000,"redeemed'], 2, "malformed CSV"),
    ],
)
def test_native_errors_name_the_line(lines, line_no, words):
    err = native_error(*lines)
    assert err.line_no == line_no and words in err.message, err


def test_a_quoted_field_spanning_lines_is_reported_on_the_line_its_record_ends():
    err = native_error(NATIVE, f'"M-\n1",{V1},2026-12-05T04:30:00Z,5000,redeemed', f"M-2,{V2},bad,1,redeemed")
    assert err.line_no == 4


def test_a_wechat_bill_becomes_payments_and_refunds_in_fen():
    rows = wx(
        WX_HEADER,
        PAY.format(order="WX-1", amount="1234.56"),
        PAY.format(order="WX-2", amount="0.10"),
        REFUND.format(order="WX-1", amount="100.00"),
        PAY.format(order="WX-2", amount="0.10").replace("`SUCCESS", "`REVOKED"),
        WX_SUMMARY,
        "`4,`1234.76,`100.00,`0.00,`0.01200,`1234.76,`100.00",
    )
    assert rows == [
        StatementLine(2, "WX-1", None, "2026-12-05T04:30:00Z", None, "redeemed", 123456),
        StatementLine(3, "WX-2", None, "2026-12-05T04:30:00Z", None, "redeemed", 10),
        StatementLine(4, "WX-1", None, "2026-12-05T15:10:05Z", None, "refund", 10000),
        # a revoked (cancelled) payment gives the whole order amount back
        StatementLine(5, "WX-2", None, "2026-12-05T04:30:00Z", None, "refund", 10),
    ]


def test_a_wechat_bill_may_carry_a_title_line_a_bom_and_the_pre_2018_columns():
    legacy = (
        "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
        "总金额,企业红包金额,微信退款单号,商户退款单号,退款金额,企业红包退款金额,退款类型,退款状态,商品名称,商户数据包,"
        "手续费,费率"
    )
    row = (
        "`2014-11-10 16:33:45,`wx2421b1c4370ec43b,`10000100,`0,`1000,`1001690740201411100005734289,"
        "`1415640626,"
        "`085e9858e3ba5186aafcbaed1,`MICROPAY,`SUCCESS,`OTHERS,`CNY,`0.01,`0.0,`0,`0,`0,`0,`,`,`被扫支付测试,"
        "`订单额外描述,`0,`0.60%"
    )
    rows = wx(
        "微信支付交易账单",
        "\ufeff" + legacy,
        row,
        "总交易单数,总交易额,总退款金额,总企业红包退款金额,手续费总金额",
        "`1,`0.01,`0,`0,`0",
    )
    assert rows == [StatementLine(3, "1415640626", None, "2014-11-10T08:33:45Z", None, "redeemed", 1)]


def test_wechat_times_are_local_to_the_programme():
    rows = wx(
        WX_HEADER,
        PAY.format(order="WX-1", amount="1.00"),
        WX_SUMMARY,
        "`1,`1.00,`0.00,`0.00,`0,`1.00,`0.00",
        tz="UTC",
    )
    assert rows[0].redeemed_at == "2026-12-05T12:30:00Z"


@pytest.mark.parametrize(
    ("lines", "line_no", "words"),
    [
        (["order_id,voucher_id"], 1, "not a WeChat Pay trade bill"),
        ([WX_HEADER.replace("商户订单号", "订单号")], 1, "商户订单号"),
        ([WX_HEADER, PAY.format(order="WX-1", amount="12.345")], 2, "bad amount in 应结订单金额"),
        ([WX_HEADER, PAY.format(order="WX-1", amount="-1.00")], 2, "negative"),
        (
            [WX_HEADER, PAY.format(order="WX-1", amount="1.00").replace("`SUCCESS", "`NOTPAY")],
            2,
            "unknown status",
        ),
        (
            [
                WX_HEADER,
                PAY.format(order="WX-1", amount="1.00").replace("`2026-12-05 12:30:00", "`5/12/2026"),
            ],
            2,
            "交易时间",
        ),
        ([WX_HEADER, PAY.format(order="", amount="1.00")], 2, "商户订单号"),
        ([WX_HEADER, PAY.format(order="WX-1", amount="1.00") + ",`extra"], 2, "expected 27 fields, found 28"),
        ([WX_HEADER, PAY.format(order="WX-1", amount="1.00")], 3, "without its summary"),
        ([WX_HEADER, PAY.format(order="WX-1", amount="1.00"), WX_SUMMARY], 4, "not followed by its values"),
        (
            [
                WX_HEADER,
                PAY.format(order="WX-1", amount="1.00"),
                WX_SUMMARY,
                "`2,`1.00,`0.00,`0.00,`0,`1.00,`0.00",
            ],
            4,
            "总交易单数 says 2, the bill has 1 rows",
        ),
        (
            [
                WX_HEADER,
                PAY.format(order="WX-1", amount="1.00"),
                WX_SUMMARY,
                "`1,`1.01,`0.00,`0.00,`0,`1.00,`0.00",
            ],
            4,
            "应结订单总金额 says 1.01",
        ),
        (
            [
                WX_HEADER,
                PAY.format(order="WX-1", amount="1.00"),
                WX_SUMMARY,
                "`1,`1.00,`0.00,`0.00,`0,`1.00,`0.00",
                "`2026-12-06 00:00:01,`wx",
            ],
            5,
            "after the summary",
        ),
    ],
)
def test_wechat_errors_name_the_line(lines, line_no, words):
    err = wx_error(*lines)
    assert err.line_no == line_no and words in err.message, err


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=20))
def test_wechat_amounts_are_converted_to_fen_exactly(amounts):
    def yuan(fen: int) -> str:
        return f"{fen // 100}.{fen % 100:02d}"

    total = sum(amounts)
    lines = [WX_HEADER] + [PAY.format(order=f"WX-{i}", amount=yuan(a)) for i, a in enumerate(amounts)]
    lines += [WX_SUMMARY, f"`{len(amounts)},`{yuan(total)},`0.00,`0.00,`0,`{yuan(total)},`0.00"]
    assert [r.paid_fen for r in wx(*lines)] == amounts


def test_a_file_that_is_not_utf8_is_refused_with_its_line():
    raw = (NATIVE + "\n" + f"M-1,{V1},2026-12-05T04:30:00Z,5000,redeemed\n").encode() + "M-2,巴马".encode(
        "gbk"
    )
    stream = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", newline="")
    with pytest.raises(StatementError) as caught:
        list(parse_native(stream))
    assert "UTF-8" in caught.value.message
