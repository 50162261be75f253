"""The revocations feed offline tills refresh: vouchers redeemed or voided since a version."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from voucher_service.adapters.db.models import Enrolment, Program, RevocationEvent
from voucher_service.domain.errors import MerchantNotEnrolled, NotFound
from voucher_service.services.context import ServiceContext


def revocations_since(ctx: ServiceContext, merchant_id: str, program_id: str, since: int) -> dict[str, Any]:
    """Vouchers redeemed or voided after event `since` and not restored since, with the new version.

    `restored_voucher_ids` (beyond the contract's fields) lists vouchers whose last event after `since`
    gave them back to their holder, so a till can drop them from the list it keeps.
    """
    with ctx.sessions() as s:
        if s.get(Program, program_id) is None:
            raise NotFound(f"No programme {program_id}.")
        if s.get(Enrolment, (program_id, merchant_id)) is None:
            raise MerchantNotEnrolled("The merchant is not enrolled in this programme.")
        last_kind: dict[str, str] = {}
        version = since
        rows = s.execute(
            select(RevocationEvent.id, RevocationEvent.voucher_id, RevocationEvent.kind)
            .where(RevocationEvent.program_id == program_id, RevocationEvent.id > since)
            .order_by(RevocationEvent.id)
        )
        for event_id, voucher_id, kind in rows:
            last_kind[voucher_id] = kind  # in id order, so the last one wins
            version = event_id
    revoked = sorted(v for v, k in last_kind.items() if k in ("redeemed", "void"))
    restored = sorted(v for v, k in last_kind.items() if k == "restored")
    return {"version": version, "voucher_ids": revoked, "restored_voucher_ids": restored}
