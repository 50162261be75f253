"""/checkout/reconciliations: the shop's own reconciliation results and settlements, and disputes.

Any enabled staff account of the merchant may see them and contest a discrepancy (staff accounts have
no roles: every account of a merchant acts for that merchant, as its API key does). Everything goes
through services.disputes, the functions of `GET /api/v1/merchant/reconciliations` and
`POST .../disputes`; the audit log names the staff member (`staff:<id>`) who opened a dispute.
Registered on the checkout blueprint (imported at the end of web/checkout.py).
"""

from __future__ import annotations

import re
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from voucher_service.domain.errors import NotFound, VoucherServiceError
from voucher_service.services import disputes, programs
from voucher_service.web.checkout import _cashier, _ctx, bp, cashier_required
from voucher_service.web.errors import error_text

RUN_ID_RE = re.compile(r"[0-9a-f-]{36}", re.ASCII)
CURSOR_RE = re.compile(r"[A-Za-z0-9_-]{1,200}", re.ASCII)
RUNS_PER_PAGE = 20
DISCREPANCIES_PER_PAGE = 50


def category_text(category: str) -> str:
    """A reconciliation category in words (the shop's view)."""
    return {
        "amount_mismatch": _("Amount mismatch"),
        "missing_in_ledger": _("Not recorded by this service"),
        "missing_in_statement": _("Missing from your bill"),
        "duplicate_in_statement": _("Twice in your bill"),
        "reversed_in_ledger": _("Reversed here, redeemed in your bill"),
        "double_spend": _("Voucher used twice (offline)"),
        "refunded_in_statement": _("Refunded in your bill, still redeemed here"),
    }.get(category, category)


def dispute_status_text(status: str, paid: bool = False) -> str:
    """A dispute's state in words."""
    if status == "accepted":
        return _("Accepted, paid") if paid else _("Accepted, to be paid in the next settlement")
    return {"open": _("Open: waiting for the administrator"), "rejected": _("Rejected")}.get(status, status)


@bp.app_template_global("checkout_category")
def _category_global(category: str) -> str:
    return category_text(category)


@bp.app_template_global("checkout_dispute_status")
def _dispute_status_global(status: str, paid: bool = False) -> str:
    return dispute_status_text(status, paid)


def _program_names(program_ids: set[str]) -> dict[str, str]:
    names = {}
    for pid in sorted(program_ids):
        try:
            names[pid] = programs.get_program(_ctx(), pid, with_stats=False)["name"]
        except NotFound:
            names[pid] = pid
    return names


def _int_arg(name: str) -> int:
    text = request.args.get(name, "0")
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        abort(400)
    return int(text)


@bp.get("/reconciliations")
@cashier_required
def reconciliations() -> Any:
    """The shop's reconciliation runs, newest first, with their settlements and disputes."""
    cursor = request.args.get("cursor") or None
    if cursor is not None and not CURSOR_RE.fullmatch(cursor):
        abort(400)
    page = disputes.merchant_runs(_ctx(), _cashier().merchant_id, cursor=cursor, limit=RUNS_PER_PAGE)
    runs = page["reconciliations"]
    return render_template(
        "checkout/reconciliations.html",
        runs=runs,
        next_cursor=page["next_cursor"],
        first_page=cursor is None,
        program_names=_program_names({r["program_id"] for r in runs}),
    )


@bp.get("/reconciliations/<run_id>")
@cashier_required
def reconciliation(run_id: str) -> Any:
    """One run: its figures, settlements, and discrepancies, each disputable one with a form."""
    if not RUN_ID_RE.fullmatch(run_id):
        abort(404)
    after = _int_arg("after")
    run = disputes.merchant_run(
        _ctx(), _cashier().merchant_id, run_id, after=after, limit=DISCREPANCIES_PER_PAGE
    )
    return render_template(
        "checkout/reconciliation.html",
        run=run,
        after=after,
        program_name=_program_names({run["program_id"]})[run["program_id"]],
    )


@bp.post("/reconciliations/<run_id>/disputes")
@cashier_required
def contest(run_id: str) -> Any:
    """Contest one discrepancy with a note (services.disputes.open_dispute, as the API does)."""
    if not RUN_ID_RE.fullmatch(run_id):
        abort(404)
    text = request.form.get("discrepancy_id", "")
    if not (text.isascii() and text.isdigit() and 0 < len(text) <= 18):
        abort(400)
    discrepancy_id = int(text)
    cashier = _cashier()
    after = request.form.get("after", "")
    back = url_for("checkout.reconciliation", run_id=run_id, after=after if after.isdigit() else None)
    try:
        disputes.open_dispute(
            _ctx(),
            cashier.merchant_id,
            run_id,
            discrepancy_id,
            request.form.get("note", "")[: disputes.MAX_NOTE * 4],
            actor=cashier.actor,
        )
    except VoucherServiceError as exc:
        if exc.code in ("not_found", "forbidden"):
            raise
        flash(contest_error(exc.code), "error")
        return redirect(f"{back}#d-{discrepancy_id}", code=303)
    flash(_("Your dispute was sent. An administrator will accept or reject it."), "ok")
    return redirect(f"{back}#d-{discrepancy_id}", code=303)


def contest_error(code: str) -> str:
    """Why a dispute was not opened, in words."""
    texts = {
        "validation_error": _("Write a note of 1 to 1,000 characters (no control characters)."),
        "invalid_state": _("This discrepancy cannot be disputed, or it is already disputed."),
    }
    return texts.get(code) or error_text(code)
