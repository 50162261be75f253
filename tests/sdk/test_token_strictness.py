"""The SDK's offline verification accepts exactly the token text the server accepts (issue 8, item 9):
one voucher, one token. Every other encoding of a signed token, and the high-s twin of its signature,
is refused by both, although an independent COSE library (pycose) would take some of them."""

from __future__ import annotations

import time

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.keys import EC2Key
from pycose.messages import Sign1Message

from merchant_sdk import KeySet, TokenInvalid, TokenMalformed, b45decode, b45encode
from merchant_sdk._cose import parse_token, sign_raw, verify_parsed, verify_raw
from tests.sdk.support import TokenMaker
from tests.token_variants import encoding_variants, high_s, high_s_variant, is_low_s, members
from voucher_service.adapters import signing
from voucher_service.adapters.base45 import b45decode as server_b45decode

_SAMPLE = "VC1:" + b45encode(
    cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, b"\xa0\xa0\xa0\xa0\xa0\xa0", b"\0" * 64]))
)
VARIANT_NAMES = sorted(encoding_variants(_SAMPLE))


def _pycose_verifies(maker: TokenMaker, token: str) -> bool:
    msg = Sign1Message.decode(b45decode(token[4:].strip()))
    msg.key = EC2Key(
        crv="P_256", x=signing.b64url_decode(maker.jwk["x"]), y=signing.b64url_decode(maker.jwk["y"])
    )
    return bool(msg.verify_signature())


def _sdk_verify(maker: TokenMaker, token: str) -> object:
    return verify_parsed(parse_token(token), KeySet(maker.jwks()), time.time())


def test_tokens_the_server_signs_are_low_s_and_verify_in_the_sdk_the_server_and_pycose(
    maker: TokenMaker,
) -> None:
    for _ in range(40):
        token = maker.token()
        assert is_low_s(members(token)[2])
        assert _pycose_verifies(maker, token)
        assert signing.parse_token(token).verify(maker.key.public_key())
        _sdk_verify(maker, token)


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_another_encoding_of_a_signed_token_is_token_malformed_in_the_sdk_as_on_the_server(
    maker: TokenMaker, variant: str
) -> None:
    token = maker.token()
    text = encoding_variants(token)[variant]
    with pytest.raises(TokenMalformed):
        _sdk_verify(maker, text)
    with pytest.raises(ValueError):
        signing.parse_token(text)


def test_the_high_s_twin_is_token_invalid_in_the_sdk_and_refused_by_the_server(maker: TokenMaker) -> None:
    token = maker.token()
    twin = high_s_variant(token)
    assert _pycose_verifies(maker, twin)  # a valid ECDSA signature all the same
    with pytest.raises(TokenInvalid):
        _sdk_verify(maker, twin)
    assert not signing.parse_token(twin).verify(maker.key.public_key())
    _sdk_verify(maker, token)


def test_a_protected_header_in_another_encoding_is_token_malformed_even_when_signed(
    maker: TokenMaker,
) -> None:
    _protected, payload, _sig = members(maker.token())
    for header in ({4: maker.kid, 1: -7}, {1: -7, 4: maker.kid, 3: 0}):
        protected = cbor2.dumps(header)
        sig = signing.sign_es256_raw(maker.key, cbor2.dumps(["Signature1", protected, b"", payload]))
        text = "VC1:" + b45encode(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig])))
        with pytest.raises(TokenMalformed):
            _sdk_verify(maker, text)


def test_the_sdk_signs_terminal_records_low_s(maker: TokenMaker) -> None:
    """Records are signed low-s like tokens; a journal written before (either twin) still verifies."""
    public = maker.key.public_key()
    for i in range(40):
        message = f"record {i}".encode()
        sig = sign_raw(maker.key, message)
        assert is_low_s(sig) and verify_raw(public, message, sig)
        assert verify_raw(public, message, high_s(sig))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:", max_size=60))
def test_the_sdks_base45_is_canonical_and_agrees_with_the_servers(text: str) -> None:
    """Every Base45 text that decodes is the encoding of its bytes, so Base45 adds no second spelling."""
    try:
        raw = b45decode(text)
    except ValueError:
        with pytest.raises(ValueError):
            server_b45decode(text)
        return
    assert b45encode(raw) == text
    assert server_b45decode(text) == raw
