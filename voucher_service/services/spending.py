"""What a holder's wallet reads: where a voucher can be spent, and its status, cheaply.

The status check is what an open voucher page polls. It costs one FastStore read per poll; the
database is read (one primary-key lookup) at most once per STATUS_CACHE_TTL_S per voucher, however
many pages poll it, and the answer carries an entity tag so an unchanged status is a 304 with no body.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from voucher_service.adapters.db.models import Enrolment, Merchant, Voucher
from voucher_service.domain.clock import rfc3339
from voucher_service.domain.guangxi_counties import GUANGXI_COUNTIES
from voucher_service.services import programs
from voucher_service.services.context import ServiceContext

STATUS_CACHE_TTL_S = 1
MAX_LISTED_MERCHANTS = 200


def voucher_status(ctx: ServiceContext, voucher_id: str) -> dict[str, Any] | None:
    """{"holder_hash", "status", "changed_at"} of a claimed voucher (expired once past its expiry), or None."""
    key = f"page:vstatus:{voucher_id}"
    cached = ctx.store.get(key)
    if cached is not None:
        value: dict[str, Any] | None = json.loads(cached) or None
        return value
    with ctx.sessions() as s:
        row = s.execute(
            select(Voucher.holder_hash, Voucher.status, Voucher.status_changed_at, Voucher.expires_at)
            .where(Voucher.id == voucher_id)
        ).first()
    out: dict[str, Any] | None = None
    if row is not None and row.holder_hash is not None:
        status = row.status
        if status == "issued" and row.expires_at is not None and row.expires_at <= ctx.now():
            status = "expired"
        out = {"holder_hash": row.holder_hash, "status": status, "changed_at": rfc3339(row.status_changed_at)}
    ctx.store.set(key, json.dumps(out or {}).encode(), STATUS_CACHE_TTL_S)
    return out


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
    merchants = [{"id": r.id, "name": r.name, "channels": list(r.channels), "platform": bool(r.platform)}
                 for r in rows]
    merchants.sort(key=lambda m: ("offline" not in m["channels"], m["name"]))
    return {
        "certification_types": list(eligibility.get("certification_types") or []),
        "any_county": codes is None,
        "counties": [{"code": c, "name": GUANGXI_COUNTIES.get(c, c)} for c in (codes or [])],
        "paired_counties": [{"code": c, "name": GUANGXI_COUNTIES.get(c, c)} for c in targets],
        "merchants": merchants,
    }
