"""The resident's wallet: log in by SMS code, claim, my vouchers, one voucher as a QR, live status."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from voucher_service.api.auth import service_context
from voucher_service.domain.errors import RateLimited, Unauthorized, ValidationFailed
from voucher_service.services import consumers, issuance
from voucher_service.web import page_blueprint
from voucher_service.web.errors import error_text
from voucher_service.web.security import (
    current_user,
    login_rate_limit,
    login_user,
    logout_user,
    require_login,
)

bp = page_blueprint("wallet", __name__, url_prefix="/wallet")


def _holder() -> str:
    user = current_user("consumer")
    assert user is not None
    return user.subject


@bp.get("/")
def home() -> Any:
    if current_user("consumer") is None:
        return redirect(url_for("wallet.login"))
    return vouchers_page()


@bp.get("/login")
def login() -> str:
    return render_template("wallet/login.html", phone=request.args.get("phone", "")[:20], step="phone")


@bp.post("/login/code")
def send_code() -> Any:
    raw = request.form.get("phone", "")[:40]
    try:
        login_rate_limit("consumer-otp", per_ip=30, window_s=300)
        consumers.send_code(service_context(), raw)
    except ValidationFailed:
        return render_template("wallet/login.html", phone=raw, step="phone",
                               error=_("Enter a mainland China mobile number (11 digits).")), 400
    except RateLimited as exc:
        resp = Response(render_template("wallet/login.html", phone=raw, step="phone",
                                        error=error_text("rate_limited")), 429)
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    return render_template("wallet/login.html", phone=raw, step="code",
                           sent=_("We sent a 6-digit code by SMS. It is valid for 5 minutes."))


@bp.post("/login")
def verify_code() -> Any:
    raw = request.form.get("phone", "")[:40]
    code = request.form.get("code", "").strip()[:12]
    ctx = service_context()
    try:
        login_rate_limit("consumer", raw)
        if not (len(code) == 6 and code.isascii() and code.isdigit()):
            raise Unauthorized("not a code")
        consumers.open_session(ctx, raw, code)
        holder = consumers.phone_holder(ctx, consumers.normalise_phone(raw))
    except ValidationFailed:
        return render_template("wallet/login.html", phone=raw, step="phone",
                               error=_("Enter a mainland China mobile number (11 digits).")), 400
    except Unauthorized:
        return render_template("wallet/login.html", phone=raw, step="code",
                               error=_("That code is wrong or has expired. Check the SMS or ask for a new code.")), 401
    except RateLimited as exc:
        resp = Response(render_template("wallet/login.html", phone=raw, step="code",
                                        error=error_text("rate_limited")), 429)
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    login_user("consumer", holder)
    return redirect(url_for("wallet.home"))


@bp.post("/logout")
def logout() -> Any:
    logout_user()
    flash(_("You are logged out."), "ok")
    return redirect(url_for("wallet.login"))


@require_login("consumer")
def vouchers_page() -> str:
    from voucher_service.web.public import open_programmes

    vouchers = issuance.holder_vouchers(service_context(), _holder())
    return render_template("wallet/home.html", vouchers=vouchers, programmes=open_programmes())


def _own_voucher(voucher_id: str) -> dict[str, Any]:
    """The holder's own voucher, or 404 (someone else's voucher is not there for this holder)."""
    if len(voucher_id) > 64:
        abort(404)
    for v in issuance.holder_vouchers(service_context(), _holder()):
        if v["voucher_id"] == voucher_id:
            return v
    abort(404)

