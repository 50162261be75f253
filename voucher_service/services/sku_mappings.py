"""Merchant SKU -> certified product mappings: a merchant asks, an administrator decides.

Only approved mappings count at checkout (registry.approved_sku_map); asking again for another
product puts the mapping back to pending, so a merchant can never widen eligibility on its own.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sqlalchemy import and_, or_, select

from voucher_service.adapters.db.models import CertifiedProduct, Merchant, SkuMapping
from voucher_service.domain.clock import rfc3339
from voucher_service.domain.errors import NotFound, ValidationFailed
from voucher_service.domain.states import SkuMappingStatus, check_transition
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext

STATUSES = tuple(SkuMappingStatus)


def mapping_json(m: SkuMapping) -> dict[str, Any]:
    """A mapping as the API shows it; `decided_by`/`decided_at` are set once approved or rejected."""
    return {
        "merchant_id": m.merchant_id,
        "sku": m.sku,
        "certification_no": m.certification_no,
        "status": m.status,
        "requested_at": rfc3339(m.requested_at),
        "decided_by": m.approved_by,
        "decided_at": rfc3339(m.approved_at),
    }


def _require_product(s: Any, certification_no: str) -> None:
    if s.get(CertifiedProduct, certification_no) is None:
        raise ValidationFailed(
            f"No certified product has the number {certification_no!r}.",
            [{"field": "certification_no", "message": "no certified product has this number"}],
        )


def request_mapping(
    ctx: ServiceContext, merchant_id: str, sku: str, certification_no: str, actor: str
) -> tuple[dict[str, Any], bool]:
    """Ask for a SKU to count as a certified product; return the mapping and whether it changed."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        _require_product(s, certification_no)
        mapping = s.get(SkuMapping, (merchant_id, sku), with_for_update=True)
        if (
            mapping is not None
            and mapping.certification_no == certification_no
            and mapping.status in (SkuMappingStatus.PENDING, SkuMappingStatus.APPROVED)
        ):
            return mapping_json(mapping), False
        if mapping is None:
            mapping = SkuMapping(merchant_id=merchant_id, sku=sku)
            s.add(mapping)
        mapping.certification_no = certification_no
        mapping.status = check_transition(mapping.status, SkuMappingStatus.PENDING)
        mapping.requested_at = now
        mapping.approved_by = None
        mapping.approved_at = None
        s.flush()
        audit_log.record(
            s,
            actor,
            "sku_mapping.requested",
            "sku_mapping",
            f"{merchant_id}:{sku}"[:64],
            {"merchant_id": merchant_id, "sku": sku, "certification_no": certification_no},
            now,
        )
        return mapping_json(mapping), True


def decide_mapping(
    ctx: ServiceContext,
    merchant_id: str,
    sku: str,
    *,
    approve: bool,
    actor: str,
    certification_no: str | None = None,
) -> dict[str, Any]:
    """Approve or reject a mapping; with `certification_no`, create or replace it already decided."""
    now = ctx.now()
    status = SkuMappingStatus.APPROVED if approve else SkuMappingStatus.REJECTED
    with ctx.sessions.begin() as s:
        mapping = s.get(SkuMapping, (merchant_id, sku), with_for_update=True)
        if certification_no is not None:
            if s.get(Merchant, merchant_id) is None:
                raise NotFound(f"No merchant has the id {merchant_id!r}.")
            _require_product(s, certification_no)
            if mapping is None:
                mapping = SkuMapping(merchant_id=merchant_id, sku=sku, requested_at=now)
                s.add(mapping)
            elif mapping.certification_no != certification_no:
                # a different product: decided afresh below
                mapping.status = check_transition(mapping.status, SkuMappingStatus.PENDING)
            mapping.certification_no = certification_no
        elif mapping is None:
            raise NotFound(f"Merchant {merchant_id!r} has no mapping for SKU {sku!r}.")
        if mapping.status == status:
            return mapping_json(mapping)
        mapping.status = check_transition(mapping.status, status)
        mapping.approved_by = actor
        mapping.approved_at = now
        s.flush()
        audit_log.record(
            s,
            actor,
            f"sku_mapping.{status}",
            "sku_mapping",
            f"{merchant_id}:{sku}"[:64],
            {"merchant_id": merchant_id, "sku": sku, "certification_no": mapping.certification_no},
            now,
        )
        return mapping_json(mapping)


def _encode_cursor(merchant_id: str, sku: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([merchant_id, sku]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        value = json.loads(base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True))
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            return value[0], value[1]
    except (binascii.Error, ValueError):
        pass
    raise ValidationFailed(
        "The cursor is not one this service returned.", [{"field": "cursor", "message": "invalid"}]
    )


def list_mappings(
    ctx: ServiceContext,
    *,
    merchant_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Mappings (one merchant's, or everyone's for None), oldest key first, and the next page's cursor."""
    stmt = select(SkuMapping)
    if merchant_id is not None:
        stmt = stmt.where(SkuMapping.merchant_id == merchant_id)
    if status is not None:
        stmt = stmt.where(SkuMapping.status == status)
    if cursor:
        after_merchant, after_sku = _decode_cursor(cursor)
        stmt = stmt.where(
            or_(
                SkuMapping.merchant_id > after_merchant,
                and_(SkuMapping.merchant_id == after_merchant, SkuMapping.sku > after_sku),
            )
        )
    stmt = stmt.order_by(SkuMapping.merchant_id, SkuMapping.sku).limit(limit + 1)
    with ctx.sessions() as s:
        rows = list(s.scalars(stmt))
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1].merchant_id, page[-1].sku) if len(rows) > limit else None
    return [mapping_json(m) for m in page], next_cursor
