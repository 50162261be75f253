"""Which basket lines a voucher applies to, and how its discount is shared among them.

Pure: the caller hands in a snapshot of the registry (products by 14-digit GTIN and by the merchant's
approved SKU), the programme's scope and the redemption date; nothing here reads a database.

Precedence of the verdict for one line (the first that applies is its reason):
1. a GTIN is given but is not a valid GTIN-8/12/13/14      -> invalid_gtin
2. the GTIN resolves to a product, else the approved SKU mapping does; neither:
   a GTIN was given -> not_certified, only a SKU -> sku_not_mapped
3. the product is revoked -> certification_revoked; suspended -> certification_suspended
4. the redemption date is outside valid_from..valid_to (inclusive) -> certification_expired
5. its certification type or county is not in the programme's scope -> out_of_scope
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from voucher_service.domain.gtin import is_valid_gtin, normalise_gtin
from voucher_service.domain.money import split_proportionally
from voucher_service.domain.states import ProductStatus

NOT_CERTIFIED = "not_certified"
CERTIFICATION_EXPIRED = "certification_expired"
CERTIFICATION_SUSPENDED = "certification_suspended"
CERTIFICATION_REVOKED = "certification_revoked"
OUT_OF_SCOPE = "out_of_scope"
INVALID_GTIN = "invalid_gtin"
SKU_NOT_MAPPED = "sku_not_mapped"
REASONS = (
    NOT_CERTIFIED,
    CERTIFICATION_EXPIRED,
    CERTIFICATION_SUSPENDED,
    CERTIFICATION_REVOKED,
    OUT_OF_SCOPE,
    INVALID_GTIN,
    SKU_NOT_MAPPED,
)


@dataclass(frozen=True)
class ProductSnapshot:
    """What eligibility needs to know of one certified product."""

    certification_no: str
    certification_type: str
    county_code: str
    valid_from: dt.date
    valid_to: dt.date
    status: str  # active | suspended | revoked


@dataclass(frozen=True)
class EligibilityScope:
    """The programme's scope: certification types, and counties (None = every county)."""

    certification_types: frozenset[str]
    county_codes: frozenset[str] | None

    @classmethod
    def from_program(cls, eligibility: Mapping[str, Any]) -> EligibilityScope:
        """Build the scope from a programme's `eligibility` object."""
        types = eligibility.get("certification_types") or ()
        counties = eligibility.get("county_codes")
        return cls(frozenset(types), None if counties is None else frozenset(counties))


@dataclass(frozen=True)
class BasketLine:
    """One line of the merchant's basket as sent."""

    gtin: str | None
    sku: str | None
    quantity: int
    unit_price_fen: int
    name: str | None = None

    @property
    def line_total_fen(self) -> int:
        return self.quantity * self.unit_price_fen


@dataclass(frozen=True)
class LineVerdict:
    """Whether one line counts, why not, and its share of the discount."""

    index: int
    gtin: str | None
    eligible: bool
    reason: str | None
    certification_no: str | None
    county_code: str | None
    line_total_fen: int
    discount_share_fen: int = 0

    def to_json(self) -> dict[str, object]:
        """The line as the API shows it."""
        return {
            "index": self.index,
            "gtin": self.gtin,
            "eligible": self.eligible,
            "reason": self.reason,
            "certification_no": self.certification_no,
            "county_code": self.county_code,
            "line_total_fen": self.line_total_fen,
            "discount_share_fen": self.discount_share_fen,
        }


@dataclass(frozen=True)
class BasketVerdict:
    """Every line's verdict, the totals, and the discount (0 when the threshold is not met)."""

    lines: tuple[LineVerdict, ...]
    order_total_fen: int
    eligible_total_fen: int
    discount_fen: int
    min_spend_fen: int

    @property
    def has_eligible_line(self) -> bool:
        return any(line.eligible for line in self.lines)

    @property
    def threshold_met(self) -> bool:
        return self.has_eligible_line and self.eligible_total_fen >= self.min_spend_fen


def gtin14(text: str | None) -> str | None:
    """The 14-digit lookup form of a GTIN, or None when absent or invalid."""
    if text is None or not is_valid_gtin(text):
        return None
    return normalise_gtin(text)


def resolve_product(
    line: BasketLine, by_gtin: Mapping[str, ProductSnapshot], by_sku: Mapping[str, ProductSnapshot]
) -> tuple[ProductSnapshot | None, str | None]:
    """The product a line stands for, or None and the reason it resolves to none."""
    if line.gtin is not None:
        key = gtin14(line.gtin)
        if key is None:
            return None, INVALID_GTIN
        product = by_gtin.get(key)
        if product is not None:
            return product, None
    if line.sku is not None:
        product = by_sku.get(line.sku)
        if product is not None:
            return product, None
    return None, NOT_CERTIFIED if line.gtin is not None else SKU_NOT_MAPPED


def certification_reason(product: ProductSnapshot, scope: EligibilityScope, on: dt.date) -> str | None:
    """None when the product counts on `on` in this scope, else why not."""
    if product.status == ProductStatus.REVOKED:
        return CERTIFICATION_REVOKED
    if product.status != ProductStatus.ACTIVE:
        return CERTIFICATION_SUSPENDED
    if not product.valid_from <= on <= product.valid_to:
        return CERTIFICATION_EXPIRED
    if product.certification_type not in scope.certification_types:
        return OUT_OF_SCOPE
    if scope.county_codes is not None and product.county_code not in scope.county_codes:
        return OUT_OF_SCOPE
    return None


def judge_line(
    index: int,
    line: BasketLine,
    by_gtin: Mapping[str, ProductSnapshot],
    by_sku: Mapping[str, ProductSnapshot],
    scope: EligibilityScope,
    on: dt.date,
) -> LineVerdict:
    """The verdict for one line, before the discount is shared."""
    product, reason = resolve_product(line, by_gtin, by_sku)
    if product is not None:
        reason = certification_reason(product, scope, on)
    eligible = product is not None and reason is None
    # Certification and county are reported only for lines that count: reports add them up by county.
    return LineVerdict(
        index=index,
        gtin=line.gtin,
        eligible=eligible,
        reason=reason,
        certification_no=product.certification_no if eligible and product else None,
        county_code=product.county_code if eligible and product else None,
        line_total_fen=line.line_total_fen,
    )


def judge_basket(
    lines: Sequence[BasketLine],
    by_gtin: Mapping[str, ProductSnapshot],
    by_sku: Mapping[str, ProductSnapshot],
    scope: EligibilityScope,
    on: dt.date,
    *,
    face_value_fen: int,
    min_spend_fen: int,
) -> BasketVerdict:
    """Judge every line and, when the minimum spend is met, split the face value over the eligible lines."""
    verdicts = [judge_line(i, line, by_gtin, by_sku, scope, on) for i, line in enumerate(lines)]
    order_total = sum(v.line_total_fen for v in verdicts)
    eligible = [v for v in verdicts if v.eligible]
    eligible_total = sum(v.line_total_fen for v in eligible)
    discount = 0
    if eligible and eligible_total >= min_spend_fen and eligible_total > 0:
        discount = face_value_fen
        shares = iter(split_proportionally(discount, [v.line_total_fen for v in eligible]))
        verdicts = [_with_share(v, next(shares)) if v.eligible else v for v in verdicts]
    return BasketVerdict(tuple(verdicts), order_total, eligible_total, discount, min_spend_fen)


def _with_share(verdict: LineVerdict, share: int) -> LineVerdict:
    return LineVerdict(
        verdict.index,
        verdict.gtin,
        verdict.eligible,
        verdict.reason,
        verdict.certification_no,
        verdict.county_code,
        verdict.line_total_fen,
        share,
    )


def remaining_eligible_total_fen(lines: Sequence[tuple[bool, int, int, int]]) -> int:
    """Sum of unit price x (quantity - returned) over eligible lines: (eligible, unit, qty, returned)."""
    return sum(unit * (qty - returned) for eligible, unit, qty, returned in lines if eligible)


def reversal_clawback_fen(remaining_eligible_fen: int, min_spend_fen: int, discount_fen: int) -> int:
    """After a return: nothing back while the remaining eligible total still meets the minimum, else all."""
    return 0 if remaining_eligible_fen >= min_spend_fen else discount_fen
