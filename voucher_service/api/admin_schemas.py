"""Request and response schemas of the admin routes (they validate requests and feed OpenAPI)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from voucher_service.api.fields import Fen, PositiveFen
from voucher_service.domain.programs import ProgramSpec, TierSpec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TierIn(Strict):
    code: StrictStr = Field(min_length=1, max_length=32)
    face_value_fen: PositiveFen
    min_spend_fen: Fen
    quantity: StrictInt = Field(gt=0, le=10_000_000)


class EligibilityIn(Strict):
    certification_types: list[Literal["national", "guangxi", "shenzhen"]] = Field(min_length=1)
    county_codes: list[StrictStr] | None = None


class TargetIn(Strict):
    county_code: StrictStr = Field(pattern=r"^[0-9]{6}$")
    target_fen: Fen


class OfflineIn(Strict):
    max_offline_fen_per_terminal: Fen
    max_offline_hours: StrictInt = Field(ge=0, le=24 * 366)


class ProgramIn(Strict):
    """A programme (CONTRACT §7)."""

    name: StrictStr = Field(min_length=1, max_length=200)
    budget_fen: PositiveFen
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    voucher_validity_days: StrictInt = Field(ge=1, le=3660)
    per_person_limit: StrictInt = Field(ge=1, le=1000)
    channels: list[Literal["online", "offline"]] = Field(min_length=1)
    tiers: list[TierIn] = Field(min_length=1, max_length=50)
    eligibility: EligibilityIn
    targets: list[TargetIn] = Field(default_factory=list)
    offline: OfflineIn = Field(
        default_factory=lambda: OfflineIn(max_offline_fen_per_terminal=500_000, max_offline_hours=24)
    )
    timezone: StrictStr = Field(
        default="Asia/Shanghai",
        min_length=1,
        max_length=64,
        description="An IANA time zone (e.g. Asia/Shanghai) for calendar days.",
    )
    holder_binding: Literal["off", "optional", "required"] = Field(
        default="off",
        description="Whether vouchers are bound to the holder's device key and shown as live VP1 codes "
        "(CONTRACT §10); fixed at creation.",
    )

    def to_spec(self) -> ProgramSpec:
        """The domain's view of this programme."""
        return ProgramSpec(
            name=self.name,
            budget_fen=self.budget_fen,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            voucher_validity_days=self.voucher_validity_days,
            per_person_limit=self.per_person_limit,
            channels=tuple(self.channels),
            tiers=tuple(TierSpec(t.code, t.face_value_fen, t.min_spend_fen, t.quantity) for t in self.tiers),
            certification_types=tuple(self.eligibility.certification_types),
            county_codes=tuple(self.eligibility.county_codes)
            if self.eligibility.county_codes is not None
            else None,
            targets=tuple((t.county_code, t.target_fen) for t in self.targets),
            max_offline_fen_per_terminal=self.offline.max_offline_fen_per_terminal,
            max_offline_hours=self.offline.max_offline_hours,
            timezone=self.timezone,
            holder_binding=self.holder_binding,
        )


class ProgramStats(BaseModel):
    claimed: int
    redeemed: int
    claimed_fen: int
    redeemed_fen: int
    remaining_by_tier: dict[str, int]


class ProgramOut(BaseModel):
    id: str
    name: str
    status: Literal["draft", "active", "suspended"]
    budget_fen: int
    starts_at: str
    ends_at: str
    timezone: str
    voucher_validity_days: int
    per_person_limit: int
    channels: list[str]
    tiers: list[dict[str, Any]]
    eligibility: dict[str, Any]
    targets: list[dict[str, Any]]
    offline: dict[str, int]
    holder_binding: Literal["off", "optional", "required"] = "off"
    created_at: str
    activated_at: str | None
    stats: ProgramStats | None = None


class ProgramList(BaseModel):
    programs: list[ProgramOut]


class MerchantIn(Strict):
    name: StrictStr = Field(min_length=1, max_length=200)
    channels: list[Literal["online", "offline"]] = Field(min_length=1)
    platform: StrictBool = False


class MerchantSecretOut(BaseModel):
    merchant_id: str
    api_secret: str = Field(description="The new API secret, shown only in this response.")


class MerchantOut(BaseModel):
    id: str
    name: str
    channels: list[str]
    platform: bool
    created_at: str
    api_secret: str | None = Field(
        default=None, description="Only in the response that creates the merchant."
    )
    programs: list[str] | None = None


class EnrolmentIn(Strict):
    merchant_id: StrictStr = Field(min_length=1, max_length=40)


class EnrolmentOut(BaseModel):
    program_id: str
    merchant_id: str
    enrolled_at: str


class TerminalIn(Strict):
    terminal_id: StrictStr = Field(min_length=1, max_length=64)
    public_key: dict[str, Any]


class TerminalOut(BaseModel):
    merchant_id: str
    terminal_id: str
    public_key: dict[str, Any]
    created_at: str


class StaffIn(Strict):
    username: StrictStr = Field(
        min_length=1,
        max_length=256,
        description="3-64 of [a-z0-9._-] after NFKC and casefolding; unique across merchants",
    )
    password: StrictStr = Field(
        min_length=1, max_length=256, description="10-256 characters, no control characters"
    )


class StaffOut(BaseModel):
    id: str
    merchant_id: str
    username: str
    created_at: str
    disabled: bool
    disabled_at: str | None = None


class StaffList(BaseModel):
    staff: list[StaffOut]
