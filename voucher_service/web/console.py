"""/console: the administrators' pages. Log in with an admin token (exchanged for a cookie session);
programmes (create with tiers, activate, suspend) and their dashboards; merchants, enrolment and staff
accounts; registry import; reconciliation of an uploaded statement with its four files; settlement;
audit status.

Every action calls the service the API and the CLI call (programs, merchants, staff, registry,
reconciliation, settlement, audit) and the console's read models in services.console.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any, cast

from flask import (
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import gettext as _
from pydantic import ValidationError

from voucher_service.api.admin_schemas import ProgramIn
from voucher_service.api.routing import pydantic_errors
from voucher_service.domain.clock import day_bounds
from voucher_service.domain.errors import ValidationFailed, VoucherServiceError
from voucher_service.domain.money import parse_yuan
from voucher_service.domain.statements import FORMATS
from voucher_service.services import audit, console, merchants, programs, settlement, staff
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import admin_name_for
from voucher_service.services.ledger import BUCKETS
from voucher_service.web import page_blueprint, security
from voucher_service.web.errors import error_text

bp = page_blueprint("console", __name__, url_prefix="/console")
TIER_ROWS = 4
UPLOAD_MAX_BYTES = console.STATEMENT_MAX_BYTES


def _ctx() -> ServiceContext:
    return cast(ServiceContext, current_app.extensions["voucher"])


def admin_required(view: Any) -> Any:
    """A console view for a logged-in administrator (g.admin_name); others go to the login page."""

    @functools.wraps(view)
    def inner(*args: Any, **kwargs: Any) -> Any:
        user = security.current_user("admin")
        assert user is not None
        g.admin_name = user.subject
        return view(*args, **kwargs)

    return security.require_login("admin", "console.login")(inner)


def _actor() -> str:
    return f"console:{g.admin_name}"


def bucket_label(bucket: str) -> str:
    """A budget-identity bucket in words."""
    return {
        "unallocated": _("Unallocated"),
        "unclaimed": _("Unclaimed"),
        "outstanding": _("Outstanding"),
        "redeemed": _("Redeemed"),
        "expired": _("Expired"),
        "void": _("Void"),
    }[bucket]


def status_label(status: str) -> str:
    """A programme's status in words."""
    return {"draft": _("Draft"), "active": _("Active"), "suspended": _("Suspended")}.get(status, status)


def category_label(category: str) -> str:
    """A reconciliation category in words."""
    return {
        "amount_mismatch": _("Amount mismatch"),
        "missing_in_ledger": _("Missing in the ledger"),
        "missing_in_statement": _("Missing in the statement"),
        "duplicate_in_statement": _("Duplicate in the statement"),
        "reversed_in_ledger": _("Reversed in the ledger"),
        "double_spend": _("Double spend"),
        "refunded_in_statement": _("Refunded in the statement"),
    }.get(category, category)


@bp.app_template_global("console_label")
def console_label(kind: str, value: str) -> str:
    """Labels for templates: console_label('bucket'|'status'|'category', value)."""
    return {"bucket": bucket_label, "status": status_label, "category": category_label}[kind](value)


def _message(exc: VoucherServiceError) -> str:
    details = "; ".join(
        f"{e.get('line') and _('line') + ' ' + str(e['line']) + ': ' or ''}{e.get('field', '')}: "
        f"{e.get('message', '')}"
        for e in (exc.extra.get("errors") or [])[:10]
    )
    base = error_text(exc.code) if exc.code in ("validation_error", "not_found", "forbidden") else exc.detail
    return f"{base} {details}".strip()


# ---------------------------------------------------------------- login


@bp.get("/login")
def login() -> Any:
    """The admin-token login form."""
    if security.current_user("admin"):
        return redirect(url_for("console.home"))
    return render_template("console/login.html", error=None, next=request.args.get("next", ""))


@bp.post("/login")
def login_post() -> Any:
    """Exchange an admin token for a console session (rate limited per client)."""
    security.login_rate_limit("admin", per_ip=10, window_s=300)
    token = (request.form.get("token") or "").strip()
    nxt = request.form.get("next", "")
    name = admin_name_for(_ctx(), token) if 0 < len(token) <= 200 and token.isascii() else None
    if name is None:
        resp = Response(
            render_template("console/login.html", error=_("That admin token is not valid."), next=nxt)
        )
        resp.status_code = 401
        return resp
    security.login_user("admin", name)
    return redirect(security.safe_next(nxt, url_for("console.home")))


@bp.post("/logout")
@admin_required
def logout() -> Any:
    """End the console session."""
    security.logout_user()
    return redirect(url_for("console.login"))


# ---------------------------------------------------------------- programmes


@bp.get("/")
@admin_required
def home() -> Any:
    """Every programme with its status and actions, and the form to create one."""
    return render_template(
        "console/home.html", programs=programs.list_programs(_ctx()), form={}, errors=[], tier_rows=TIER_ROWS
    )


def _program_body(form: Any) -> dict[str, Any]:
    """The API's programme body from the console's form (yuan typed, fen sent); ValueError names the field."""

    def yuan(field: str) -> int:
        try:
            return parse_yuan(form.get(field, ""))
        except ValueError:
            raise ValueError(field) from None

    def whole(field: str) -> int:
        text = (form.get(field) or "").strip()
        if not (text.isascii() and text.isdigit()):
            raise ValueError(field)
        return int(text)

    def day(field: str) -> dt.date:
        try:
            return dt.date.fromisoformat(form.get(field, ""))
        except ValueError:
            raise ValueError(field) from None

    tiers = []
    for i in range(TIER_ROWS):
        code = (form.get(f"tier_code_{i}") or "").strip()
        if not code:
            continue
        tiers.append(
            {
                "code": code,
                "face_value_fen": yuan(f"tier_face_{i}"),
                "min_spend_fen": yuan(f"tier_min_{i}"),
                "quantity": whole(f"tier_quantity_{i}"),
            }
        )
    targets = []
    for n, line in enumerate((form.get("targets") or "").splitlines(), 1):
        if not line.strip():
            continue
        code, _sep, amount = line.partition(",")
        try:
            targets.append({"county_code": code.strip(), "target_fen": parse_yuan(amount)})
        except ValueError:
            raise ValueError(f"targets ({n})") from None
    tz = "Asia/Shanghai"
    starts = day_bounds(day("starts_on"), tz)[0]
    ends = day_bounds(day("ends_on"), tz)[1] - dt.timedelta(seconds=1)
    return {
        "name": (form.get("name") or "").strip(),
        "budget_fen": yuan("budget"),
        "starts_at": starts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ends_at": ends.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "voucher_validity_days": whole("voucher_validity_days"),
        "per_person_limit": whole("per_person_limit"),
        "channels": form.getlist("channels"),
        "tiers": tiers,
        "eligibility": {"certification_types": form.getlist("certification_types"), "county_codes": None},
        "targets": targets,
    }


@bp.post("/programs")
@admin_required
def create_program() -> Any:
    """Create a draft programme through the API's schema and the programmes service."""
    errors: list[dict[str, str]] = []
    try:
        body = _program_body(request.form)
        spec = ProgramIn.model_validate_json(json.dumps(body)).to_spec()
        created = programs.create_program(_ctx(), spec, _actor())
    except ValueError as exc:
        errors = [
            {"field": str(exc) if not isinstance(exc, ValidationError) else "", "message": _("not valid")}
        ]
        if isinstance(exc, ValidationError):
            errors = pydantic_errors(exc)
    except VoucherServiceError as exc:
        errors = list(exc.extra.get("errors") or []) or [{"field": "", "message": _message(exc)}]
    if errors:
        resp = Response(
            render_template(
                "console/home.html",
                programs=programs.list_programs(_ctx()),
                form=request.form,
                errors=errors,
                tier_rows=TIER_ROWS,
            )
        )
        resp.status_code = 400
        return resp
    flash(_("Programme created as a draft."), "ok")
    return redirect(url_for("console.program", program_id=created["id"]))


@bp.post("/programs/<program_id>/<action>")
@admin_required
def program_action(program_id: str, action: str) -> Any:
    """Activate or suspend a programme."""
    run = {"activate": programs.activate_program, "suspend": programs.suspend_program}.get(action)
    if run is None:
        return Response(
            render_template("error.html", status=404, code="not_found", message=error_text("not_found")), 404
        )
    try:
        run(_ctx(), program_id, _actor())
        flash(_("Programme activated.") if action == "activate" else _("Programme suspended."), "ok")
    except VoucherServiceError as exc:
        if exc.code == "not_found":
            raise
        flash(_message(exc), "error")
    return redirect(url_for("console.program", program_id=program_id))


@bp.get("/programs/<program_id>")
@admin_required
def program(program_id: str) -> Any:
    """A programme's dashboard."""
    board = console.dashboard(_ctx(), program_id)
    return render_template(
        "console/program.html",
        board=board,
        p=board["program"],
        buckets=BUCKETS,
        enrolments=console.list_enrolments(_ctx(), program_id),
        merchants=console.list_merchants(_ctx()),
    )


@bp.get("/programs/<program_id>/dashboard.json")
@admin_required
def dashboard_json(program_id: str) -> Any:
    """The dashboard's chart data; money as integer fen in strings, so no script does float arithmetic."""
    board = console.dashboard(_ctx(), program_id)
    return jsonify(
        {
            "labels": {
                "claimed": _("Claimed"),
                "redeemed": _("Redeemed"),
                "claims": _("Claims"),
                "redemptions": _("Redemptions"),
                "sales": _("Eligible sales"),
                "target": _("Target"),
            },
            "buckets": [
                {"label": bucket_label(b), "fen": str(board["budget"]["buckets"][b])} for b in BUCKETS
            ],
            "tiers": [
                {"code": t["code"], "claimed": t["claimed"], "redeemed": t["redeemed"]}
                for t in board["tiers"]
            ],
            "daily": board["daily"],
            "counties": [
                {
                    "label": f"{c['county_name']} {c['county_code']}".strip(),
                    "sales_fen": str(c["eligible_sales_fen"]),
                    "target_fen": str(c["target_fen"]),
                }
                for c in board["counties"]
            ],
        }
    )


# ---------------------------------------------------------------- merchants, enrolment, staff


@bp.get("/merchants")
@admin_required
def merchants_page() -> Any:
    """Merchants, with forms to create one, enrol it, and give it staff accounts."""
    staff_of = {m["id"]: staff.list_staff(_ctx(), m["id"]) for m in console.list_merchants(_ctx())}
    return render_template(
        "console/merchants.html",
        merchants=console.list_merchants(_ctx()),
        staff_of=staff_of,
        programs=programs.list_programs(_ctx()),
    )


@bp.post("/merchants")
@admin_required
def create_merchant() -> Any:
    """Create a merchant; its API secret is shown once, on the next page only."""
    try:
        out = merchants.create_merchant(
            _ctx(),
            (request.form.get("name") or "")[:200],
            request.form.getlist("channels"),
            request.form.get("platform") == "1",
            _actor(),
        )
    except VoucherServiceError as exc:
        flash(_message(exc), "error")
        return redirect(url_for("console.merchants_page"))
    return render_template("console/merchant_created.html", m=out)


@bp.post("/enrolments")
@admin_required
def enrol() -> Any:
    """Enrol a merchant in a programme."""
    program_id = request.form.get("program_id") or ""
    try:
        _out, created = merchants.enrol_merchant(
            _ctx(), program_id, request.form.get("merchant_id") or "", _actor()
        )
        flash(_("Merchant enrolled.") if created else _("The merchant was already enrolled."), "ok")
    except VoucherServiceError as exc:
        flash(_message(exc), "error")
    back = request.form.get("back")
    return redirect(security.safe_next(back, url_for("console.merchants_page")))


@bp.post("/merchants/<merchant_id>/staff")
@admin_required
def create_staff(merchant_id: str) -> Any:
    """Create a staff account (cashier) of a merchant."""
    try:
        row = staff.create_staff(
            _ctx(),
            merchant_id,
            request.form.get("username") or "",
            request.form.get("password") or "",
            _actor(),
        )
        flash(_("Staff account %(user)s created.", user=row["username"]), "ok")
    except VoucherServiceError as exc:
        flash(_message(exc), "error")
    return redirect(url_for("console.merchants_page"))


# ---------------------------------------------------------------- registry


@bp.route("/registry", methods=["GET", "POST"])
@admin_required
def registry_page() -> Any:
    """Upload a registry file: the import's counts, or its errors by line (nothing committed)."""
    outcome = None
    if request.method == "POST":
        upload = request.files.get("file")
        data = upload.read(UPLOAD_MAX_BYTES + 1) if upload else b""
        if not data:
            flash(_("Choose a registry file (CSV) first."), "error")
        elif len(data) > UPLOAD_MAX_BYTES:
            flash(error_text("payload_too_large"), "error")
        else:
            outcome = console.import_registry_upload(_ctx(), data, _actor())
    resp = Response(render_template("console/registry.html", outcome=outcome))
    if outcome is not None and outcome.errors:
        resp.status_code = 422
    return resp


# ---------------------------------------------------------------- reconciliation, settlement, audit


@bp.route("/reconcile", methods=["GET", "POST"])
@admin_required
def reconcile_page() -> Any:
    """Upload a merchant's statement and reconcile it."""
    error = None
    if request.method == "POST":
        upload = request.files.get("statement")
        data = upload.read(UPLOAD_MAX_BYTES + 1) if upload else b""
        try:
            result = console.reconcile_upload(
                _ctx(),
                request.form.get("program_id") or "",
                request.form.get("merchant_id") or "",
                request.form.get("format") or "native",
                data,
                upload.filename or "" if upload else "",
                _actor(),
            )
        except ValidationFailed as exc:
            error = _message(exc)
        else:
            if result.error is None:
                return redirect(url_for("console.run_page", run_id=result.run_id))
            error = _("The statement could not be used: %(why)s", why=result.error.split("statement:", 1)[-1])
    resp = Response(
        render_template(
            "console/reconcile.html",
            programs=programs.list_programs(_ctx()),
            merchants=console.list_merchants(_ctx()),
            formats=FORMATS,
            error=error,
            runs=console.list_console_runs(_ctx()),
        )
    )
    if error:
        resp.status_code = 422
    return resp


@bp.get("/runs/<run_id>")
@admin_required
def run_page(run_id: str) -> Any:
    """A run's categories, discrepancies, files and settlement."""
    summary = console.run_summary(_ctx(), run_id)
    return render_template(
        "console/run.html",
        run_id=run_id,
        s=summary,
        files=console.RUN_FILES,
        discrepancies=console.run_discrepancies(_ctx(), run_id),
        settled=console.run_settlements(_ctx(), run_id),
    )


@bp.get("/runs/<run_id>/<name>")
@admin_required
def run_download(run_id: str, name: str) -> Any:
    """Download one of a run's four files."""
    path = console.run_file(_ctx(), run_id, name)
    resp = send_file(path, as_attachment=True, download_name=name, max_age=0)
    if name == "report.html":
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; sandbox allow-scripts"
        )
    return resp


@bp.post("/runs/<run_id>/settle")
@admin_required
def settle(run_id: str) -> Any:
    """Record a settlement batch of the run's payable matches (never pays a redemption twice)."""
    try:
        out = settlement.settle_run(_ctx(), run_id, _actor())
    except VoucherServiceError as exc:
        if exc.code == "not_found":
            raise
        flash(_message(exc), "error")
        return redirect(url_for("console.run_page", run_id=run_id))
    if out["settlement_id"]:
        flash(_("Settled %(n)d redemptions.", n=out["redemptions"]), "ok")
    else:
        flash(_("Nothing new to pay in this run."), "ok")
    return redirect(url_for("console.run_page", run_id=run_id))


@bp.get("/audit")
@admin_required
def audit_page() -> Any:
    """Audit status: every programme's budget identity and the audit chain (sealing what is pending)."""
    return render_template("console/audit.html", report=audit.run_audit(_ctx()), buckets=BUCKETS)


# The disputes screens live in their own module, on this blueprint.
from voucher_service.web import console_disputes as _disputes  # noqa: E402, F401
