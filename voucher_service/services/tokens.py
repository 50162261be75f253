"""Signing and verifying VC1 voucher tokens, VP1 presentations of them and VR1 receipts with the key ring."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from voucher_service.adapters.signing import ParsedToken, encode_token, parse_presentation, parse_token
from voucher_service.domain.errors import (
    PresentationInvalid,
    PresentationRequired,
    PresentationStale,
    TokenInvalid,
    TokenMalformed,
)
from voucher_service.domain.presentations import (
    BINDING_REQUIRED,
    PRESENTATION_CLOCK_ALLOWANCE_S,
    PRESENTATION_MAX_AGE_S,
    PRESENTATION_PREFIX,
    freshness_verdict,
)
from voucher_service.domain.tokens import ReceiptClaims, VoucherClaims
from voucher_service.services import holder_binding
from voucher_service.services.context import ServiceContext


def sign_voucher(
    ctx: ServiceContext,
    *,
    voucher_id: str,
    program_id: str,
    tier: str,
    face_value_fen: int,
    min_spend_fen: int,
    issued_at: dt.datetime,
    valid_from: dt.datetime,
    expires_at: dt.datetime,
) -> tuple[str, str]:
    """Sign a voucher with the active key; return (VC1 token, kid)."""
    key = ctx.keys.active()
    claims = VoucherClaims(
        voucher_id=voucher_id,
        program_id=program_id,
        tier=tier,
        face_value_fen=face_value_fen,
        min_spend_fen=min_spend_fen,
        iat=int(issued_at.timestamp()),
        nbf=int(valid_from.timestamp()),
        exp=int(expires_at.timestamp()),
    )
    assert key.private_key is not None
    return encode_token(key.private_key, key.kid_bytes, claims.to_cbor_map()), key.kid


def verify_voucher_token(
    ctx: ServiceContext, text: object, *, at: dt.datetime | None = None, session: Session | None = None
) -> VoucherClaims:
    """Decode and verify a VC1 token or a VP1 presentation of one; raise TokenMalformed, TokenInvalid or
    a presentation error (CONTRACT §10). The voucher's time is checked by the caller; a presentation's
    freshness is checked here, against `at` (an offline record's time) or the service's clock.

    A holder-bound VC1 (one with `cnf`), or any VC1 of a `required` programme, is refused alone
    (presentation_required): only a fresh VP1 made with the bound device key redeems it."""
    if not isinstance(text, str):
        raise TokenMalformed("The token must be text starting with VC1: (or VP1:).")
    if text.startswith(PRESENTATION_PREFIX):
        return _verify_presentation(ctx, text, at, session)
    try:
        parsed = parse_token(text, "VC1:")  # not stripped: one voucher, one text
    except ValueError as exc:
        raise TokenMalformed(f"The token does not decode: {exc}.") from None
    claims = _verified_claims(ctx, parsed)
    if (
        claims.holder_key is not None
        or holder_binding.binding_mode(ctx, claims.program_id, session) == BINDING_REQUIRED
    ):
        raise PresentationRequired(
            "This voucher is bound to its holder's phone: scan the live code (VP1:) the wallet shows."
        )
    return claims


def _verified_claims(ctx: ServiceContext, parsed: ParsedToken) -> VoucherClaims:
    key = ctx.keys.find(parsed.kid_b64)
    if key is None:
        raise TokenInvalid(f"The token is signed by an unknown key (kid {parsed.kid_b64}).")
    if not parsed.verify(key.public_key):
        raise TokenInvalid("The token's signature does not verify.")
    try:
        return VoucherClaims.from_cbor_map(parsed.payload, kid=parsed.kid_b64)
    except ValueError as exc:
        raise TokenInvalid(f"The token's payload is not a voucher: {exc}.") from None


def _verify_presentation(
    ctx: ServiceContext, text: str, at: dt.datetime | None, session: Session | None
) -> VoucherClaims:
    """Both signatures (the service's on the VC1, low-s; the device's on the VP1, either s), then the
    freshness, then whether the device key is still the voucher's."""
    try:
        presented = parse_presentation(text)
    except ValueError as exc:
        raise TokenMalformed(f"The presentation does not decode: {exc}.") from None
    claims = _verified_claims(ctx, presented.token)
    if claims.holder_key is None:
        raise PresentationInvalid("The presented voucher is not bound to a device key.")
    try:
        signed = presented.verify(claims.holder_key)
    except ValueError:  # the cnf point is not on P-256 (the service never signs such a key)
        signed = False
    if not signed:
        raise PresentationInvalid("The presentation is not signed by the key the voucher is bound to.")
    moment = int((at or ctx.now()).timestamp())
    if freshness_verdict(presented.presented_at, moment) is not None:
        raise PresentationStale(
            f"The live code was made at unix time {presented.presented_at}: more than "
            f"{PRESENTATION_MAX_AGE_S} s before {moment} (or over {PRESENTATION_CLOCK_ALLOWANCE_S} s after). "
            "Ask the customer to show the code on the phone again."
        )
    holder_binding.check_key(ctx, claims, at=at, session=session)
    return claims


def sign_receipt(ctx: ServiceContext, receipt: ReceiptClaims) -> str:
    """A VR1 receipt: the redemption's facts signed like a voucher."""
    key = ctx.keys.active()
    assert key.private_key is not None
    return encode_token(key.private_key, key.kid_bytes, receipt.to_cbor_map(), prefix="VR1:")
