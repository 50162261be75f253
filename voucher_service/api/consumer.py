"""Consumer sessions, claims and vouchers."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from voucher_service.api.auth import (
    Principal,
    service_context,
    settle_pending_checks,
    take_pending_nonce,
    take_pending_session,
)
from voucher_service.api.consumer_schemas import (
    ClaimIn,
    ClaimOut,
    OtpIn,
    OtpOut,
    RebindIn,
    RebindOut,
    SessionIn,
    SessionOut,
    VoucherList,
)
from voucher_service.api.idempotent import keyed_request, stored_response
from voucher_service.api.routing import endpoint, json_response
from voucher_service.domain.errors import Forbidden, ValidationFailed
from voucher_service.domain.presentations import HolderKey
from voucher_service.services import consumers, credentials, holder_binding, issuance

bp = Blueprint("consumer", __name__, url_prefix="/api/v1")
CLAIM_ERRORS = (
    "validation_error",
    "unauthorized",
    "replayed_request",
    "forbidden",
    "merchant_not_enrolled",
    "not_found",
    "program_not_active",
    "tier_sold_out",
    "claim_limit_reached",
    "rate_limited",
    "idempotency_in_progress",
    "idempotency_key_reused",
)


def with_qr_urls(voucher: dict[str, Any]) -> dict[str, Any]:
    """Add the voucher's QR image URLs."""
    base = f"{bp.url_prefix}/vouchers/{voucher['voucher_id']}"
    return {**voucher, "qr_png_url": f"{base}/qr.png", "qr_svg_url": f"{base}/qr.svg"}


@endpoint(
    bp,
    "/consumer/otp",
    "POST",
    auth="public",
    summary="Send a one-time login code by SMS",
    body=OtpIn,
    responses={202: OtpOut},
    errors=("validation_error", "rate_limited"),
)
def send_otp(principal: Principal, body: OtpIn) -> Response:
    return json_response(consumers.send_code(service_context(), body.phone), 202)


@endpoint(
    bp,
    "/consumer/sessions",
    "POST",
    auth="public",
    summary="Exchange a one-time code for a session token",
    body=SessionIn,
    responses={201: SessionOut},
    errors=("validation_error", "unauthorized"),
)
def open_session(principal: Principal, body: SessionIn) -> Response:
    return json_response(consumers.open_session(service_context(), body.phone, body.code), 201)


@endpoint(
    bp,
    "/consumer/sessions",
    "DELETE",
    auth="consumer",
    summary="Log out: end the calling session (its token stops working at once)",
    responses={204: None},
    errors=("unauthorized",),
)
def end_session(principal: Principal) -> Response:
    token = request.headers.get("Authorization", "")[7:].strip()  # authenticate() checked the scheme
    credentials.end_session(service_context(), token, principal.actor)
    resp = Response(status=204)
    del resp.headers["Content-Type"]  # no content, so no type (the document says none)
    return resp


def _claimant(principal: Principal, body: ClaimIn) -> issuance.Claimant:
    ctx = service_context()
    if principal.merchant is None:
        stray = [f for f in ("holder_ref", "holder_phone") if getattr(body, f) is not None]
        if stray:
            errors = [{"field": f, "message": "only a platform merchant may send it"} for f in stray]
            raise ValidationFailed("A consumer claims for itself.", errors)
        assert principal.holder_hash is not None
        return issuance.Claimant(principal.holder_hash, principal.actor, holder_key=_device_key(body))
    merchant = principal.merchant
    if not merchant.platform:
        raise Forbidden("Only platform merchants may claim vouchers on behalf of their users.")
    if body.holder_ref is None:
        raise ValidationFailed(
            "A platform claim names its user.",
            [{"field": "holder_ref", "message": "is required for platform merchants"}],
        )
    if body.holder_phone is not None:
        # The same person as the consumer who logs in with this number: limits count across channels.
        phone = consumers.normalise_phone(body.holder_phone, field="holder_phone")
        holder = consumers.phone_holder(ctx, phone)
    else:
        holder = ctx.box.keyed_hash("platform", f"{merchant.merchant_id}:{body.holder_ref}")
    return issuance.Claimant(holder, principal.actor, merchant.merchant_id, holder_key=_device_key(body))


def _device_key(body: ClaimIn) -> HolderKey | None:
    return None if body.device_key is None else holder_binding.device_key(body.device_key.model_dump())


@endpoint(
    bp,
    "/programs/<program_id>/claims",
    "POST",
    auth="consumer_or_merchant",
    summary="Claim a voucher (a consumer for itself, or a platform merchant for its user; a platform "
    "may send an Idempotency-Key, and a retry with it returns the same voucher)",
    body=ClaimIn,
    responses={201: ClaimOut},
    errors=CLAIM_ERRORS,
    defer_store_checks=True,
)
def claim_voucher(principal: Principal, program_id: str, body: ClaimIn) -> Response:
    claimant = _claimant(principal, body)
    catalog = current_app.extensions.setdefault("voucher_programs", issuance.ProgramCatalog())
    metrics = current_app.extensions["voucher_metrics"]
    ctx = service_context()
    if principal.kind == "merchant" and request.headers.get("Idempotency-Key") is not None:
        settle_pending_checks()  # before the key is looked up, as when authenticating
        # A platform retrying a claim whose answer it lost gets the same voucher, not a second one.
        answer = issuance.claim_once(
            ctx,
            program_id,
            body.tier,
            claimant,
            keyed_request(principal),
            catalog=catalog,
            count=metrics.count,
            present=with_qr_urls,
        )
        return stored_response(answer)
    # The nonce (or the session's state), the rate limits and the sold-out gate: one FastStore round trip.
    out = issuance.claim_voucher(
        ctx,
        program_id,
        body.tier,
        claimant,
        catalog=catalog,
        count=metrics.count,
        nonce=take_pending_nonce(),
        session=take_pending_session(),
    )
    return json_response(with_qr_urls(out), 201)


@endpoint(
    bp,
    "/consumer/vouchers",
    "GET",
    auth="consumer",
    summary="The consumer's own vouchers, newest first",
    responses={200: VoucherList},
    errors=("unauthorized", "forbidden"),
)
def my_vouchers(principal: Principal) -> Response:
    assert principal.holder_hash is not None
    vouchers = issuance.holder_vouchers(service_context(), principal.holder_hash)
    return json_response({"vouchers": [with_qr_urls(v) for v in vouchers]})


@endpoint(
    bp,
    "/consumer/vouchers/<voucher_id>/binding",
    "PUT",
    auth="consumer",
    summary="Move a holder-bound voucher to this phone's device key (after an SMS login on a new phone): "
    "the old key stops working at once online, and at the tills' next refresh offline",
    body=RebindIn,
    responses={200: RebindOut},
    errors=("validation_error", "unauthorized", "not_found", "invalid_state"),
)
def rebind_voucher(principal: Principal, voucher_id: str, body: RebindIn) -> Response:
    assert principal.holder_hash is not None
    key = holder_binding.device_key(body.device_key.model_dump())
    out = holder_binding.rebind(
        service_context(), voucher_id[:64], principal.holder_hash, key, principal.actor
    )
    return json_response(out)
