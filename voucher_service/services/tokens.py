"""Signing and verifying VC1 voucher tokens and VR1 receipts with the key ring."""

from __future__ import annotations

import datetime as dt

from voucher_service.adapters.signing import encode_token, parse_token
from voucher_service.domain.errors import TokenInvalid, TokenMalformed
from voucher_service.domain.tokens import ReceiptClaims, VoucherClaims
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


def verify_voucher_token(ctx: ServiceContext, text: object) -> VoucherClaims:
    """Decode and verify a VC1 token; raise TokenMalformed or TokenInvalid. Time is checked by the caller."""
    if not isinstance(text, str):
        raise TokenMalformed("The token must be text starting with VC1:.")
    try:
        parsed = parse_token(text, "VC1:")  # not stripped: one voucher, one text
    except ValueError as exc:
        raise TokenMalformed(f"The token does not decode: {exc}.") from None
    key = ctx.keys.find(parsed.kid_b64)
    if key is None:
        raise TokenInvalid(f"The token is signed by an unknown key (kid {parsed.kid_b64}).")
    if not parsed.verify(key.public_key):
        raise TokenInvalid("The token's signature does not verify.")
    try:
        return VoucherClaims.from_cbor_map(parsed.payload, kid=parsed.kid_b64)
    except ValueError as exc:
        raise TokenInvalid(f"The token's payload is not a voucher: {exc}.") from None


def sign_receipt(ctx: ServiceContext, receipt: ReceiptClaims) -> str:
    """A VR1 receipt: the redemption's facts signed like a voucher."""
    key = ctx.keys.active()
    assert key.private_key is not None
    return encode_token(key.private_key, key.kid_bytes, receipt.to_cbor_map(), prefix="VR1:")
