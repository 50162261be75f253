"""Pages people use (CONTRACT §8), server-rendered by the same app, and the reconciliation report template.

`register_web(app)` (called by create_app) sets up languages, security headers, CSRF and the page
blueprints of each area, one module each: public (`/`, `/check`), wallet, checkout, console. An area
module exposes `bp`, made with `page_blueprint()`; a module that is not there yet is skipped.
"""

from __future__ import annotations

import importlib
import mimetypes
from pathlib import Path

from flask import Blueprint, Flask, Request, Response, g
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from voucher_service.web import i18n, security
from voucher_service.web.errors import register_page_errors

AREAS = ("public", "wallet", "checkout", "console")
WEB_DIR = Path(__file__).parent
STATIC_MAX_AGE_S = 3600

mimetypes.add_type("application/wasm", ".wasm")


def page_blueprint(name: str, import_name: str, url_prefix: str | None = None) -> Blueprint:
    """A blueprint of pages: templates from web/templates, HTML error pages, headers, CSRF."""
    bp = Blueprint(name, import_name, url_prefix=url_prefix)
    register_page_errors(bp)
    return bp


def _static_blueprint() -> Blueprint:
    bp = Blueprint("web_static", __name__, static_folder=str(WEB_DIR / "static"), static_url_path="/static")
    return bp


class SessionOnlyWhenSent(SecureCookieSessionInterface):
    """Flask's signed-cookie session (the pages' flash messages), without building its itsdangerous
    serializer for a request that carries no session cookie, as Flask does for every request before it
    looks: every API call and /healthz paid ~4 % of a worker's CPU for it in the claims benchmark."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def register_web(app: Flask) -> None:
    """Attach the pages to the app."""
    app.template_folder = str(WEB_DIR / "templates")
    settings = app.extensions["voucher"].settings
    app.secret_key = app.secret_key or settings.secret_key  # flash messages (signed cookie)
    app.session_interface = SessionOnlyWhenSent()
    app.config.update(
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.env == "production",
    )
    app.config.setdefault("SEND_FILE_MAX_AGE_DEFAULT", STATIC_MAX_AGE_S)
    i18n.install(app)
    app.jinja_env.globals["csrf_token"] = security.csrf_token
    app.jinja_env.globals["current_user"] = security.current_user
    names = {"web_static"}
    app.register_blueprint(_static_blueprint())
    for area in AREAS:
        try:
            module = importlib.import_module(f"voucher_service.web.{area}")
        except ModuleNotFoundError as exc:
            if exc.name == f"voucher_service.web.{area}":
                continue  # that area is not built (yet)
            raise
        app.register_blueprint(module.bp)
        names.add(module.bp.name)
    app.extensions["voucher_web_blueprints"] = names
    security.install(app, names)

    @app.after_request
    def _lang_cookie(resp: Response) -> Response:
        if g.get("page_lang_chosen"):
            i18n.remember_choice(resp)
        return resp
