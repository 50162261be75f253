"""/console/disputes: merchants' disputes of reconciliation discrepancies, to accept or reject with a
note. Through services.disputes (`list_disputes`, `decide_dispute`), the functions `voucher-admin
disputes` calls; the audit log names the administrator (`console:<name>`). An accepted dispute is paid
by the next settlement of its programme and merchant (the run page's "Settle"), once.
Registered on the console blueprint (imported at the end of web/console.py).
"""

from __future__ import annotations

import re
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from voucher_service.domain.errors import VoucherServiceError
from voucher_service.services import console, disputes, programs
from voucher_service.web.console import _actor, _ctx, _message, admin_required, bp
from voucher_service.web.i18n import money

DISPUTE_ID_RE = re.compile(r"[0-9a-f-]{36}", re.ASCII)
FILTERS = ("open", "accepted", "rejected", "all")
PAGE = 200


def dispute_status_label(status: str) -> str:
    """A dispute's status in words."""
    return {"open": _("Open"), "accepted": _("Accepted"), "rejected": _("Rejected"), "all": _("All")}.get(
        status, status
    )


@bp.app_template_global("console_dispute_status")
def _status_global(status: str) -> str:
    return dispute_status_label(status)


@bp.get("/disputes")
@admin_required
def disputes_page() -> Any:
    """The disputes of one status (open by default), oldest first: the queue to decide."""
    status = request.args.get("status", "open")
    if status not in FILTERS:
        abort(404)
    rows = disputes.list_disputes(_ctx(), status=None if status == "all" else status, limit=PAGE)
    return render_template(
        "console/disputes.html",
        disputes=rows,
        status=status,
        filters=FILTERS,
        full=len(rows) >= PAGE,
        merchant_names={m["id"]: m["name"] for m in console.list_merchants(_ctx())},
        console_runs={r for r in {d["run_id"] for d in rows} if console.has_run_files(_ctx(), r)},
        program_names={p["id"]: p["name"] for p in programs.list_programs(_ctx())},
    )


@bp.post("/disputes/<dispute_id>")
@admin_required
def decide(dispute_id: str) -> Any:
    """Accept or reject an open dispute with a note (a rejection needs one)."""
    if not DISPUTE_ID_RE.fullmatch(dispute_id):
        abort(404)
    decision = request.form.get("decision")
    if decision not in ("accept", "reject"):
        abort(400)
    back = request.form.get("status", "open")
    back = back if back in FILTERS else "open"
    try:
        out = disputes.decide_dispute(
            _ctx(),
            dispute_id,
            accept=decision == "accept",
            actor=_actor(),
            note=request.form.get("note", "")[: disputes.MAX_NOTE * 4],
        )
    except VoucherServiceError as exc:
        if exc.code == "not_found":
            raise
        flash(_decision_error(exc), "error")
        return redirect(url_for("console.disputes_page", status=back) + f"#x-{dispute_id}", code=303)
    if out["status"] == "accepted":
        flash(
            _(
                "Dispute accepted: %(amount)s is paid in the next settlement of this programme and merchant.",
                amount=money(out["amount_fen"]),
            ),
            "ok",
        )
    else:
        flash(_("Dispute rejected; the merchant sees your note."), "ok")
    return redirect(url_for("console.disputes_page", status=back), code=303)


def _decision_error(exc: VoucherServiceError) -> str:
    if exc.code == "validation_error" and any(
        e.get("message") == "required" for e in exc.extra.get("errors") or []
    ):
        return _("A rejection needs a note for the merchant.")
    if exc.code == "invalid_state":
        return _("This dispute cannot be decided now: %(why)s", why=exc.detail)
    return _message(exc)
