"""Voucher-signing keys: created, rotated (the next key is published before it signs), published as JWKS."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from voucher_service.adapters.db.models import Program, SigningKey, Voucher
from voucher_service.adapters.signing import encrypt_private_key, generate_private_key, public_jwk
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext

# A retired key stays published at least this long, for verifiers whose key cache is older.
RETIRED_GRACE = dt.timedelta(days=1)


def _new_key(ctx: ServiceContext, status: str, now: dt.datetime) -> SigningKey:
    key = generate_private_key()
    jwk = public_jwk(key.public_key())
    return SigningKey(
        kid=jwk["kid"],
        private_key_pem=encrypt_private_key(key, ctx.settings.signing_key_passphrase),
        public_jwk=jwk,
        status=status,
        created_at=now,
        activated_at=now if status == "active" else None,
    )


def ensure_signing_keys(ctx: ServiceContext) -> int:
    """Make sure an active key and a published next key exist; return how many were created."""
    now = ctx.now()
    created = 0
    with ctx.sessions.begin() as s:
        statuses = set(s.scalars(select(SigningKey.status).with_for_update()))
        for status in ("active", "next"):
            if status not in statuses:
                row = _new_key(ctx, status, now)
                s.add(row)
                audit_log.record(s, "system", f"signing_key.created_{status}", "signing_key", row.kid, {}, now)
                created += 1
    if created:
        ctx.keys.reload()
    return created


def rotate_keys(ctx: ServiceContext, actor: str = "cli") -> dict[str, str]:
    """Promote the published next key to active, retire the active one, publish a new next key."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        keys = {k.status: k for k in s.scalars(select(SigningKey).where(SigningKey.status.in_(("active", "next"))).with_for_update())}
        old, nxt = keys.get("active"), keys.get("next")
        if nxt is None:
            nxt = _new_key(ctx, "next", now)
            s.add(nxt)
        if old is not None:
            old.status = "retired"
            old.retired_at = now
        nxt.status = "active"
        nxt.activated_at = now
        newer = _new_key(ctx, "next", now)
        s.add(newer)
        result = {"retired": old.kid if old else "", "active": nxt.kid, "next": newer.kid}
        audit_log.record(s, actor, "signing_key.rotated", "signing_key", nxt.kid, result, now)
    ctx.keys.reload()
    return result


def _numeric_date(value: dt.datetime) -> int:
    return int(value.timestamp())


def jwks(ctx: ServiceContext) -> dict[str, Any]:
    """The published keys: active, next, and retired keys whose vouchers may still be valid."""
    now = ctx.now()
    out = []
    with ctx.sessions() as s:
        rows = list(s.scalars(select(SigningKey).order_by(SigningKey.created_at, SigningKey.kid)))
        last_expiry = dict(
            s.execute(
                select(Voucher.kid, func.max(Voucher.expires_at))
                .where(Voucher.kid.in_([r.kid for r in rows if r.status == "retired"]))
                .group_by(Voucher.kid)
            ).all()
        )
        # No voucher outlives its programme, so the latest programme end bounds what an active or next
        # key can still sign; with no programme yet, a year from now.
        latest_end = s.scalar(select(func.max(Program.ends_at))) or now + dt.timedelta(days=365)
    for row in rows:
        exp: dt.datetime = max(latest_end, now)
        if row.status == "retired":
            assert row.retired_at is not None
            exp = max(filter(None, [row.retired_at + RETIRED_GRACE, last_expiry.get(row.kid)]))
            if exp <= now:
                continue
        jwk = dict(row.public_jwk)
        jwk.update({"nbf": _numeric_date(row.activated_at or row.created_at), "status": row.status})
        jwk["exp"] = _numeric_date(exp)
        out.append(jwk)
    return {"keys": out}
