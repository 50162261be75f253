"""The resident's wallet: log in by SMS code, claim, my vouchers, one voucher as a QR, live status."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from flask import Response, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _

from voucher_service.api.auth import service_context
from voucher_service.domain.clock import rfc3339
from voucher_service.domain.errors import (
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
    VoucherServiceError,
)
from voucher_service.domain.presentations import HolderKey
from voucher_service.domain.states import VoucherStatus
from voucher_service.services import consumers, holder_binding, issuance, programs, spending, voucher_status
from voucher_service.web import page_blueprint
from voucher_service.web.errors import error_text
from voucher_service.web.public import mark_label
from voucher_service.web.security import (
    current_user,
    login_rate_limit,
    login_user,
    logout_user,
    require_login,
)

bp = page_blueprint("wallet", __name__, url_prefix="/wallet")
CLAIM_FORM_TTL_S = 3600


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
        # Residents share addresses (carrier NAT): the per-number limits of the service do the real work.
        login_rate_limit("consumer-otp", per_ip=300, window_s=300)
        consumers.send_code(service_context(), raw)
    except ValidationFailed:
        return render_template(
            "wallet/login.html",
            phone=raw,
            step="phone",
            error=_("Enter a mainland China mobile number (11 digits)."),
        ), 400
    except RateLimited as exc:
        resp = Response(
            render_template("wallet/login.html", phone=raw, step="phone", error=error_text("rate_limited")),
            429,
        )
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    return render_template(
        "wallet/login.html",
        phone=raw,
        step="code",
        sent=_(
            "We sent a 6-digit code by SMS. It is valid for %(n)d minutes.",
            n=max(1, service_context().settings.otp_ttl_s // 60),
        ),
    )


@bp.post("/login")
def verify_code() -> Any:
    raw = request.form.get("phone", "")[:40]
    code = request.form.get("code", "").strip()[:12]
    ctx = service_context()
    try:
        phone = consumers.normalise_phone(raw)
        login_rate_limit("consumer", phone, per_ip=300)
        if not (len(code) == 6 and code.isascii() and code.isdigit()):
            raise Unauthorized("not a code")
        consumers.open_session(ctx, phone, code)
        holder = consumers.phone_holder(ctx, phone)
    except ValidationFailed:
        return render_template(
            "wallet/login.html",
            phone=raw,
            step="phone",
            error=_("Enter a mainland China mobile number (11 digits)."),
        ), 400
    except Unauthorized:
        return render_template(
            "wallet/login.html",
            phone=raw,
            step="code",
            error=_("That code is wrong or has expired. Check the SMS or ask for a new code."),
        ), 401
    except RateLimited as exc:
        resp = Response(
            render_template("wallet/login.html", phone=raw, step="code", error=error_text("rate_limited")),
            429,
        )
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
    names = {p["id"]: p["name"] for p in open_programmes()}
    return render_template(
        "wallet/home.html",
        vouchers=vouchers,
        programmes=open_programmes(),
        names=names,
        form_id=secrets.token_urlsafe(16),
    )


@bp.post("/claim")
@require_login("consumer")
def claim() -> Any:
    program_id = request.form.get("program_id", "")[:64]
    tier = request.form.get("tier", "")[:32]
    form_id = request.form.get("form_id", "")[:64]
    ctx = service_context()
    holder = _holder()
    # One claim per rendered form: a double click or a resubmitted page shows the voucher it claimed.
    once_key = (
        f"page:claim:{hashlib.sha256(f'{holder}|{form_id}|{program_id}|{tier}'.encode()).hexdigest()[:32]}"
    )
    if form_id and not ctx.store.add_once(once_key, CLAIM_FORM_TTL_S):
        earlier = ctx.store.get(once_key)
        if earlier and earlier != b"1":
            return redirect(url_for("wallet.voucher", voucher_id=earlier.decode()))
        return redirect(url_for("wallet.home"))
    catalog = current_app.extensions.setdefault("voucher_programs", issuance.ProgramCatalog())
    metrics = current_app.extensions["voucher_metrics"]
    try:
        out = issuance.claim_voucher(
            ctx,
            program_id,
            tier,
            issuance.Claimant(holder, f"consumer:{holder[:16]}", holder_key=_posted_device_key()),
            catalog=catalog,
            count=metrics.count,
        )
    except VoucherServiceError as exc:
        if form_id:
            ctx.store.delete(once_key)  # nothing was claimed: the same form may try again
        flash(error_text(exc.code), "error")
        return redirect(url_for("wallet.home"))
    if form_id:
        ctx.store.set(once_key, out["voucher_id"].encode(), CLAIM_FORM_TTL_S)
    current_app.extensions.pop("voucher_open_programmes", None)  # "left" counts changed
    flash(_("Voucher claimed. Show this QR code at the till."), "ok")
    return redirect(url_for("wallet.voucher", voucher_id=out["voucher_id"]))


def _posted_device_key() -> HolderKey | None:
    """The device key the page's script put in the form (holder.js), or None; ValidationFailed if bad."""
    raw = request.form.get("device_key", "")
    if not raw:
        return None
    try:
        jwk = json.loads(raw[:1000])
    except ValueError:
        jwk = None
    return holder_binding.device_key(jwk)


@bp.post("/vouchers/<voucher_id>/rebind")
@require_login("consumer")
def rebind(voucher_id: str) -> Any:
    """Move a bound voucher to this phone's new device key (the old phone's codes stop working)."""
    holder = _holder()
    try:
        key = _posted_device_key()
        if key is None:
            raise ValidationFailed("no device key")
        holder_binding.rebind(service_context(), voucher_id[:64], holder, key, f"consumer:{holder[:16]}")
    except NotFound:
        abort(404)
    except VoucherServiceError as exc:
        flash(error_text(exc.code), "error")
        return redirect(url_for("wallet.voucher", voucher_id=voucher_id[:64]))
    flash(_("This voucher now works on this phone only. Codes from the old phone are refused."), "ok")
    return redirect(url_for("wallet.voucher", voucher_id=voucher_id[:64]))


def _own_voucher(voucher_id: str) -> dict[str, Any]:
    """The holder's own voucher, or 404 (someone else's voucher is not there for this holder)."""
    if len(voucher_id) > 64:
        abort(404)
    for v in issuance.holder_vouchers(service_context(), _holder()):
        if v["voucher_id"] == voucher_id:
            return v
    abort(404)


@bp.get("/vouchers/<voucher_id>")
@require_login("consumer")
def voucher(voucher_id: str) -> str:
    v = _own_voucher(voucher_id)
    ctx = service_context()
    program = programs.get_program(ctx, v["program_id"], with_stats=False)
    spend = spending.where_to_spend(ctx, v["program_id"])
    return render_template(
        "wallet/voucher.html",
        v=v,
        binding=holder_binding.current_binding(ctx, voucher_id),
        server_now=int(ctx.now().timestamp()),
        program=program,
        spend=spend,
        mark_label=mark_label,
        not_yet=v["valid_from"] is not None and v["valid_from"] > rfc3339(ctx.now()),
    )


@bp.get("/vouchers/<voucher_id>/qr.png")
@require_login("consumer")
def voucher_qr(voucher_id: str) -> Response:
    """The voucher's QR code: the same image the API serves its holder."""
    try:
        image = issuance.voucher_qr(
            service_context(), voucher_id[:64], "png", holder_hash=_holder(), merchant_id=None
        )
    except (NotFound, Forbidden):
        abort(404)
    if request.if_none_match.contains(image.etag):
        resp = Response(status=304)
    else:
        resp = Response(image.body, mimetype=image.content_type)
    resp.headers["Cache-Control"] = f"private, max-age={issuance.QR_CACHE_TTL_S}"
    resp.set_etag(image.etag)
    return resp


@bp.get("/vouchers/<voucher_id>/status", endpoint="voucher_status")
@require_login("consumer")
def status(voucher_id: str) -> Response:
    """The cheap status check an open voucher page polls (FastStore first; 304 when unchanged)."""
    found = voucher_status.voucher_status(service_context(), voucher_id[:64])
    if found is None or found["holder_hash"] != _holder():
        abort(404)
    etag = hashlib.sha256(f"{found['status']}|{found['changed_at']}".encode()).hexdigest()[:16]
    if request.if_none_match.contains(etag):
        resp = Response(status=304)
    else:
        resp = jsonify({"status": found["status"], "label": status_label(found["status"])})
    resp.headers["Cache-Control"] = "private, no-cache"
    resp.set_etag(etag)
    return resp


def status_label(status: str) -> str:
    """A voucher's status in words."""
    labels: dict[str, str] = {
        VoucherStatus.ISSUED: _("Ready to use"),
        VoucherStatus.REDEEMED: _("Used"),
        VoucherStatus.EXPIRED: _("Expired"),
        VoucherStatus.VOID: _("Cancelled"),
    }
    return labels.get(status, status)


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {"status_label": status_label}
