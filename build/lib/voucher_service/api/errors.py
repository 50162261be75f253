"""The one place where failures become application/problem+json (RFC 9457)."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException

from voucher_service.domain.errors import RateLimited, VoucherServiceError

log = logging.getLogger(__name__)
TYPE_BASE = "https://voucher.example.gov.cn/problems/"

HTTP_CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> Response:
    """Build a problem+json response."""
    body = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": getattr(g, "request_id", None),
    }
    body.update(extra)
    resp = Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/problem+json")
    return resp


def register_error_handlers(app: Flask) -> None:
    """Map every failure to problem+json; never a stack trace, never a 5xx for bad input."""

    @app.errorhandler(VoucherServiceError)
    def _domain(exc: VoucherServiceError) -> Response:
        resp = problem(exc.status, exc.code, exc.title, exc.detail, **exc.extra)
        if isinstance(exc, RateLimited):
            resp.headers["Retry-After"] = str(exc.retry_after)
        return resp

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = HTTP_CODES.get(status, "http_error")
        extra: dict[str, Any] = {}
        if status == 400:
            extra["errors"] = []
        return problem(status, code, exc.name, exc.description or exc.name, **extra)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error in request %s", getattr(g, "request_id", "?"))
        return problem(500, "internal_error", "Internal error", "The service failed; the request id identifies it.")
