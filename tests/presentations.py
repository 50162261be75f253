"""Helpers of the holder-binding tests: a device key as a wallet holds it, its JWK, its VP1 codes."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from voucher_service.adapters import signing
from voucher_service.adapters.base45 import b45decode, b45encode

P256_N = signing.P256_N


@dataclass
class Device:
    """A phone's device key (the wallet keeps it non-extractable in IndexedDB; tests hold it here)."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, str]:
        """The public JWK the wallet sends, as WebCrypto exports it (with its extra members)."""
        n = self.key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": signing.b64url(n.x.to_bytes(32, "big")),
            "y": signing.b64url(n.y.to_bytes(32, "big")),
            "ext": True,  # type: ignore[dict-item]
            "key_ops": ["verify"],  # type: ignore[dict-item]
        }

    def present(self, token: str, at: int) -> str:
        """A VP1 of the VC1 `token` made at unix time `at`."""
        return signing.encode_presentation(self.key, token, at)

    def present_with_s(self, token: str, at: int, *, high: bool) -> str:
        """A VP1 whose signature has a high (s > n/2) or low s, as a browser may give either."""
        while True:
            code = self.present(token, at)
            s = int.from_bytes(_sign1(code)[3][32:], "big")
            if (s > P256_N // 2) == high:
                return code


def _sign1(code: str) -> list:  # type: ignore[type-arg]
    import cbor2

    return list(cbor2.loads(b45decode(code[4:])).value)


def with_twin_signature(code: str) -> str:
    """The same VP1 with its signature's ECDSA twin (r, n - s): equally valid."""
    import cbor2

    protected, unprotected, payload, sig = _sign1(code)
    s = P256_N - int.from_bytes(sig[32:], "big")
    twin = sig[:32] + s.to_bytes(32, "big")
    return code[:4] + b45encode(cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, twin])))


def sign_raw_any(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """A raw r||s signature without low-s normalisation."""
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")
