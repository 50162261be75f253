"""Certified-product registry (public) and merchant SKU mappings (merchant asks, admin decides)."""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from voucher_service.api.auth import Principal, service_context
from voucher_service.api.routing import endpoint, json_response
from voucher_service.domain.errors import Forbidden
from voucher_service.domain.gtin import is_valid_gtin
from voucher_service.services import registry_queries, sku_mappings

bp = Blueprint("products", __name__, url_prefix="/api/v1")

CertificationType = Literal["national", "guangxi", "shenzhen"]
MappingStatus = Literal["pending", "approved", "rejected"]
SNAPSHOT_CACHE_CONTROL = "public, max-age=60"
SKU_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class ProductQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gtin: str | None = Field(None, description="GTIN-8/12/13/14 with its check digit")
    county_code: str | None = Field(None, pattern=r"^[0-9]{6}$")
    certification_type: CertificationType | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=400)

    @field_validator("gtin")
    @classmethod
    def _valid_gtin(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_gtin(value):
            raise ValueError("not a valid GTIN-8/12/13/14 (digits only, with a correct check digit)")
        return value


class SnapshotQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: int = Field(0, ge=0, le=2**62, description="the `version` of the last snapshot the caller holds")


class Product(BaseModel):
    certification_no: str
    certification_type: CertificationType
    product_name: str
    category: str
    supplier_id: str
    supplier_name: str
    county_code: str
    county_name: str
    gtins: list[str] = Field(description="normalised to 14 digits")
    valid_from: str = Field(description="YYYY-MM-DD")
    valid_to: str = Field(description="YYYY-MM-DD")
    status: Literal["active", "suspended", "revoked"]
    version: int


class ProductPage(BaseModel):
    products: list[Product]
    next_cursor: str | None


class ProductSnapshot(BaseModel):
    version: int
    since: int
    products: list[Product]


class SkuMappingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    sku: str = Field(min_length=1, max_length=64, pattern=SKU_PATTERN)
    certification_no: str = Field(min_length=1, max_length=64)


class SkuMappingQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: MappingStatus | None = None
    merchant_id: str | None = Field(None, max_length=40)
    limit: int = Field(100, ge=1, le=500)
    cursor: str | None = Field(None, max_length=400)


class SkuMapping(BaseModel):
    merchant_id: str
    sku: str
    certification_no: str
    status: MappingStatus
    requested_at: str
    decided_by: str | None
    decided_at: str | None


class SkuMappingPage(BaseModel):
    sku_mappings: list[SkuMapping]
    next_cursor: str | None


# ---------------------------------------------------------------- registry (public)


@endpoint(
    bp,
    "/products",
    "GET",
    auth="public",
    summary="Search the certified-product registry",
    query=ProductQuery,
    responses={200: ProductPage},
    errors=("validation_error",),
)
def list_products(principal: Principal, query: ProductQuery) -> Response:
    """Products by GTIN, county or certification type, a page at a time."""
    products, next_cursor = registry_queries.list_products(
        service_context(),
        gtin=query.gtin,
        county_code=query.county_code,
        certification_type=query.certification_type,
        limit=query.limit,
        cursor=query.cursor,
    )
    return json_response({"products": products, "next_cursor": next_cursor})


@endpoint(
    bp,
    "/products/snapshot",
    "GET",
    auth="public",
    summary="The registry for offline eligibility checks",
    query=SnapshotQuery,
    responses={200: ProductSnapshot, 304: None},
    errors=("validation_error",),
)
def products_snapshot(principal: Principal, query: SnapshotQuery) -> Response:
    """Every product changed since `since` (all for 0), with the registry version; ETag-cacheable."""
    ctx = service_context()
    # The content of this URL only changes with the registry version, so the version is the ETag
    # and a terminal that is up to date costs one small query.
    version = registry_queries.registry_version(ctx)
    if request.if_none_match.contains_weak(_etag(version)):
        return _not_modified(version)
    snapshot = registry_queries.registry_snapshot(ctx, query.since)
    headers = {"ETag": f'"{_etag(snapshot["version"])}"', "Cache-Control": SNAPSHOT_CACHE_CONTROL}
    return json_response(snapshot, headers=headers)


def _etag(version: int) -> str:
    return f"registry-{version}"


def _not_modified(version: int) -> Response:
    resp = Response(status=304)
    resp.headers["ETag"] = f'"{_etag(version)}"'
    resp.headers["Cache-Control"] = SNAPSHOT_CACHE_CONTROL
    return resp


@endpoint(
    bp,
    "/products/<certification_no>",
    "GET",
    auth="public",
    summary="One certified product",
    responses={200: Product},
    errors=("not_found",),
)
def get_product(principal: Principal, certification_no: str) -> Response:
    """A product by its certification number."""
    return json_response(registry_queries.get_product(service_context(), certification_no))


# ---------------------------------------------------------------- SKU mappings


@endpoint(
    bp,
    "/sku-mappings",
    "POST",
    auth="merchant",
    summary="Ask for a SKU to count as a certified product",
    body=SkuMappingRequest,
    responses={201: SkuMapping, 200: SkuMapping},
    errors=("validation_error", "unauthorized", "replayed_request"),
)
def request_sku_mapping(principal: Principal, body: SkuMappingRequest) -> Response:
    """Create (201) or re-request a mapping, pending until an admin approves; 200 when nothing changed."""
    assert principal.merchant_id is not None
    mapping, changed = sku_mappings.request_mapping(
        service_context(), principal.merchant_id, body.sku, body.certification_no, principal.actor
    )
    return json_response(mapping, 201 if changed else 200)


@endpoint(
    bp,
    "/sku-mappings",
    "GET",
    auth="admin_or_merchant",
    summary="SKU mappings (a merchant sees its own)",
    query=SkuMappingQuery,
    responses={200: SkuMappingPage},
    errors=("validation_error", "unauthorized", "forbidden"),
)
def list_sku_mappings(principal: Principal, query: SkuMappingQuery) -> Response:
    """A merchant's own mappings, or everyone's (optionally one merchant's) for an admin."""
    merchant_id = query.merchant_id
    if principal.kind == "merchant":
        if merchant_id not in (None, principal.merchant_id):
            raise Forbidden("A merchant may only list its own SKU mappings.")
        merchant_id = principal.merchant_id
    mappings, next_cursor = sku_mappings.list_mappings(
        service_context(),
        merchant_id=merchant_id,
        status=query.status,
        limit=query.limit,
        cursor=query.cursor,
    )
    return json_response({"sku_mappings": mappings, "next_cursor": next_cursor})


def _decide(principal: Principal, merchant_id: str, sku: str, approve: bool) -> Any:
    return sku_mappings.decide_mapping(
        service_context(), merchant_id, sku, approve=approve, actor=principal.actor
    )


@endpoint(
    bp,
    "/sku-mappings/<merchant_id>/<path:sku>/approve",
    "POST",
    auth="admin",
    summary="Approve a merchant's SKU mapping",
    responses={200: SkuMapping},
    errors=("unauthorized", "forbidden", "not_found"),
)
def approve_sku_mapping(principal: Principal, merchant_id: str, sku: str) -> Response:
    """Approve: the SKU now counts as its certified product at checkout."""
    return json_response(_decide(principal, merchant_id, sku, True))


@endpoint(
    bp,
    "/sku-mappings/<merchant_id>/<path:sku>/reject",
    "POST",
    auth="admin",
    summary="Reject a merchant's SKU mapping",
    responses={200: SkuMapping},
    errors=("unauthorized", "forbidden", "not_found"),
)
def reject_sku_mapping(principal: Principal, merchant_id: str, sku: str) -> Response:
    """Reject (or withdraw an approval): the SKU no longer counts at checkout."""
    return json_response(_decide(principal, merchant_id, sku, False))
