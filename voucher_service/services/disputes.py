"""A merchant's view of its reconciliations, and disputes of their discrepancies.

The merchant (API) lists its own usable runs with their settlements, reads a run's discrepancies, and
contests one with a note. An administrator (CLI, console) lists disputes and accepts or rejects them.
An accepted dispute's redemption is paid by the next settlement of that programme and merchant
(services.settlement), once: settled_redemptions' primary key is the redemption. Every step is in the
audit log.
"""

from __future__ import annotations

import base64
import datetime as dt
import unicodedata
import uuid
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import (
    Dispute,
    ReconciliationItem,
    ReconciliationRun,
    Redemption,
    Settlement,
)
from voucher_service.domain.clock import parse_rfc3339, rfc3339
from voucher_service.domain.errors import Forbidden, InvalidState, NotFound, ValidationFailed
from voucher_service.domain.states import DisputeStatus, RedemptionStatus, check_transition
from voucher_service.services import audit_log
from voucher_service.services import reconciliation_sql as q
from voucher_service.services.context import ServiceContext
from voucher_service.services.reconciliation_files import Locator

# Each names an active redemption of the ledger, whose discount the run held or left unpaid: accepting
# the dispute pays it. The others (missing_in_ledger, duplicate_in_statement, reversed_in_ledger,
# double_spend) have no active redemption to pay; correcting them is a ledger matter.
DISPUTABLE = ("amount_mismatch", "missing_in_statement", "refunded_in_statement")
STATUSES = tuple(DisputeStatus)
MAX_NOTE = 1000
MAX_PAGE = 200


def _note(text: str, field: str) -> str:
    note = unicodedata.normalize("NFC", text).strip()
    if not note or len(note) > MAX_NOTE:
        raise ValidationFailed(
            f"The {field} must be 1-{MAX_NOTE} characters.",
            [{"field": field, "message": f"1-{MAX_NOTE} characters"}],
        )
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in note):
        raise ValidationFailed(
            f"The {field} contains control characters.", [{"field": field, "message": "control characters"}]
        )
    return note


def _cursor(at: dt.datetime, key: str) -> str:
    return base64.urlsafe_b64encode(f"{rfc3339(at)}|{key}".encode()).decode().rstrip("=")


def _uncursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, key = raw.split("|", 1)
        return parse_rfc3339(at), key
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed(
            "The cursor is not one this service gave out.", [{"field": "cursor", "message": "invalid cursor"}]
        ) from None


def dispute_json(d: Dispute) -> dict[str, Any]:
    """A dispute as the API, the CLI and the console show it."""
    return {
        "dispute_id": d.id,
        "run_id": d.run_id,
        "discrepancy_id": d.item_id,
        "program_id": d.program_id,
        "merchant_id": d.merchant_id,
        "category": d.category,
        "redemption_id": d.redemption_id,
        "voucher_id": d.voucher_id,
        "order_id": d.order_id,
        "amount_fen": d.amount_fen,
        "note": d.note,
        "status": d.status,
        "created_at": rfc3339(d.created_at),
        "decided_at": rfc3339(d.decided_at) if d.decided_at else None,
        "decided_by": d.decided_by,
        "decision_note": d.decision_note,
        "settlement_id": d.settlement_id,
        "paid": d.settlement_id is not None,
    }


def _run_json(r: ReconciliationRun, settlements: list[Settlement], disputes: list[Dispute]) -> dict[str, Any]:
    summary = r.summary or {}
    return {
        "run_id": r.id,
        "created_at": rfc3339(r.created_at),
        "program_id": r.program_id,
        "format": r.statement_format,
        "from": r.period_from.isoformat() if r.period_from else None,
        "to": r.period_to.isoformat() if r.period_to else None,
        "exit_code": r.exit_code,
        "statement_rows": summary.get("statement_rows"),
        "matched": summary.get("matched"),
        "matched_fen": summary.get("matched_fen"),
        "payable_fen": summary.get("payable_fen"),
        "held_fen": summary.get("held_fen"),
        "unclaimed_fen": summary.get("unclaimed_fen"),
        "categories": summary.get("categories", {}),
        "discrepancies": summary.get("discrepancies"),
        "settlements": [
            {
                "settlement_id": x.id,
                "created_at": rfc3339(x.created_at),
                "redemptions": x.redemptions,
                "payable_fen": x.payable_fen,
            }
            for x in sorted(settlements, key=lambda x: (x.created_at, x.id))
        ],
        "disputes": [dispute_json(d) for d in sorted(disputes, key=lambda d: (d.created_at, d.id))],
    }


def merchant_runs(
    ctx: ServiceContext, merchant_id: str, *, cursor: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """The merchant's own usable reconciliation runs, newest first, with settlements and disputes."""
    limit = max(1, min(limit, MAX_PAGE))
    query = (
        select(ReconciliationRun)
        .where(ReconciliationRun.merchant_id == merchant_id, ReconciliationRun.exit_code.in_((0, 1)))
        .order_by(ReconciliationRun.created_at.desc(), ReconciliationRun.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        at, rid = _uncursor(cursor)
        query = query.where(
            or_(
                ReconciliationRun.created_at < at,
                and_(ReconciliationRun.created_at == at, ReconciliationRun.id < rid),
            )
        )
    with ctx.sessions() as s:
        runs = list(s.scalars(query))
        page = runs[:limit]
        ids = [r.id for r in page]
        settlements: dict[str, list[Settlement]] = {i: [] for i in ids}
        disputes: dict[str, list[Dispute]] = {i: [] for i in ids}
        if ids:
            for x in s.scalars(select(Settlement).where(Settlement.run_id.in_(ids))):
                settlements[x.run_id].append(x)
            for d in s.scalars(select(Dispute).where(Dispute.run_id.in_(ids))):
                disputes[d.run_id].append(d)
        items = [_run_json(r, settlements[r.id], disputes[r.id]) for r in page]
    next_cursor = _cursor(page[-1].created_at, page[-1].id) if len(runs) > limit else None
    return {"reconciliations": items, "next_cursor": next_cursor}


def _own_run(s: Session, merchant_id: str, run_id: str) -> ReconciliationRun:
    run = s.get(ReconciliationRun, run_id) if len(run_id) <= 36 else None
    if run is None or run.exit_code not in (0, 1):
        raise NotFound(f"No reconciliation run {run_id}.")
    if run.merchant_id != merchant_id:
        raise Forbidden("This reconciliation run belongs to another merchant.")
    return run


def merchant_run(
    ctx: ServiceContext, merchant_id: str, run_id: str, *, after: int = 0, limit: int = 100
) -> dict[str, Any]:
    """One of the merchant's runs with its discrepancies (by id, `after` the last one of a page)."""
    limit = max(1, min(limit, MAX_PAGE))
    with ctx.sessions() as s:
        run = _own_run(s, merchant_id, run_id)
        items = list(
            s.scalars(
                select(ReconciliationItem)
                .where(
                    ReconciliationItem.run_id == run_id,
                    ReconciliationItem.category.in_(q.CATEGORIES),
                    ReconciliationItem.id > after,
                )
                .order_by(ReconciliationItem.id)
                .limit(limit + 1)
            )
        )
        page = items[:limit]
        disputed = (
            {
                d.item_id: d
                for d in s.scalars(select(Dispute).where(Dispute.item_id.in_([i.id for i in page])))
            }
            if page
            else {}
        )
        settlements = list(s.scalars(select(Settlement).where(Settlement.run_id == run_id)))
        all_disputes = list(s.scalars(select(Dispute).where(Dispute.run_id == run_id)))
        locator = Locator((run.summary or {}).get("statements", []))
        out = _run_json(run, settlements, all_disputes)
        out["discrepancy_list"] = [_item_json(i, locator, disputed.get(i.id)) for i in page]
        out["next_after"] = page[-1].id if len(items) > limit else None
    return out


def _item_json(i: ReconciliationItem, locator: Locator, dispute: Dispute | None) -> dict[str, Any]:
    name, line = locator.locate(i.line_no)
    return {
        "discrepancy_id": i.id,
        "category": i.category,
        "voucher_id": i.voucher_id,
        "order_id": i.order_id,
        "redemption_id": i.redemption_id,
        "ledger_discount_fen": i.ledger_discount_fen,
        "statement_discount_fen": i.statement_discount_fen,
        "detail": locator.detail(i.detail),
        "statement": name or None,
        "line_no": line,
        "disputable": i.category in DISPUTABLE and i.redemption_id is not None and dispute is None,
        "dispute": dispute_json(dispute) if dispute else None,
    }


def open_dispute(
    ctx: ServiceContext,
    merchant_id: str,
    run_id: str,
    discrepancy_id: int,
    note: str,
    *,
    actor: str | None = None,
) -> dict[str, Any]:
    """Contest one discrepancy of the merchant's own run; one dispute per discrepancy. `actor` names who
    in the audit log (the cashier pages' staff member); by default the merchant itself (its API key)."""
    text = _note(note, "note")
    now = ctx.now()
    with ctx.sessions.begin() as s:
        run = _own_run(s, merchant_id, run_id)
        item = s.get(ReconciliationItem, discrepancy_id)
        if item is None or item.run_id != run.id or item.category not in q.CATEGORIES:
            raise NotFound(f"Run {run_id} has no discrepancy {discrepancy_id}.")
        if item.category not in DISPUTABLE or item.redemption_id is None:
            raise InvalidState(
                f"A {item.category} discrepancy cannot be disputed here: only {', '.join(DISPUTABLE)} name "
                "a redemption this service could pay."
            )
        existing = s.scalars(select(Dispute).where(Dispute.item_id == item.id)).first()
        if existing is not None:
            raise InvalidState(
                f"Discrepancy {discrepancy_id} is already disputed ({existing.id}, {existing.status})."
            )
        dispute = Dispute(
            id=str(uuid.uuid4()),
            run_id=run.id,
            item_id=item.id,
            program_id=run.program_id,
            merchant_id=merchant_id,
            category=item.category,
            redemption_id=item.redemption_id,
            voucher_id=item.voucher_id,
            order_id=item.order_id,
            amount_fen=int(item.ledger_discount_fen or 0),
            note=text,
            status=check_transition(None, DisputeStatus.OPEN),
            created_at=now,
        )
        s.add(dispute)
        s.flush()
        audit_log.record(
            s,
            actor or f"merchant:{merchant_id}",
            "dispute.opened",
            "dispute",
            dispute.id,
            {
                "merchant_id": merchant_id,
                "run_id": run.id,
                "discrepancy_id": item.id,
                "category": item.category,
                "redemption_id": item.redemption_id,
                "amount_fen": dispute.amount_fen,
                "note": text,
            },
            now,
        )
        return dispute_json(dispute)


def list_disputes(
    ctx: ServiceContext,
    *,
    status: str | None = None,
    program_id: str | None = None,
    merchant_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Disputes for administrators, oldest first (the queue to decide)."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed(
            f"Unknown dispute status {status!r}.",
            [{"field": "status", "message": f"one of {', '.join(STATUSES)}"}],
        )
    query = select(Dispute).order_by(Dispute.created_at, Dispute.id).limit(max(1, min(limit, 10_000)))
    if status:
        query = query.where(Dispute.status == status)
    if program_id:
        query = query.where(Dispute.program_id == program_id)
    if merchant_id:
        query = query.where(Dispute.merchant_id == merchant_id)
    with ctx.sessions() as s:
        return [dispute_json(d) for d in s.scalars(query)]


def decide_dispute(
    ctx: ServiceContext, dispute_id: str, *, accept: bool, actor: str, note: str | None = None
) -> dict[str, Any]:
    """Accept (payable in the next settlement) or reject an open dispute; audit-logged."""
    text = _note(note, "note") if note is not None and note.strip() else None
    if not accept and text is None:
        raise ValidationFailed(
            "A rejection needs a note for the merchant.", [{"field": "note", "message": "required"}]
        )
    now = ctx.now()
    with ctx.sessions.begin() as s:
        dispute = s.get(Dispute, dispute_id) if len(dispute_id) <= 36 else None
        if dispute is None:
            raise NotFound(f"No dispute {dispute_id}.")
        if dispute.status != DisputeStatus.OPEN:
            raise InvalidState(f"Dispute {dispute_id} was already {dispute.status}.")
        redemption = s.get(Redemption, dispute.redemption_id)
        if accept and (redemption is None or redemption.status != RedemptionStatus.ACTIVE):
            raise InvalidState(
                f"Redemption {dispute.redemption_id} is no longer active; there is nothing to pay. Reject it."
            )
        dispute.status = check_transition(
            dispute.status, DisputeStatus.ACCEPTED if accept else DisputeStatus.REJECTED
        )
        dispute.decided_at, dispute.decided_by, dispute.decision_note = now, actor[:100], text
        audit_log.record(
            s,
            actor,
            f"dispute.{dispute.status}",
            "dispute",
            dispute.id,
            {
                "run_id": dispute.run_id,
                "discrepancy_id": dispute.item_id,
                "redemption_id": dispute.redemption_id,
                "amount_fen": redemption.discount_fen if redemption is not None else dispute.amount_fen,
                "note": text,
            },
            now,
        )
        return dispute_json(dispute)
