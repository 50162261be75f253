"""Credentials: admin tokens, merchant API secrets and consumer session tokens."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from voucher_service.adapters.db.models import AdminToken, EndedSession, HolderSessionEpoch, Merchant
from voucher_service.adapters.lru import LRU
from voucher_service.adapters.redis_store import SessionStep
from voucher_service.adapters.secret_box import token_hash
from voucher_service.services import audit_log, shards
from voucher_service.services.context import ServiceContext

ADMIN_PREFIX = "vat_"
SESSION_PREFIX = "vcs1."
SESSION_STATE_CACHE_S = 60


def create_admin_token(ctx: ServiceContext, name: str) -> str:
    """Create an admin bearer token; only its hash is stored, so it is shown once."""
    token = ADMIN_PREFIX + secrets.token_urlsafe(32)
    now = ctx.now()
    with ctx.sessions.begin() as s:
        s.add(AdminToken(name=name, token_hash=token_hash(token), created_at=now))
        audit_log.record(s, f"cli:{name}", "admin_token.created", "admin_token", name, {"name": name}, now)
    return token


def revoke_admin_tokens(ctx: ServiceContext, *, name: str | None = None, token: str | None = None) -> int:
    """Revoke the admin tokens with this name, or this one token; return how many were revoked."""
    if (name is None) == (token is None):
        raise ValueError("give exactly one of name or token")
    now = ctx.now()
    with ctx.sessions.begin() as s:
        query = select(AdminToken).where(AdminToken.revoked_at.is_(None))
        if name is not None:
            query = query.where(AdminToken.name == name)
        else:
            query = query.where(AdminToken.token_hash == token_hash(token or ""))
        rows = list(s.scalars(query.with_for_update()))
        for row in rows:
            row.revoked_at = now
            audit_log.record(
                s,
                "cli:revoke-admin-token",
                "admin_token.revoked",
                "admin_token",
                str(row.id),
                {"name": row.name},
                now,
            )
    return len(rows)


def admin_name_for(ctx: ServiceContext, token: str) -> str | None:
    """The name of the admin a bearer token belongs to, or None."""
    if not token.startswith(ADMIN_PREFIX):
        return None
    with ctx.sessions() as s:
        row = s.scalar(select(AdminToken).where(AdminToken.token_hash == token_hash(token)))
    if row is None or row.revoked_at is not None:
        return None
    return row.name


@dataclass(frozen=True)
class MerchantAuth:
    """What a signature check needs to know about a merchant."""

    merchant_id: str
    secret: str
    platform: bool
    channels: tuple[str, ...]


# What a merchant id can be (create_merchant makes `mch_` + 16 hex; the column holds 40 characters):
# anything else is refused before any lookup.
MERCHANT_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,40}", re.ASCII)


def valid_merchant_id(value: str) -> bool:
    """Whether value has the shape of a merchant id (1-40 ASCII letters, digits, `_`, `.`, `-`)."""
    return MERCHANT_ID_RE.fullmatch(value) is not None


class MerchantCache:
    """Decrypted merchant secrets kept in process for a short while, so signature checks cost no query.

    Bounded: at most `max_size` known merchants (least recently used evicted), and unknown ids are
    remembered in a separate, smaller LRU so strangers can neither grow memory nor push real merchants out.
    """

    def __init__(self, ttl_s: float = 30.0, max_size: int = 4096, max_unknown: int = 1024) -> None:
        self._ttl = ttl_s
        self.max_size = max_size
        self._known: LRU[str, tuple[float, MerchantAuth]] = LRU(max_size)
        self._unknown: LRU[str, float] = LRU(max_unknown)

    def __len__(self) -> int:
        return len(self._known) + len(self._unknown)

    def cached(self, merchant_id: str) -> bool:
        """Whether the merchant is held in the cache now."""
        return merchant_id in self._known

    def forget(self, merchant_id: str) -> None:
        """Drop the merchant (its secret changed)."""
        self._known.pop(merchant_id)
        self._unknown.pop(merchant_id)

    def get(self, ctx: ServiceContext, merchant_id: str) -> MerchantAuth | None:
        """The merchant's credentials, or None for an unknown or malformed id."""
        if not valid_merchant_id(merchant_id):
            return None
        now = time.monotonic()
        hit = self._known.get(merchant_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        miss = self._unknown.get(merchant_id)
        if miss is not None and miss > now:
            return None
        with ctx.sessions() as s:
            row = s.get(Merchant, merchant_id)
        if row is None:
            self._known.pop(merchant_id)
            self._unknown.put(merchant_id, now + self._ttl)
            return None
        secret = ctx.box.decrypt(row.secret_ciphertext, row.id)
        value = MerchantAuth(row.id, secret, row.platform, tuple(row.channels))
        self._known.put(merchant_id, (now + self._ttl, value))
        self._unknown.pop(merchant_id)
        return value


def sign_merchant_request(
    secret: str, method: str, path_and_query: str, timestamp: str, nonce: str, body: bytes
) -> str:
    """The contract's v1 request signature (used by tests and tools; the SDK has its own copy)."""
    canonical = "\n".join(
        [method.upper(), path_and_query, timestamp, nonce, hashlib.sha256(body).hexdigest()]
    )
    return "v1=" + hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def rotate_merchant_secret(ctx: ServiceContext, merchant_id: str, actor: str) -> str:
    """Give the merchant a new API secret (the old one stops working) and return it; it is shown once."""
    from voucher_service.domain.errors import NotFound

    secret = "vsk_" + secrets.token_urlsafe(32)
    now = ctx.now()
    with ctx.sessions.begin() as s:
        row = s.get(Merchant, merchant_id, with_for_update=True) if valid_merchant_id(merchant_id) else None
        if row is None:
            raise NotFound(f"No merchant {merchant_id}.")
        row.secret_ciphertext = ctx.box.encrypt(secret, merchant_id)
        audit_log.record(s, actor, "merchant.secret_rotated", "merchant", merchant_id, {}, now)
    return secret


# ---------------------------------------------------------------- consumer sessions
# A session token is stateless (MACed holder, expiry, session id and the holder's session epoch), so
# ending sessions needs a little state: the holder's current epoch (ending all their sessions bumps it)
# and the ids of sessions ended one at a time by logout, kept only until the token would expire anyway.


@dataclass(frozen=True)
class _HolderSessionState:
    epoch: int
    ended: frozenset[str]


def _state_key(holder_hash: str) -> str:
    return f"{shards.holder_tag(holder_hash)}:sessions:{holder_hash}"


def _holder_state(ctx: ServiceContext, holder_hash: str) -> _HolderSessionState:
    """The holder's session epoch and ended session ids: from the fast store, else from the database.

    The database is the record (a flushed Redis forgets nothing); the fast store keeps claims rushes
    off the database, and is dropped whenever a session ends. A reader racing a logout could put the
    old state back; it lives SESSION_STATE_CACHE_S at most.
    """
    cached = ctx.store.get(_state_key(holder_hash))
    if cached is not None:
        try:
            data = json.loads(cached)
            return _HolderSessionState(int(data["g"]), frozenset(str(x) for x in data["e"]))
        except (ValueError, KeyError, TypeError):
            pass
    now = ctx.now()
    with ctx.sessions() as s:
        row = s.get(HolderSessionEpoch, holder_hash)
        ended = frozenset(
            s.scalars(
                select(EndedSession.session_id).where(
                    EndedSession.holder_hash == holder_hash, EndedSession.expires_at > now
                )
            )
        )
    state = _HolderSessionState(0 if row is None else row.epoch, ended)
    body = json.dumps({"g": state.epoch, "e": sorted(state.ended)}, separators=(",", ":")).encode()
    ctx.store.set(_state_key(holder_hash), body, SESSION_STATE_CACHE_S)
    return state


def issue_session(ctx: ServiceContext, holder_hash: str) -> tuple[str, dt.datetime]:
    """A consumer session token: holder hash, expiry, session id and epoch, MACed with the server secret."""
    expires = ctx.now() + dt.timedelta(seconds=ctx.settings.session_ttl_s)
    epoch = _holder_state(ctx, holder_hash).epoch
    claims = {"h": holder_hash, "exp": int(expires.timestamp()), "s": secrets.token_hex(16), "g": epoch}
    payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=")
    mac = ctx.box.keyed_hash("session", payload.decode())
    return f"{SESSION_PREFIX}{payload.decode()}.{mac}", expires


@dataclass(frozen=True)
class SessionClaims:
    """What a valid session token says."""

    holder_hash: str
    session_id: str
    epoch: int
    expires_at: dt.datetime


def holder_for_session(ctx: ServiceContext, token: str) -> str | None:
    """The holder hash of a valid, unexpired, not ended session token, or None."""
    claims = session_claims(ctx, token)
    return None if claims is None else claims.holder_hash


def session_claims(ctx: ServiceContext, token: str) -> SessionClaims | None:
    """The claims of a valid, unexpired session token that was not ended, or None."""
    claims = _mac_checked_claims(ctx, token)
    if claims is None or not session_live(ctx, claims):
        return None
    return claims


def signed_session_claims(ctx: ServiceContext, token: str) -> SessionClaims | None:
    """The claims of a session token with a good MAC that has not expired; whether it was ended is
    asked later, with session_step (in the same round trip as a claim's own FastStore work)."""
    return _mac_checked_claims(ctx, token)


def session_step(claims: SessionClaims) -> SessionStep:
    """The FastStore step that checks the session against its holder's cached state."""
    return SessionStep(_state_key(claims.holder_hash), claims.epoch, claims.session_id)


def session_live(ctx: ServiceContext, claims: SessionClaims, verdict: int = -1) -> bool:
    """Whether the session was not ended, from session_step's verdict; on -1 (state not cached) from
    the holder's state, read from the fast store or the database."""
    if verdict != -1:
        return verdict == 1
    state = _holder_state(ctx, claims.holder_hash)
    return claims.epoch == state.epoch and claims.session_id not in state.ended


def end_session(ctx: ServiceContext, token: str, actor: str) -> bool:
    """Log this one session out; False when the token is not a live session."""
    claims = session_claims(ctx, token)
    if claims is None:
        return False
    now = ctx.now()
    with ctx.sessions.begin() as s:
        s.execute(delete(EndedSession).where(EndedSession.expires_at <= now))  # housekeeping
        if s.get(EndedSession, claims.session_id) is None:
            s.add(
                EndedSession(
                    session_id=claims.session_id, holder_hash=claims.holder_hash, expires_at=claims.expires_at
                )
            )
        audit_log.record(
            s,
            actor,
            "consumer_session.ended",
            "holder",
            claims.holder_hash[:16],
            {"session": claims.session_id[:8]},
            now,
        )
    ctx.store.delete(_state_key(claims.holder_hash))  # re-read from the database at the next request
    return True


def end_holder_sessions(ctx: ServiceContext, holder_hash: str, actor: str) -> int:
    """End every session of a resident (all devices); return the holder's new session epoch."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        row = s.get(HolderSessionEpoch, holder_hash, with_for_update=True)
        if row is None:
            row = HolderSessionEpoch(holder_hash=holder_hash, epoch=0, changed_at=now)
            s.add(row)
        row.epoch += 1
        row.changed_at = now
        audit_log.record(
            s, actor, "consumer_sessions.ended_all", "holder", holder_hash[:16], {"epoch": row.epoch}, now
        )
        epoch = row.epoch
    ctx.store.delete(_state_key(holder_hash))
    return epoch


def _mac_checked_claims(ctx: ServiceContext, token: str) -> SessionClaims | None:
    if not token.startswith(SESSION_PREFIX):
        return None
    try:
        payload, mac = token[len(SESSION_PREFIX) :].rsplit(".", 1)
    except ValueError:
        return None
    if not hmac.compare_digest(mac, ctx.box.keyed_hash("session", payload)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    exp, holder, sid, epoch = data.get("exp"), data.get("h"), data.get("s"), data.get("g", 0)
    if type(exp) is not int or exp <= int(ctx.now().timestamp()):
        return None
    if not isinstance(holder, str) or not isinstance(sid, str) or type(epoch) is not int:
        return None
    return SessionClaims(holder, sid, epoch, dt.datetime.fromtimestamp(exp, dt.UTC))
