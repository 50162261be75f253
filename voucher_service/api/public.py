"""Keys, QR codes."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Blueprint, Response, current_app, request

from voucher_service.api.auth import Principal, service_context
from voucher_service.api.consumer_schemas import Jwks
from voucher_service.api.routing import endpoint, json_response
from voucher_service.services import issuance, keys
from voucher_service.services.context import ServiceContext

bp = Blueprint("public", __name__, url_prefix="/api/v1")
JWKS_MAX_AGE_S = 300
QR_ERRORS = ("unauthorized", "replayed_request", "forbidden", "not_found")


class JwksCache:
    """The JWKS kept in process briefly; a rotation in this process (new active kid) refreshes it at once."""

    def __init__(self, ttl_s: float = 30.0) -> None:
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._entry: tuple[float, str, float, dict[str, Any]] | None = None

    def get(self, ctx: ServiceContext) -> dict[str, Any]:
        active_kid = ctx.keys.active().kid
        now = time.monotonic()
        entry = self._entry
        # Never serve a key past its `exp`: a retired key leaves /keys the moment it ends.
        if entry and entry[0] > now and entry[1] == active_kid and ctx.now().timestamp() < entry[2]:
            return entry[3]
        value = keys.jwks(ctx)
        first_end = min(
            (float(k["exp"]) for k in value["keys"] if k.get("status") == "retired"), default=float("inf")
        )
        with self._lock:
            self._entry = (now + self._ttl, active_kid, first_end, value)
        return value


@endpoint(bp, "/keys", "GET", auth="public", summary="The voucher-signing keys (JWKS)", responses={200: Jwks})
def get_keys(principal: Principal) -> Response:
    cache = current_app.extensions.setdefault("voucher_jwks", JwksCache())
    headers = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"}
    return json_response(cache.get(service_context()), headers=headers)


def _qr(principal: Principal, voucher_id: str, fmt: str) -> Response:
    image = issuance.voucher_qr(
        service_context(),
        voucher_id,
        fmt,
        holder_hash=principal.holder_hash,
        merchant_id=principal.merchant_id,
    )
    # The image may only be shown to its holder: caches on the way must not keep it.
    if request.if_none_match.contains(image.etag):
        resp = Response(status=304)
    else:
        resp = Response(image.body, mimetype=image.content_type)
    resp.headers["Cache-Control"] = f"private, max-age={issuance.QR_CACHE_TTL_S}"
    resp.set_etag(image.etag)
    return resp


@endpoint(
    bp,
    "/vouchers/<voucher_id>/qr.png",
    "GET",
    auth="consumer_or_merchant",
    summary="The voucher's QR code as PNG (its holder, or the platform that claimed it)",
    responses={200: None},
    errors=QR_ERRORS,
    content_type="image/png",
)
def voucher_qr_png(principal: Principal, voucher_id: str) -> Response:
    return _qr(principal, voucher_id, "png")


@endpoint(
    bp,
    "/vouchers/<voucher_id>/qr.svg",
    "GET",
    auth="consumer_or_merchant",
    summary="The voucher's QR code as SVG (its holder, or the platform that claimed it)",
    responses={200: None},
    errors=QR_ERRORS,
    content_type="image/svg+xml",
)
def voucher_qr_svg(principal: Principal, voucher_id: str) -> Response:
    return _qr(principal, voucher_id, "svg")
