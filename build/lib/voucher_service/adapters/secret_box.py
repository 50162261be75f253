"""Secrets kept in the database encrypted under a key derived from VOUCHER_SECRET_KEY, and keyed hashes."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class SecretBox:
    """AES-GCM with a key derived from the server secret; HMAC for holder and token hashes."""

    def __init__(self, server_secret: str) -> None:
        self._enc_key = hashlib.sha256(b"voucher-secret-box\x00" + server_secret.encode()).digest()
        self._mac_key = hashlib.sha256(b"voucher-keyed-hash\x00" + server_secret.encode()).digest()

    def encrypt(self, plaintext: str, context: str) -> bytes:
        """Encrypt, binding the ciphertext to `context` (e.g. the merchant id)."""
        nonce = os.urandom(12)
        return nonce + AESGCM(self._enc_key).encrypt(nonce, plaintext.encode(), context.encode())

    def decrypt(self, blob: bytes, context: str) -> str:
        """Decrypt what `encrypt` produced for the same context."""
        return AESGCM(self._enc_key).decrypt(blob[:12], blob[12:], context.encode()).decode()

    def keyed_hash(self, purpose: str, value: str) -> str:
        """HMAC-SHA256 hex of a value, separated by purpose; useless without the server secret."""
        return hmac.new(self._mac_key, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()


def token_hash(token: str) -> str:
    """SHA-256 hex of a high-entropy bearer token (no pepper needed: it cannot be guessed)."""
    return hashlib.sha256(token.encode()).hexdigest()
