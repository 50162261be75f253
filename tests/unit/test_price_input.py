"""What a cashier types as a price or a quantity becomes integer fen / an int exactly, or is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_service.domain.money import (
    MAX_PRICE_FEN,
    format_yuan,
    parse_price_yuan,
    parse_quantity,
    parse_yuan,
)


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("59.90", 5990),
        ("59.9", 5990),
        ("59", 5900),
        ("0.01", 1),
        (" 12.50 ", 1250),
        ("¥8.00", 800),
        ("５９.９０", 5990),  # a fullwidth IME types these
        ("0", 0),
        ("1,299.00", 129900),
    ],
)
def test_a_typed_price_is_parsed_to_exact_fen(text: str, fen: int) -> None:
    assert parse_price_yuan(text) == fen


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "abc",
        "59.901",
        "-1",
        "+1",
        "1e3",
        "59.",
        ".5",
        "1.2.3",
        "١٢٣",
        "²",
        "12 34",
        "NaN",
        "inf",
        "0x10",
        "1_000",
        "59,90",
        "100000000.01",
        "\x0059",
    ],
)
def test_a_bad_price_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_price_yuan(text)


@given(st.integers(min_value=0, max_value=MAX_PRICE_FEN))
def test_every_amount_round_trips_through_its_display(fen: int) -> None:
    assert parse_price_yuan(format_yuan(fen)) == fen


@pytest.mark.parametrize(("text", "n"), [("1", 1), ("12", 12), (" 3 ", 3), ("３", 3)])
def test_a_typed_quantity_is_a_positive_int(text: str, n: int) -> None:
    assert parse_quantity(text) == n


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "", "١", "²", "1000001", "1e2"])
def test_a_bad_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


@pytest.mark.parametrize("text", ["١٢٣.٤٥", "²", "١٢٣"])
def test_parse_yuan_refuses_digits_that_are_not_ascii(text: str) -> None:
    with pytest.raises(ValueError):
        parse_yuan(text)
