"""One voucher, one token (issue 8, item 9): the service accepts exactly the encoding it signs (tagged
COSE_Sign1, canonical CBOR, no trailing bytes, empty unprotected header, canonical Base45, low-s ES256)
and refuses every other text of the same voucher, whatever an independent COSE library would accept."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.keys import EC2Key
from pycose.messages import Sign1Message

from tests.helpers import Admin, problem_code
from tests.redemption_support import World, item, make_world
from tests.token_variants import encoding_variants, high_s, high_s_variant, is_low_s, members, with_low_s
from voucher_service.adapters import signing
from voucher_service.adapters.base45 import b45decode, b45encode
from voucher_service.domain.errors import TokenInvalid, TokenMalformed
from voucher_service.services.credentials import create_admin_token
from voucher_service.services.tokens import verify_voucher_token

BASE45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_SAMPLE = "VC1:" + b45encode(
    cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, b"\xa0\xa0\xa0\xa0\xa0\xa0", b"\0" * 64]))
)
VARIANT_NAMES = sorted(encoding_variants(_SAMPLE))


@pytest.fixture
def world(app: Any) -> World:
    ctx = app.extensions["voucher"]
    return make_world(Admin(app.test_client(), create_admin_token(ctx, "tester")), ctx)


def _preview(world: World, token: str) -> Any:
    body = {
        "token": token,
        "order_id": "O-1",
        "channel": "online",
        "items": [item(world.catalog.rice, 3, 5000)],
    }
    return world.merchant.post("/api/v1/redemptions/preview", body)


def test_the_signer_writes_low_s_signatures_that_pycose_verifies(world: World) -> None:
    key = world.ctx.keys.active()
    jwk = key.jwk
    cose_key = EC2Key(crv="P_256", x=signing.b64url_decode(jwk["x"]), y=signing.b64url_decode(jwk["y"]))
    for _ in range(40):  # a random signer writes high-s half of the time: 40 tries miss it with p = 2**-40
        _vid, token = world.voucher()
        assert is_low_s(members(token)[2])
        msg = Sign1Message.decode(b45decode(token[4:]))
        msg.key = cose_key
        assert msg.verify_signature()
        verify_voucher_token(world.ctx, token)
    assert _preview(world, token).status_code == 200


def test_receipts_are_low_s_too(world: World) -> None:
    for _ in range(20):
        _vid, token = world.voucher()
        resp = world.redeem(token, [item(world.catalog.rice, 3, 5000)])
        assert resp.status_code == 201, resp.get_json()
        assert is_low_s(members(resp.get_json()["receipt"])[2])


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_another_encoding_of_a_valid_token_is_token_malformed(world: World, variant: str) -> None:
    _vid, token = world.voucher()
    assert _preview(world, token).status_code == 200
    text = encoding_variants(token)[variant]
    with pytest.raises(TokenMalformed):
        verify_voucher_token(world.ctx, text)
    resp = _preview(world, text)
    assert resp.status_code == 400 and problem_code(resp) == "token_malformed", resp.get_json()


def test_the_high_s_twin_of_a_valid_signature_is_token_invalid(world: World) -> None:
    _vid, token = world.voucher()
    twin = high_s_variant(token)
    # The twin is a valid ECDSA signature: an independent library accepts it ...
    jwk = world.ctx.keys.active().jwk
    msg = Sign1Message.decode(b45decode(twin[4:]))
    msg.key = EC2Key(crv="P_256", x=signing.b64url_decode(jwk["x"]), y=signing.b64url_decode(jwk["y"]))
    assert msg.verify_signature()
    # ... and the service refuses it: one voucher has one token.
    with pytest.raises(TokenInvalid):
        verify_voucher_token(world.ctx, twin)
    resp = _preview(world, twin)
    assert resp.status_code == 422 and problem_code(resp) == "token_invalid", resp.get_json()
    assert _preview(world, token).status_code == 200


def test_a_token_whose_protected_header_is_not_the_signers_encoding_is_token_malformed(world: World) -> None:
    """Even signed by the service's own key: the protected header has one encoding, {1: -7, 4: kid}."""
    key = world.ctx.keys.active()
    assert key.private_key is not None
    _vid, token = world.voucher()
    _protected, payload, _sig = members(token)
    for header in ({4: key.kid_bytes, 1: -7}, {1: -7, 4: key.kid_bytes, 3: 0}):
        protected = cbor2.dumps(header)
        sig = signing.sign_es256_raw(key.private_key, cbor2.dumps(["Signature1", protected, b"", payload]))
        if not is_low_s(sig):
            sig = high_s(sig)
        text = "VC1:" + b45encode(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig])))
        with pytest.raises(TokenMalformed):
            verify_voucher_token(world.ctx, text)


def test_a_token_made_before_the_fix_verifies_once_in_low_s_form(world: World) -> None:
    _vid, token = world.voucher()
    assert verify_voucher_token(world.ctx, with_low_s(token)).voucher_id == _vid


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=BASE45, max_size=60))
def test_base45_is_canonical_every_text_that_decodes_is_the_encoding_of_its_bytes(text: str) -> None:
    try:
        raw = b45decode(text)
    except ValueError:
        return
    assert b45encode(raw) == text
