"""What the SDK returns: dataclasses whose attributes are named as the service's JSON fields."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def _pick(cls: type[T], data: Any, **convert: Any) -> T:
    """Build a dataclass from a JSON object, keeping only its fields (the service may add others)."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} expects a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in names}
    for name, fn in convert.items():
        if name in values:
            values[name] = fn(values[name])
    return cls(**values)


@dataclass(frozen=True, kw_only=True)
class Item:
    """A basket line sent for redemption; money in fen."""

    gtin: str | None
    quantity: int
    unit_price_fen: int
    sku: str | None = None
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the line, without the optional fields left empty."""
        out: dict[str, Any] = {
            "gtin": self.gtin,
            "quantity": self.quantity,
            "unit_price_fen": self.unit_price_fen,
        }
        if self.sku is not None:
            out["sku"] = self.sku
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True, kw_only=True)
class RedemptionLine:
    """The verdict on one basket line."""

    index: int
    gtin: str | None = None
    eligible: bool = False
    reason: str | None = None
    certification_no: str | None = None
    county_code: str | None = None
    line_total_fen: int = 0
    discount_share_fen: int = 0
    quantity: int | None = None
    unit_price_fen: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> RedemptionLine:
        """Build from the service's JSON."""
        return _pick(cls, data)


def _lines(data: Any) -> list[RedemptionLine]:
    return [RedemptionLine.from_json(x) for x in data or []]


@dataclass(frozen=True, kw_only=True)
class Redemption:
    """A redemption (or a preview of one: then `redemption_id` and `receipt` are None)."""

    voucher_id: str
    program_id: str
    order_id: str
    order_total_fen: int
    eligible_total_fen: int
    discount_fen: int
    lines: list[RedemptionLine] = field(default_factory=list)
    merchant_id: str | None = None
    channel: str | None = None
    redemption_id: str | None = None
    redeemed_at: str | None = None
    receipt: str | None = None
    terminal_id: str | None = None
    status: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Redemption:
        """Build from the service's JSON."""
        return _pick(cls, data, lines=_lines)


@dataclass(frozen=True, kw_only=True)
class Reversal:
    """A full or partial reversal of a redemption."""

    reversal_id: str
    redemption_id: str
    clawback_fen: int
    discount_fen: int
    voucher_status: str

    @classmethod
    def from_json(cls, data: Any) -> Reversal:
        """Build from the service's JSON."""
        return _pick(cls, data)


@dataclass(kw_only=True, slots=True)  # not frozen: a frozen init costs verify() ~1.5 us per call
class VoucherClaims:
    """What a verified VC1 token says; times are unix seconds, `kid` is the JWKS kid.

    A holder-bound voucher (CONTRACT §10) has `holder_key_thumbprint` (RFC 9679, hex) and, when it came
    as a VP1 presentation, `presented_at` (the unix time the phone signed it)."""

    voucher_id: str
    program_id: str
    tier: str
    face_value_fen: int
    min_spend_fen: int
    iat: int
    nbf: int
    exp: int
    kid: str
    holder_key_thumbprint: str | None = None
    presented_at: int | None = None


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A voucher claimed by a platform merchant for one of its users."""

    voucher_id: str
    program_id: str
    tier: str
    face_value_fen: int
    min_spend_fen: int
    valid_from: str
    expires_at: str
    token: str
    qr_png_url: str | None = None
    qr_svg_url: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Claim:
        """Build from the service's JSON."""
        return _pick(cls, data)


@dataclass(frozen=True, kw_only=True)
class Tier:
    """A tier of a programme."""

    code: str
    face_value_fen: int
    min_spend_fen: int


@dataclass(frozen=True, kw_only=True)
class Program:
    """A programme the merchant is enrolled in, with what an offline terminal needs of it."""

    id: str
    name: str
    status: str
    starts_at: str
    ends_at: str
    timezone: str = "Asia/Shanghai"
    channels: list[str] = field(default_factory=list)
    tiers: list[Tier] = field(default_factory=list)
    eligibility: dict[str, Any] = field(default_factory=dict)
    offline: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> Program:
        """Build from GET /api/v1/merchant/programs."""
        return _pick(cls, data, tiers=lambda ts: [_pick(Tier, t) for t in ts or []])


@dataclass(frozen=True, kw_only=True)
class OfflineRedemption:
    """A redemption journaled by an offline terminal, waiting for sync()."""

    seq: int
    record_hash: str
    terminal_id: str
    voucher_id: str
    program_id: str
    order_id: str
    order_total_fen: int
    eligible_total_fen: int
    discount_fen: int
    redeemed_at: str
    lines: list[RedemptionLine] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class SyncResult:
    """The service's verdict on one uploaded journal record."""

    seq: int
    status: str  # accepted | duplicate | conflict | rejected
    code: str | None = None
    redemption_id: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> SyncResult:
        """Build from the service's JSON."""
        return _pick(cls, data)


@dataclass(frozen=True, kw_only=True)
class SyncReport:
    """What one sync() did: the verdicts it received, and how many records are still unsent."""

    results: list[SyncResult] = field(default_factory=list)
    pending: int = 0

    def by_status(self, status: str) -> list[SyncResult]:
        """The results with this status."""
        return [r for r in self.results if r.status == status]

    @property
    def ok(self) -> bool:
        """True when every record got a verdict and none is a conflict or a rejection."""
        return self.pending == 0 and all(
            r.status == "accepted" or (r.status == "duplicate" and r.code is None) for r in self.results
        )
