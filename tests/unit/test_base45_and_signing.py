"""Base45 (RFC 9285) and the COSE_Sign1 token construction."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_service.adapters.base45 import b45decode, b45encode
from voucher_service.adapters.signing import (
    encode_token,
    generate_private_key,
    kid_bytes_for,
    parse_token,
    public_jwk,
    public_key_from_jwk,
)
from voucher_service.domain.tokens import VoucherClaims


def test_base45_matches_rfc9285_examples():
    assert b45encode(b"AB") == "BB8"
    assert b45encode(b"Hello!!") == "%69 VD92EX0"
    assert b45encode(b"base-45") == "UJCLQE7W581"
    assert b45decode("QED8WEX0") == b"ietf!"


@pytest.mark.parametrize("text", ["GGW", "ZZZZ", "a", "A"])
def test_base45_refuses_invalid_text(text):
    with pytest.raises(ValueError):
        b45decode(text)


@given(st.binary(max_size=300))
def test_base45_round_trips(data):
    assert b45decode(b45encode(data)) == data


def _claims() -> VoucherClaims:
    now = int(dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp())
    return VoucherClaims(str(uuid.uuid4()), "prog-1", "T50", 5000, 15000, now, now, now + 86400 * 30)


def test_token_round_trips_and_verifies_only_with_its_key():
    key = generate_private_key()
    kid = kid_bytes_for(key.public_key())
    claims = _claims()
    token = encode_token(key, kid, claims.to_cbor_map())
    assert token.startswith("VC1:")
    parsed = parse_token(token)
    assert parsed.kid == kid
    assert public_jwk(key.public_key())["kid"] == parsed.kid_b64
    assert parsed.verify(key.public_key())
    assert not parsed.verify(generate_private_key().public_key())
    assert VoucherClaims.from_cbor_map(parsed.payload, parsed.kid_b64) == VoucherClaims(
        **{**claims.__dict__, "kid": parsed.kid_b64}
    )


def test_a_changed_payload_no_longer_verifies():
    key = generate_private_key()
    token = encode_token(key, kid_bytes_for(key.public_key()), _claims().to_cbor_map())
    raw = bytearray(b45decode(token[4:]))
    raw[-70] ^= 0x01  # inside the payload or signature
    tampered = parse_token("VC1:" + b45encode(bytes(raw)))
    assert not tampered.verify(key.public_key())


@pytest.mark.parametrize("text", ["", "VC2:ABC", "VC1:", "VC1:%%%%", "VC1:" + b45encode(b"\xa1\x01\x02")])
def test_malformed_tokens_raise_value_error(text):
    with pytest.raises(ValueError):
        parse_token(text)


def test_jwk_round_trips_to_the_same_key():
    key = generate_private_key().public_key()
    again = public_key_from_jwk(public_jwk(key))
    assert again.public_numbers() == key.public_numbers()
