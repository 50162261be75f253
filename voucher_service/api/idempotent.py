"""Requests made at most once per Idempotency-Key, whose stored answer is replayed byte for byte."""

from __future__ import annotations

import logging

from flask import Response, request

from voucher_service.api.auth import Principal
from voucher_service.api.errors import problem
from voucher_service.domain.errors import ValidationFailed, VoucherServiceError
from voucher_service.services.idempotency import KeyedRequest, StoredResponse

log = logging.getLogger(__name__)


def _idempotency_key() -> str:
    key = request.headers.get("Idempotency-Key")
    if key is None or not 1 <= len(key) <= 255:
        raise ValidationFailed(
            "The Idempotency-Key header is required (1-255 characters).",
            [{"field": "Idempotency-Key", "message": "required, 1-255 characters"}],
        )
    return key


def _stored(answer: StoredResponse) -> Response:
    mimetype = "application/json" if answer.status < 400 else "application/problem+json"
    return Response(answer.body, status=answer.status, mimetype=mimetype)


def problem_bytes(exc: VoucherServiceError) -> tuple[int, bytes]:
    """A refusal as the problem+json answer stored for its Idempotency-Key."""
    resp = problem(exc.status, exc.code, exc.title, exc.detail, **exc.extra)
    return resp.status_code, resp.get_data()


def keyed_request(principal: Principal) -> KeyedRequest:
    """This request as one to do at most once per the merchant's Idempotency-Key."""
    merchant_id = principal.merchant_id
    assert merchant_id is not None
    route = f"{request.method} {request.path}"
    return KeyedRequest(merchant_id, _idempotency_key(), route, request.get_data(cache=True), problem_bytes)


def stored_response(answer: StoredResponse) -> Response:
    """The answer of a keyed request, exactly as it was stored (and replayed)."""
    return _stored(answer)
