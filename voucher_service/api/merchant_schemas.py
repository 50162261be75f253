"""Request and response schemas of the merchant's redemption routes (they validate and feed OpenAPI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, create_model, model_validator

from voucher_service.domain.eligibility import BasketLine
from voucher_service.services.redemption import RedemptionRequest
from voucher_service.services.reversals import ReturnedLine

MAX_QUANTITY = 1_000_000
MAX_UNIT_PRICE_FEN = 10_000_000_000  # 100 million yuan: keeps 200 lines' totals far inside BIGINT


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class BasketItemIn(Strict):
    """A basket line: a GTIN and/or the merchant's SKU. A GTIN that fails its check digit is not a schema
    error: the line is judged ineligible with reason `invalid_gtin`."""

    gtin: StrictStr | None = Field(None, min_length=1, max_length=14)
    sku: StrictStr | None = Field(None, min_length=1, max_length=64)
    name: StrictStr | None = Field(None, max_length=200)
    quantity: StrictInt = Field(ge=1, le=MAX_QUANTITY)
    unit_price_fen: StrictInt = Field(ge=0, le=MAX_UNIT_PRICE_FEN)

    @model_validator(mode="after")
    def _gtin_or_sku(self) -> BasketItemIn:
        if self.gtin is None and self.sku is None:
            raise ValueError("a line needs a gtin or a sku")
        return self


class RedemptionIn(Strict):
    """A checkout (CONTRACT §2, POST /redemptions)."""

    token: StrictStr = Field(min_length=1, max_length=4096)
    order_id: StrictStr = Field(min_length=1, max_length=128)
    channel: Literal["online", "offline"]
    terminal_id: StrictStr | None = Field(None, min_length=1, max_length=64)
    items: list[BasketItemIn] = Field(min_length=1, max_length=200)

    def to_request(self) -> RedemptionRequest:
        """The service's view of this checkout."""
        return RedemptionRequest(
            token=self.token,
            order_id=self.order_id,
            channel=self.channel,
            terminal_id=self.terminal_id,
            items=tuple(
                BasketLine(
                    gtin=i.gtin, sku=i.sku, quantity=i.quantity, unit_price_fen=i.unit_price_fen, name=i.name
                )
                for i in self.items
            ),
        )


class ReversalLineIn(Strict):
    index: StrictInt = Field(ge=0)
    quantity: StrictInt = Field(ge=1, le=MAX_QUANTITY)


class ReversalIn(Strict):
    """Returned lines; omit `lines` (or send {}) to reverse everything not yet returned."""

    lines: list[ReversalLineIn] | None = Field(None, min_length=1, max_length=200)

    def returned(self) -> list[ReturnedLine] | None:
        """The returned lines, or None for a full reversal."""
        return None if self.lines is None else [ReturnedLine(x.index, x.quantity) for x in self.lines]


class RedemptionLineOut(BaseModel):
    index: int
    gtin: str | None
    eligible: bool
    reason: str | None
    certification_no: str | None
    county_code: str | None
    line_total_fen: int
    discount_share_fen: int


class RedemptionPreviewOut(BaseModel):
    voucher_id: str
    program_id: str
    merchant_id: str
    order_id: str
    channel: str
    order_total_fen: int
    eligible_total_fen: int
    discount_fen: int
    redeemed_at: str
    lines: list[RedemptionLineOut]


class RedemptionOut(RedemptionPreviewOut):
    redemption_id: str
    receipt: str


class StoredRedemptionLineOut(RedemptionLineOut):
    quantity: int
    returned_quantity: int


class StoredRedemptionOut(RedemptionOut):
    """A redemption as listed: the 201's fields plus its state after any reversals."""

    lines: list[StoredRedemptionLineOut]  # type: ignore[assignment]
    status: Literal["active", "reversed"]
    clawed_back_fen: int
    terminal_id: str | None
    source: Literal["online", "offline"]


class RedemptionPageOut(BaseModel):
    redemptions: list[StoredRedemptionOut]
    next_cursor: str | None


class ReversalOut(BaseModel):
    reversal_id: str
    redemption_id: str
    clawback_fen: int
    discount_fen: int
    voucher_status: str


class RevocationsOut(BaseModel):
    version: int
    voucher_ids: list[str]
    restored_voucher_ids: list[str]
    revoked_holder_keys: list[dict[str, str]] | None = Field(
        None,
        description="Programmes with holder binding only (CONTRACT §10): device keys replaced by re-binding "
        "since `since`, as {voucher_id, thumbprint}; a till refuses presentations made with them.",
    )


# `from` is a Python keyword, so the listing's query model is built with create_model.
RedemptionListQuery = create_model(
    "RedemptionListQuery",
    __config__=ConfigDict(extra="ignore"),
    **{
        "from": (str | None, Field(None, description="RFC 3339 instant, or YYYY-MM-DD (Asia/Shanghai day)")),
        "to": (
            str | None,
            Field(None, description="RFC 3339 instant (exclusive), or YYYY-MM-DD (inclusive day)"),
        ),
        "cursor": (str | None, Field(None, description="next_cursor of the previous page")),
        "limit": (int, Field(50, ge=1, le=200)),
    },  # type: ignore[call-overload]
)


class RevocationsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    since: int = Field(0, ge=0, le=2**62)
