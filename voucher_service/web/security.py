"""What every page shares for safety: security headers, cookie sessions, CSRF, login rate limits.

Page sessions are signed cookies (HttpOnly, SameSite=Lax, Secure in production) carrying the kind of
user (consumer, staff, admin), its subject and an expiry; logging out also revokes the session id in
the FastStore until it would have expired, so a copied cookie stops working too. Every state-changing
page request carries a CSRF token bound to the browser (the `vs_csrf` cookie) and to the session id:
forms post it as `csrf_token`, fetch() sends it as `X-CSRF-Token`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, jsonify, redirect, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer

from voucher_service.domain.errors import RateLimited
from voucher_service.services.context import ServiceContext

SESSION_COOKIE = "vs_session"
CSRF_COOKIE = "vs_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
KINDS = ("consumer", "staff", "admin")
# How long a page session lasts, by kind of user.
SESSION_TTL_S = {"consumer": 7 * 86_400, "staff": 12 * 3600, "admin": 2 * 3600}
# Where require_login sends a browser that is not logged in (endpoint names; areas may override).
LOGIN_ENDPOINTS: dict[str, str] = {
    "consumer": "wallet.login",
    "staff": "checkout.login",
    "admin": "console.login",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        # WebAssembly (the barcode polyfill) needs wasm-unsafe-eval; no inline or eval'd JavaScript.
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class PageUser:
    """Who is logged in to the pages: a consumer (subject = holder hash), a staff member, an admin."""

    kind: str
    subject: str
    sid: str
    expires: int
    data: dict[str, Any] = field(default_factory=dict)


class CsrfRefused(Exception):
    """A state-changing page request without the right CSRF token."""


def _ctx() -> ServiceContext:
    return cast(ServiceContext, current_app.extensions["voucher"])


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(_ctx().settings.secret_key, salt="voucher-page-session")


def _secure() -> bool:
    return _ctx().settings.env == "production"


def _revoked_key(sid: str) -> str:
    return f"page:revoked:{sid}"


# ---------------------------------------------------------------- sessions


def login_user(
    kind: str, subject: str, data: dict[str, Any] | None = None, ttl_s: int | None = None
) -> PageUser:
    """Log the browser in as `kind`/`subject` (the cookie is set on the response; any old session ends)."""
    if kind not in KINDS:
        raise ValueError(f"unknown page user kind {kind!r}")
    old = current_user()
    if old is not None:
        _revoke(old)
    ttl = ttl_s or SESSION_TTL_S[kind]
    user = PageUser(kind, subject, secrets.token_urlsafe(16), int(time.time()) + ttl, dict(data or {}))
    payload = {"k": user.kind, "s": user.subject, "i": user.sid, "e": user.expires, "d": user.data}
    g.page_user = user
    g.page_session_cookie = (_serializer().dumps(payload), ttl)
    return user


def logout_user() -> None:
    """End the current page session: revoke its id and clear the cookie."""
    user = current_user()
    if user is not None:
        _revoke(user)
    g.page_user = None
    g.page_session_cookie = ("", 0)


def _revoke(user: PageUser) -> None:
    remaining = user.expires - int(time.time())
    if remaining > 0:
        _ctx().store.set(_revoked_key(user.sid), b"1", remaining + 5)


def current_user(kind: str | None = None) -> PageUser | None:
    """The logged-in page user (of `kind`, when given), or None."""
    if "page_user" not in g:
        g.page_user = _read_session()
    user: PageUser | None = g.page_user
    if user is None or (kind is not None and user.kind != kind):
        return None
    return user


def _read_session() -> PageUser | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > 4000:
        return None
    try:
        data = _serializer().loads(raw)
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    try:
        user = PageUser(
            str(data["k"]), str(data["s"]), str(data["i"]), int(data["e"]), dict(data.get("d") or {})
        )
    except (KeyError, TypeError, ValueError):
        return None
    if user.kind not in KINDS or user.expires <= int(time.time()):
        return None
    if _ctx().store.get(_revoked_key(user.sid)) is not None:
        return None
    return user


def wants_json() -> bool:
    """The request is a fetch() from a page script (it answers JSON, not a redirect)."""
    return (
        request.headers.get("X-Requested-With") == "fetch"
        or request.accept_mimetypes.best == "application/json"
    )


def require_login(kind: str, login_endpoint: str | None = None) -> Callable[[F], F]:
    """Decorate a page view: a browser without a session of this kind goes to the login page
    (fetch() requests get 401 JSON); the user is then `current_user(kind)`."""

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if current_user(kind) is None:
                if wants_json():
                    resp = jsonify({"code": "unauthorized", "detail": "Log in first."})
                    resp.status_code = 401
                    return resp
                target = login_endpoint or LOGIN_ENDPOINTS[kind]
                nxt = request.full_path.rstrip("?") if request.method == "GET" else None
                return redirect(url_for(target, next=nxt))
            return view(*args, **kwargs)

        return cast(F, inner)

    return wrap


def safe_next(target: str | None, default: str) -> str:
    """A post-login destination that stays on this site (a path, never //host or a scheme)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


# ---------------------------------------------------------------- CSRF


def _csrf_seed() -> str:
    seed = g.get("csrf_seed")
    if seed is None:
        seed = request.cookies.get(CSRF_COOKIE) or ""
        if not (
            16 <= len(seed) <= 64 and seed.replace("-", "").replace("_", "").isalnum() and seed.isascii()
        ):
            seed = secrets.token_urlsafe(24)
            g.csrf_new_seed = seed
        g.csrf_seed = seed
    return str(seed)


def csrf_token() -> str:
    """The CSRF token of this browser and session (Jinja global `csrf_token()`)."""
    user = current_user()
    sid = user.sid if user else ""
    msg = f"csrf|{_csrf_seed()}|{sid}".encode()
    return hmac.new(_ctx().settings.secret_key.encode(), msg, hashlib.sha256).hexdigest()


def check_csrf() -> None:
    """Refuse a state-changing request whose token (form field or header) is missing or wrong."""
    if request.method in SAFE_METHODS:
        return
    if not request.cookies.get(CSRF_COOKIE):
        raise CsrfRefused("no CSRF cookie")
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
    if not hmac.compare_digest(sent.encode(), csrf_token().encode()):
        raise CsrfRefused("CSRF token missing or wrong")


# ---------------------------------------------------------------- rate limits


def rate_limit(bucket: str, limit: int, window_s: int) -> None:
    """Count one attempt in `bucket` (e.g. 'login:staff:ip:1.2.3.4'); raise RateLimited past `limit`."""
    hits, reset = _ctx().store.hit(f"rate:page:{bucket}", window_s)
    if hits > limit:
        raise RateLimited(reset, f"Too many attempts; retry after {reset} s.")


def login_rate_limit(
    kind: str, who: str = "", *, per_ip: int = 30, per_who: int = 10, window_s: int = 300
) -> None:
    """Rate-limit a login attempt by client address and, when given, by the account tried."""
    rate_limit(f"login:{kind}:ip:{request.remote_addr or '-'}", per_ip, window_s)
    if who:
        digest = hashlib.sha256(who.encode()).hexdigest()[:24]
        rate_limit(f"login:{kind}:who:{digest}", per_who, window_s)


# ---------------------------------------------------------------- wiring


def install(app: Flask, blueprint_names: set[str]) -> None:
    """Check CSRF before, and add headers and cookies after, every request of the page blueprints."""

    def is_page() -> bool:
        return request.blueprint in blueprint_names

    @app.before_request
    def _csrf() -> Any:
        if is_page():
            try:
                check_csrf()
            except CsrfRefused:
                from voucher_service.web.errors import csrf_refused

                return csrf_refused()
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        if not is_page():
            return resp
        for name, value in SECURITY_HEADERS.items():
            resp.headers.setdefault(name, value)
        if request.blueprint != "web_static":
            resp.headers.setdefault("Cache-Control", "no-store")
            resp.vary.add("Cookie")
        secure = _secure()
        new_seed = g.get("csrf_new_seed")
        if new_seed:
            resp.set_cookie(
                CSRF_COOKIE,
                new_seed,
                max_age=365 * 86_400,
                httponly=True,
                samesite="Lax",
                secure=secure,
                path="/",
            )
        cookie = g.get("page_session_cookie")
        if cookie is not None:
            value, ttl = cookie
            if value:
                resp.set_cookie(
                    SESSION_COOKIE, value, max_age=ttl, httponly=True, samesite="Lax", secure=secure, path="/"
                )
            else:
                resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Lax", secure=secure)
        return resp
