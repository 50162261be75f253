"""Voucher-signing keys: created, rotated (the next key is published before it signs), published as JWKS."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import Program, SigningKey, Voucher
from voucher_service.adapters.key_storage import (
    decrypt_private_key,
    encrypt_private_key,
    is_legacy_encryption,
)
from voucher_service.adapters.signing import generate_private_key, public_jwk
from voucher_service.domain.states import SigningKeyStatus, check_transition
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext

# A retired key stays published at least this long, for verifiers whose key cache is older.
RETIRED_GRACE = dt.timedelta(days=1)


def _new_key(ctx: ServiceContext, status: SigningKeyStatus, now: dt.datetime) -> SigningKey:
    key = generate_private_key()
    jwk = public_jwk(key.public_key())
    return SigningKey(
        kid=jwk["kid"],
        private_key_pem=encrypt_private_key(
            key, ctx.settings.signing_key_passphrase, ctx.settings.signing_key_scrypt_n
        ),
        public_jwk=jwk,
        status=check_transition(None, status),
        created_at=now,
        activated_at=now if status == SigningKeyStatus.ACTIVE else None,
    )


def ensure_signing_keys(ctx: ServiceContext) -> int:
    """Make sure an active key and a published next key exist; return how many were created.

    Also re-encrypts keys stored the old way and marks retired keys past their end as expired.
    """
    upgrade_key_encryption(ctx)
    expire_retired_keys(ctx)
    now = ctx.now()
    created = 0
    with ctx.sessions.begin() as s:
        statuses = set(s.scalars(select(SigningKey.status).with_for_update()))
        for status in (SigningKeyStatus.ACTIVE, SigningKeyStatus.NEXT):
            if status not in statuses:
                row = _new_key(ctx, status, now)
                s.add(row)
                audit_log.record(
                    s, "system", f"signing_key.created_{status}", "signing_key", row.kid, {}, now
                )
                created += 1
    if created:
        ctx.keys.reload()
    return created


def rotate_keys(ctx: ServiceContext, actor: str = "cli") -> dict[str, str]:
    """Promote the published next key to active, retire the active one, publish a new next key."""
    expire_retired_keys(ctx)
    now = ctx.now()
    with ctx.sessions.begin() as s:
        keys = {
            k.status: k
            for k in s.scalars(
                select(SigningKey)
                .where(SigningKey.status.in_((SigningKeyStatus.ACTIVE, SigningKeyStatus.NEXT)))
                .with_for_update()
            )
        }
        old, nxt = keys.get(SigningKeyStatus.ACTIVE), keys.get(SigningKeyStatus.NEXT)
        if nxt is None:
            nxt = _new_key(ctx, SigningKeyStatus.NEXT, now)
            s.add(nxt)
        if old is not None:
            old.status = check_transition(old.status, SigningKeyStatus.RETIRED)
            old.retired_at = now
        nxt.status = check_transition(nxt.status, SigningKeyStatus.ACTIVE)
        nxt.activated_at = now
        newer = _new_key(ctx, SigningKeyStatus.NEXT, now)
        s.add(newer)
        result = {"retired": old.kid if old else "", "active": nxt.kid, "next": newer.kid}
        audit_log.record(s, actor, "signing_key.rotated", "signing_key", nxt.kid, result, now)
    ctx.keys.reload()
    return result


def upgrade_key_encryption(ctx: ServiceContext) -> int:
    """Re-encrypt every private key still stored as a PBKDF2 PKCS8 PEM under scrypt; return how many."""
    passphrase = ctx.settings.signing_key_passphrase
    with ctx.sessions() as s:
        legacy = [
            (k.kid, k.private_key_pem)
            for k in s.scalars(select(SigningKey))
            if is_legacy_encryption(k.private_key_pem)
        ]
    if not legacy:
        return 0
    # Derive outside the transaction (scrypt is slow on purpose); the update checks nothing changed since.
    upgraded = {
        kid: (
            pem,
            encrypt_private_key(
                decrypt_private_key(pem, passphrase), passphrase, ctx.settings.signing_key_scrypt_n
            ),
        )
        for kid, pem in legacy
    }
    now = ctx.now()
    done = 0
    with ctx.sessions.begin() as s:
        for row in s.scalars(select(SigningKey).where(SigningKey.kid.in_(list(upgraded))).with_for_update()):
            old, new = upgraded[row.kid]
            if row.private_key_pem == old:
                row.private_key_pem = new
                done += 1
                audit_log.record(
                    s, "system", "signing_key.reencrypted", "signing_key", row.kid, {"kdf": "scrypt"}, now
                )
    return done


def _retired_key_end(row: SigningKey, last_voucher_expiry: dt.datetime | None) -> dt.datetime:
    """When a retired key's vouchers have all expired (and the verifiers' grace has passed)."""
    assert row.retired_at is not None
    return max(filter(None, [row.retired_at + RETIRED_GRACE, last_voucher_expiry]))


def expire_retired_keys(ctx: ServiceContext) -> list[str]:
    """Mark retired keys whose end has passed as expired: they leave /keys and stop verifying."""
    now = ctx.now()
    with ctx.sessions() as s:  # a plain read first: /keys calls this, and almost always nothing is due
        due = _due_for_expiry(s, now)
    if not due:
        return []
    expired: list[str] = []
    with ctx.sessions.begin() as s:
        rows = s.scalars(select(SigningKey).where(SigningKey.kid.in_(list(due))).with_for_update())
        for row in rows:
            if row.status == SigningKeyStatus.RETIRED:
                row.status = check_transition(row.status, SigningKeyStatus.EXPIRED)
                row.publish_until = due[row.kid]
                expired.append(row.kid)
                audit_log.record(
                    s,
                    "system",
                    "signing_key.expired",
                    "signing_key",
                    row.kid,
                    {"end": due[row.kid].isoformat()},
                    now,
                )
    if expired:
        ctx.keys.reload()
    return expired


def _due_for_expiry(s: Session, now: dt.datetime) -> dict[str, dt.datetime]:
    rows = list(
        s.scalars(
            select(SigningKey).where(
                SigningKey.status == SigningKeyStatus.RETIRED, SigningKey.retired_at <= now - RETIRED_GRACE
            )
        )
    )
    if not rows:
        return {}
    last_expiry = dict(
        s.execute(
            select(Voucher.kid, func.max(Voucher.expires_at))
            .where(Voucher.kid.in_([r.kid for r in rows]))
            .group_by(Voucher.kid)
        ).all()
    )
    ends = {row.kid: _retired_key_end(row, last_expiry.get(row.kid)) for row in rows}
    return {kid: end for kid, end in ends.items() if end <= now}


def _numeric_date(value: dt.datetime) -> int:
    return int(value.timestamp())


def jwks(ctx: ServiceContext) -> dict[str, Any]:
    """The published keys: active, next, and retired keys whose vouchers may still be valid."""
    expire_retired_keys(ctx)
    now = ctx.now()
    out = []
    with ctx.sessions() as s:
        rows = list(s.scalars(select(SigningKey).order_by(SigningKey.created_at, SigningKey.kid)))
        last_expiry = dict(
            s.execute(
                select(Voucher.kid, func.max(Voucher.expires_at))
                .where(Voucher.kid.in_([r.kid for r in rows if r.status == SigningKeyStatus.RETIRED]))
                .group_by(Voucher.kid)
            ).all()
        )
        # No voucher outlives its programme, so the latest programme end bounds what an active or next
        # key can still sign; with no programme yet, a year from now.
        latest_end = s.scalar(select(func.max(Program.ends_at))) or now + dt.timedelta(days=365)
    for row in rows:
        exp: dt.datetime = max(latest_end, now)
        if row.status == SigningKeyStatus.EXPIRED:
            continue
        if row.status == SigningKeyStatus.RETIRED:
            exp = _retired_key_end(row, last_expiry.get(row.kid))
            if exp <= now:
                continue
        jwk = dict(row.public_jwk)
        jwk.update({"nbf": _numeric_date(row.activated_at or row.created_at), "status": row.status})
        jwk["exp"] = _numeric_date(exp)
        out.append(jwk)
    return {"keys": out}
