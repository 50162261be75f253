"""Consumption-voucher service: create_app() is the application factory."""

from __future__ import annotations

import logging
import threading

from flask import Flask

from voucher_service.config import Settings

__all__ = ["create_app", "Settings"]
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, start_sealer: bool | None = None) -> Flask:
    """Build the Flask app: engine, sessions, Redis, keys, blueprints (gunicorn: 'voucher_service:create_app()')."""
    from voucher_service.api import register_api
    from voucher_service.services.context import ServiceContext
    from voucher_service.web import register_web

    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder=None)  # web/ serves the pages' static files itself
    app.config["MAX_CONTENT_LENGTH"] = 8 * 1024 * 1024
    app.config["JSON_AS_ASCII"] = False
    ctx = ServiceContext.build(settings)
    app.extensions["voucher"] = ctx
    register_api(app)
    register_web(app)
    if start_sealer if start_sealer is not None else settings.env != "test":
        _start_audit_sealer(ctx)
    return app


def _start_audit_sealer(ctx: object) -> None:
    """Seal the audit log in the background, so requests only append (see services.audit_log)."""
    from voucher_service.services import audit_log

    interval = ctx.settings.audit_seal_interval_s  # type: ignore[attr-defined]

    def run() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            try:
                audit_log.seal_all(ctx.sessions)  # type: ignore[attr-defined]
            except Exception:  # the next round tries again; audit reports anything unsealed
                log.warning("audit sealing failed; will retry", exc_info=True)

    threading.Thread(target=run, name="audit-sealer", daemon=True).start()
