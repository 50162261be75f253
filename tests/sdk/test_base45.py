"""The SDK's own Base45 (RFC 9285) against the RFC's examples and the server's encoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from merchant_sdk import b45decode, b45encode
from voucher_service.adapters import base45 as server_base45

RFC_EXAMPLES = [
    (b"AB", "BB8"),
    (b"Hello!!", "%69 VD92EX0"),
    (b"base-45", "UJCLQE7W581"),
    (b"ietf!", "QED8WEX0"),
    (b"", ""),
]


@pytest.mark.parametrize(("raw", "text"), RFC_EXAMPLES)
def test_encodes_and_decodes_the_rfc_examples(raw: bytes, text: str) -> None:
    assert b45encode(raw) == text
    assert b45decode(text) == raw


@given(st.binary(max_size=600))
def test_round_trips_and_agrees_with_the_server_encoder(data: bytes) -> None:
    text = b45encode(data)
    assert text == server_base45.b45encode(data)
    assert b45decode(text) == data
    assert b45decode(server_base45.b45encode(data)) == data


@given(st.binary(min_size=1, max_size=300))
def test_decoding_agrees_with_the_server_decoder_on_every_group(data: bytes) -> None:
    text = server_base45.b45encode(data)
    assert b45decode(text) == server_base45.b45decode(text)


@pytest.mark.parametrize(
    "text",
    [
        "GGW",  # 65535 + 1: a three-character group beyond two bytes
        "BB8GGW",  # a bad group after a good one
        ":::",  # the largest three-character value
        "::",  # a two-character group beyond one byte
        "A",  # a dangling character
        "BB8a",  # lower case is not Base45
        "BB8~",
        "BB8\u00e9",
    ],
)
def test_rejects_text_that_is_not_base45(text: str) -> None:
    with pytest.raises(ValueError):
        b45decode(text)


def test_largest_valid_groups_decode() -> None:
    assert b45decode("FGW") == b"\xff\xff"
    assert b45decode("U5") == b"\xff"
