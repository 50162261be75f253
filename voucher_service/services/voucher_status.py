"""A claimed voucher's status for the holder's open voucher page, served from the FastStore.

Each voucher has a generation counter (`vgen:<id>`) that the services bump after committing a status
change (a redemption, a reversal); the cached status is kept under `vstatus:<id>:<generation>`. A
poll costs two FastStore reads; the database is read (one primary-key lookup) once per generation and
at most once per CACHE_TTL_S otherwise, whatever the number of pages polling. A reader that raced a
change can only have written under the old generation, which nobody reads any more. Status changes
that do not bump the generation (an offline till's sync, voiding) show within CACHE_TTL_S; expiry is
judged from the cached expiry time at every read.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select

from voucher_service.adapters.db.models import Voucher
from voucher_service.domain.clock import parse_rfc3339, rfc3339
from voucher_service.domain.states import VoucherStatus
from voucher_service.services.context import ServiceContext

CACHE_TTL_S = 30
GENERATION_TTL_S = 40 * 86_400  # longer than any voucher lives


def _gen_key(voucher_id: str) -> str:
    return f"vgen:{voucher_id}"


def status_changed(ctx: ServiceContext, voucher_id: str) -> None:
    """Call after committing a change of the voucher's status: open pages see it at their next poll."""
    try:
        ctx.store.incr(_gen_key(voucher_id), GENERATION_TTL_S)
    except Exception:  # the change is committed; the cached status then expires on its own
        pass


def voucher_status(ctx: ServiceContext, voucher_id: str) -> dict[str, Any] | None:
    """{"holder_hash", "status", "changed_at"} of a claimed voucher (expired once past expiry), or None."""
    generation = (ctx.store.get(_gen_key(voucher_id)) or b"0").decode()
    key = f"vstatus:{voucher_id}:{generation}"
    cached = ctx.store.get(key)
    if cached is not None:
        found: dict[str, Any] = json.loads(cached)
    else:
        found = _read(ctx, voucher_id)
        ctx.store.set(key, json.dumps(found).encode(), CACHE_TTL_S)
    if not found:
        return None
    status = found["status"]
    expires = parse_rfc3339(found["expires_at"]) if found.get("expires_at") else None
    if status == VoucherStatus.ISSUED and expires is not None and expires <= ctx.now():
        status = VoucherStatus.EXPIRED
    return {"holder_hash": found["holder_hash"], "status": status, "changed_at": found["changed_at"]}


def _read(ctx: ServiceContext, voucher_id: str) -> dict[str, Any]:
    with ctx.sessions() as s:
        row = s.execute(
            select(Voucher.holder_hash, Voucher.status, Voucher.status_changed_at, Voucher.expires_at).where(
                Voucher.id == voucher_id
            )
        ).first()
    if row is None or row.holder_hash is None:
        return {}
    expires: dt.datetime | None = row.expires_at
    return {
        "holder_hash": row.holder_hash,
        "status": row.status,
        "changed_at": rfc3339(row.status_changed_at),
        "expires_at": rfc3339(expires),
    }
