"""Returns after a redemption: the merchant reverses lines (or everything); below the minimum spend the
whole discount is clawed back and the voucher goes back to its holder (or to expired)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import Redemption, RedemptionLine, Reversal, RevocationEvent, Voucher
from voucher_service.domain.eligibility import remaining_eligible_total_fen, reversal_clawback_fen
from voucher_service.domain.errors import Forbidden, InvalidState, NotFound, ValidationFailed
from voucher_service.domain.states import RedemptionStatus, VoucherStatus, check_transition
from voucher_service.services import audit_log, idempotency, ledger, voucher_status
from voucher_service.services.context import ServiceContext
from voucher_service.services.idempotency import KeyedRequest, Once, StoredResponse
from voucher_service.services.redemption_records import encode_json


@dataclass(frozen=True)
class ReturnedLine:
    """So many units of one redemption line came back."""

    index: int
    quantity: int


@dataclass(frozen=True)
class Reversed:
    """A return just recorded: the contract's 201 object and its exact JSON bytes."""

    reversal: dict[str, Any]
    body: bytes


def reverse_once(
    ctx: ServiceContext,
    merchant_id: str,
    redemption_id: str,
    returned: Sequence[ReturnedLine] | None,
    keyed: KeyedRequest,
) -> StoredResponse:
    """Record the return at most once per Idempotency-Key; a repeat gets the first answer byte for byte."""
    with idempotency.owner(ctx, keyed) as once:
        if not once.replayed:
            reverse_redemption(ctx, merchant_id, redemption_id, returned, once)
    return once.result()


def reverse_redemption(
    ctx: ServiceContext,
    merchant_id: str,
    redemption_id: str,
    returned: Sequence[ReturnedLine] | None,
    once: Once | None = None,
) -> Reversed:
    """Record a return (None: all not yet returned); claw the discount back when it no longer holds."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        r = s.get(Redemption, redemption_id, with_for_update=True)
        if r is None:
            raise NotFound(f"No redemption {redemption_id}.")
        if r.merchant_id != merchant_id:
            raise Forbidden("Only the merchant that redeemed the voucher may reverse it.")
        if r.status != RedemptionStatus.ACTIVE:
            raise InvalidState("This redemption was already reversed in full.")
        lines = list(
            s.scalars(
                select(RedemptionLine)
                .where(RedemptionLine.redemption_id == r.id)
                .order_by(RedemptionLine.index)
            )
        )
        applied = _apply_returns(lines, returned)
        voucher = s.get(Voucher, r.voucher_id, with_for_update=True)
        assert voucher is not None and voucher.expires_at is not None
        remaining = remaining_eligible_total_fen(
            [(x.eligible, x.unit_price_fen, x.quantity, x.returned_quantity) for x in lines]
        )
        clawback = reversal_clawback_fen(remaining, voucher.min_spend_fen, r.discount_fen)
        if clawback:
            _claw_back(s, r, voucher, clawback, now)
        reversal_id = str(uuid.uuid4())
        s.add(
            Reversal(
                id=reversal_id,
                redemption_id=r.id,
                merchant_id=merchant_id,
                lines=applied,
                clawback_fen=clawback,
                created_at=now,
            )
        )
        payload = {
            "reversal_id": reversal_id,
            "redemption_id": r.id,
            "clawback_fen": clawback,
            "discount_fen": r.discount_fen - (r.clawed_back_fen or 0),
            "voucher_status": voucher.status,
        }
        body = encode_json(payload)
        voucher_id = voucher.id
        if once is not None:
            once.complete(s, 201, body)
        audit_log.record(
            s,
            f"merchant:{merchant_id}",
            "redemption.reversed",
            "redemption",
            r.id,
            {
                "reversal_id": reversal_id,
                "lines": applied,
                "clawback_fen": clawback,
                "remaining_eligible_fen": remaining,
                "voucher_status": voucher.status,
            },
            now,
        )
    if clawback:
        voucher_status.status_changed(ctx, voucher_id)  # back to its holder: pages show it
    return Reversed(payload, body)


def _apply_returns(
    lines: list[RedemptionLine], returned: Sequence[ReturnedLine] | None
) -> list[dict[str, int]]:
    """Add the returned quantities to the lines; raise ValidationFailed for unknown lines or excess units."""
    by_index = {x.index: x for x in lines}
    if returned is None:
        wanted = [ReturnedLine(x.index, x.quantity - (x.returned_quantity or 0)) for x in lines]
        wanted = [w for w in wanted if w.quantity > 0]
    else:
        wanted = list(returned)
    errors: list[dict[str, str]] = []
    seen: set[int] = set()
    for i, w in enumerate(wanted):
        line = by_index.get(w.index)
        if line is None:
            errors.append({"field": f"lines.{i}.index", "message": f"the redemption has no line {w.index}"})
        elif w.index in seen:
            errors.append({"field": f"lines.{i}.index", "message": "line listed twice"})
        elif w.quantity < 1 or w.quantity > line.quantity - (line.returned_quantity or 0):
            left = line.quantity - (line.returned_quantity or 0)
            errors.append(
                {"field": f"lines.{i}.quantity", "message": f"must be 1-{left}: more than was bought"}
            )
        seen.add(w.index)
    if errors:
        raise ValidationFailed("The returned lines do not match the redemption.", errors)
    if not wanted:
        raise InvalidState("Every unit of this redemption was already returned.")
    for w in wanted:
        by_index[w.index].returned_quantity = (by_index[w.index].returned_quantity or 0) + w.quantity
    return [{"index": w.index, "quantity": w.quantity} for w in wanted]


def _claw_back(s: Session, r: Redemption, voucher: Voucher, clawback: int, now: dt.datetime) -> None:
    """Take the whole discount back: the voucher returns to its holder, or to expired when its time is up."""
    assert voucher.expires_at is not None
    r.status = check_transition(r.status, RedemptionStatus.REVERSED)
    r.clawed_back_fen = clawback
    restored = voucher.expires_at > now
    voucher.status = check_transition(
        voucher.status, VoucherStatus.ISSUED if restored else VoucherStatus.EXPIRED
    )
    voucher.status_changed_at = now
    ledger.move(
        s,
        program_id=r.program_id,
        kind="clawback",
        from_bucket="redeemed",
        to_bucket="outstanding" if restored else "expired",
        amount_fen=clawback,
        at=now,
        voucher_id=voucher.id,
        ref=r.id,
    )
    if restored:
        s.add(
            RevocationEvent(program_id=r.program_id, voucher_id=voucher.id, kind="restored", created_at=now)
        )
