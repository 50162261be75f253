"""Offline verification of VC1 tokens made with the server's own signing code (adapters.signing)."""

from __future__ import annotations

import time
import uuid

import cbor2
import pytest
from pycose.keys import EC2Key
from pycose.messages import Sign1Message

from merchant_sdk import (
    APIConnectionError,
    KeySet,
    TokenInvalid,
    TokenMalformed,
    VoucherClient,
    VoucherExpired,
    VoucherNotYetValid,
    b45decode,
    b45encode,
)
from merchant_sdk._cose import parse_token, sig_structure, verify_parsed
from tests.sdk.support import FakeService, TokenMaker, dead_port
from voucher_service.adapters import signing


def serve_keys(fake: FakeService, *makers: TokenMaker) -> None:
    fake.handle("GET", "/api/v1/keys", lambda s: (200, {}, {"keys": [m.jwk for m in makers]}))


def test_verify_returns_the_claims_the_server_signed(fake, client, maker) -> None:
    serve_keys(fake, maker)
    claims = maker.claims(program_id="p-42", tier="T20", face_value_fen=2000, min_spend_fen=6000)
    got = client.verify(maker.token_for(claims))
    assert (got.voucher_id, got.program_id, got.tier) == (claims.voucher_id, "p-42", "T20")
    assert (got.face_value_fen, got.min_spend_fen) == (2000, 6000)
    assert (got.iat, got.nbf, got.exp) == (claims.iat, claims.nbf, claims.exp)
    assert got.kid == maker.jwk["kid"] == signing.b64url(maker.kid)


def test_keys_are_fetched_once_and_verification_then_needs_no_network(fake, client, maker) -> None:
    serve_keys(fake, maker)
    for _ in range(3):
        client.verify(maker.token())
    assert len(fake.requests_to("/api/v1/keys")) == 1
    assert "X-Voucher-Signature" not in fake.seen[0].headers  # /keys is public
    fake.stop()
    assert client.verify(maker.token()).tier == "T50"


def test_the_sig_structure_is_the_one_the_server_signs(maker) -> None:
    parsed = parse_token(maker.token())
    server_parsed = signing.parse_token(maker.token())
    assert parsed.kid == server_parsed.kid
    expected = cbor2.dumps(["Signature1", parsed.protected, b"", parsed.payload])
    assert sig_structure(parsed.protected, parsed.payload) == expected


def test_a_token_accepted_by_an_independent_cose_library_is_accepted_by_the_sdk(maker) -> None:
    token = maker.token()
    jwk = maker.jwk
    key = EC2Key(crv="P_256", x=signing.b64url_decode(jwk["x"]), y=signing.b64url_decode(jwk["y"]))
    msg = Sign1Message.decode(b45decode(token[4:]))
    msg.key = key
    assert msg.verify_signature()
    assert verify_parsed(parse_token(token), KeySet(maker.jwks()), time.time()).kid == jwk["kid"]


def test_a_tampered_payload_is_token_invalid(maker) -> None:
    keys = KeySet(maker.jwks())
    raw = b45decode(maker.token()[4:])
    tag = cbor2.loads(raw)
    protected, unprotected, payload, sig = tag.value
    claims = cbor2.loads(payload)
    claims[-70003] = 500_000  # a much larger face value
    forged = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, cbor2.dumps(claims), sig]))
    with pytest.raises(TokenInvalid):
        verify_parsed(parse_token("VC1:" + b45encode(forged)), keys, time.time())


def test_a_flipped_signature_bit_is_token_invalid(maker) -> None:
    tag = cbor2.loads(b45decode(maker.token()[4:]))
    protected, unprotected, payload, sig = tag.value
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    forged = "VC1:" + b45encode(cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, bad])))
    with pytest.raises(TokenInvalid):
        verify_parsed(parse_token(forged), KeySet(maker.jwks()), time.time())


def test_a_token_signed_by_another_key_with_a_known_kid_is_token_invalid(maker) -> None:
    impostor = signing.generate_private_key()
    token = signing.encode_token(impostor, maker.kid, maker.claims().to_cbor_map())  # claims the real kid
    with pytest.raises(TokenInvalid):
        verify_parsed(parse_token(token), KeySet(maker.jwks()), time.time())


def test_an_unknown_kid_triggers_exactly_one_key_refresh_then_token_invalid(fake, client, maker) -> None:
    serve_keys(fake, maker)
    client.verify(maker.token())
    stranger = TokenMaker()
    with pytest.raises(TokenInvalid):
        client.verify(stranger.token())
    assert len(fake.requests_to("/api/v1/keys")) == 2


def test_a_rotated_key_is_learned_by_the_one_refresh(fake, client, maker) -> None:
    serve_keys(fake, maker)
    client.verify(maker.token())
    successor = TokenMaker()
    serve_keys(fake, maker, successor)  # the service published the next key
    assert client.verify(successor.token()).kid == successor.jwk["kid"]
    assert len(fake.requests_to("/api/v1/keys")) == 2


def test_an_unknown_kid_while_offline_is_token_invalid(fake, client, maker) -> None:
    serve_keys(fake, maker)
    client.verify(maker.token())
    fake.stop()
    with pytest.raises(TokenInvalid, match="could not be refreshed"):
        client.verify(TokenMaker().token())


def test_without_any_cached_keys_and_no_network_verify_says_so(maker) -> None:
    c = VoucherClient(f"http://127.0.0.1:{dead_port()}", "m", "s", max_retries=0)
    with pytest.raises(APIConnectionError):
        c.verify(maker.token())
    c.close()


def test_expired_and_not_yet_valid_tokens_are_refused_locally(maker) -> None:
    keys, now = KeySet(maker.jwks()), int(time.time())
    with pytest.raises(VoucherExpired):
        verify_parsed(parse_token(maker.token(nbf=now - 100, exp=now - 1)), keys, now)
    with pytest.raises(VoucherNotYetValid):
        verify_parsed(parse_token(maker.token(nbf=now + 60, exp=now + 3600)), keys, now)
    # The window is [nbf, exp): valid at nbf, expired at exp.
    assert verify_parsed(parse_token(maker.token(nbf=now, exp=now + 1)), keys, now).nbf == now
    with pytest.raises(VoucherExpired):
        verify_parsed(parse_token(maker.token(nbf=now - 10, exp=now)), keys, now)


def test_the_client_refuses_an_expired_token(fake, client, maker) -> None:
    serve_keys(fake, maker)
    with pytest.raises(VoucherExpired) as info:
        client.verify(maker.token(exp=int(time.time()) - 5))
    assert info.value.code == "voucher_expired"


def _cose(protected: dict, payload: object, tag: int = 18, sig: bytes = b"\0" * 64) -> str:
    body = [cbor2.dumps(protected), {}, cbor2.dumps(payload), sig]
    return "VC1:" + b45encode(cbor2.dumps(cbor2.CBORTag(tag, body)))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "VC2:BB8",
        "VC1:not base45 at all!",
        "VC1:" + b45encode(b"\xff\xfe garbage"),
        "VC1:" + b45encode(cbor2.dumps([1, 2, 3])),
        _cose({1: -7, 4: b"12345678"}, {}, tag=98),
        _cose({1: -35, 4: b"12345678"}, {}),  # ES384 is not the contract's algorithm
        _cose({1: -7}, {}),  # no kid
    ],
)
def test_text_that_is_not_a_vc1_cose_sign1_is_token_malformed(text: str) -> None:
    with pytest.raises(TokenMalformed):
        parse_token(text)


def test_a_verified_payload_without_voucher_claims_is_token_malformed(maker) -> None:
    payload = {6: 1, 5: 1, 4: 2**40, 7: uuid.uuid4().bytes, -70001: "p"}  # tier, face, min spend missing
    token = signing.encode_token(maker.key, maker.kid, payload)
    with pytest.raises(TokenMalformed):
        verify_parsed(parse_token(token), KeySet(maker.jwks()), time.time())


def test_a_bool_where_an_amount_belongs_is_token_malformed(maker) -> None:
    payload = maker.claims().to_cbor_map()
    payload[-70003] = True
    token = signing.encode_token(maker.key, maker.kid, payload)
    with pytest.raises(TokenMalformed):
        verify_parsed(parse_token(token), KeySet(maker.jwks()), time.time())


def test_jwks_entries_that_are_not_es256_p256_are_ignored(maker) -> None:
    keys = KeySet(
        {
            "keys": [
                {"kty": "RSA", "kid": "x"},
                {"kty": "EC", "crv": "P-384", "kid": "y", "x": "", "y": ""},
                maker.jwk,
                "junk",
            ]
        }
    )
    assert list(keys.kids()) == [maker.kid]
