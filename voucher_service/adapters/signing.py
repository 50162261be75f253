"""ES256 voucher-signing keys and the COSE_Sign1 / Base45 token construction of the contract (§3)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import threading
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from voucher_service.adapters.base45 import b45decode, b45encode
from voucher_service.adapters.key_storage import decrypt_private_key
from voucher_service.domain.presentations import PRESENTATION_PREFIX, VP_CLAIM_IAT, VP_CLAIM_TOKEN, HolderKey
from voucher_service.domain.states import SigningKeyStatus

COSE_TAG_SIGN1 = 18
ALG_ES256 = -7
HDR_ALG = 1
HDR_KID = 4
# The order of the P-256 group: of the two valid signatures (r, s) and (r, n - s) of one message, only the
# low-s one (s <= n/2) is accepted, so one voucher has one token.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64url(data: bytes) -> str:
    """Base64url without padding, as JWK uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def kid_bytes_for(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """First 8 bytes of SHA-256 over the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()[:8]


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The EC P-256 JWK of a public key, with its contract kid."""
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
        "kid": b64url(kid_bytes_for(public_key)),
        "alg": "ES256",
        "use": "sig",
    }


def public_key_from_jwk(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    """Load an EC P-256 public key from a JWK; raise ValueError when it is not one."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("key must be an EC P-256 JWK")
    try:
        x = int.from_bytes(b64url_decode(str(jwk["x"])), "big")
        y = int.from_bytes(b64url_decode(str(jwk["y"])), "big")
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"not a valid P-256 point: {exc}") from exc


def sign_es256_raw(private_key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ES256 signature as the raw 64-byte r||s that COSE uses."""
    r, s = decode_dss_signature(private_key.sign(message, ec.ECDSA(hashes.SHA256())))
    if s > P256_N // 2:
        s = P256_N - s  # the low-s form: the only one verify_es256_raw accepts
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_es256_raw(
    public_key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes, *, low_s_only: bool = False
) -> bool:
    """Check a raw r||s ES256 signature; with `low_s_only` its high-s twin (s > n/2) is refused.

    Tokens are held to low-s (one voucher, one token); a till's journal records are not, since any
    ECDSA signer may have made them and their identity is their hash chain, not their signature.
    """
    if len(signature) != 64 or (low_s_only and int.from_bytes(signature[32:], "big") > P256_N // 2):
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def _protected_header(kid: bytes) -> bytes:
    return cbor2.dumps({HDR_ALG: ALG_ES256, HDR_KID: kid})


def _sign1_bytes(protected: bytes, payload: bytes, signature: bytes) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(COSE_TAG_SIGN1, [protected, {}, payload, signature]))


def cose_sign1(private_key: ec.EllipticCurvePrivateKey, kid: bytes, payload: dict[int, object]) -> bytes:
    """Build a tagged COSE_Sign1 with protected {alg: ES256, kid}."""
    protected = _protected_header(kid)
    body = cbor2.dumps(payload)
    signature = sign_es256_raw(private_key, _sig_structure(protected, body))
    return _sign1_bytes(protected, body, signature)


@dataclass(frozen=True)
class ParsedToken:
    """A decoded COSE_Sign1 that has not been verified yet."""

    kid: bytes
    protected: bytes
    payload_bytes: bytes
    payload: object
    signature: bytes

    @property
    def kid_b64(self) -> str:
        return b64url(self.kid)

    def verify(self, public_key: ec.EllipticCurvePublicKey) -> bool:
        """Check the signature with the given key."""
        message = _sig_structure(self.protected, self.payload_bytes)
        return verify_es256_raw(public_key, message, self.signature, low_s_only=True)


def parse_token(text: str, prefix: str = "VC1:") -> ParsedToken:
    """Decode `prefix + Base45(COSE_Sign1)`; raise ValueError when it is not such a token.

    Exactly one text per token is accepted: the one `encode_token` writes. The COSE_Sign1 must be tagged
    (18), in the signer's CBOR encoding (shortest heads, definite lengths, an empty unprotected header,
    nothing after it), with the protected header {1: -7, 4: kid} as the signer writes it. No whitespace
    or case variant passes (Base45 has no lowercase, and its range checks make it canonical).
    """
    if not isinstance(text, str) or not text.startswith(prefix):
        raise ValueError(f"token does not start with {prefix}")
    return parse_token_bytes(b45decode(text[len(prefix) :]))


def parse_token_bytes(raw: bytes) -> ParsedToken:
    """Decode a COSE_Sign1 as `parse_token` does, from the bytes its Base45 text stands for."""
    try:
        obj = cbor2.loads(raw)
    except Exception as exc:  # cbor2 raises several types for garbage
        raise ValueError(f"token is not CBOR: {exc}") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_TAG_SIGN1:
        raise ValueError("token is not a tagged COSE_Sign1 (tag 18)")
    obj = obj.value
    if not (isinstance(obj, list) and len(obj) == 4):
        raise ValueError("COSE_Sign1 must be an array of four")
    protected, unprotected, payload_bytes, signature = obj
    if not all(type(x) is bytes for x in (protected, payload_bytes, signature)):
        raise ValueError("COSE_Sign1 members have the wrong types")
    if unprotected != {}:
        raise ValueError("the unprotected header must be empty")
    if _sign1_bytes(protected, payload_bytes, signature) != raw:
        raise ValueError("token is not in its one CBOR encoding (trailing bytes, long or indefinite lengths)")
    try:
        header = cbor2.loads(protected) if protected else {}
        payload = cbor2.loads(payload_bytes)
    except Exception as exc:
        raise ValueError(f"COSE member is not CBOR: {exc}") from None
    if not isinstance(header, dict) or header.get(HDR_ALG) != ALG_ES256:
        raise ValueError("protected header must say ES256")
    kid = header.get(HDR_KID)
    if not isinstance(kid, bytes):
        raise ValueError("protected header lacks a kid")
    if protected != _protected_header(kid):
        raise ValueError("protected header is not {1: -7, 4: kid} as the signer writes it")
    return ParsedToken(kid, protected, payload_bytes, payload, signature)


# ---------------------------------------------------------------- VP1 presentations (CONTRACT §10)

VP_PROTECTED = cbor2.dumps({HDR_ALG: ALG_ES256})


@dataclass(frozen=True)
class ParsedPresentation:
    """A decoded VP1 whose device signature has not been checked yet."""

    payload_bytes: bytes
    signature: bytes
    token: ParsedToken  # the VC1 it carries, not verified either
    token_raw: bytes
    presented_at: int

    def verify(self, holder_key: HolderKey) -> bool:
        """Check the device signature with the VC1's `cnf` key; either ECDSA twin (s or n - s) counts:
        WebCrypto does not normalise s, and a presentation's identity is the voucher, not its bytes."""
        return verify_es256_raw(
            holder_public_key(holder_key), _sig_structure(VP_PROTECTED, self.payload_bytes), self.signature
        )


def parse_presentation(text: str) -> ParsedPresentation:
    """Decode `VP1:` + Base45(COSE_Sign1 {1: -7} over {6: iat, -70201: VC1 bytes}); raise ValueError when
    it is not exactly that (the same one-encoding rule as VC1, in deterministic CBOR)."""
    if not isinstance(text, str) or not text.startswith(PRESENTATION_PREFIX):
        raise ValueError(f"presentation does not start with {PRESENTATION_PREFIX}")
    raw = b45decode(text[len(PRESENTATION_PREFIX) :])
    try:
        obj = cbor2.loads(raw)
    except Exception as exc:
        raise ValueError(f"presentation is not CBOR: {exc}") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_TAG_SIGN1:
        raise ValueError("presentation is not a tagged COSE_Sign1 (tag 18)")
    if not (isinstance(obj.value, list) and len(obj.value) == 4):
        raise ValueError("COSE_Sign1 must be an array of four")
    protected, unprotected, payload_bytes, signature = obj.value
    if not all(type(x) is bytes for x in (protected, payload_bytes, signature)) or unprotected != {}:
        raise ValueError("COSE_Sign1 members have the wrong types")
    if protected != VP_PROTECTED:
        raise ValueError("the presentation's protected header must be {1: -7}")
    if _sign1_bytes(protected, payload_bytes, signature) != raw:
        raise ValueError("presentation is not in its one CBOR encoding")
    try:
        payload = cbor2.loads(payload_bytes)
    except Exception as exc:
        raise ValueError(f"presentation payload is not CBOR: {exc}") from None
    if not isinstance(payload, dict) or set(payload) != {VP_CLAIM_IAT, VP_CLAIM_TOKEN}:
        raise ValueError("presentation payload must be {6: iat, -70201: VC1}")
    at, token_raw = payload[VP_CLAIM_IAT], payload[VP_CLAIM_TOKEN]
    if type(at) is not int or type(token_raw) is not bytes:
        raise ValueError("presentation payload members have the wrong types")
    if cbor2.dumps({VP_CLAIM_IAT: at, VP_CLAIM_TOKEN: token_raw}) != payload_bytes:
        raise ValueError("presentation payload is not in deterministic CBOR")
    return ParsedPresentation(payload_bytes, signature, parse_token_bytes(token_raw), token_raw, at)


def encode_presentation(device_key: ec.EllipticCurvePrivateKey, token: str, presented_at: int) -> str:
    """A VP1 over a VC1 text at `presented_at`, as the wallet makes it (tests, benchmarks, platforms)."""
    token_raw = b45decode(token[len("VC1:") :])
    payload = cbor2.dumps({VP_CLAIM_IAT: presented_at, VP_CLAIM_TOKEN: token_raw})
    r, s = decode_dss_signature(
        device_key.sign(_sig_structure(VP_PROTECTED, payload), ec.ECDSA(hashes.SHA256()))
    )
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # not normalised: as a browser signs
    return PRESENTATION_PREFIX + b45encode(_sign1_bytes(VP_PROTECTED, payload, signature))


def holder_public_key(key: HolderKey) -> ec.EllipticCurvePublicKey:
    """The cryptography key of a device key; raise ValueError when the point is not on P-256."""
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(key.x, "big"), int.from_bytes(key.y, "big"), ec.SECP256R1()
    )
    return numbers.public_key()


def holder_key_of(public_key: ec.EllipticCurvePublicKey) -> HolderKey:
    """The device key of a cryptography public key."""
    n = public_key.public_numbers()
    return HolderKey(n.x.to_bytes(32, "big"), n.y.to_bytes(32, "big"))


def holder_key_from_jwk(jwk: object) -> HolderKey:
    """A device key sent as a public JWK (EC P-256, x and y only matter); raise ValueError otherwise."""
    if not isinstance(jwk, dict) or "d" in jwk:
        raise ValueError("device_key must be a public JWK object")
    x, y = jwk.get("x"), jwk.get("y")
    if not isinstance(x, str) or not isinstance(y, str) or len(x) != 43 or len(y) != 43:
        raise ValueError("device_key x and y must be 43-character base64url")
    key = holder_key_of(public_key_from_jwk(jwk))  # checks kty, crv and that the point is on the curve
    if b64url(key.x) != x or b64url(key.y) != y:
        raise ValueError("device_key x and y must be canonical base64url")
    return key


def encode_token(
    private_key: ec.EllipticCurvePrivateKey, kid: bytes, payload: dict[int, object], prefix: str = "VC1:"
) -> str:
    """Sign and encode a token: prefix + Base45(COSE_Sign1)."""
    return prefix + b45encode(cose_sign1(private_key, kid, payload))


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class LoadedKey:
    """A signing key as the process uses it."""

    kid: str
    kid_bytes: bytes
    public_key: ec.EllipticCurvePublicKey
    jwk: dict[str, Any]
    status: str
    private_key: ec.EllipticCurvePrivateKey | None = None


class KeyRing:
    """Keys loaded from the database: the active one signs, all published ones verify.

    Reloaded when a kid is not known or after `ttl` seconds, so a rotation in another process is seen.
    A stale ring is reloaded by one thread while the others go on with the keys they have, and a private
    key already decrypted is not decrypted again (its scrypt costs ~0.1 s of CPU: every thread of a
    worker re-deriving it at once stalled the seed-scale rush).
    """

    def __init__(self, loader: Any, passphrase: str, ttl_s: float = 30.0) -> None:
        self._loader = loader  # callable returning list of SigningKey-like rows
        self._passphrase = passphrase
        self._ttl = dt.timedelta(seconds=ttl_s)
        self._lock = threading.Lock()
        self._reloading = threading.Lock()
        self._keys: dict[str, LoadedKey] = {}
        self._active: LoadedKey | None = None
        self._loaded_at: dt.datetime | None = None
        # (kid, encrypted blob) -> its private key; only the current active key's entry is kept.
        self._decrypted: dict[tuple[str, bytes], ec.EllipticCurvePrivateKey] = {}

    def reload(self) -> None:
        """Read the keys again from the database."""
        rows = self._loader()
        keys: dict[str, LoadedKey] = {}
        active = None
        decrypted = {}
        for row in rows:
            pub = public_key_from_jwk(row.public_jwk)
            loaded = LoadedKey(row.kid, b64url_decode(row.kid), pub, dict(row.public_jwk), row.status)
            if row.status == SigningKeyStatus.ACTIVE:
                cache_key = (row.kid, bytes(row.private_key_pem))
                private = self._decrypted.get(cache_key)
                if private is None:
                    private = decrypt_private_key(row.private_key_pem, self._passphrase)
                decrypted[cache_key] = loaded.private_key = private
                active = loaded
            keys[row.kid] = loaded
        with self._lock:
            self._keys, self._active, self._decrypted = keys, active, decrypted
            self._loaded_at = dt.datetime.now(dt.UTC)

    def _fresh(self) -> None:
        loaded_at = self._loaded_at
        if loaded_at is not None and dt.datetime.now(dt.UTC) - loaded_at <= self._ttl:
            return
        # Never loaded: wait for the one loading. Stale: one thread reloads, the others use what they have.
        if not self._reloading.acquire(blocking=loaded_at is None):
            return
        try:
            if self._loaded_at is loaded_at:  # nobody reloaded while this thread waited
                self.reload()
        finally:
            self._reloading.release()

    def active(self) -> LoadedKey:
        """The key that signs now; raise RuntimeError when none is configured."""
        self._fresh()
        if self._active is None:
            self.reload()
        if self._active is None or self._active.private_key is None:
            raise RuntimeError("no active signing key: run `voucher-admin init-db`")
        return self._active

    def find(self, kid: str) -> LoadedKey | None:
        """The published key with this kid, reloading once if it is not known."""
        self._fresh()
        key = self._keys.get(kid)
        if key is None:
            self.reload()
            key = self._keys.get(kid)
        return key
