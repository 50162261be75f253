"""Settlement: pay a reconciliation run's payable matches, never a redemption twice."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import Dispute, ReconciliationRun, SettledRedemption, Settlement
from voucher_service.adapters.db.rows import insert_select_sql, table_of
from voucher_service.domain.errors import InvalidState, NotFound
from voucher_service.domain.states import DisputeStatus, RedemptionStatus
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext

SKIPPED_SHOWN = 20

# The primary key of settled_redemptions is the redemption: a redemption already paid in any
# settlement is skipped here, even by two settlements racing on overlapping runs. A match whose
# redemption was reversed (or changed) since the run is not paid either.
SETTLED = table_of(SettledRedemption)
PAY = (
    insert_select_sql(
        SETTLED,
        {
            SETTLED.c.redemption_id: "m.redemption_id",
            SETTLED.c.settlement_id: ":sid",
            SETTLED.c.discount_fen: "m.discount_fen",
        },
    )
    + f"""FROM reconciliation_matches m
JOIN redemptions r ON r.id = m.redemption_id
WHERE m.run_id = :run AND r.status = '{RedemptionStatus.ACTIVE}' AND r.discount_fen = m.discount_fen
ON CONFLICT (redemption_id) DO NOTHING
"""
)
# Accepted disputes of the run's programme and merchant not paid yet: their redemptions, if still active,
# at the ledger's discount. Same primary key, so a redemption is still paid at most once in all.
PAY_DISPUTES = (
    insert_select_sql(
        SETTLED,
        {
            SETTLED.c.redemption_id: "d.redemption_id",
            SETTLED.c.settlement_id: ":sid",
            SETTLED.c.discount_fen: "r.discount_fen",
        },
        distinct=True,
    )
    + f"""FROM disputes d
JOIN redemptions r ON r.id = d.redemption_id
WHERE d.program_id = :p AND d.merchant_id = :m AND d.status = '{DisputeStatus.ACCEPTED}' AND d.settlement_id IS NULL
  AND r.status = '{RedemptionStatus.ACTIVE}'
  AND NOT EXISTS (SELECT 1 FROM settled_redemptions x WHERE x.redemption_id = d.redemption_id)
ON CONFLICT (redemption_id) DO NOTHING
"""
)
# Every accepted dispute whose redemption is now paid, by this batch or an earlier one, records it.
MARK_DISPUTES = f"""
SELECT d.id, x.settlement_id, x.discount_fen
FROM disputes d
JOIN settled_redemptions x ON x.redemption_id = d.redemption_id
WHERE d.program_id = :p AND d.merchant_id = :m AND d.status = '{DisputeStatus.ACCEPTED}' AND d.settlement_id IS NULL
ORDER BY d.id
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
    """Record a settlement batch from a run's payable matches and the accepted disputes of its programme
    and merchant not paid yet; report what was skipped and why."""
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
        matches_paid, matches_paid_fen = _pair(s, PAID, {"sid": settlement_id})
        scope = {"sid": settlement_id, "p": run.program_id, "m": run.merchant_id}
        s.execute(text(PAY_DISPUTES), scope)
        paid, paid_fen = _pair(s, PAID, {"sid": settlement_id})
        disputes_paid = _mark_disputes(s, scope, settlement_id, actor, now)
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
            "skipped_no_longer_payable": matched - matches_paid - len(before),
            "skipped_fen": matched_fen - matches_paid_fen,
            "disputes_paid": len(disputes_paid),
            "disputes_paid_fen": sum(d["amount_fen"] for d in disputes_paid),
            "dispute_ids": [d["dispute_id"] for d in disputes_paid][:SKIPPED_SHOWN],
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
                "disputes_paid": len(disputes_paid),
            },
            now,
        )
    return out


def _mark_disputes(
    s: Session, scope: dict[str, Any], settlement_id: str, actor: str, now: Any
) -> list[dict[str, Any]]:
    """Record, on each accepted dispute now paid, the batch that paid it; those this batch paid are
    returned and audit-logged (`dispute.paid`)."""
    paid: list[dict[str, Any]] = []
    for dispute_id, sid, fen in s.execute(text(MARK_DISPUTES), scope).all():
        dispute = s.get(Dispute, dispute_id)
        assert dispute is not None
        dispute.settlement_id = sid
        if sid == settlement_id:
            paid.append({"dispute_id": dispute_id, "amount_fen": int(fen)})
            audit_log.record(
                s,
                actor,
                "dispute.paid",
                "dispute",
                dispute_id,
                {"settlement_id": sid, "redemption_id": dispute.redemption_id, "amount_fen": int(fen)},
                now,
            )
    return paid


def _pair(s: Session, sql: str, params: dict[str, Any]) -> tuple[int, int]:
    n, fen = s.execute(text(sql), params).one()
    return int(n), int(fen)
