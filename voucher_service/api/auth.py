"""Who is calling: admin bearer tokens, consumer sessions, and merchant HMAC request signatures."""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import quote

from flask import current_app, g, request

from voucher_service.domain.errors import Forbidden, Unauthorized
from voucher_service.services import nonces
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import (
    MerchantAuth,
    SessionClaims,
    admin_name_for,
    holder_for_session,
    session_live,
    sign_merchant_request,
    signed_session_claims,
)

NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")  # used with fullmatch: `$` would let a trailing newline in
# Unix seconds in ASCII digits: `isdigit()` and `int()` take '²', '١٧٠٠…' and 4,301 digits (a 500).
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
SIGNATURE_HEADERS = ("X-Voucher-Merchant", "X-Voucher-Timestamp", "X-Voucher-Nonce", "X-Voucher-Signature")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    kind: str  # public | admin | merchant | consumer
    admin_name: str | None = None
    merchant: MerchantAuth | None = None
    holder_hash: str | None = None

    @property
    def merchant_id(self) -> str | None:
        return self.merchant.merchant_id if self.merchant else None

    @property
    def actor(self) -> str:
        """How the audit log names this caller (never a phone number)."""
        if self.kind == "admin":
            return f"admin:{self.admin_name}"
        if self.kind == "merchant":
            return f"merchant:{self.merchant_id}"
        if self.kind == "consumer":
            return f"consumer:{(self.holder_hash or '')[:16]}"
        return "public"


def service_context() -> ServiceContext:
    """The ServiceContext of the running app."""
    return current_app.extensions["voucher"]  # type: ignore[no-any-return]


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def path_and_query() -> str:
    """The request target as sent: percent-encoded path plus '?query' when there is one."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = quote(request.path, safe="/-_.~!$&'()*+,;=:@%")
    qs = request.query_string.decode("latin-1")
    return path + ("?" + qs if qs else "")


def _merchant() -> Principal:
    ctx = service_context()
    headers = [request.headers.get(h) for h in SIGNATURE_HEADERS]
    if not all(headers):
        raise Unauthorized(
            "Merchant requests need the X-Voucher-Merchant, -Timestamp, -Nonce and -Signature headers."
        )
    merchant_id, timestamp, nonce, signature = (str(h) for h in headers)
    if not TIMESTAMP_RE.fullmatch(timestamp):
        raise Unauthorized("X-Voucher-Timestamp must be unix seconds.")
    window = ctx.settings.signature_window_s
    if abs(int(time.time()) - int(timestamp)) > window:
        raise Unauthorized(f"X-Voucher-Timestamp is more than {window} s from the server's clock.")
    if not NONCE_RE.fullmatch(nonce):
        raise Unauthorized("X-Voucher-Nonce must be 16-64 characters of [A-Za-z0-9_-].")
    cache = current_app.extensions["voucher_merchants"]
    merchant = cache.get(ctx, merchant_id)
    if merchant is None:
        raise Unauthorized("Unknown merchant or bad signature.")
    expected = sign_merchant_request(
        merchant.secret, request.method, path_and_query(), timestamp, nonce, request.get_data(cache=True)
    )
    if not hmac.compare_digest(expected, signature.strip()):
        raise Unauthorized("Unknown merchant or bad signature.")
    # Remember the nonce for twice the window, so it cannot come back while its timestamp is valid;
    # requests signed before Redis last lost its data are refused (services.nonces). A route that
    # defers it checks it in the same round trip as its own FastStore work (routing.endpoint).
    if g.get("defer_store_checks"):
        g.pending_nonce = nonces.PendingNonce(merchant_id, nonce, int(timestamp))
    else:
        nonces.use_nonce(ctx, merchant_id, nonce, int(timestamp))
    return Principal("merchant", merchant=merchant)


def take_pending_nonce() -> nonces.PendingNonce | None:
    """The deferred nonce of this request, for a service that checks it first thing (or None)."""
    pending: nonces.PendingNonce | None = g.pop("pending_nonce", None)
    return pending


def take_pending_session() -> SessionClaims | None:
    """The consumer session of this request not yet checked against logouts (deferred), or None."""
    pending: SessionClaims | None = g.pop("pending_session", None)
    return pending


def settle_pending_checks() -> None:
    """Check a deferred nonce or session that no service took: its refusal comes before any other answer."""
    pending = take_pending_nonce()
    if pending is not None:
        nonces.use_nonce(service_context(), pending.merchant_id, pending.nonce, pending.timestamp)
    session = take_pending_session()
    if session is not None and not session_live(service_context(), session):
        raise Unauthorized("Invalid or expired credentials.")


def authenticate(kind: str) -> Principal:
    """Authenticate the request for a route whose auth kind is `kind`; raise Unauthorized/Forbidden."""
    principal = _authenticate(kind)
    g.principal = principal
    return principal


def _authenticate(kind: str) -> Principal:
    if kind == "public":
        return Principal("public")
    ctx = service_context()
    if "merchant" in kind and request.headers.get("X-Voucher-Merchant"):
        return _merchant()
    token = _bearer()
    if token is None and request.headers.get("X-Voucher-Merchant"):
        _merchant()  # a bad signature stays 401; a good one is a merchant where merchants may not go
        raise Forbidden("This route is not for merchants.")
    if token is None:
        if kind == "merchant":
            return _merchant()  # raises with the header list
        raise Unauthorized("Missing credentials.")
    if "admin" in kind or kind == "consumer_or_merchant" or kind == "consumer":
        name = admin_name_for(ctx, token)
        if name is not None:
            if "admin" in kind:
                return Principal("admin", admin_name=name)
            raise Forbidden("Admin tokens cannot act as a consumer.")
    if "consumer" in kind:
        if g.get("defer_store_checks"):
            # Whether the session was ended is asked with the route's own FastStore work.
            claims = signed_session_claims(ctx, token)
            if claims is not None:
                g.pending_session = claims
                return Principal("consumer", holder_hash=claims.holder_hash)
        holder = holder_for_session(ctx, token)
        if holder is not None:
            return Principal("consumer", holder_hash=holder)
    if "admin" in kind and holder_for_session(ctx, token) is not None:
        raise Forbidden("This route is for administrators.")
    raise Unauthorized("Invalid or expired credentials.")
