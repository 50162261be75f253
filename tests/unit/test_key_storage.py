"""Signing keys at rest: scrypt + AES-GCM, not PKCS8's 2,048 PBKDF2 rounds; old PEMs still load."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization

from voucher_service.adapters.key_storage import (
    SCRYPT_N,
    decrypt_private_key,
    encrypt_private_key,
    is_legacy_encryption,
    scrypt_cost,
)
from voucher_service.adapters.signing import generate_private_key

PASS = "a passphrase of some length"


def test_a_key_is_stored_under_scrypt_at_the_recommended_cost_by_default() -> None:
    key = generate_private_key()
    blob = encrypt_private_key(key, PASS)
    assert not is_legacy_encryption(blob) and scrypt_cost(blob) == SCRYPT_N >= 2**15
    assert b"BEGIN" not in blob
    assert decrypt_private_key(blob, PASS).private_numbers() == key.private_numbers()


def test_the_wrong_passphrase_or_an_altered_blob_does_not_load() -> None:
    blob = encrypt_private_key(generate_private_key(), PASS, scrypt_n=2**10)
    with pytest.raises(InvalidTag):
        decrypt_private_key(blob, PASS + "x")
    altered = bytearray(blob)
    altered[20] ^= 1  # the salt (like the recorded cost) is authenticated
    with pytest.raises((InvalidTag, ValueError, MemoryError)):
        decrypt_private_key(bytes(altered), PASS)


def test_a_legacy_pkcs8_pem_still_loads() -> None:
    key = generate_private_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASS.encode()),
    )
    assert is_legacy_encryption(pem) and scrypt_cost(pem) is None
    assert decrypt_private_key(pem, PASS).private_numbers() == key.private_numbers()
