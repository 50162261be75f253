"""What the cashier typed (barcodes, quantities, prices as yuan text) turned into the API's redemption body.

The page sends the basket as the cashier typed it; the server parses it here, exactly (money to integer
fen through domain.money, never a float), and builds the same body the API takes (RedemptionIn), so
preview and redemption run through the very schema and services the API uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from voucher_service.api.merchant_schemas import RedemptionIn
from voucher_service.api.routing import json_bytes
from voucher_service.domain.errors import ValidationFailed
from voucher_service.domain.money import fullwidth_to_ascii, parse_price_yuan, parse_quantity
from voucher_service.services.redemption import RedemptionRequest

MAX_LINES = 200
MAX_TOKEN = 4096
GTIN_LENGTHS = (8, 12, 13, 14)


@dataclass
class TypedLine:
    """One basket line as typed, and what it parsed to (None where the text is refused)."""

    index: int
    gtin_text: str
    quantity_text: str
    price_text: str
    gtin: str | None = None
    quantity: int | None = None
    unit_price_fen: int | None = None
    errors: list[str] = field(default_factory=list)  # barcode | quantity | price

    @property
    def line_total_fen(self) -> int | None:
        if self.quantity is None or self.unit_price_fen is None:
            return None
        return self.quantity * self.unit_price_fen


@dataclass
class TypedBasket:
    """The voucher text and the lines of one checkout as the page sent them."""

    token: str
    lines: list[TypedLine]

    @property
    def valid(self) -> bool:
        return bool(self.lines) and not any(line.errors for line in self.lines)

    @property
    def order_total_fen(self) -> int:
        return sum(line.line_total_fen or 0 for line in self.lines)


def _text(value: Any, limit: int = 64) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return ""
    return str(value)[:limit]


def parse_gtin(text: str) -> str | None:
    """A typed or scanned barcode as ASCII digits of a GTIN length (8, 12, 13, 14), else None."""
    s = fullwidth_to_ascii(text).strip()
    if s.isascii() and s.isdigit() and len(s) in GTIN_LENGTHS:
        return s
    return None


def parse_typed_basket(raw: Any) -> TypedBasket:
    """Parse {"token", "lines": [{"gtin", "quantity", "price"}]}; bad lines carry their errors."""
    if not isinstance(raw, dict):
        raise ValidationFailed(
            "The basket is not valid.", [{"field": "basket", "message": "must be an object"}]
        )
    token = raw.get("token")
    token = token.strip() if isinstance(token, str) else ""
    if len(token) > MAX_TOKEN or "\x00" in token:
        raise ValidationFailed("The voucher is not valid.", [{"field": "token", "message": "too long"}])
    typed = raw.get("lines")
    if not isinstance(typed, list) or len(typed) > MAX_LINES:
        raise ValidationFailed(
            "The basket is not valid.",
            [{"field": "lines", "message": f"must be a list of at most {MAX_LINES} lines"}],
        )
    lines = []
    for i, item in enumerate(typed):
        item = item if isinstance(item, dict) else {}
        line = TypedLine(i, _text(item.get("gtin")), _text(item.get("quantity")), _text(item.get("price")))
        line.gtin = parse_gtin(line.gtin_text)
        if line.gtin is None:
            line.errors.append("barcode")
        try:
            line.quantity = parse_quantity(line.quantity_text)
        except ValueError:
            line.errors.append("quantity")
        try:
            line.unit_price_fen = parse_price_yuan(line.price_text)
        except ValueError:
            line.errors.append("price")
        lines.append(line)
    return TypedBasket(token, lines)


def basket_from_json(text: str) -> TypedBasket:
    """parse_typed_basket over JSON text (what the redeem form posts)."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise ValidationFailed(
            "The basket is not valid.", [{"field": "basket", "message": "invalid JSON"}]
        ) from None
    return parse_typed_basket(raw)


def redemption_body(basket: TypedBasket, order_id: str, channel: str) -> tuple[RedemptionRequest, bytes]:
    """The API's redemption request for a valid basket, and its canonical bytes (its idempotency fingerprint)."""
    payload = {
        "token": basket.token,
        "order_id": order_id,
        "channel": channel,
        "terminal_id": None,
        "items": [
            {"gtin": line.gtin, "quantity": line.quantity, "unit_price_fen": line.unit_price_fen}
            for line in basket.lines
        ],
    }
    try:
        body = RedemptionIn.model_validate(payload)
    except ValidationError:
        raise ValidationFailed(
            "The basket is not valid.", [{"field": "basket", "message": "invalid"}]
        ) from None
    return body.to_request(), json_bytes(payload)
