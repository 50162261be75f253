"""Requests made at most once per Idempotency-Key, whose stored answer is replayed byte for byte."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Response, request

from voucher_service.api.auth import Principal, service_context
from voucher_service.api.errors import problem
from voucher_service.domain.errors import ValidationFailed, VoucherServiceError
from voucher_service.services import idempotency
from voucher_service.services.idempotency import IdempotencyClaim, Outcome, StoredResponse

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


def run_idempotent(principal: Principal, action: Callable[[IdempotencyClaim], Outcome]) -> Response:
    """Do `action` once per Idempotency-Key; replay the stored answer, byte for byte, to a repeat."""
    merchant_id = principal.merchant_id
    assert merchant_id is not None
    key = _idempotency_key()
    route = f"{request.method} {request.path}"
    answer = idempotency.run_once(
        service_context(), merchant_id, key, route, request.get_data(cache=True), action, problem_bytes
    )
    return _stored(answer)
