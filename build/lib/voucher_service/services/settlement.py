"""Settlement: pay a reconciliation run's payable matches, never a redemption twice."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import ReconciliationRun, Settlement
from voucher_service.domain.errors import InvalidState, NotFound
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext

SKIPPED_SHOWN = 20

# The primary key of settled_redemptions is the redemption: a redemption already paid in any
# settlement is skipped here, even by two settlements racing on overlapping runs. A match whose
# redemption was reversed (or changed) since the run is not paid either.
PAY = """
INSERT INTO settled_redemptions (redemption_id, settlement_id, discount_fen)
SELECT m.redemption_id, :sid, m.discount_fen
FROM reconciliation_matches m
JOIN redemptions r ON r.id = m.redemption_id
WHERE m.run_id = :run AND r.status = 'active' AND r.discount_fen = m.discount_fen
ON CONFLICT (redemption_id) DO NOTHING
"""
PAID = "SELECT COUNT(*), COALESCE(SUM(discount_fen), 0) FROM settled_redemptions WHERE settlement_id = :sid"
MATCHED = "SELECT COUNT(*), COALESCE(SUM(discount_fen), 0) FROM reconciliation_matches WHERE run_id = :run"
PAID_BEFORE = """
SELECT m.redemption_id FROM reconciliation_matches m
JOIN settled_redemptions x ON x.redemption_id = m.redemption_id
WHERE m.run_id = :run AND x.settlement_id <> :sid
ORDER BY m.redemption_id
"""


def settle_run(ctx: ServiceContext, run_id: str, actor: str) -> dict[str, Any]:
    """Record a settlement batch from a run's payable matches; report what was skipped and why."""
    now = ctx.now()
    settlement_id = str(uuid.uuid4())
    with ctx.sessions.begin() as s:
        run = s.get(ReconciliationRun, run_id)
        if run is None:
            raise NotFound(f"No reconciliation run {run_id}.")
        if run.exit_code not in (0, 1):
            raise InvalidState(f"Run {run_id} could not use its statement; there is nothing to settle.")
        batch = Settlement(
            id=settlement_id,
            run_id=run_id,
            program_id=run.program_id,
            merchant_id=run.merchant_id,
            payable_fen=0,
            redemptions=0,
            created_at=now,
        )
        s.add(batch)
        s.flush()
        s.execute(text(PAY), {"sid": settlement_id, "run": run_id})
        paid, paid_fen = _pair(s, PAID, {"sid": settlement_id})
        matched, matched_fen = _pair(s, MATCHED, {"run": run_id})
        before = list(s.scalars(text(PAID_BEFORE), {"run": run_id, "sid": settlement_id}))
        out = {
            "settlement_id": settlement_id if paid else None,
            "run_id": run_id,
            "program_id": run.program_id,
            "merchant_id": run.merchant_id,
            "redemptions": paid,
            "payable_fen": paid_fen,
            "skipped_already_settled": len(before),
            "skipped_ids": before[:SKIPPED_SHOWN],
            "skipped_no_longer_payable": matched - paid - len(before),
            "skipped_fen": matched_fen - paid_fen,
        }
        if not paid:
            s.delete(batch)  # nothing new to pay: no empty batch
            return out
        batch.payable_fen, batch.redemptions = paid_fen, paid
        audit_log.record(
            s,
            actor,
            "settlement.created",
            "settlement",
            settlement_id,
            {
                "run_id": run_id,
                "program_id": run.program_id,
                "merchant_id": run.merchant_id,
                "redemptions": paid,
                "payable_fen": paid_fen,
                "skipped_already_settled": len(before),
            },
            now,
        )
    return out


def _pair(s: Session, sql: str, params: dict[str, Any]) -> tuple[int, int]:
    n, fen = s.execute(text(sql), params).one()
    return int(n), int(fen)
