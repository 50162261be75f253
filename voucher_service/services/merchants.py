"""Merchants: creation (API secret shown once), enrolment in programmes, offline terminals."""

from __future__ import annotations

import re
import secrets
from typing import Any

from sqlalchemy import select

from voucher_service.adapters.db.models import Enrolment, Merchant, Program, Terminal
from voucher_service.adapters.signing import public_jwk, public_key_from_jwk
from voucher_service.domain.clock import rfc3339
from voucher_service.domain.errors import Conflict, Forbidden, NotFound, ValidationFailed
from voucher_service.domain.programs import CHANNELS
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext

TERMINAL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def merchant_to_json(m: Merchant) -> dict[str, Any]:
    """A merchant as the API shows it (never with its secret)."""
    return {
        "id": m.id,
        "name": m.name,
        "channels": list(m.channels),
        "platform": m.platform,
        "created_at": rfc3339(m.created_at),
    }


def create_merchant(
    ctx: ServiceContext, name: str, channels: list[str], platform: bool, actor: str
) -> dict[str, Any]:
    """Create a merchant; the returned `api_secret` is never shown again."""
    errors = []
    if not name.strip():
        errors.append({"field": "name", "message": "must not be empty"})
    if not channels or any(c not in CHANNELS for c in channels) or len(set(channels)) != len(channels):
        errors.append({"field": "channels", "message": "must be distinct values of online, offline"})
    if errors:
        raise ValidationFailed("The merchant is not valid.", errors)
    now = ctx.now()
    merchant_id = "mch_" + secrets.token_hex(8)
    secret = "vsk_" + secrets.token_urlsafe(32)
    with ctx.sessions.begin() as s:
        m = Merchant(
            id=merchant_id,
            name=name.strip(),
            channels=list(channels),
            platform=platform,
            secret_ciphertext=ctx.box.encrypt(secret, merchant_id),
            created_at=now,
        )
        s.add(m)
        audit_log.record(
            s,
            actor,
            "merchant.created",
            "merchant",
            merchant_id,
            {"name": m.name, "channels": m.channels, "platform": platform},
            now,
        )
        out = merchant_to_json(m)
    out["api_secret"] = secret
    return out


def get_merchant(ctx: ServiceContext, merchant_id: str) -> dict[str, Any]:
    """A merchant with the programmes it is enrolled in."""
    with ctx.sessions() as s:
        m = s.get(Merchant, merchant_id)
        if m is None:
            raise NotFound(f"No merchant {merchant_id}.")
        out = merchant_to_json(m)
        out["programs"] = list(
            s.scalars(select(Enrolment.program_id).where(Enrolment.merchant_id == merchant_id))
        )
    return out


def enrol_merchant(
    ctx: ServiceContext, program_id: str, merchant_id: str, actor: str
) -> tuple[dict[str, Any], bool]:
    """Enrol a merchant in a programme; return the enrolment and whether it is new."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        if s.get(Program, program_id) is None:
            raise NotFound(f"No programme {program_id}.")
        if s.get(Merchant, merchant_id) is None:
            raise NotFound(f"No merchant {merchant_id}.")
        existing = s.get(Enrolment, (program_id, merchant_id))
        if existing is not None:
            return {
                "program_id": program_id,
                "merchant_id": merchant_id,
                "enrolled_at": rfc3339(existing.enrolled_at),
            }, False
        s.add(Enrolment(program_id=program_id, merchant_id=merchant_id, enrolled_at=now))
        audit_log.record(
            s, actor, "merchant.enrolled", "program", program_id, {"merchant_id": merchant_id}, now
        )
    return {"program_id": program_id, "merchant_id": merchant_id, "enrolled_at": rfc3339(now)}, True


def register_terminal(
    ctx: ServiceContext,
    merchant_id: str,
    terminal_id: str,
    jwk: dict[str, Any],
    actor: str,
    acting_merchant_id: str | None,
) -> tuple[dict[str, Any], bool]:
    """Register an offline terminal's EC P-256 public key; the same key again is a no-op."""
    if acting_merchant_id is not None and acting_merchant_id != merchant_id:
        raise Forbidden("A merchant may only register its own terminals.")
    if not TERMINAL_RE.fullmatch(terminal_id):
        raise ValidationFailed(
            "Invalid terminal_id.",
            [{"field": "terminal_id", "message": "must be 1-64 characters of [A-Za-z0-9_.-]"}],
        )
    try:
        canonical = public_jwk(public_key_from_jwk(jwk))
    except ValueError as exc:
        raise ValidationFailed(
            "Invalid public key.", [{"field": "public_key", "message": str(exc)}]
        ) from None
    canonical.pop("use", None)
    now = ctx.now()
    with ctx.sessions.begin() as s:
        if s.get(Merchant, merchant_id) is None:
            raise NotFound(f"No merchant {merchant_id}.")
        existing = s.get(Terminal, (merchant_id, terminal_id))
        if existing is not None:
            if (existing.public_key_jwk.get("x"), existing.public_key_jwk.get("y")) != (
                canonical["x"],
                canonical["y"],
            ):
                raise Conflict(
                    "This terminal is registered with another key; give the new key a new terminal_id."
                )
            return _terminal_json(existing), False
        t = Terminal(
            merchant_id=merchant_id, terminal_id=terminal_id, public_key_jwk=canonical, created_at=now
        )
        s.add(t)
        audit_log.record(
            s,
            actor,
            "terminal.registered",
            "merchant",
            merchant_id,
            {"terminal_id": terminal_id, "kid": canonical["kid"]},
            now,
        )
        return _terminal_json(t), True


def _terminal_json(t: Terminal) -> dict[str, Any]:
    return {
        "merchant_id": t.merchant_id,
        "terminal_id": t.terminal_id,
        "public_key": dict(t.public_key_jwk),
        "created_at": rfc3339(t.created_at),
    }


def is_enrolled(ctx: ServiceContext, program_id: str, merchant_id: str) -> bool:
    """Whether the merchant takes part in the programme."""
    with ctx.sessions() as s:
        return s.get(Enrolment, (program_id, merchant_id)) is not None
