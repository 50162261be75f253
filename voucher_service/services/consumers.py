"""Consumer login: one-time codes by SMS, then a session token bound to the holder hash.

A phone number is never stored or logged in clear: the holder is keyed_hash("phone", phone), the
code is kept only as a keyed hash in the FastStore, and audit entries carry a hash prefix.
"""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Any

from voucher_service.domain.clock import rfc3339
from voucher_service.domain.errors import RateLimited, Unauthorized, ValidationFailed
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import issue_session

# ASCII digits only: Python's \d, isdigit() and int() also take Arabic-Indic, Thai, superscript ... digits,
# and each such spelling would hash to a different holder (issue 8: a per-person limit bypassed).
MAINLAND_MOBILE_RE = re.compile(r"(?:\+86|0086)?(1[3-9][0-9]{9})")
# What a Chinese input method types in full-width mode: digits, plus, hyphen and the ideographic space.
FULL_WIDTH = {**{0xFF10 + i: str(i) for i in range(10)}, 0xFF0B: "+", 0xFF0D: "-", 0x3000: " "}
SEND_WINDOW_S = 3600


def normalise_phone(raw: str, field: str = "phone") -> str:
    """The canonical form of a mainland mobile number: 11 ASCII digits.

    Full-width digits, plus and spaces become their ASCII forms; then spaces and hyphens are dropped and a
    leading '+86' / '0086' with them. Anything else (digits of other scripts, tabs, other characters) is
    refused, so one number has exactly one holder hash.
    """
    phone = raw.translate(FULL_WIDTH).replace(" ", "").replace("-", "")
    match = MAINLAND_MOBILE_RE.fullmatch(phone) if phone.isascii() else None
    if match is None:
        raise ValidationFailed(
            "Not a mainland China mobile number.",
            [{"field": field, "message": "must be 11 digits 0-9 starting with 13-19, optionally after +86"}],
        )
    return match.group(1)


def phone_holder(ctx: ServiceContext, phone: str) -> str:
    """The holder hash of a (normalised) phone number: the same person on every channel."""
    return ctx.box.keyed_hash("phone", phone)


def _code_key(holder: str) -> str:
    return f"otp:code:{holder}"


def _tries_key(holder: str) -> str:
    return f"otp:tries:{holder}"


def _code_hash(ctx: ServiceContext, holder: str, code: str) -> bytes:
    # Bound to the holder, so a stored hash says nothing about any other phone's code.
    return ctx.box.keyed_hash("otp", f"{holder}:{code}").encode()


def send_code(ctx: ServiceContext, raw_phone: str) -> dict[str, Any]:
    """Send a 6-digit one-time code to a phone, within the hourly send limit."""
    phone = normalise_phone(raw_phone)
    holder = phone_holder(ctx, phone)
    sends, reset = ctx.store.hit(f"otp:sends:{holder}", SEND_WINDOW_S)
    if sends > ctx.settings.otp_sends_per_hour:
        raise RateLimited(reset, f"Too many codes sent to this number; retry after {reset} s.")
    code = f"{secrets.randbelow(1_000_000):06d}"
    ttl = ctx.settings.otp_ttl_s
    # A new code replaces the old one and gets a fresh attempt budget.
    ctx.store.delete(_tries_key(holder))
    ctx.store.set(_code_key(holder), _code_hash(ctx, holder, code), ttl)
    ctx.sms.send_code(phone, code)
    return {"sent": True, "expires_in": ttl}


def open_session(ctx: ServiceContext, raw_phone: str, code: str) -> dict[str, Any]:
    """Exchange a phone's current one-time code for a session token; raise Unauthorized otherwise."""
    phone = normalise_phone(raw_phone)
    holder = phone_holder(ctx, phone)
    tries = ctx.store.incr(_tries_key(holder), ctx.settings.otp_ttl_s)
    stored = ctx.store.get(_code_key(holder))
    if stored is None:
        raise Unauthorized("No valid code for this number; request a new one.")
    if tries > ctx.settings.otp_max_attempts:
        ctx.store.delete(_code_key(holder))  # burned: guessing stops here
        raise Unauthorized("Too many wrong codes; request a new one.")
    if not hmac.compare_digest(stored, _code_hash(ctx, holder, code)):
        if tries >= ctx.settings.otp_max_attempts:
            ctx.store.delete(_code_key(holder))
        raise Unauthorized("Wrong or expired code.")
    # Single use, even for two requests racing with the same code: only one marks it used.
    if not ctx.store.add_once(f"otp:used:{stored.decode()}", ctx.settings.otp_ttl_s):
        raise Unauthorized("This code was already used; request a new one.")
    ctx.store.delete(_code_key(holder), _tries_key(holder))
    token, expires = issue_session(ctx, holder)
    now = ctx.now()
    with ctx.sessions.begin() as s:
        audit_log.record(
            s, f"consumer:{holder[:16]}", "consumer.session_opened", "consumer", holder[:16], {}, now
        )
    return {"token": token, "expires_at": rfc3339(expires)}
