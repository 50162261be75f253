"""Voucher-signing private keys at rest: scrypt(passphrase) -> AES-256-GCM over the PKCS8 DER.

PKCS8's own BestAvailableEncryption is PBES2 with PBKDF2-SHA256 at 2,048 iterations, far below
today's recommended cost, and cryptography offers no builder to raise it for PKCS8; so the key is kept
in this small envelope instead. Keys stored the old way still load (and are re-encrypted by
services.keys.upgrade_key_encryption).
"""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = ["SCRYPT_N", "decrypt_private_key", "encrypt_private_key", "is_legacy_encryption", "scrypt_cost"]

SCRYPT_MAGIC = b"vsk-scrypt1:"
SCRYPT_N = 2**15  # 32 MiB with r=8; tests may pass a smaller n, which the blob records
SCRYPT_R, SCRYPT_P = 8, 1


def _scrypt_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, passphrase: str, scrypt_n: int = SCRYPT_N) -> bytes:
    """The private key encrypted with a key scrypt derives from the signing passphrase."""
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, nonce = os.urandom(16), os.urandom(12)
    header = SCRYPT_MAGIC + struct.pack(">IHH", scrypt_n, SCRYPT_R, SCRYPT_P) + salt + nonce
    sealed = AESGCM(_scrypt_key(passphrase, salt, scrypt_n, SCRYPT_R, SCRYPT_P)).encrypt(nonce, der, header)
    return header + sealed


def is_legacy_encryption(blob: bytes) -> bool:
    """Whether the key is still a PKCS8 PEM under PBKDF2 (to be re-encrypted)."""
    return not blob.startswith(SCRYPT_MAGIC)


def decrypt_private_key(blob: bytes, passphrase: str) -> ec.EllipticCurvePrivateKey:
    """Load a private key stored by encrypt_private_key, or a legacy encrypted PKCS8 PEM."""
    if is_legacy_encryption(blob):
        key = serialization.load_pem_private_key(blob, passphrase.encode())
    else:
        start = len(SCRYPT_MAGIC)
        n, r, p = struct.unpack(">IHH", blob[start : start + 8])
        salt, nonce = blob[start + 8 : start + 24], blob[start + 24 : start + 36]
        header = blob[: start + 36]
        der = AESGCM(_scrypt_key(passphrase, salt, n, r, p)).decrypt(nonce, blob[start + 36 :], header)
        key = serialization.load_der_private_key(der, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("signing key is not an EC key")
    return key


def scrypt_cost(blob: bytes) -> int | None:
    """The scrypt n a stored key was encrypted with (None for a legacy PEM)."""
    if is_legacy_encryption(blob):
        return None
    return int(struct.unpack(">I", blob[len(SCRYPT_MAGIC) : len(SCRYPT_MAGIC) + 4])[0])
