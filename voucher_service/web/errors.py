"""Failures of page requests as pages (or JSON for a page script's fetch), never a stack trace.

`error_text(code)` is the translated sentence for each stable error code, for areas to show in place.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, render_template
from flask_babel import gettext as _
from werkzeug.exceptions import HTTPException

from voucher_service.domain.errors import RateLimited, VoucherServiceError
from voucher_service.web.security import wants_json

log = logging.getLogger(__name__)


def error_text(code: str) -> str:
    """A person's sentence for a stable error code (translated)."""
    texts = {
        "validation_error": _("Something you entered is not valid."),
        "unauthorized": _("Please log in again."),
        "forbidden": _("You are not allowed to do this."),
        "not_found": _("This page does not exist, or it is not yours."),
        "method_not_allowed": _("This page does not accept that request."),
        "csrf_failed": _("This form has expired. Reload the page and try again."),
        "rate_limited": _("Too many attempts. Please wait a little and try again."),
        "service_unavailable": _("The service is busy or down for a moment. Please try again shortly."),
        "program_not_active": _("This programme is not open for claims now."),
        "tier_sold_out": _("This voucher is sold out."),
        "claim_limit_reached": _(
            "You already have as many vouchers of this programme as one person may claim."
        ),
        "payload_too_large": _("What you sent is too large."),
        "internal_error": _("Something went wrong on our side. Please try again."),
    }
    return texts.get(code, texts["internal_error"])


def render_error(status: int, code: str, retry_after: int | None = None) -> Response:
    """The error as a page (or JSON for fetch), with Retry-After when there is one."""
    if wants_json():
        resp = jsonify({"code": code, "detail": error_text(code)})
    else:
        resp = Response(render_template("error.html", status=status, code=code, message=error_text(code)))
    resp.status_code = status
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


def csrf_refused() -> Response:
    """A state-changing request with a missing or wrong CSRF token: 403, nothing done."""
    return render_error(403, "csrf_failed")


def _is_outage(exc: BaseException) -> bool:
    from sqlalchemy.exc import OperationalError

    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency
        return isinstance(exc, OperationalError)
    return isinstance(exc, OperationalError | RedisConnectionError | RedisTimeoutError)


def register_page_errors(bp: Blueprint) -> None:
    """Attach the page error handlers to a page blueprint."""

    @bp.errorhandler(VoucherServiceError)
    def _domain(exc: VoucherServiceError) -> Response:
        retry = exc.retry_after if isinstance(exc, RateLimited) else None
        return render_error(exc.status, exc.code, retry)

    @bp.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        status = exc.code or 500
        codes = {
            400: "validation_error",
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }
        if status < 400:
            return exc
        return render_error(status, codes.get(status, "internal_error"))

    @bp.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if _is_outage(exc):
            log.warning("page request failed: database or Redis unavailable", exc_info=True)
            return render_error(503, "service_unavailable", 5)
        log.exception("unhandled error in a page request")
        return render_error(500, "internal_error")
