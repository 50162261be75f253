"""Offline terminals: the programmes a till needs (GET /merchant/programs) and journal uploads."""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field

from voucher_service.api.auth import Principal, service_context
from voucher_service.api.routing import endpoint, json_response
from voucher_service.services import offline_sync

bp = Blueprint("offline", __name__, url_prefix="/api/v1")
AUTH_ERRORS = ("unauthorized", "replayed_request")
HEX64 = r"^[0-9a-f]{64}$"


class MerchantProgramTier(BaseModel):
    code: str
    face_value_fen: int
    min_spend_fen: int


class MerchantProgramScope(BaseModel):
    certification_types: list[str]
    county_codes: list[str] | None


class MerchantProgramLimits(BaseModel):
    max_offline_fen_per_terminal: int
    max_offline_hours: int


class MerchantProgramOut(BaseModel):
    id: str
    name: str
    status: str = Field(description="draft | active | suspended; tills redeem only in active ones")
    starts_at: str
    ends_at: str
    timezone: str
    channels: list[str]
    tiers: list[MerchantProgramTier]
    eligibility: MerchantProgramScope
    offline: MerchantProgramLimits


class MerchantSkuMappingOut(BaseModel):
    sku: str
    certification_no: str


class MerchantProgramList(BaseModel):
    programs: list[MerchantProgramOut]
    sku_mappings: list[MerchantSkuMappingOut] = Field(
        description="The merchant's approved SKU mappings, by sku: offline tills resolve SKU-only lines with them"
    )


class OfflineRecordIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    seq: int = Field(ge=1, le=2**62)
    prev_hash: str = Field(pattern=HEX64, description="record_hash of the record before (64 zeros for seq 1)")
    record_hash: str = Field(pattern=HEX64, description="hex SHA-256 of prev_hash || canonical record")
    signature: str = Field(
        pattern=r"^[A-Za-z0-9_-]{86}$", description="base64url (no padding) raw r||s ES256"
    )
    payload: dict[str, Any]


class OfflineUploadIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    terminal_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    records: list[OfflineRecordIn] = Field(min_length=1, max_length=offline_sync.MAX_RECORDS_PER_UPLOAD)


class OfflineRecordResult(BaseModel):
    seq: int
    status: Literal["accepted", "duplicate", "conflict", "rejected"]
    code: str | None
    redemption_id: str | None


class OfflineUploadOut(BaseModel):
    terminal_id: str
    results: list[OfflineRecordResult]


class MerchantProgramsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    terminal_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The refreshing terminal: the server counts its max_offline_hours from now",
    )


@endpoint(
    bp,
    "/merchant/programs",
    "GET",
    auth="merchant",
    query=MerchantProgramsQuery,
    summary="The programmes the calling merchant is enrolled in, with tiers, scope and offline limits, "
    "and its approved SKU mappings",
    responses={200: MerchantProgramList},
    errors=(*AUTH_ERRORS, "validation_error"),
)
def merchant_programs(principal: Principal, query: MerchantProgramsQuery) -> Response:
    assert principal.merchant_id is not None
    ctx = service_context()
    if query.terminal_id is not None:
        offline_sync.record_terminal_refresh(ctx, principal.merchant_id, query.terminal_id)
    return json_response(
        {
            "programs": offline_sync.merchant_programs(ctx, principal.merchant_id),
            "sku_mappings": offline_sync.approved_sku_mappings(ctx, principal.merchant_id),
        }
    )


@endpoint(
    bp,
    "/offline-redemptions",
    "POST",
    auth="merchant",
    summary="Upload an offline terminal's signed, hash-chained journal records; safe to repeat",
    body=OfflineUploadIn,
    responses={200: OfflineUploadOut},
    errors=(*AUTH_ERRORS, "validation_error", "not_found"),
)
def upload_offline_records(principal: Principal, body: OfflineUploadIn) -> Response:
    assert principal.merchant_id is not None
    records = [
        offline_sync.UploadedRecord(r.seq, r.prev_hash, r.record_hash, r.signature, r.payload)
        for r in body.records
    ]
    results = offline_sync.sync_records(
        service_context(), principal.merchant_id, body.terminal_id, records, principal.actor
    )
    return json_response({"terminal_id": body.terminal_id, "results": [r.to_json() for r in results]})
