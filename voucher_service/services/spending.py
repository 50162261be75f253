"""What a holder's wallet shows besides the voucher: where it can be spent."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from voucher_service.adapters.db.models import Enrolment, Merchant
from voucher_service.domain.guangxi_counties import GUANGXI_COUNTIES
from voucher_service.services import programs
from voucher_service.services.context import ServiceContext

MAX_LISTED_MERCHANTS = 200


def where_to_spend(ctx: ServiceContext, program_id: str) -> dict[str, Any]:
    """The programme's eligible marks and counties and its enrolled merchants (offline shops first)."""
    program = programs.get_program(ctx, program_id, with_stats=False)
    eligibility = program["eligibility"]
    codes = eligibility.get("county_codes")
    targets = [t["county_code"] for t in program["targets"]]
    with ctx.sessions() as s:
        rows = s.execute(
            select(Merchant.id, Merchant.name, Merchant.channels, Merchant.platform)
            .join(Enrolment, Enrolment.merchant_id == Merchant.id)
            .where(Enrolment.program_id == program_id)
            .order_by(Merchant.name)
            .limit(MAX_LISTED_MERCHANTS)
        ).all()
    merchants = [
        {"id": r.id, "name": r.name, "channels": list(r.channels), "platform": bool(r.platform)} for r in rows
    ]
    merchants.sort(key=lambda m: ("offline" not in m["channels"], m["name"]))
    return {
        "certification_types": list(eligibility.get("certification_types") or []),
        "any_county": codes is None,
        "counties": [{"code": c, "name": GUANGXI_COUNTIES.get(c, c)} for c in (codes or [])],
        "paired_counties": [{"code": c, "name": GUANGXI_COUNTIES.get(c, c)} for c in targets],
        "merchants": merchants,
    }
