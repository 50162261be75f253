"""Redemptions and reversals (merchant), and the revocations feed for offline tills."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from voucher_service.api.auth import Principal, service_context
from voucher_service.api.idempotent import keyed_request, stored_response
from voucher_service.api.merchant_schemas import (
    RedemptionIn,
    RedemptionListQuery,
    RedemptionOut,
    RedemptionPageOut,
    RedemptionPreviewOut,
    ReversalIn,
    ReversalOut,
    RevocationsOut,
    RevocationsQuery,
    StoredRedemptionOut,
)
from voucher_service.api.routing import endpoint, json_response
from voucher_service.services import redemption, redemption_records, reversals, revocations

bp = Blueprint("merchant", __name__, url_prefix="/api/v1")
AUTH_ERRORS = ("unauthorized", "replayed_request")
CHECKOUT_ERRORS = (
    *AUTH_ERRORS,
    "validation_error",
    "token_malformed",
    "token_invalid",
    "merchant_not_enrolled",
    "program_not_active",
    "voucher_void",
    "voucher_already_redeemed",
    "voucher_expired",
    "voucher_not_yet_valid",
    "no_eligible_items",
    "threshold_not_met",
    "presentation_stale",
    "presentation_invalid",
    "presentation_required",
)
IDEMPOTENCY_ERRORS = ("idempotency_in_progress", "idempotency_key_reused")


@endpoint(
    bp,
    "/redemptions/preview",
    "POST",
    auth="merchant",
    summary="Compute a redemption without making it (changes nothing)",
    body=RedemptionIn,
    responses={200: RedemptionPreviewOut},
    errors=CHECKOUT_ERRORS,
)
def preview_redemption(principal: Principal, body: RedemptionIn) -> Response:
    assert principal.merchant_id is not None
    return json_response(
        redemption.preview_redemption(service_context(), principal.merchant_id, body.to_request())
    )


@endpoint(
    bp,
    "/redemptions",
    "POST",
    auth="merchant",
    summary="Redeem a voucher at checkout, exactly once (Idempotency-Key required)",
    body=RedemptionIn,
    responses={201: RedemptionOut},
    errors=(*CHECKOUT_ERRORS, *IDEMPOTENCY_ERRORS),
    idempotent=True,
)
def create_redemption(principal: Principal, body: RedemptionIn) -> Response:
    ctx, merchant_id = service_context(), principal.merchant_id
    assert merchant_id is not None
    return stored_response(
        redemption.redeem_once(ctx, merchant_id, body.to_request(), keyed_request(principal))
    )


@endpoint(
    bp,
    "/redemptions/<redemption_id>/reversals",
    "POST",
    auth="merchant",
    summary="Reverse returned lines (omit lines for everything); below the minimum spend the discount "
    "is clawed back",
    body=ReversalIn,
    responses={201: ReversalOut},
    errors=(*AUTH_ERRORS, "validation_error", "forbidden", "not_found", "invalid_state", *IDEMPOTENCY_ERRORS),
    idempotent=True,
)
def create_reversal(principal: Principal, redemption_id: str, body: ReversalIn) -> Response:
    ctx, merchant_id = service_context(), principal.merchant_id
    assert merchant_id is not None
    return stored_response(
        reversals.reverse_once(ctx, merchant_id, redemption_id, body.returned(), keyed_request(principal))
    )


@endpoint(
    bp,
    "/redemptions",
    "GET",
    auth="merchant",
    summary="The merchant's own redemptions, newest first (redeemed_at, then id, descending); "
    "keyset pages via next_cursor; from inclusive, to exclusive (a YYYY-MM-DD to covers that day)",
    query=RedemptionListQuery,
    responses={200: RedemptionPageOut},
    errors=(*AUTH_ERRORS, "validation_error"),
)
def list_redemptions(principal: Principal, query: Any) -> Response:
    assert principal.merchant_id is not None
    start = redemption_records.period_bound(getattr(query, "from"), "from", end=False)
    end = redemption_records.period_bound(query.to, "to", end=True)
    return json_response(
        redemption_records.list_redemptions(
            service_context(),
            principal.merchant_id,
            start=start,
            end=end,
            cursor=query.cursor,
            limit=query.limit,
        )
    )


@endpoint(
    bp,
    "/redemptions/<redemption_id>",
    "GET",
    auth="merchant",
    summary="One of the merchant's redemptions",
    responses={200: StoredRedemptionOut},
    errors=(*AUTH_ERRORS, "forbidden", "not_found"),
)
def get_redemption(principal: Principal, redemption_id: str) -> Response:
    assert principal.merchant_id is not None
    return json_response(
        redemption_records.get_redemption(service_context(), principal.merchant_id, redemption_id)
    )


@endpoint(
    bp,
    "/programs/<program_id>/revocations",
    "GET",
    auth="merchant",
    summary="Vouchers redeemed or voided since a version (enrolled merchants)",
    query=RevocationsQuery,
    responses={200: RevocationsOut},
    errors=(*AUTH_ERRORS, "validation_error", "merchant_not_enrolled", "not_found"),
)
def program_revocations(principal: Principal, program_id: str, query: RevocationsQuery) -> Response:
    assert principal.merchant_id is not None
    return json_response(
        revocations.revocations_since(service_context(), principal.merchant_id, program_id, query.since)
    )
