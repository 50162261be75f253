"""Reading the certified-product registry: products as the API shows them, pages, the snapshot."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from voucher_service.adapters.db.models import CertifiedProduct, ProductGtin, Supplier
from voucher_service.domain.errors import NotFound, ValidationFailed
from voucher_service.domain.gtin import normalise_gtin
from voucher_service.services.context import ServiceContext


def product_json(cols: Mapping[Any, Any], supplier_name: str) -> dict[str, Any]:
    """A product as the API shows it (GTINs normalised to 14 digits, dates as YYYY-MM-DD)."""
    return {
        "certification_no": cols["certification_no"],
        "certification_type": cols["certification_type"],
        "product_name": cols["product_name"],
        "category": cols["category"],
        "supplier_id": cols["supplier_id"],
        "supplier_name": supplier_name,
        "county_code": cols["county_code"],
        "county_name": cols["county_name"],
        "gtins": [normalise_gtin(g) for g in cols["gtins"]],
        "valid_from": cols["valid_from"].isoformat(),
        "valid_to": cols["valid_to"].isoformat(),
        "status": cols["status"],
        "version": cols["version"],
    }


def _products_query() -> Any:
    return select(CertifiedProduct.__table__, Supplier.name.label("supplier_name")).outerjoin(
        Supplier, Supplier.id == CertifiedProduct.supplier_id
    )


def _encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailed(
            "The cursor is not one this service returned.", [{"field": "cursor", "message": "invalid cursor"}]
        ) from None


def get_product(ctx: ServiceContext, certification_no: str) -> dict[str, Any]:
    """One product by its certification number; raise NotFound."""
    with ctx.sessions() as s:
        row = (
            s.execute(_products_query().where(CertifiedProduct.certification_no == certification_no))
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"No certified product has the number {certification_no!r}.")
    return product_json(row, row["supplier_name"] or "")


def list_products(
    ctx: ServiceContext,
    *,
    gtin: str | None = None,
    county_code: str | None = None,
    certification_type: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Products matching the filters in certification-number order, and the cursor of the next page."""
    stmt = _products_query()
    if gtin is not None:
        stmt = stmt.join(
            ProductGtin, ProductGtin.certification_no == CertifiedProduct.certification_no
        ).where(ProductGtin.gtin == normalise_gtin(gtin))
    if county_code is not None:
        stmt = stmt.where(CertifiedProduct.county_code == county_code)
    if certification_type is not None:
        stmt = stmt.where(CertifiedProduct.certification_type == certification_type)
    if cursor:
        stmt = stmt.where(CertifiedProduct.certification_no > _decode_cursor(cursor))
    stmt = stmt.order_by(CertifiedProduct.certification_no).limit(limit + 1)
    with ctx.sessions() as s:
        rows = list(s.execute(stmt).mappings())
    page = [product_json(r, r["supplier_name"] or "") for r in rows[:limit]]
    next_cursor = _encode_cursor(page[-1]["certification_no"]) if len(rows) > limit else None
    return page, next_cursor


def registry_version(ctx: ServiceContext) -> int:
    """The registry's snapshot version: the highest seq any product was stamped with (0 when empty)."""
    with ctx.sessions() as s:
        return int(s.scalar(select(func.coalesce(func.max(CertifiedProduct.registry_seq), 0))) or 0)


def registry_snapshot(ctx: ServiceContext, since: int = 0) -> dict[str, Any]:
    """Every product changed after version `since` (all of them for 0), with the current version."""
    with ctx.sessions() as s:
        # The version is read first, so the products read after it are never older than it claims.
        version = int(s.scalar(select(func.coalesce(func.max(CertifiedProduct.registry_seq), 0))) or 0)
        stmt = _products_query().order_by(CertifiedProduct.certification_no)
        if since:
            stmt = stmt.where(CertifiedProduct.registry_seq > since)
        products = [product_json(r, r["supplier_name"] or "") for r in s.execute(stmt).mappings()]
    return {"version": version, "since": since, "products": products}


def product_names(ctx: ServiceContext, gtins: list[str]) -> dict[str, str]:
    """The registered product name of each valid GTIN given (in one query), keyed by the GTIN as given."""
    wanted: dict[str, list[str]] = {}
    for g in gtins[:500]:
        try:
            wanted.setdefault(normalise_gtin(g), []).append(g)
        except ValueError:
            continue
    if not wanted:
        return {}
    with ctx.sessions() as s:
        rows = s.execute(
            select(ProductGtin.gtin, CertifiedProduct.product_name)
            .join(CertifiedProduct, CertifiedProduct.certification_no == ProductGtin.certification_no)
            .where(ProductGtin.gtin.in_(list(wanted)))
        ).all()
    return {given: str(name) for gtin, name in rows for given in wanted.get(gtin, [])}
