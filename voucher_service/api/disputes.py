"""A merchant's reconciliations and settlements, and its disputes of their discrepancies."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from voucher_service.api.auth import Principal, service_context
from voucher_service.api.routing import endpoint, json_response
from voucher_service.services import disputes

bp = Blueprint("reconciliations", __name__, url_prefix="/api/v1")
AUTH_ERRORS = ("unauthorized", "replayed_request")


class DisputeIn(BaseModel):
    """Contest one discrepancy of a run: its `discrepancy_id` (from GET .../reconciliations/{run_id})
    and a note for the administrator (1-1000 characters)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    discrepancy_id: StrictInt = Field(ge=1, le=2**62)
    note: StrictStr = Field(min_length=1, max_length=1000)


class DisputeOut(BaseModel):
    dispute_id: str
    run_id: str
    discrepancy_id: int
    program_id: str
    merchant_id: str
    category: str
    redemption_id: str
    voucher_id: str | None
    order_id: str | None
    amount_fen: int
    note: str
    status: str
    created_at: str
    decided_at: str | None
    decided_by: str | None
    decision_note: str | None
    settlement_id: str | None
    paid: bool


class SettlementOut(BaseModel):
    settlement_id: str
    created_at: str
    redemptions: int
    payable_fen: int


class ReconciliationOut(BaseModel):
    run_id: str
    created_at: str
    program_id: str
    format: str
    from_: str | None = Field(alias="from")
    to: str | None
    exit_code: int
    statement_rows: int | None
    matched: int | None
    matched_fen: int | None
    payable_fen: int | None
    held_fen: int | None
    unclaimed_fen: int | None
    categories: dict[str, int]
    discrepancies: int | None
    settlements: list[SettlementOut]
    disputes: list[DisputeOut]


class ReconciliationPageOut(BaseModel):
    reconciliations: list[ReconciliationOut]
    next_cursor: str | None


class DiscrepancyOut(BaseModel):
    discrepancy_id: int
    category: str
    voucher_id: str | None
    order_id: str | None
    redemption_id: str | None
    ledger_discount_fen: int | None
    statement_discount_fen: int | None
    detail: str
    statement: str | None
    line_no: int | None
    disputable: bool
    dispute: DisputeOut | None


class ReconciliationDetailOut(ReconciliationOut):
    discrepancy_list: list[DiscrepancyOut]
    next_after: int | None


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    cursor: str | None = Field(None, max_length=200, description="next_cursor of the previous page")
    limit: int = Field(50, ge=1, le=200)


class DiscrepancyQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    after: int = Field(0, ge=0, le=2**62, description="next_after of the previous page")
    limit: int = Field(100, ge=1, le=200)


@endpoint(
    bp,
    "/merchant/reconciliations",
    "GET",
    auth="merchant",
    summary="The merchant's own reconciliation runs (usable ones), newest first, with their settlements "
    "and disputes; keyset pages via next_cursor",
    query=PageQuery,
    responses={200: ReconciliationPageOut},
    errors=(*AUTH_ERRORS, "validation_error"),
)
def list_reconciliations(principal: Principal, query: PageQuery) -> Response:
    assert principal.merchant_id is not None
    return json_response(
        disputes.merchant_runs(
            service_context(), principal.merchant_id, cursor=query.cursor, limit=query.limit
        )
    )


@endpoint(
    bp,
    "/merchant/reconciliations/<run_id>",
    "GET",
    auth="merchant",
    summary="One of the merchant's runs with its discrepancies (each with its discrepancy_id and any "
    "dispute), pages via next_after",
    query=DiscrepancyQuery,
    responses={200: ReconciliationDetailOut},
    errors=(*AUTH_ERRORS, "validation_error", "forbidden", "not_found"),
)
def get_reconciliation(principal: Principal, run_id: str, query: DiscrepancyQuery) -> Response:
    assert principal.merchant_id is not None
    return json_response(
        disputes.merchant_run(
            service_context(), principal.merchant_id, run_id, after=query.after, limit=query.limit
        )
    )


@endpoint(
    bp,
    "/merchant/reconciliations/<run_id>/disputes",
    "POST",
    auth="merchant",
    summary="Contest a discrepancy (amount_mismatch, missing_in_statement or refunded_in_statement) with a "
    "note; once accepted, its discount is paid in the next settlement, once",
    body=DisputeIn,
    responses={201: DisputeOut},
    errors=(*AUTH_ERRORS, "validation_error", "forbidden", "not_found", "invalid_state"),
)
def create_dispute(principal: Principal, run_id: str, body: DisputeIn) -> Response:
    assert principal.merchant_id is not None
    out: Any = disputes.open_dispute(
        service_context(), principal.merchant_id, run_id, body.discrepancy_id, body.note
    )
    return json_response(out, 201)
