"""Digits in untrusted text are ASCII digits (issue 8): Python's isdigit(), `\\d` and int() also take
Arabic-Indic, full-width and superscript digits, so every parser that reads amounts, counts or times
from statements, imports or the command line must refuse them rather than read a number."""

from __future__ import annotations

import argparse
import io

import pytest

from merchant_sdk.cli import parse_item
from tests.unit.test_statements import PAY, WX_HEADER, WX_SUMMARY
from voucher_service.domain.bills import parse_wechatpay
from voucher_service.domain.clock import day_bounds, parse_rfc3339
from voucher_service.domain.money import parse_yuan
from voucher_service.domain.programs import is_time_zone
from voucher_service.domain.statements import StatementError

OTHER_DIGITS = ["١٢", "１２", "²", "12٣", "۱۲.۵۰", "१२", "๑๒"]


@pytest.mark.parametrize("text", OTHER_DIGITS)
def test_an_amount_in_other_digits_is_not_yuan(text: str) -> None:
    with pytest.raises(ValueError):
        parse_yuan(text)


def test_ascii_amounts_still_parse_exactly() -> None:
    assert [parse_yuan(t) for t in ("1234.56", "¥0.10", "-3", "1,000.5")] == [123456, 10, -300, 100050]


def _bill(amount: str, count: str) -> list[object]:
    lines = [
        WX_HEADER,
        PAY.format(order="WX-1", amount=amount),
        WX_SUMMARY,
        f"`{count},`{amount},`0.00,`0.00,`0,`{amount},`0.00",
    ]
    return list(parse_wechatpay(io.StringIO("\r\n".join(lines) + "\r\n"), "Asia/Shanghai"))


@pytest.mark.parametrize("amount", ["١.٠٠", "１.００", "1.0٠"])
def test_a_wechat_bill_amount_in_other_digits_is_a_statement_error(amount: str) -> None:
    with pytest.raises(StatementError, match="bad amount"):
        _bill(amount, "1")


@pytest.mark.parametrize("count", ["¹", "١", "１"])
def test_a_wechat_summary_count_in_other_digits_is_a_statement_error(count: str) -> None:
    with pytest.raises(StatementError, match="总交易单数"):
        _bill("1.00", count)


def test_a_wechat_time_on_the_first_day_of_the_calendar_is_a_statement_error() -> None:
    lines = [
        WX_HEADER,
        PAY.format(order="WX-1", amount="1.00").replace("2026-12-05 12:30:00", "0001-01-01 00:00:00"),
        WX_SUMMARY,
        "`1,`1.00,`0.00,`0.00,`0,`1.00,`0.00",
    ]
    with pytest.raises(StatementError, match="交易时间"):
        list(parse_wechatpay(io.StringIO("\r\n".join(lines) + "\r\n"), "Asia/Shanghai"))


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_instant_outside_the_calendar_in_utc_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


def test_the_calendar_edges_have_no_day_bounds_in_shanghai() -> None:
    import datetime as dt

    for day in (dt.date.min, dt.date.max):
        with pytest.raises(ValueError):
            day_bounds(day, "Asia/Shanghai")


@pytest.mark.parametrize("name", ["Asia", "America", "A" * 300, "Asia/Shanghai/", "", "../x", "UTC\n"])
def test_only_loadable_zone_keys_are_time_zones(name: str) -> None:
    assert not is_time_zone(name)


def test_real_zones_are_time_zones() -> None:
    assert all(is_time_zone(z) for z in ("Asia/Shanghai", "Asia/Urumqi", "UTC", "Europe/London"))


@pytest.mark.parametrize(
    "text",
    [
        "6901234567892:٢:5990",
        "6901234567892:2:５９９０",
        "6901234567892:²:5990",
        "6901234567892:2:5990\n",
        "6901234567892:-2:5990",
    ],
)
def test_the_sdk_cli_refuses_items_with_other_digits(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_item(text)


def test_the_sdk_cli_reads_ascii_items() -> None:
    item = parse_item("6901234567892:2:5990")
    assert (item.gtin, item.quantity, item.unit_price_fen) == ("6901234567892", 2, 5990)
