"""Yuan text to fen and back, exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_service.domain.money import format_yuan, parse_yuan


@pytest.mark.parametrize(
    ("text", "fen"),
    [("0.10", 10), ("1234.56", 123456), ("3", 300), ("-0.01", -1), ("¥12.5", 1250), ("1,234.00", 123400)],
)
def test_parse_yuan_is_exact(text, fen):
    assert parse_yuan(text) == fen


@pytest.mark.parametrize("text", ["", "abc", "1.234", "1.2.3", "--1", "1e3", "."])
def test_parse_yuan_refuses_what_is_not_an_amount(text):
    with pytest.raises(ValueError):
        parse_yuan(text)


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_format_then_parse_round_trips(fen):
    assert parse_yuan(format_yuan(fen)) == fen
