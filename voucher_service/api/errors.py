"""The one place where failures become application/problem+json (RFC 9457)."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis.exceptions as redis_errors
import sqlalchemy.exc as sa_errors
from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException

from voucher_service.domain.errors import VoucherServiceError

log = logging.getLogger(__name__)
TYPE_BASE = "https://voucher.example.gov.cn/problems/"
OUTAGE_RETRY_AFTER_S = 2

# What "PostgreSQL or Redis cannot be reached (or went away mid-request)" raises. OperationalError covers
# refused and reset connections, a server shutting down, statement and lock timeouts and serialisation
# failures: all worth the same request again a moment later. Bad input never raises these.
OUTAGES: tuple[type[Exception], ...] = (
    sa_errors.OperationalError,
    sa_errors.InterfaceError,
    sa_errors.DisconnectionError,
    sa_errors.TimeoutError,  # the pool had no connection to give within its timeout
    redis_errors.ConnectionError,  # includes BusyLoadingError (a restarted Redis loading its data)
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a failover left us on a replica
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
)

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


def is_outage(exc: BaseException) -> bool:
    """Tell whether `exc` (or what it was raised from) means a dependency is unreachable."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, OUTAGES):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def outage_response(exc: BaseException) -> Response:
    """503 service_unavailable with Retry-After: what every route (API or page) answers to an outage."""
    log.warning(
        "dependency outage in request %s: %s: %s",
        getattr(g, "request_id", "?"),
        type(exc).__name__,
        str(exc).splitlines()[0] if str(exc) else "",
    )
    resp = problem(
        503,
        "service_unavailable",
        "Service unavailable",
        "The database or Redis cannot be reached right now; retry the same request later.",
    )
    resp.headers["Retry-After"] = str(OUTAGE_RETRY_AFTER_S)
    return resp


def register_error_handlers(app: Flask) -> None:
    """Map every failure to problem+json; never a stack trace, never a 5xx for bad input."""

    @app.errorhandler(VoucherServiceError)
    def _domain(exc: VoucherServiceError) -> Response:
        resp = problem(exc.status, exc.code, exc.title, exc.detail, **exc.extra)
        retry_after = retry_after_of(exc)
        if retry_after is not None:
            resp.headers["Retry-After"] = str(retry_after)
        return resp

    for outage in OUTAGES:  # app-wide, so blueprints of pages are covered as well as the API
        app.register_error_handler(outage, outage_response)

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
        if is_outage(exc):  # e.g. an outage wrapped in another exception on its way up
            return outage_response(exc)
        log.exception("unhandled error in request %s", getattr(g, "request_id", "?"))
        return problem(
            500, "internal_error", "Internal error", "The service failed; the request id identifies it."
        )


def retry_after_of(exc: VoucherServiceError) -> int | None:
    """The Retry-After a refusal carries (rate limits, a key whose first attempt still runs), if any."""
    value = getattr(exc, "retry_after", None)
    return max(1, int(value)) if value is not None else None
