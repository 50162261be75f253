"""Voucher and receipt claims as plain values, and the time rules that apply to them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from voucher_service.domain.presentations import CLAIM_CNF, HolderKey

# CBOR claim keys of the contract (§3).
CLAIM_IAT = 6
CLAIM_NBF = 5
CLAIM_EXP = 4
CLAIM_CTI = 7
CLAIM_PROGRAM = -70001
CLAIM_TIER = -70002
CLAIM_FACE = -70003
CLAIM_MIN_SPEND = -70004
# Receipt claims (VR1): the same construction over the redemption.
CLAIM_REDEMPTION = -70101
CLAIM_VOUCHER = -70102
CLAIM_MERCHANT = -70103
CLAIM_DISCOUNT = -70104
CLAIM_REDEEMED_AT = -70105


@dataclass(frozen=True)
class VoucherClaims:
    """What a VC1 token says about its voucher."""

    voucher_id: str
    program_id: str
    tier: str
    face_value_fen: int
    min_spend_fen: int
    iat: int
    nbf: int
    exp: int
    kid: str = ""
    # The device key a holder-bound voucher names in its `cnf` claim (CONTRACT §10); None: a bearer token.
    holder_key: HolderKey | None = None

    def to_cbor_map(self) -> dict[int, object]:
        """Return the CBOR payload map of the contract."""
        out: dict[int, object] = {
            CLAIM_IAT: self.iat,
            CLAIM_NBF: self.nbf,
            CLAIM_EXP: self.exp,
            CLAIM_CTI: uuid.UUID(self.voucher_id).bytes,
            CLAIM_PROGRAM: self.program_id,
            CLAIM_TIER: self.tier,
            CLAIM_FACE: self.face_value_fen,
            CLAIM_MIN_SPEND: self.min_spend_fen,
        }
        if self.holder_key is not None:
            out[CLAIM_CNF] = self.holder_key.cnf()
        return out

    @classmethod
    def from_cbor_map(cls, payload: object, kid: str = "") -> VoucherClaims:
        """Build claims from a decoded payload; raise ValueError when it is not a voucher payload."""
        if not isinstance(payload, dict):
            raise ValueError("payload is not a map")
        try:
            cti = payload[CLAIM_CTI]
            values = dict(
                voucher_id=str(uuid.UUID(bytes=bytes(cti))),
                program_id=payload[CLAIM_PROGRAM],
                tier=payload[CLAIM_TIER],
                face_value_fen=payload[CLAIM_FACE],
                min_spend_fen=payload[CLAIM_MIN_SPEND],
                iat=payload[CLAIM_IAT],
                nbf=payload[CLAIM_NBF],
                exp=payload[CLAIM_EXP],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"payload lacks a voucher claim: {exc}") from exc
        for name in ("program_id", "tier"):
            if not isinstance(values[name], str):
                raise ValueError(f"{name} is not text")
        for name in ("face_value_fen", "min_spend_fen", "iat", "nbf", "exp"):
            if not isinstance(values[name], int) or isinstance(values[name], bool):
                raise ValueError(f"{name} is not an integer")
        holder_key = HolderKey.from_cnf(payload[CLAIM_CNF]) if CLAIM_CNF in payload else None
        return cls(kid=kid, holder_key=holder_key, **values)  # type: ignore[arg-type]

    def time_verdict(self, now: int) -> str | None:
        """Return None when valid at `now`, else 'voucher_not_yet_valid' or 'voucher_expired'."""
        if now < self.nbf:
            return "voucher_not_yet_valid"
        if now >= self.exp:
            return "voucher_expired"
        return None


@dataclass(frozen=True)
class ReceiptClaims:
    """What a VR1 receipt attests: this merchant redeemed this voucher for this discount, then."""

    redemption_id: str
    voucher_id: str
    merchant_id: str
    discount_fen: int
    redeemed_at: int

    def to_cbor_map(self) -> dict[int, object]:
        """Return the CBOR payload map of a receipt."""
        return {
            CLAIM_IAT: self.redeemed_at,
            CLAIM_CTI: uuid.UUID(self.redemption_id).bytes,
            CLAIM_REDEMPTION: self.redemption_id,
            CLAIM_VOUCHER: self.voucher_id,
            CLAIM_MERCHANT: self.merchant_id,
            CLAIM_DISCOUNT: self.discount_fen,
            CLAIM_REDEEMED_AT: self.redeemed_at,
        }
