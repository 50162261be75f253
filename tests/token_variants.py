"""Other encodings of one signed VC1 token: each carries the same signed bytes (or the high-s twin of the
same signature), so a verifier that accepted it would give one voucher several texts."""

from __future__ import annotations

import cbor2

from voucher_service.adapters.base45 import b45decode, b45encode

# The order of the P-256 group.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def members(token: str) -> tuple[bytes, bytes, bytes]:
    """(protected, payload, signature) of a tagged COSE_Sign1 token."""
    obj = cbor2.loads(b45decode(token[4:]))
    assert isinstance(obj, cbor2.CBORTag) and obj.tag == 18
    protected, _unprotected, payload, signature = obj.value
    return protected, payload, signature


def _text(raw: bytes, prefix: str = "VC1:") -> str:
    return prefix + b45encode(raw)


def _bstr_long(data: bytes) -> bytes:
    """A byte string with a one-byte length head even when the length fits the initial byte."""
    return b"\x58" + bytes((len(data),)) + data


def high_s(signature: bytes) -> bytes:
    """The other valid ECDSA signature of the same message: (r, n - s)."""
    r, s = signature[:32], int.from_bytes(signature[32:], "big")
    return r + (P256_N - s).to_bytes(32, "big")


def is_low_s(signature: bytes) -> bool:
    return 0 < int.from_bytes(signature[32:], "big") <= P256_N // 2


def with_low_s(token: str) -> str:
    """The token with its signature in low-s form (a signer from before the fix may have written high-s)."""
    protected, payload, signature = members(token)
    if not is_low_s(signature):
        signature = high_s(signature)
    return _text(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature])))


def encoding_variants(token: str) -> dict[str, str]:
    """Texts that decode to the same COSE content as `token` but are not its one canonical encoding."""
    protected, payload, signature = members(token)
    raw = b45decode(token[4:])
    body = [protected, {}, payload, signature]
    tail = raw[1:]  # everything after the tag's one-byte head 0xd2
    return {
        "untagged": _text(cbor2.dumps(body)),
        "trailing_zero_byte": _text(raw + b"\x00"),
        "trailing_cbor_item": _text(raw + cbor2.dumps(None)),
        "two_tokens": _text(raw + raw),
        "tag_with_long_head": _text(b"\xd8\x12" + tail),
        "double_tagged": _text(cbor2.dumps(cbor2.CBORTag(18, cbor2.CBORTag(18, body)))),
        "indefinite_array": _text(b"\xd2\x9f" + b"".join(cbor2.dumps(m) for m in body) + b"\xff"),
        "protected_with_long_length": _text(
            b"\xd2\x84" + _bstr_long(protected) + b"\xa0" + cbor2.dumps(payload) + cbor2.dumps(signature)
        ),
        "indefinite_payload": _text(
            b"\xd2\x84"
            + cbor2.dumps(protected)
            + b"\xa0"
            + b"\x5f"
            + cbor2.dumps(payload[:5])
            + cbor2.dumps(payload[5:])
            + b"\xff"
            + cbor2.dumps(signature)
        ),
        "unprotected_kid": _text(cbor2.dumps(cbor2.CBORTag(18, [protected, {4: b"x"}, payload, signature]))),
        "unprotected_junk": _text(
            cbor2.dumps(cbor2.CBORTag(18, [protected, {"note": "hi"}, payload, signature]))
        ),
        "leading_space": " " + token,
        "trailing_space": token + " ",
        "trailing_newline": token + "\n",
        "trailing_crlf": token + "\r\n",
        "leading_bom": "\ufeff" + token,
        "lowercase_prefix": "vc1:" + token[4:],
        "lowercase_text": token[:4] + token[4:].lower(),
        "full_width_prefix": "ＶＣ１：" + token[4:],
    }


def high_s_variant(token: str) -> str:
    """The token with the high-s twin of its signature (same r, s' = n - s)."""
    protected, payload, signature = members(token)
    return _text(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, high_s(signature)])))
