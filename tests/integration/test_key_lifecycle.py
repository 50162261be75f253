"""Signing keys end: a retired key past its end expires, leaves /keys and stops verifying; keys at rest
are re-encrypted from PKCS8's 2,048 PBKDF2 rounds to scrypt."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from voucher_service.adapters.db.models import AuditEntry, SigningKey
from voucher_service.adapters.key_storage import decrypt_private_key, is_legacy_encryption, scrypt_cost
from voucher_service.adapters.signing import encode_token
from voucher_service.domain.errors import TokenInvalid
from voucher_service.domain.tokens import VoucherClaims
from voucher_service.services import keys as key_service
from voucher_service.services.tokens import verify_voucher_token


def _token_signed_by(ctx: Any, kid: str, *, exp: dt.datetime) -> str:
    with ctx.sessions() as s:
        row = s.get(SigningKey, kid)
        private = decrypt_private_key(row.private_key_pem, ctx.settings.signing_key_passphrase)
    loaded = ctx.keys.find(kid)
    now = int(ctx.now().timestamp())
    claims = VoucherClaims(
        voucher_id=str(uuid.uuid4()),
        program_id=str(uuid.uuid4()),
        tier="T50",
        face_value_fen=5000,
        min_spend_fen=15000,
        iat=now,
        nbf=now,
        exp=int(exp.timestamp()),
    )
    return encode_token(private, loaded.kid_bytes, claims.to_cbor_map())


def test_a_retired_key_past_its_end_expires_leaves_keys_and_stops_verifying(app: Any, client: Any) -> None:
    ctx = app.extensions["voucher"]
    start = ctx.now()
    old_kid = ctx.keys.active().kid
    key_service.rotate_keys(ctx, actor="test")
    # A token the old key signed, claiming to be valid for years (a forger with a leaked retired key).
    forged = _token_signed_by(ctx, old_kid, exp=start + dt.timedelta(days=3650))
    assert verify_voucher_token(ctx, forged).tier == "T50"  # still within the retired key's grace
    assert old_kid in {k["kid"] for k in client.get("/api/v1/keys").get_json()["keys"]}

    ctx.clock = lambda: start + key_service.RETIRED_GRACE + dt.timedelta(minutes=1)
    published = client.get("/api/v1/keys").get_json()["keys"]
    assert old_kid not in {k["kid"] for k in published}
    with pytest.raises(TokenInvalid):
        verify_voucher_token(ctx, forged)
    with ctx.sessions() as s:
        row = s.get(SigningKey, old_kid)
        assert row.status == "expired" and row.publish_until is not None
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "signing_key.expired")) is not None
    # Another process's key ring, loaded afresh, does not know it either.
    ctx.keys.reload()
    assert ctx.keys.find(old_kid) is None


def test_a_retired_key_stays_while_a_voucher_it_signed_is_still_valid(
    app: Any, admin: Any, client: Any
) -> None:
    from tests.helpers import consumer_headers

    ctx = app.extensions["voucher"]
    program = admin.create_program()
    headers = consumer_headers(client, ctx.settings.sms_outbox, "13800138000")
    voucher = client.post(f"/api/v1/programs/{program['id']}/claims", json={"tier": "T50"}, headers=headers)
    assert voucher.status_code == 201
    old_kid = ctx.keys.active().kid
    key_service.rotate_keys(ctx, actor="test")
    start = ctx.now()
    ctx.clock = lambda: start + key_service.RETIRED_GRACE + dt.timedelta(days=1)
    assert old_kid in {k["kid"] for k in client.get("/api/v1/keys").get_json()["keys"]}
    assert (
        verify_voucher_token(ctx, voucher.get_json()["token"]).voucher_id == voucher.get_json()["voucher_id"]
    )


def test_a_key_stored_under_pkcs8_pbkdf2_is_reencrypted_with_scrypt_and_still_signs(app: Any) -> None:
    ctx = app.extensions["voucher"]
    active = ctx.keys.active()
    legacy = active.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(ctx.settings.signing_key_passphrase.encode()),
    )
    with ctx.sessions.begin() as s:
        s.get(SigningKey, active.kid).private_key_pem = legacy
    ctx.keys.reload()
    assert ctx.keys.active().kid == active.kid  # the old format loads

    key_service.ensure_signing_keys(ctx)
    with ctx.sessions() as s:
        blobs = [k.private_key_pem for k in s.scalars(select(SigningKey))]
    assert blobs and not any(is_legacy_encryption(b) for b in blobs)
    assert all(scrypt_cost(b) == ctx.settings.signing_key_scrypt_n for b in blobs)
    ctx.keys.reload()
    assert ctx.keys.active().private_key.private_numbers() == active.private_key.private_numbers()


def test_new_keys_are_never_stored_as_pkcs8_pem(ctx: Any) -> None:
    with ctx.sessions() as s:
        blobs = [k.private_key_pem for k in s.scalars(select(SigningKey))]
    assert blobs and all(not is_legacy_encryption(b) and b"BEGIN" not in b for b in blobs)
