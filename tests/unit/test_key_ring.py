"""The key ring re-reads keys every ttl seconds without re-deriving the passphrase's scrypt key for a
private key it already holds, and one thread reloads while the others keep signing (the seed-scale
rush spent a third of a worker's samples in scrypt: every thread reloading at once)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from voucher_service.adapters import signing
from voucher_service.adapters.key_storage import encrypt_private_key
from voucher_service.adapters.signing import KeyRing, b64url, generate_private_key, kid_bytes_for, public_jwk

PASSPHRASE = "a passphrase for the tests"


@dataclass
class Row:
    kid: str
    public_jwk: dict[str, Any]
    status: str
    private_key_pem: bytes


def _row(status: str = "active") -> Row:
    key = generate_private_key()
    kid = b64url(kid_bytes_for(key.public_key()))
    return Row(
        kid, {**public_jwk(key.public_key()), "kid": kid}, status, encrypt_private_key(key, PASSPHRASE, 2**4)
    )


def _counting(monkeypatch, delay_s: float = 0.0) -> list[int]:
    calls: list[int] = []
    real = signing.decrypt_private_key

    def decrypt(blob: bytes, passphrase: str):
        calls.append(1)
        time.sleep(delay_s)
        return real(blob, passphrase)

    monkeypatch.setattr(signing, "decrypt_private_key", decrypt)
    return calls


def test_a_reload_of_unchanged_keys_does_not_decrypt_the_private_key_again(monkeypatch) -> None:
    calls = _counting(monkeypatch)
    rows = [_row()]
    ring = KeyRing(lambda: rows, PASSPHRASE, ttl_s=0)
    first = ring.active()
    ring.reload()
    ring.reload()
    assert ring.active().private_key is first.private_key
    assert len(calls) == 1


def test_a_rotated_key_is_decrypted_once_and_signs(monkeypatch) -> None:
    calls = _counting(monkeypatch)
    old, new = _row(), _row("next")
    rows = [old, new]
    ring = KeyRing(lambda: rows, PASSPHRASE, ttl_s=0)
    assert ring.active().kid == old.kid
    rows[:] = [
        Row(old.kid, old.public_jwk, "retired", old.private_key_pem),
        Row(new.kid, new.public_jwk, "active", new.private_key_pem),
    ]
    ring.reload()
    assert ring.active().kid == new.kid and ring.active().private_key is not None
    assert len(calls) == 2


def test_stale_keys_are_reloaded_by_one_thread_while_the_others_keep_signing(monkeypatch) -> None:
    rows = [_row()]
    loads: list[int] = []

    def loader() -> list[Row]:
        loads.append(1)
        time.sleep(0.2)  # a slow database read
        return rows

    ring = KeyRing(loader, PASSPHRASE, ttl_s=0.05)
    ring.active()
    time.sleep(0.1)  # the keys are now stale
    start = threading.Barrier(8)
    got: list[str] = []

    def sign() -> None:
        start.wait()
        got.append(ring.active().kid)

    threads = [threading.Thread(target=sign) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [rows[0].kid] * 8
    assert len(loads) == 2  # the first load, then one reload for all eight threads
