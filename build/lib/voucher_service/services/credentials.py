"""Credentials: admin tokens, merchant API secrets and consumer session tokens."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from voucher_service.adapters.db.models import AdminToken, Merchant
from voucher_service.adapters.secret_box import token_hash
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext

ADMIN_PREFIX = "vat_"
SESSION_PREFIX = "vcs1."


def create_admin_token(ctx: ServiceContext, name: str) -> str:
    """Create an admin bearer token; only its hash is stored, so it is shown once."""
    token = ADMIN_PREFIX + secrets.token_urlsafe(32)
    now = ctx.now()
    with ctx.sessions.begin() as s:
        s.add(AdminToken(name=name, token_hash=token_hash(token), created_at=now))
        audit_log.record(s, f"cli:{name}", "admin_token.created", "admin_token", name, {"name": name}, now)
    return token


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


class MerchantCache:
    """Decrypted merchant secrets kept in process for a short while, so signature checks cost no query."""

    def __init__(self, ttl_s: float = 30.0) -> None:
        self._ttl = ttl_s
        self._items: dict[str, tuple[float, MerchantAuth | None]] = {}
        self._lock = threading.Lock()

    def get(self, ctx: ServiceContext, merchant_id: str) -> MerchantAuth | None:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(merchant_id)
        if hit and hit[0] > now:
            return hit[1]
        with ctx.sessions() as s:
            row = s.get(Merchant, merchant_id)
        value = None
        if row is not None:
            secret = ctx.box.decrypt(row.secret_ciphertext, row.id)
            value = MerchantAuth(row.id, secret, row.platform, tuple(row.channels))
        with self._lock:
            self._items[merchant_id] = (now + self._ttl, value)
        return value


def sign_merchant_request(secret: str, method: str, path_and_query: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The contract's v1 request signature (used by tests and tools; the SDK has its own copy)."""
    canonical = "\n".join([method.upper(), path_and_query, timestamp, nonce, hashlib.sha256(body).hexdigest()])
    return "v1=" + hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def issue_session(ctx: ServiceContext, holder_hash: str) -> tuple[str, dt.datetime]:
    """A consumer session token: the holder hash and expiry, MACed with the server secret."""
    expires = ctx.now() + dt.timedelta(seconds=ctx.settings.session_ttl_s)
    payload = base64.urlsafe_b64encode(
        json.dumps({"h": holder_hash, "exp": int(expires.timestamp())}, separators=(",", ":")).encode()
    ).rstrip(b"=")
    mac = ctx.box.keyed_hash("session", payload.decode())
    return f"{SESSION_PREFIX}{payload.decode()}.{mac}", expires


def holder_for_session(ctx: ServiceContext, token: str) -> str | None:
    """The holder hash of a valid, unexpired session token, or None."""
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
    if not isinstance(data, dict) or int(data.get("exp", 0)) <= int(ctx.now().timestamp()):
        return None
    holder = data.get("h")
    return holder if isinstance(holder, str) else None
