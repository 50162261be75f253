"""Reports for administrators."""

from __future__ import annotations

from flask import Blueprint, Response
from pydantic import BaseModel

from voucher_service.api.auth import Principal, service_context
from voucher_service.api.routing import endpoint, json_response
from voucher_service.services import reporting

bp = Blueprint("reports", __name__, url_prefix="/api/v1")


class CountyRowOut(BaseModel):
    """One producing county: sales of certified products and discount against its target."""

    county_code: str
    county_name: str
    redemptions: int
    eligible_sales_fen: int
    discount_fen: int
    target_fen: int
    progress_bp: int | None  # eligible sales / target in basis points (floor); null without a target
    progress_pct: str | None  # the same as a percentage with two decimals, e.g. "12.34"


class CountiesReportOut(BaseModel):
    program_id: str
    counties: list[CountyRowOut]


@endpoint(
    bp,
    "/programs/<program_id>/reports/counties",
    "GET",
    auth="admin",
    summary="Sales by producing county against the programme's targets (as voucher-admin report counties)",
    responses={200: CountiesReportOut},
    errors=("unauthorized", "forbidden", "not_found"),
)
def counties_report(principal: Principal, program_id: str) -> Response:
    return json_response(reporting.counties_report(service_context(), program_id))
