"""/checkout: a merchant's cashier logs in, reads the voucher, builds the basket, previews, redeems once,
shows the receipt, lists today's redemptions and takes returns.

Everything goes through the services the API uses (staff, redemption, reversals, redemption_records)
and the same idempotency store: a checkout's Idempotency-Key is made when it is opened and kept
server-side (FastStore, per page session) and in the redeem form, so a double click, a reload or a
retried POST all get the one stored answer, and the page shows the one receipt.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import time
from typing import Any, cast

from flask import Response, abort, g, redirect, render_template, request, url_for
from flask_babel import gettext as _

from voucher_service.adapters import qr
from voucher_service.api.idempotent import problem_bytes
from voucher_service.domain.clock import day_bounds, local_date
from voucher_service.domain.errors import IdempotencyInProgress, VoucherServiceError
from voucher_service.services import (
    idempotency,
    merchants,
    redemption,
    redemption_records,
    registry_queries,
    reversals,
    staff,
)
from voucher_service.services.context import ServiceContext
from voucher_service.services.idempotency import KeyedRequest, StoredResponse
from voucher_service.services.reversals import ReturnedLine
from voucher_service.web import page_blueprint, security
from voucher_service.web.checkout_basket import (
    TypedBasket,
    basket_from_json,
    parse_typed_basket,
    redemption_body,
)
from voucher_service.web.errors import error_text

bp = page_blueprint("checkout", __name__, url_prefix="/checkout")
KEY_RE = re.compile(r"(chk|rev)-[A-Za-z0-9_-]{20,40}", re.ASCII)
REDEMPTION_ID_RE = re.compile(r"[0-9a-f-]{36}", re.ASCII)
REDEEM_ROUTE = "POST /checkout/redeem"
WAIT_FOR_FIRST_S = 10.0  # a double click's second request waits for the first one's answer


def _ctx() -> ServiceContext:
    from flask import current_app

    return cast(ServiceContext, current_app.extensions["voucher"])


def reason_text(reason: str | None) -> str:
    """A line's verdict in words."""
    texts = {
        None: _("Eligible: certified product"),
        "not_certified": _("Not eligible: not a certified product"),
        "certification_expired": _("Not eligible: certification expired"),
        "certification_suspended": _("Not eligible: certification suspended"),
        "certification_revoked": _("Not eligible: certification revoked"),
        "out_of_scope": _("Not eligible: outside this programme's products or counties"),
        "invalid_gtin": _("Not eligible: the barcode's check digit is wrong"),
        "sku_not_mapped": _("Not eligible: this SKU has no approved product"),
    }
    return texts.get(reason, _("Not eligible"))


def checkout_error(code: str) -> str:
    """A refusal at the till in words."""
    texts = {
        "token_malformed": _("This is not a voucher code. Scan the customer's voucher QR code again."),
        "token_invalid": _("This voucher's signature does not verify: it was not issued by this service."),
        "merchant_not_enrolled": _("This shop does not take part in the voucher's programme."),
        "program_not_active": _("The voucher's programme is not open now."),
        "voucher_void": _("This voucher is void."),
        "voucher_already_redeemed": _("This voucher was already used."),
        "voucher_expired": _("This voucher has expired."),
        "voucher_not_yet_valid": _("This voucher is not valid yet."),
        "no_eligible_items": _("No line of the basket is an eligible certified product."),
        "threshold_not_met": _("The eligible total is below the voucher's minimum spend."),
        "presentation_stale": _(
            "This live code is too old (over 60 seconds): ask the customer to show the code on the phone again."
        ),
        "presentation_invalid": _(
            "This live code was not made by the phone the voucher belongs to (or the voucher was moved to another phone)."
        ),
        "presentation_required": _(
            "This voucher only works as the live code on the holder's phone: scan the code the wallet shows now."
        ),
        "idempotency_key_reused": _(
            "This checkout was already used for another basket. Start a new checkout."
        ),
        "idempotency_in_progress": _("The redemption is still being processed. Wait a moment and reload."),
        "invalid_state": _("Everything of this redemption was already returned."),
        "forbidden": _("This redemption belongs to another shop."),
        "no_voucher": _("Scan or type the customer's voucher first."),
        "empty_basket": _("Add at least one product to the basket."),
        "bad_lines": _("Correct the lines marked in red first."),
        "nothing_returned": _("Choose how many units of which line come back."),
        "returned": _("The return was recorded."),
    }
    return texts.get(code) or error_text(code)


@bp.app_template_filter("checkout_reason")
def _reason_filter(reason: str | None) -> str:
    return reason_text(reason)


# ---------------------------------------------------------------- who is at the till


def cashier_required(view: Any) -> Any:
    """A page view for a logged-in, enabled staff member (g.cashier); others go to the login page."""

    @functools.wraps(view)
    def inner(*args: Any, **kwargs: Any) -> Any:
        user = security.current_user("staff")
        assert user is not None
        identity = staff.active_staff(_ctx(), user.subject)
        if identity is None:  # disabled since: the session ends here
            security.logout_user()
            return redirect(url_for("checkout.login"))
        g.cashier = identity
        return view(*args, **kwargs)

    return security.require_login("staff", "checkout.login")(inner)


def _cashier() -> staff.StaffIdentity:
    return cast(staff.StaffIdentity, g.cashier)


@bp.get("/login")
def login() -> Any:
    """The staff login form."""
    if security.current_user("staff") is not None:
        return redirect(url_for("checkout.home"))
    return render_template("checkout/login.html", error=None, username="", next=request.args.get("next", ""))


@bp.post("/login")
def login_post() -> Any:
    """Check username and password (rate-limited in the service), then open a staff page session."""
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    nxt = request.form.get("next", "")
    try:
        identity = staff.authenticate(_ctx(), username, password, client=request.remote_addr or "-")
    except VoucherServiceError as exc:
        message = _("Wrong username or password.") if exc.code == "unauthorized" else checkout_error(exc.code)
        # A wrong password re-shows the form (200: a browser logs any 4xx page as a console error);
        # a rate limit keeps its 429 and Retry-After.
        status = 200 if exc.code == "unauthorized" else exc.status
        resp = Response(
            render_template("checkout/login.html", error=message, username=username[:64], next=nxt),
            status=status,
        )
        if exc.code == "rate_limited":
            resp.headers["Retry-After"] = str(getattr(exc, "retry_after", 60))
        return resp
    security.login_user("staff", identity.staff_id, {"m": identity.merchant_id})
    return redirect(security.safe_next(nxt, url_for("checkout.home")))


@bp.post("/logout")
@cashier_required
def logout() -> Any:
    """End the staff session."""
    staff.record_logout(_ctx(), _cashier())
    security.logout_user()
    return redirect(url_for("checkout.login"))


# ---------------------------------------------------------------- the checkout


def _key_slot() -> str:
    user = security.current_user("staff")
    assert user is not None
    return f"page:checkout:{user.sid}"


def _session_ttl() -> int:
    user = security.current_user("staff")
    assert user is not None
    return max(60, user.expires - int(time.time()))


def current_checkout_key(*, fresh: bool = False) -> str:
    """This session's open checkout's Idempotency-Key, made when the checkout is opened."""
    store = _ctx().store
    slot = _key_slot()
    if not fresh:
        existing = store.get(slot)
        if existing:
            return existing.decode()
    key = "chk-" + secrets.token_urlsafe(24)
    store.set(slot, key.encode(), _session_ttl())
    return key


def order_id_for(key: str) -> str:
    """The order id of a checkout: derived from its key, so every retry sends the same body."""
    return "POS-" + key[4:20]


def _channel(merchant_id: str) -> str:
    channels = merchants.get_merchant(_ctx(), merchant_id)["channels"]
    return "offline" if "offline" in channels else "online"


def _receipt_id(answer: StoredResponse | None) -> str | None:
    if answer is None or answer.status != 201:
        return None
    return str(json.loads(answer.body)["redemption_id"])


@bp.get("/")
@cashier_required
def home() -> Any:
    """The checkout page; a checkout already redeemed shows its receipt (a reload never redeems twice)."""
    key = current_checkout_key()
    done = _receipt_id(idempotency.stored_answer(_ctx(), _cashier().merchant_id, key))
    if done:
        return redirect(url_for("checkout.receipt", redemption_id=done))
    return render_template("checkout/home.html", key=key, error=None, basket_json="")


@bp.post("/new")
@cashier_required
def new_checkout() -> Any:
    """Start the next customer's checkout (a new Idempotency-Key)."""
    current_checkout_key(fresh=True)
    return redirect(url_for("checkout.home"))


@bp.post("/basket")
@cashier_required
def basket() -> Any:
    """The basket as the server reads it, and the preview when there is a voucher (an HTML fragment)."""
    raw = request.get_json(silent=True)
    typed = parse_typed_basket(raw)
    preview, code, lines = None, None, None
    if typed.token and typed.valid:
        req, _body = redemption_body(
            typed, order_id_for(current_checkout_key()), _channel(_cashier().merchant_id)
        )
        try:
            preview = redemption.preview_redemption(_ctx(), _cashier().merchant_id, req)
            lines = preview["lines"]
        except VoucherServiceError as exc:
            code = exc.code
            lines = exc.extra.get("lines")
    names = registry_queries.product_names(_ctx(), [line.gtin for line in typed.lines if line.gtin])
    html = render_template(
        "checkout/_basket.html",
        basket=typed,
        preview=preview,
        code=code,
        names=names,
        verdicts={v["index"]: v for v in lines or []},
        error_text=checkout_error,
    )
    return Response(
        json.dumps({"html": html, "redeemable": preview is not None}), mimetype="application/json"
    )


def _redeem_once(key: str, typed: TypedBasket) -> StoredResponse:
    cashier = _cashier()
    req, body = redemption_body(typed, order_id_for(key), _channel(cashier.merchant_id))
    ctx = _ctx()
    deadline = time.monotonic() + WAIT_FOR_FIRST_S
    while True:
        try:
            keyed = KeyedRequest(cashier.merchant_id, key, REDEEM_ROUTE, body, problem_bytes)
            return redemption.redeem_once(ctx, cashier.merchant_id, req, keyed)
        except IdempotencyInProgress:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the first click is still redeeming: its answer is the one to show


@bp.post("/redeem")
@cashier_required
def redeem() -> Any:
    """Redeem the checkout's voucher once under its key; answer with the receipt (303) or the refusal."""
    key = request.form.get("key", "")
    basket_json = request.form.get("basket", "")[:200_000]
    if not KEY_RE.fullmatch(key) or not key.startswith("chk-"):
        abort(400)
    typed = basket_from_json(basket_json)
    if not typed.token or not typed.valid:
        code = "no_voucher" if not typed.token else "empty_basket" if not typed.lines else "bad_lines"
        return _refused(code, key, basket_json, 400)
    answer = _redeem_once(key, typed)
    done = _receipt_id(answer)
    if done:
        return redirect(url_for("checkout.receipt", redemption_id=done), code=303)
    refusal = json.loads(answer.body)
    # A definite refusal is stored under this key; the corrected basket needs a new one.
    fresh = current_checkout_key(fresh=True) if key == current_checkout_key() else current_checkout_key()
    return _refused(str(refusal.get("code")), fresh, basket_json, answer.status)


def _refused(code: str, key: str, basket_json: str, status: int) -> Response:
    html = render_template("checkout/home.html", key=key, error=checkout_error(code), basket_json=basket_json)
    return Response(html, status=status)


# ---------------------------------------------------------------- receipts, today, returns


def _own_redemption(redemption_id: str) -> dict[str, Any]:
    if not REDEMPTION_ID_RE.fullmatch(redemption_id):
        abort(404)
    return redemption_records.get_redemption(_ctx(), _cashier().merchant_id, redemption_id)


@bp.get("/receipts/<redemption_id>")
@cashier_required
def receipt(redemption_id: str) -> Any:
    """A redemption of this merchant: discount, amount to pay, VR1 receipt, and the returns form."""
    r = _own_redemption(redemption_id)
    msg = request.args.get("msg", "")
    notice = checkout_error(msg) if re.fullmatch(r"[a-z_]{1,40}", msg) else None
    names = registry_queries.product_names(_ctx(), [line["gtin"] for line in r["lines"] if line["gtin"]])
    return render_template(
        "checkout/receipt.html",
        r=r,
        notice=notice,
        notice_ok=msg == "returned",
        names=names,
        return_key="rev-" + secrets.token_urlsafe(24),
    )


@bp.get("/receipts/<redemption_id>/receipt.svg")
@cashier_required
def receipt_qr(redemption_id: str) -> Any:
    """The VR1 receipt as a QR code."""
    r = _own_redemption(redemption_id)
    return Response(qr.render(r["receipt"], "svg"), mimetype="image/svg+xml")


@bp.post("/receipts/<redemption_id>/returns")
@cashier_required
def take_return(redemption_id: str) -> Any:
    """Record returned units (or everything) through the reversal service, once per form."""
    r = _own_redemption(redemption_id)
    key = request.form.get("key", "")
    if not KEY_RE.fullmatch(key) or not key.startswith("rev-"):
        abort(400)
    returned: list[ReturnedLine] | None = None
    if request.form.get("action") != "all":
        returned = []
        for line in r["lines"]:
            text = request.form.get(f"qty-{line['index']}", "0").strip() or "0"
            if not (text.isascii() and text.isdigit()) or int(text) > line["quantity"]:
                return redirect(
                    url_for("checkout.receipt", redemption_id=redemption_id, msg="validation_error")
                )
            if int(text):
                returned.append(ReturnedLine(line["index"], int(text)))
        if not returned:
            return redirect(url_for("checkout.receipt", redemption_id=redemption_id, msg="nothing_returned"))
    payload = (
        {} if returned is None else {"lines": [{"index": x.index, "quantity": x.quantity} for x in returned]}
    )
    ctx, merchant_id = _ctx(), _cashier().merchant_id
    raw = json.dumps(payload, separators=(",", ":")).encode()
    keyed = KeyedRequest(merchant_id, key, f"POST /checkout/receipts/{redemption_id}/returns", raw, problem_bytes)
    answer = reversals.reverse_once(ctx, merchant_id, redemption_id, returned, keyed)
    msg = "returned" if answer.status == 201 else str(json.loads(answer.body).get("code"))
    return redirect(url_for("checkout.receipt", redemption_id=redemption_id, msg=msg), code=303)


@bp.get("/today")
@cashier_required
def today() -> Any:
    """This merchant's redemptions of today (China time), newest first."""
    ctx = _ctx()
    start, end = day_bounds(local_date(ctx.now()))
    page = redemption_records.list_redemptions(ctx, _cashier().merchant_id, start=start, end=end, limit=100)
    return render_template("checkout/today.html", redemptions=page["redemptions"], more=page["next_cursor"])


# The reconciliation tab's views live in their own module, on this blueprint.
from voucher_service.web import checkout_reconciliations as _reconciliations  # noqa: E402, F401
