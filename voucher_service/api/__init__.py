"""HTTP API: blueprints, the one error handler, request ids, metrics and operations routes."""

from __future__ import annotations

import re
import time
import uuid

from flask import Blueprint, Flask, Response, g, request
from sqlalchemy import text

from voucher_service.api import admin, consumer, disputes, merchant, offline, products, public, reports
from voucher_service.api.auth import service_context
from voucher_service.api.errors import register_error_handlers
from voucher_service.api.metrics import Metrics, replica_lines
from voucher_service.api.openapi import build_openapi
from voucher_service.api.routing import buffer_chunked_body, json_response
from voucher_service.services.credentials import MerchantCache

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
ops = Blueprint("operations", __name__)


@ops.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return json_response({"status": "ok"})


@ops.get("/readyz")
def readyz() -> Response:
    """The database and Redis are reachable."""
    ctx = service_context()
    checks = {"database": False, "redis": ctx.store.ping()}
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception:
        checks["database"] = False
    ok = all(checks.values())
    return json_response({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)


@ops.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition of this worker."""
    from flask import current_app

    text_out = current_app.extensions["voucher_metrics"].render()
    reads = service_context().replica_reads
    if reads is not None:
        text_out += replica_lines(reads.lag_s(), dict(reads.served))
    return Response(text_out, mimetype="text/plain; version=0.0.4")


@ops.get("/api/v1/openapi.json")
def openapi() -> Response:
    """OpenAPI 3.1 of every route."""
    return json_response(build_openapi())


def register_api(app: Flask) -> None:
    """Attach blueprints, error handling, request ids and metrics to the app."""
    app.extensions["voucher_metrics"] = Metrics()
    app.extensions["voucher_merchants"] = MerchantCache()
    for module in (admin, consumer, public, products, merchant, offline, reports, disputes):
        app.register_blueprint(module.bp)
    app.register_blueprint(ops)
    register_error_handlers(app)
    app.before_request(buffer_chunked_body)

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def _finish(resp: Response) -> Response:
        resp.headers["X-Request-Id"] = g.get("request_id", "")
        route = request.url_rule.rule if request.url_rule else "unmatched"
        app.extensions["voucher_metrics"].observe(
            route,
            request.method,
            resp.status_code,
            time.perf_counter() - g.get("started", time.perf_counter()),
        )
        return resp
