"""Programme rules: tiers within the budget, windows, channels, eligibility scope, voucher validity."""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, available_timezones

from voucher_service.domain.errors import BudgetExceeded, ValidationFailed
from voucher_service.domain.states import ProgramStatus

CHANNELS = ("online", "offline")
CERTIFICATION_TYPES = ("national", "guangxi", "shenzhen")
COUNTY_RE = re.compile(r"[0-9]{6}")  # ASCII digits, matched with fullmatch (no trailing newline)
TIER_CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def is_time_zone(name: str) -> bool:
    """True when `name` is an IANA time zone key that loads (not a tzdata folder such as 'Asia')."""
    if name not in _zone_names():
        return False
    try:
        ZoneInfo(name)
    except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError; a folder an OSError
        return False
    return True


@dataclass(frozen=True)
class TierSpec:
    """A tier: so much off a minimum spend, so many vouchers."""

    code: str
    face_value_fen: int
    min_spend_fen: int
    quantity: int

    @property
    def total_fen(self) -> int:
        return self.face_value_fen * self.quantity


@dataclass(frozen=True)
class ProgramSpec:
    """A programme as an administrator describes it (CONTRACT §7)."""

    name: str
    budget_fen: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    voucher_validity_days: int
    per_person_limit: int
    channels: tuple[str, ...]
    tiers: tuple[TierSpec, ...]
    certification_types: tuple[str, ...]
    county_codes: tuple[str, ...] | None
    targets: tuple[tuple[str, int], ...]
    max_offline_fen_per_terminal: int
    max_offline_hours: int
    timezone: str = "Asia/Shanghai"
    holder_binding: str = "off"  # off | optional | required (docs/holder-binding.md)


def validate_program(spec: ProgramSpec) -> None:
    """Raise ValidationFailed (field by field) or BudgetExceeded when the programme cannot run."""
    errors: list[dict[str, str]] = []

    def bad(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    if not spec.name.strip():
        bad("name", "must not be empty")
    if spec.budget_fen <= 0:
        bad("budget_fen", "must be positive")
    if spec.ends_at <= spec.starts_at:
        bad("ends_at", "must be after starts_at")
    if spec.voucher_validity_days < 1:
        bad("voucher_validity_days", "must be at least 1")
    if spec.per_person_limit < 1:
        bad("per_person_limit", "must be at least 1")
    if (
        not spec.channels
        or any(c not in CHANNELS for c in spec.channels)
        or len(set(spec.channels)) != len(spec.channels)
    ):
        bad("channels", "must be distinct values of online, offline")
    if not spec.tiers:
        bad("tiers", "must have at least one tier")
    seen: set[str] = set()
    for i, tier in enumerate(spec.tiers):
        if not TIER_CODE_RE.fullmatch(tier.code):
            bad(f"tiers.{i}.code", "must be 1-32 characters of letters, digits, _ or -")
        if tier.code in seen:
            bad(f"tiers.{i}.code", "duplicate tier code")
        seen.add(tier.code)
        if tier.face_value_fen <= 0:
            bad(f"tiers.{i}.face_value_fen", "must be positive")
        if tier.min_spend_fen < tier.face_value_fen:
            bad(f"tiers.{i}.min_spend_fen", "must be at least the face value")
        if tier.quantity < 1:
            bad(f"tiers.{i}.quantity", "must be at least 1")
    if not spec.certification_types or any(t not in CERTIFICATION_TYPES for t in spec.certification_types):
        bad("eligibility.certification_types", "must be values of national, guangxi, shenzhen")
    if spec.county_codes is not None and (
        not spec.county_codes
        or any(not COUNTY_RE.fullmatch(c) for c in spec.county_codes)
        or len(set(spec.county_codes)) != len(spec.county_codes)
    ):
        bad("eligibility.county_codes", "must be null or a non-empty list of distinct 6-digit codes")
    counties: set[str] = set()
    for i, (county, target) in enumerate(spec.targets):
        if not COUNTY_RE.fullmatch(county):
            bad(f"targets.{i}.county_code", "must be a 6-digit code")
        elif county in counties:
            bad(f"targets.{i}.county_code", "names a county already targeted")
        counties.add(county)
        if target < 0:
            bad(f"targets.{i}.target_fen", "must not be negative")
    if spec.max_offline_fen_per_terminal < 0:
        bad("offline.max_offline_fen_per_terminal", "must not be negative")
    if spec.max_offline_hours < 0:
        bad("offline.max_offline_hours", "must not be negative")
    if not is_time_zone(spec.timezone):
        bad("timezone", "is not an IANA time zone")
    if errors:
        raise ValidationFailed("The programme is not valid.", errors)
    allocated = sum(t.total_fen for t in spec.tiers)
    if allocated > spec.budget_fen:
        raise BudgetExceeded(
            f"The tiers add up to {allocated} fen, more than the budget of {spec.budget_fen} fen.",
            allocated_fen=allocated,
            budget_fen=spec.budget_fen,
        )


def voucher_window(
    claimed_at: dt.datetime, validity_days: int, program_ends_at: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """A claimed voucher is valid from its claim for `validity_days`, never past the programme's end."""
    return claimed_at, min(claimed_at + dt.timedelta(days=validity_days), program_ends_at)


def window_verdict(status: str, starts_at: dt.datetime, ends_at: dt.datetime, now: dt.datetime) -> str | None:
    """None when the programme accepts claims and redemptions at `now`, else why not."""
    if status != ProgramStatus.ACTIVE:
        return f"the programme is {status}"
    if now < starts_at:
        return "the programme has not started"
    if now > ends_at:
        return "the programme has ended"
    return None
