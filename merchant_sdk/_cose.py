"""Offline verification of VC1 tokens: Base45 -> COSE_Sign1 (tag 18, ES256) -> CBOR voucher claims.

Kept lean on purpose: public keys are parsed once into a KeySet, the Sig_structure is assembled from
bytes, and nothing is re-derived per call (benchmarks/offline_verify.py holds it to raw ES256 speed).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from merchant_sdk._base45 import b45decode
from merchant_sdk._errors import (
    PresentationInvalid,
    PresentationRequired,
    PresentationStale,
    TokenInvalid,
    TokenMalformed,
    VoucherExpired,
    VoucherNotYetValid,
)
from merchant_sdk._models import VoucherClaims

TOKEN_PREFIX = "VC1:"
COSE_TAG_SIGN1 = 18
ALG_ES256 = -7
HDR_ALG, HDR_KID = 1, 4
CLAIM_IAT, CLAIM_NBF, CLAIM_EXP, CLAIM_CTI = 6, 5, 4, 7
CLAIM_PROGRAM, CLAIM_TIER, CLAIM_FACE, CLAIM_MIN_SPEND = -70001, -70002, -70003, -70004
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# The constant head of Sig_structure: array(4), text(10) "Signature1"; then bstr protected, bstr "" ...
_SIG1_HEAD = b"\x84\x6aSignature1"
# The order of P-256: of the twins (r, s) and (r, n - s) only the low-s signature (s <= n/2) verifies.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HALF_N = P256_N // 2
# Holder binding (CONTRACT §10): VC1 claim 8 is RFC 8747's cnf, {1: COSE_Key EC2 P-256}; a VP1 is
# "VP1:" + Base45(COSE_Sign1 {1: -7} over {6: iat, -70201: the VC1's COSE_Sign1 bytes}) by that key.
CLAIM_CNF = 8
PRESENTATION_PREFIX = "VP1:"
_VP_PROTECTED = b"\xa1\x01\x26"  # {1: -7}
VP_CLAIM_IAT, VP_CLAIM_TOKEN = 6, -70201
PRESENTATION_MAX_AGE_S = 60
PRESENTATION_CLOCK_ALLOWANCE_S = 10


def b64url(data: bytes) -> str:
    """Base64url without padding, as JWK uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; raise ValueError when it is not base64url."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not base64url: {exc}") from None


def _bstr(data: bytes) -> bytes:
    """A CBOR byte string: the major-type-2 head, then the bytes."""
    n = len(data)
    if n < 24:
        head = bytes((0x40 | n,))
    elif n < 0x100:
        head = bytes((0x58, n))
    elif n < 0x10000:
        head = b"\x59" + n.to_bytes(2, "big")
    else:
        head = b"\x5a" + n.to_bytes(4, "big")
    return head + data


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """RFC 9052 Sig_structure for COSE_Sign1 with empty external AAD, as bytes."""
    return _SIG1_HEAD + _bstr(protected) + b"\x40" + _bstr(payload)


def public_key_from_jwk(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    """Load an EC P-256 public key from a JWK; raise ValueError when it is not one."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("key must be an EC P-256 JWK")
    try:
        x = int.from_bytes(b64url_decode(str(jwk["x"])), "big")
        y = int.from_bytes(b64url_decode(str(jwk["y"])), "big")
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"not a valid P-256 point: {exc}") from None


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The EC P-256 JWK of a public key, with the contract's kid (SHA-256 of the SPKI, 8 bytes)."""
    numbers = public_key.public_numbers()
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
        "kid": b64url(hashlib.sha256(der).digest()[:8]),
        "alg": "ES256",
        "use": "sig",
    }


def sign_raw(private_key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ES256 signature as raw 64-byte r||s, in its low-s form."""
    r, s = decode_dss_signature(private_key.sign(message, _ECDSA_SHA256))
    if s > _HALF_N:
        s = P256_N - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_raw(public_key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> bool:
    """Check a raw r||s ES256 signature (a journal record's: either twin; tokens are held to low-s)."""
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, message, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


class KeySet:
    """Parsed voucher-signing public keys by kid bytes; replaced as a whole when keys are refreshed."""

    def __init__(self, jwks: Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._keys: dict[bytes, ec.EllipticCurvePublicKey] = {}
        self.jwks: dict[str, Any] = {"keys": []}
        self.loaded = False
        if jwks is not None:
            self.load(jwks)

    def load(self, jwks: Mapping[str, Any]) -> None:
        """Replace the keys with those of a JWKS document; keys that are not ES256 P-256 are skipped."""
        keys: dict[bytes, ec.EllipticCurvePublicKey] = {}
        entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
        for jwk in entries if isinstance(entries, list) else []:
            if not isinstance(jwk, Mapping) or jwk.get("alg", "ES256") != "ES256" or not jwk.get("kid"):
                continue
            try:
                keys[b64url_decode(str(jwk["kid"]))] = public_key_from_jwk(jwk)
            except ValueError:
                continue
        with self._lock:
            self._keys = keys
            self.jwks = {
                "keys": [dict(k) for k in entries if isinstance(k, Mapping)]
                if isinstance(entries, list)
                else []
            }
            self.loaded = True

    def get(self, kid: bytes) -> ec.EllipticCurvePublicKey | None:
        """The public key with this kid, or None."""
        return self._keys.get(kid)

    def kids(self) -> Iterable[bytes]:
        """The kids known."""
        return tuple(self._keys)


class ParsedToken(NamedTuple):  # a NamedTuple: built on every verify(), and cheaper than a dataclass
    """A decoded, not yet verified COSE_Sign1."""

    kid: bytes
    protected: bytes
    payload: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        """The Sig_structure the signature covers."""
        return sig_structure(self.protected, self.payload)


def _kid_of(protected: bytes) -> bytes:
    """The kid of an ES256 protected header; each distinct header is parsed once (there is one per key)."""
    kid = _PROTECTED_KIDS.get(protected)
    if kid is not None:
        return kid
    try:
        header = cbor2.loads(protected)
    except Exception:
        raise TokenMalformed("The protected header is not CBOR.") from None
    if not isinstance(header, dict) or header.get(HDR_ALG) != ALG_ES256:
        raise TokenMalformed("The protected header must say ES256.")
    kid = header.get(HDR_KID)
    if not isinstance(kid, bytes):
        raise TokenMalformed("The protected header lacks a kid.")
    if protected != cbor2.dumps({HDR_ALG: ALG_ES256, HDR_KID: kid}):
        raise TokenMalformed("The protected header is not {1: -7, 4: kid} as the service writes it.")
    if len(_PROTECTED_KIDS) < 256:  # bounded: forged headers cannot grow it without limit
        _PROTECTED_KIDS[protected] = kid
    return kid


_PROTECTED_KIDS: dict[bytes, bytes] = {}


def _bstr_at(raw: bytes, pos: int) -> tuple[bytes, int]:
    """The byte string whose head is at `pos`, and the position after it; the head must be the shortest
    one for its length (as the service writes it), and definite."""
    head = raw[pos]
    if 0x40 <= head <= 0x57:
        n, pos = head - 0x40, pos + 1
    elif head == 0x58 and raw[pos + 1] >= 24:
        n, pos = raw[pos + 1], pos + 2
    elif head == 0x59 and (raw[pos + 1] << 8) | raw[pos + 2] >= 0x100:
        n, pos = (raw[pos + 1] << 8) | raw[pos + 2], pos + 3
    else:
        raise TokenMalformed("A COSE_Sign1 member is not a byte string in its shortest encoding.")
    if pos + n > len(raw):
        raise TokenMalformed("The COSE_Sign1 is truncated.")
    return raw[pos : pos + n], pos + n


def _sign1_members(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(protected, payload, signature) of the one encoding the service writes: tag 18, an array of four,
    shortest definite heads, an empty unprotected map, nothing after it. Anything else is malformed, so
    one voucher has exactly one token (read by slicing: verify() is the till's hot path)."""
    try:
        if raw[:1] != b"\xd2":
            raise TokenMalformed("The voucher is not a tagged COSE_Sign1 (tag 18).")
        if raw[1:2] != b"\x84":
            raise TokenMalformed("COSE_Sign1 must be an array of four.")
        protected, pos = _bstr_at(raw, 2)
        if raw[pos] != 0xA0:
            raise TokenMalformed("The COSE_Sign1 unprotected header must be empty.")
        payload, pos = _bstr_at(raw, pos + 1)
        signature, pos = _bstr_at(raw, pos)
    except IndexError:
        raise TokenMalformed("The COSE_Sign1 is truncated.") from None
    if pos != len(raw):
        raise TokenMalformed("The voucher text carries bytes after its COSE_Sign1.")
    return protected, payload, signature


def parse_token(token: str) -> ParsedToken:
    """Decode `VC1:` + Base45(COSE_Sign1); raise TokenMalformed when it is not exactly such a token
    (no whitespace, no other case, no other CBOR encoding: the text the service signed, and only it)."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
        raise TokenMalformed("The voucher text does not start with VC1:.")
    try:
        raw = b45decode(token[4:])
    except ValueError:
        raise TokenMalformed("The voucher text is not Base45.") from None
    protected, payload, signature = _sign1_members(raw)
    return ParsedToken(_kid_of(protected), protected, payload, signature)


def claims_from_payload(payload: bytes, kid: bytes) -> VoucherClaims:
    """The voucher claims of a verified payload; raise TokenMalformed when a claim is missing or mistyped."""
    return _claims_and_point(payload, kid)[0]


def _holder_point(cnf: Any) -> bytes:
    """The uncompressed SEC1 point (0x04 || x || y) of a cnf claim {1: {1: 2, -1: 1, -2: x, -3: y}}."""
    key = cnf.get(1) if isinstance(cnf, dict) and len(cnf) == 1 else None
    if not isinstance(key, dict) or len(key) != 4 or key.get(1) != 2 or key.get(-1) != 1:
        raise TokenMalformed("The voucher's cnf claim is not {1: COSE_Key} of an EC2 P-256 key.")
    x, y = key.get(-2), key.get(-3)
    if type(x) is not bytes or type(y) is not bytes or len(x) != 32 or len(y) != 32:
        raise TokenMalformed("The voucher's cnf key coordinates are not 32-byte strings.")
    return b"\x04" + x + y


def holder_thumbprint(point: bytes) -> str:
    """RFC 9679 COSE Key thumbprint (hex) of a P-256 key given as its uncompressed point."""
    encoded = b"\xa4\x01\x02\x20\x01\x21\x58\x20" + point[1:33] + b"\x22\x58\x20" + point[33:]
    return hashlib.sha256(encoded).hexdigest()


def _claims_and_point(payload: bytes, kid: bytes) -> tuple[VoucherClaims, bytes | None]:
    try:
        claims = cbor2.loads(payload)
        cti, program, tier = claims[CLAIM_CTI], claims[CLAIM_PROGRAM], claims[CLAIM_TIER]
        face, min_spend = claims[CLAIM_FACE], claims[CLAIM_MIN_SPEND]
        iat, nbf, exp = claims[CLAIM_IAT], claims[CLAIM_NBF], claims[CLAIM_EXP]
    except Exception as exc:  # cbor2 errors, not a map, missing keys
        raise TokenMalformed(f"The voucher payload lacks a claim: {exc!r}") from None
    # `type(x) is int` also refuses bools; checked inline because this runs on every verify().
    if not (
        type(cti) is bytes
        and len(cti) == 16
        and type(program) is str
        and type(tier) is str
        and type(face) is int
        and type(min_spend) is int
        and type(iat) is int
        and type(nbf) is int
        and type(exp) is int
    ):
        raise TokenMalformed("The voucher payload has a claim of the wrong type.")
    point = None if CLAIM_CNF not in claims else _holder_point(claims[CLAIM_CNF])
    h = cti.hex()
    return VoucherClaims(
        voucher_id=f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
        program_id=program,
        tier=tier,
        face_value_fen=face,
        min_spend_fen=min_spend,
        iat=iat,
        nbf=nbf,
        exp=exp,
        kid=_kid_text(kid),
        holder_key_thumbprint=None if point is None else holder_thumbprint(point),
    ), point


@functools.lru_cache(maxsize=256)
def _kid_text(kid: bytes) -> str:
    return b64url(kid)


def verify_parsed(parsed: ParsedToken, keys: KeySet, now: float) -> VoucherClaims:
    """Check signature, kid and validity window of a parsed token against `keys` at unix time `now`."""
    return _verify_signed(parsed, keys, now)[0]


def _verify_signed(parsed: ParsedToken, keys: KeySet, now: float) -> tuple[VoucherClaims, bytes | None]:
    public_key = keys.get(parsed.kid)
    if public_key is None:
        raise TokenInvalid(f"The voucher was signed by an unknown key (kid {b64url(parsed.kid)}).")
    sig = parsed.signature
    if len(sig) != 64:
        raise TokenInvalid("The voucher signature is not a 64-byte ES256 signature.")
    if int.from_bytes(sig[32:], "big") > _HALF_N:
        raise TokenInvalid("The voucher signature is not in its low-s form (the service signs only that).")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public_key.verify(
            der, _SIG1_HEAD + _bstr(parsed.protected) + b"\x40" + _bstr(parsed.payload), _ECDSA_SHA256
        )
    except InvalidSignature:
        raise TokenInvalid("The voucher signature does not verify.") from None
    claims, point = _claims_and_point(parsed.payload, parsed.kid)
    if now < claims.nbf:
        raise VoucherNotYetValid(f"The voucher is valid from unix time {claims.nbf}.")
    if now >= claims.exp:
        raise VoucherExpired(f"The voucher expired at unix time {claims.exp}.")
    return claims, point


class ParsedPresentation(NamedTuple):
    """A decoded VP1 whose signatures have not been checked yet."""

    token: ParsedToken  # the VC1 it carries
    payload: bytes
    signature: bytes
    presented_at: int


def parse_presentation(text: str) -> ParsedPresentation:
    """Decode `VP1:` + Base45(COSE_Sign1); raise TokenMalformed unless it is exactly the one encoding
    (tag 18, protected {1: -7}, empty unprotected, payload {6: iat, -70201: VC1 bytes} in deterministic
    CBOR) around a VC1 in its one encoding."""
    if not isinstance(text, str) or not text.startswith(PRESENTATION_PREFIX):
        raise TokenMalformed("The code does not start with VP1:.")
    try:
        raw = b45decode(text[4:])
    except ValueError:
        raise TokenMalformed("The live code is not Base45.") from None
    protected, payload, signature = _sign1_members(raw)
    if protected != _VP_PROTECTED:
        raise TokenMalformed("The live code's protected header must be {1: -7}.")
    at, inner = _presentation_payload(payload)
    t_protected, t_payload, t_signature = _sign1_members(inner)
    return ParsedPresentation(
        ParsedToken(_kid_of(t_protected), t_protected, t_payload, t_signature), payload, signature, at
    )


def _presentation_payload(payload: bytes) -> tuple[int, bytes]:
    """(iat, VC1 bytes) of the one encoding: map(2), 6, a shortest uint, -70201, a shortest bstr, end."""
    bad = TokenMalformed("The live code's payload is not {6: iat, -70201: VC1} in deterministic CBOR.")
    if payload[:2] != b"\xa2\x06" or len(payload) < 3:
        raise bad
    h = payload[2]
    if h < 0x18:
        at, pos = h, 3
    elif 0x18 <= h <= 0x1B:
        size = 1 << (h - 0x18)
        at, pos = int.from_bytes(payload[3 : 3 + size], "big"), 3 + size
        if pos > len(payload) or at < (24 if size == 1 else 1 << (4 * size)):
            raise bad  # truncated, or not the shortest head for the value
    else:
        raise bad
    if payload[pos : pos + 5] != b"\x3a\x00\x01\x12\x38":
        raise bad
    try:
        inner, end = _bstr_at(payload, pos + 5)
    except (IndexError, TokenMalformed):
        raise bad from None
    if end != len(payload):
        raise bad
    return at, inner


_HOLDER_KEYS: dict[bytes, ec.EllipticCurvePublicKey] = {}


def _holder_key(point: bytes) -> ec.EllipticCurvePublicKey:
    key = _HOLDER_KEYS.get(point)
    if key is None:
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError:
            raise PresentationInvalid("The voucher's device key is not a P-256 point.") from None
        if len(_HOLDER_KEYS) >= 1024:  # bounded: a till sees each voucher a few times at most
            _HOLDER_KEYS.clear()
        _HOLDER_KEYS[point] = key
    return key


def verify_presentation(presented: ParsedPresentation, keys: KeySet, now: float) -> VoucherClaims:
    """Check a VP1 at unix time `now`: the VC1 as verify_parsed does (low-s), then the device signature
    with the VC1's cnf key (either ECDSA twin: browsers do not normalise s), then its freshness (at most
    60 s old, at most 10 s ahead of `now`)."""
    claims, point = _verify_signed(presented.token, keys, now)
    if point is None:
        raise PresentationInvalid("The presented voucher is not bound to a device key.")
    sig = presented.signature
    if len(sig) != 64:
        raise PresentationInvalid("The live code's signature is not a 64-byte ES256 signature.")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        _holder_key(point).verify(
            der, _SIG1_HEAD + _bstr(_VP_PROTECTED) + b"\x40" + _bstr(presented.payload), _ECDSA_SHA256
        )
    except InvalidSignature:
        raise PresentationInvalid("The live code is not signed by the voucher's device key.") from None
    at = presented.presented_at
    if at > now + PRESENTATION_CLOCK_ALLOWANCE_S or now - at > PRESENTATION_MAX_AGE_S:
        raise PresentationStale(
            f"The live code was made at unix time {at}, now is {int(now)}: ask for the code on the phone again."
        )
    claims.presented_at = at
    return claims


def verify_code(text: str, keys: KeySet, now: float) -> VoucherClaims:
    """Verify what a till scanned, a VC1 or a VP1; a holder-bound VC1 alone is refused
    (PresentationRequired). The caller refuses an unbound VC1 of a `required` programme."""
    if isinstance(text, str) and text.startswith(PRESENTATION_PREFIX):
        return verify_presentation(parse_presentation(text), keys, now)
    claims = verify_parsed(parse_token(text), keys, now)
    if claims.holder_key_thumbprint is not None:
        raise PresentationRequired("This voucher is bound to its holder's phone: scan the live code (VP1:).")
    return claims
