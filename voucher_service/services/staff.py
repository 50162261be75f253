"""Staff accounts: a merchant's cashiers, who log in to the checkout page with a username and password.

- A username belongs to one merchant and is unique across all merchants, so a cashier logs in with
  username and password alone (no merchant id to type at the till). It is normalised before it is
  compared or stored: NFKC (fullwidth `ＭＡＮＧＯ` is `MANGO`), casefolded, surrounding spaces dropped,
  then it must be 3-64 ASCII characters of `[a-z0-9._-]` starting with a letter or digit.
- A password is NFKC-normalised too (the same keys typed on a fullwidth keyboard still match), must be
  10-256 characters and may not contain control characters (NUL included).
- Passwords are stored as argon2id hashes (argon2-cffi, RFC 9106's second recommended setting:
  t=3 iterations, m=64 MiB, p=4 lanes, 16-byte salt, 32-byte tag); the parameters travel in the hash
  string, so raising them later only rehashes at the next successful login.
- An unknown username costs the same argon2 verification as a wrong password, and both get the same
  refusal. Attempts are limited per username and per client address through the FastStore.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from voucher_service.adapters.db.models import Merchant, StaffAccount
from voucher_service.config import Settings
from voucher_service.domain.clock import rfc3339
from voucher_service.domain.errors import (
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext

USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{2,63}", re.ASCII)
PASSWORD_MIN = 10
PASSWORD_MAX = 256
# Longer input is refused before any normalisation or hashing.
INPUT_MAX = 256
LOGIN_REFUSED = "Wrong username or password."

_dummy_lock = threading.Lock()
_dummy_hash: dict[PasswordHasher, str] = {}


@dataclass(frozen=True)
class StaffIdentity:
    """A logged-in staff member and the merchant it works for."""

    staff_id: str
    merchant_id: str
    merchant_name: str
    username: str

    @property
    def actor(self) -> str:
        """How the audit log names this staff member."""
        return f"staff:{self.staff_id}"


def normalise_username(raw: str) -> str:
    """NFKC, casefold and strip a username (no validation)."""
    return unicodedata.normalize("NFKC", raw).casefold().strip()


def _username_errors(raw: str) -> tuple[str, list[dict[str, str]]]:
    if len(raw) > INPUT_MAX or "\x00" in raw:
        return "", [{"field": "username", "message": "must be 3-64 characters of a-z, 0-9, '.', '_', '-'"}]
    name = normalise_username(raw)
    if not USERNAME_RE.fullmatch(name):
        return name, [
            {
                "field": "username",
                "message": "must be 3-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
            }
        ]
    return name, []


def _password_errors(raw: str) -> tuple[str, list[dict[str, str]]]:
    if len(raw) > INPUT_MAX:
        return "", [{"field": "password", "message": f"must be at most {PASSWORD_MAX} characters"}]
    password = unicodedata.normalize("NFKC", raw)
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        return "", [
            {"field": "password", "message": "must not contain control characters (NUL, tab, newline...)"}
        ]
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return "", [{"field": "password", "message": f"must be {PASSWORD_MIN}-{PASSWORD_MAX} characters"}]
    return password, []


def generate_password() -> str:
    """A random password of 20 URL-safe characters (120 bits)."""
    return secrets.token_urlsafe(15)


def staff_to_json(row: StaffAccount) -> dict[str, Any]:
    """A staff account as the API shows it (never with its hash)."""
    return {
        "id": row.id,
        "merchant_id": row.merchant_id,
        "username": row.username,
        "created_at": rfc3339(row.created_at),
        "disabled": row.disabled_at is not None,
        "disabled_at": rfc3339(row.disabled_at) if row.disabled_at else None,
    }


def _own_merchant(merchant_id: str, acting_merchant_id: str | None) -> None:
    if acting_merchant_id is not None and acting_merchant_id != merchant_id:
        raise Forbidden("A merchant may only manage its own staff.")


def create_staff(
    ctx: ServiceContext,
    merchant_id: str,
    username: str,
    password: str,
    actor: str,
    acting_merchant_id: str | None = None,
) -> dict[str, Any]:
    """Create a staff account of a merchant; the password is only ever stored as an argon2id hash."""
    _own_merchant(merchant_id, acting_merchant_id)
    name, errors = _username_errors(username)
    secret, password_errors = _password_errors(password)
    errors += password_errors
    if errors:
        raise ValidationFailed("The staff account is not valid.", errors)
    with ctx.sessions() as s:
        if s.get(Merchant, merchant_id) is None:
            raise NotFound(f"No merchant {merchant_id}.")
        if s.scalar(select(StaffAccount.id).where(StaffAccount.username == name)) is not None:
            raise Conflict(f"The username {name} is taken.")
    hashed = password_hasher(ctx.settings).hash(secret)  # slow on purpose: outside any transaction
    now = ctx.now()
    try:
        with ctx.sessions.begin() as s:
            row = StaffAccount(
                id="stf_" + secrets.token_hex(8),
                merchant_id=merchant_id,
                username=name,
                password_hash=hashed,
                created_at=now,
            )
            s.add(row)
            s.flush()
            audit_log.record(
                s,
                actor,
                "staff.created",
                "staff",
                row.id,
                {"merchant_id": merchant_id, "username": name},
                now,
            )
            return staff_to_json(row)
    except IntegrityError:
        raise Conflict(f"The username {name} is taken.") from None


def list_staff(
    ctx: ServiceContext, merchant_id: str, acting_merchant_id: str | None = None
) -> list[dict[str, Any]]:
    """A merchant's staff accounts, oldest first."""
    _own_merchant(merchant_id, acting_merchant_id)
    with ctx.sessions() as s:
        if s.get(Merchant, merchant_id) is None:
            raise NotFound(f"No merchant {merchant_id}.")
        rows = s.scalars(
            select(StaffAccount)
            .where(StaffAccount.merchant_id == merchant_id)
            .order_by(StaffAccount.created_at, StaffAccount.id)
        )
        return [staff_to_json(r) for r in rows]


def disable_staff(
    ctx: ServiceContext, merchant_id: str, staff_id: str, actor: str, acting_merchant_id: str | None = None
) -> dict[str, Any]:
    """Disable a staff account: it can no longer log in, and its open page sessions stop working."""
    _own_merchant(merchant_id, acting_merchant_id)
    now = ctx.now()
    with ctx.sessions.begin() as s:
        row = s.get(StaffAccount, staff_id)
        if row is None or row.merchant_id != merchant_id:
            raise NotFound(f"No staff account {staff_id} at merchant {merchant_id}.")
        if row.disabled_at is None:
            row.disabled_at = now
            audit_log.record(s, actor, "staff.disabled", "staff", row.id, {"merchant_id": merchant_id}, now)
        return staff_to_json(row)


def password_hasher(settings: Settings) -> PasswordHasher:
    """The argon2id hasher of the configured cost (see Settings.staff_password_*)."""
    return _hasher(
        settings.staff_password_time_cost,
        settings.staff_password_memory_kib,
        settings.staff_password_parallelism,
    )


@functools.lru_cache(maxsize=8)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


def _dummy(hasher: PasswordHasher) -> str:
    """A hash of a random password, verified against when the username is unknown (same cost)."""
    with _dummy_lock:
        if hasher not in _dummy_hash:
            _dummy_hash[hasher] = hasher.hash(secrets.token_urlsafe(16))
        return _dummy_hash[hasher]


def _verify(hasher: PasswordHasher, hashed: str, password: str) -> bool:
    try:
        return hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def _limit_key(kind: str, value: str) -> str:
    return f"staff:login:{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def authenticate(ctx: ServiceContext, username: str, password: str, *, client: str) -> StaffIdentity:
    """Check a staff login; raise Unauthorized (the same for unknown users), RateLimited or ValidationFailed."""
    if len(username) > INPUT_MAX or len(password) > INPUT_MAX or "\x00" in username or "\x00" in password:
        raise ValidationFailed(
            "The login is not valid.",
            [{"field": "username", "message": "too long or NUL"}]
            if len(username) > INPUT_MAX or "\x00" in username
            else [{"field": "password", "message": "too long or NUL"}],
        )
    window = ctx.settings.staff_login_window_s
    hits, reset = ctx.store.hit(_limit_key("client", client), window)
    if hits > ctx.settings.staff_login_attempts_per_client:
        raise RateLimited(reset, f"Too many logins from this address; retry after {reset} s.")
    name = normalise_username(username)
    secret = unicodedata.normalize("NFKC", password)
    hasher = password_hasher(ctx.settings)
    # Every attempt counts until one succeeds, so parallel guesses cannot slip past the limit.
    tries_key = _limit_key("user", name)
    if ctx.store.incr(tries_key, window) > ctx.settings.staff_login_attempts:
        raise RateLimited(window, f"Too many attempts for this username; retry after {window} s.")
    with ctx.sessions() as s:
        row = (
            s.scalar(select(StaffAccount).where(StaffAccount.username == name))
            if USERNAME_RE.fullmatch(name)
            else None
        )
        merchant = s.get(Merchant, row.merchant_id) if row is not None else None
        known = row is not None and row.disabled_at is None and merchant is not None
        stored = row.password_hash if known and row is not None else _dummy(hasher)
        ok = _verify(hasher, stored, secret) and known
    now = ctx.now()
    if not ok or row is None or merchant is None:
        with ctx.sessions.begin() as s:
            audit_log.record(
                s,
                f"login:{client}"[:100],
                "staff.login_failed",
                "staff",
                row.id if row is not None else "unknown",
                {"username": name[:64]},
                now,
            )
        raise Unauthorized(LOGIN_REFUSED)
    ctx.store.delete(tries_key)
    identity = StaffIdentity(row.id, row.merchant_id, merchant.name, row.username)
    with ctx.sessions.begin() as s:
        if hasher.check_needs_rehash(stored):
            fresh = s.get(StaffAccount, row.id)
            if fresh is not None:
                fresh.password_hash = hasher.hash(secret)
        audit_log.record(
            s, identity.actor, "staff.login_succeeded", "staff", row.id, {"merchant_id": row.merchant_id}, now
        )
    return identity


def active_staff(ctx: ServiceContext, staff_id: str) -> StaffIdentity | None:
    """The identity of an enabled staff account (a page session checks it on every request), or None."""
    with ctx.sessions() as s:
        row = s.get(StaffAccount, staff_id)
        if row is None or row.disabled_at is not None:
            return None
        merchant = s.get(Merchant, row.merchant_id)
        if merchant is None:
            return None
        return StaffIdentity(row.id, row.merchant_id, merchant.name, row.username)


def record_logout(ctx: ServiceContext, identity: StaffIdentity) -> None:
    """Note a staff member's logout in the audit log."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        audit_log.record(
            s,
            identity.actor,
            "staff.logged_out",
            "staff",
            identity.staff_id,
            {"merchant_id": identity.merchant_id},
            now,
        )
