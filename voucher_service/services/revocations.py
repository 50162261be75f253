"""The revocations feed offline tills refresh: vouchers redeemed or voided since a version."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from voucher_service.adapters.db.models import Enrolment, Program, RevocationEvent
from voucher_service.domain.errors import MerchantNotEnrolled, NotFound
from voucher_service.services import holder_binding
from voucher_service.services.context import ServiceContext


def revocations_since(ctx: ServiceContext, merchant_id: str, program_id: str, since: int) -> dict[str, Any]:
    """Vouchers redeemed or voided after event `since` and not restored since, with the new version.

    `restored_voucher_ids` (beyond the contract's fields) lists vouchers whose last event after `since`
    gave them back to their holder, so a till can drop them from the list it keeps.
    `revoked_holder_keys` (CONTRACT §10) lists device keys replaced by re-binding since `since`,
    `{"voucher_id", "thumbprint"}`: a till refuses presentations made with them.
    """
    with ctx.sessions() as s:
        program = s.get(Program, program_id)
        if program is None:
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
            if kind != "rebound":  # a re-binding moves the key, not the voucher's state
                last_kind[voucher_id] = kind  # in id order, so the last one wins
            version = event_id
        bound = program.holder_binding != "off"
        keys = [
            {"voucher_id": k["voucher_id"], "thumbprint": k["thumbprint"]}
            for k in holder_binding.revoked_keys(s, program_id, since)
            if k["version"] <= version  # an event committed after our read of the feed waits for the next
        ]
    revoked = sorted(v for v, k in last_kind.items() if k in ("redeemed", "void"))
    restored = sorted(v for v, k in last_kind.items() if k == "restored")
    feed: dict[str, Any] = {"version": version, "voucher_ids": revoked, "restored_voucher_ids": restored}
    if bound:  # the feed of a holder_binding: off programme is as it always was
        feed["revoked_holder_keys"] = keys
    return feed
