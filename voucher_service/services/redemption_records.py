"""Reading redemptions: their JSON (one shape for the 201, the list and the detail), a merchant's own
redemptions newest first with keyset pagination, and one redemption by id."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_, select

from voucher_service.adapters.db.models import Redemption, RedemptionLine
from voucher_service.domain.clock import DEFAULT_TZ, day_bounds, parse_rfc3339, rfc3339
from voucher_service.domain.errors import Forbidden, NotFound, ValidationFailed
from voucher_service.services.context import ServiceContext

DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits, with fullmatch
CURSOR_RE = re.compile(r"([0-9]{1,20})\|([^|]{1,64})")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def encode_json(payload: Any) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are sent and, for idempotent requests, stored."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def line_json(line: RedemptionLine, *, with_quantities: bool = False) -> dict[str, Any]:
    """A redemption line as the API shows it."""
    out: dict[str, Any] = {
        "index": line.index,
        "gtin": line.gtin,
        "eligible": line.eligible,
        "reason": line.reason,
        "certification_no": line.certification_no,
        "county_code": line.county_code,
        "line_total_fen": line.line_total_fen,
        "discount_share_fen": line.discount_share_fen,
    }
    if with_quantities:
        out["quantity"] = line.quantity
        out["returned_quantity"] = line.returned_quantity or 0
    return out


def redemption_json(
    r: Redemption, lines: Sequence[RedemptionLine], *, created: bool = True, preview: bool = False
) -> dict[str, Any]:
    """The contract's redemption object: the 201 (created), the preview (no id, no receipt), or the stored
    one as listed (adds status, clawed_back_fen and each line's quantities)."""
    out: dict[str, Any] = {} if preview else {"redemption_id": r.id}
    out.update(
        {
            "voucher_id": r.voucher_id,
            "program_id": r.program_id,
            "merchant_id": r.merchant_id,
            "order_id": r.order_id,
            "channel": r.channel,
            "order_total_fen": r.order_total_fen,
            "eligible_total_fen": r.eligible_total_fen,
            "discount_fen": r.discount_fen,
            "redeemed_at": rfc3339(r.redeemed_at),
            "lines": [
                line_json(x, with_quantities=not created) for x in sorted(lines, key=lambda x: x.index)
            ],
        }
    )
    if not preview:
        out["receipt"] = r.receipt
    if not created and not preview:
        out["status"] = r.status
        out["clawed_back_fen"] = r.clawed_back_fen or 0
        out["terminal_id"] = r.terminal_id
        out["source"] = r.source
    return out


def period_bound(text: str | None, field: str, *, end: bool) -> dt.datetime | None:
    """An RFC 3339 instant, or a date as a calendar day in Asia/Shanghai (`to` covers the whole day)."""
    if text is None or text == "":
        return None
    try:
        if DATE_RE.fullmatch(text):
            start, stop = day_bounds(dt.date.fromisoformat(text), DEFAULT_TZ)
            return stop if end else start
        return parse_rfc3339(text)
    except (ValueError, OverflowError):  # OverflowError: a day whose bounds fall outside years 1-9999
        raise ValidationFailed(
            f"{field} is not an RFC 3339 time or a YYYY-MM-DD date.",
            [{"field": field, "message": "must be RFC 3339 or YYYY-MM-DD"}],
        ) from None


def _encode_cursor(r: Redemption) -> str:
    micros = (r.redeemed_at - EPOCH) // dt.timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}|{r.id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        match = CURSOR_RE.fullmatch(raw)
        if match is None:
            raise ValueError("not a cursor")
        micros, rid = match.groups()
        at = EPOCH + dt.timedelta(microseconds=int(micros))
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError, OSError):
        raise ValidationFailed(
            "The cursor is not one this service gave out.", [{"field": "cursor", "message": "invalid cursor"}]
        ) from None
    return at, rid


def list_redemptions(
    ctx: ServiceContext,
    merchant_id: str,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """The merchant's own redemptions in [start, end), newest first, `limit` per page."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(
            "limit is out of range.", [{"field": "limit", "message": f"must be 1-{MAX_LIMIT}"}]
        )
    query = select(Redemption).where(Redemption.merchant_id == merchant_id)
    if start is not None:
        query = query.where(Redemption.redeemed_at >= start)
    if end is not None:
        query = query.where(Redemption.redeemed_at < end)
    if cursor:
        at, rid = _decode_cursor(cursor)
        query = query.where(
            or_(Redemption.redeemed_at < at, and_(Redemption.redeemed_at == at, Redemption.id < rid))
        )
    query = query.order_by(Redemption.redeemed_at.desc(), Redemption.id.desc()).limit(limit + 1)
    with ctx.read_session() as s:
        rows = list(s.scalars(query))
        page = rows[:limit]
        by_redemption: dict[str, list[RedemptionLine]] = {r.id: [] for r in page}
        if page:
            for line in s.scalars(
                select(RedemptionLine).where(RedemptionLine.redemption_id.in_(list(by_redemption)))
            ):
                by_redemption[line.redemption_id].append(line)
        items = [redemption_json(r, by_redemption[r.id], created=False) for r in page]
    next_cursor = _encode_cursor(page[-1]) if len(rows) > limit else None
    return {"redemptions": items, "next_cursor": next_cursor}


def get_redemption(ctx: ServiceContext, merchant_id: str, redemption_id: str) -> dict[str, Any]:
    """One of the merchant's own redemptions; another merchant's is forbidden."""
    with ctx.sessions() as s:
        r = s.get(Redemption, redemption_id)
        if r is None:
            raise NotFound(f"No redemption {redemption_id}.")
        if r.merchant_id != merchant_id:
            raise Forbidden("This redemption belongs to another merchant.")
        lines = list(s.scalars(select(RedemptionLine).where(RedemptionLine.redemption_id == r.id)))
        return redemption_json(r, lines, created=False)
