"""Idempotency-Key handling: the first request with a key does the work, later ones get its answer.

Per (merchant, key) a row records the request's fingerprint (sha256 of route and raw body). The first
request inserts it `in_progress` with a lease, in its own short committed transaction; the effect's own
transaction then marks it `done` with the exact response bytes, so effect and answer commit together.
The lease end (`locked_until`) doubles as a fencing token: a retry may take over a row whose lease has
run out (its worker died), and the slow original can then no longer complete it, so the effect can only
commit once per key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Result, delete, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from voucher_service.adapters.db.engine import is_postgres
from voucher_service.adapters.db.models import IdempotencyRecord
from voucher_service.domain.errors import IdempotencyInProgress, IdempotencyKeyReused, VoucherServiceError
from voucher_service.services.context import ServiceContext

# The lease row on PostgreSQL: SET LOCAL synchronous_commit (see _relax_durability) folded into the
# INSERT, which returns no row when the key exists already.
PG_INSERT_LEASE = text("""
INSERT INTO idempotency_records
    (merchant_id, key, route, request_sha256, state, locked_until, created_at)
SELECT :merchant_id, :key, :route, :request_sha256, 'in_progress', :locked_until, :created_at
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
ON CONFLICT (merchant_id, key) DO NOTHING
RETURNING 1
""")

# Failures worth trying again with the same key: their answers are not stored.
TRANSIENT_CODES = frozenset({"idempotency_in_progress", "rate_limited"})
_ATTEMPTS = 5


@dataclass(frozen=True)
class Outcome:
    """A service answer with its exact JSON bytes (what was stored for the Idempotency-Key)."""

    status: int
    payload: dict[str, Any]
    body: bytes


@dataclass(frozen=True)
class StoredResponse:
    """The answer a key already has: replayed byte for byte, status included."""

    status: int
    body: bytes


@dataclass(frozen=True)
class IdempotencyClaim:
    """This request holds the key's lease until `locked_until` and may complete it."""

    merchant_id: str
    key: str
    locked_until: dt.datetime


def fingerprint(route: str, raw_body: bytes) -> str:
    """The sha256 of the route and the raw body: what "the same request" means."""
    return hashlib.sha256(route.encode() + b"\n" + raw_body).hexdigest()


def begin(
    ctx: ServiceContext, merchant_id: str, key: str, route: str, raw_body: bytes
) -> IdempotencyClaim | StoredResponse:
    """Claim the key for this request, or return its stored answer; raise when it cannot be either."""
    digest = fingerprint(route, raw_body)
    for _ in range(_ATTEMPTS):
        now = ctx.now()
        lease = now + dt.timedelta(seconds=ctx.settings.idempotency_lease_s)
        if _insert_lease(ctx, merchant_id, key, route, digest, now, lease):
            return IdempotencyClaim(merchant_id, key, lease)
        # The key exists already (perhaps inserted a moment ago by a concurrent request).
        outcome = _existing(ctx, merchant_id, key, digest, now, lease)
        if outcome is not None:
            return outcome
    raise IdempotencyInProgress("A request with this Idempotency-Key is still running; retry later.")


def _insert_lease(
    ctx: ServiceContext, merchant_id: str, key: str, route: str, digest: str, now: dt.datetime,
    lease: dt.datetime,
) -> bool:
    """Insert the key's row `in_progress` in its own committed transaction; False when it exists."""
    values = {"merchant_id": merchant_id, "key": key, "route": route[:200], "request_sha256": digest,
              "locked_until": lease, "created_at": now}
    if is_postgres(ctx.engine):
        # One round trip, no unit of work; the conflict (a key already there) is not an error.
        with ctx.sessions.begin() as s:
            return s.connection().execute(PG_INSERT_LEASE, values).first() is not None
    try:
        with ctx.sessions.begin() as s:
            _relax_durability(s)
            s.add(IdempotencyRecord(state="in_progress", **values))
        return True
    except IntegrityError:
        return False


def _existing(
    ctx: ServiceContext, merchant_id: str, key: str, digest: str, now: dt.datetime, lease: dt.datetime
) -> IdempotencyClaim | StoredResponse | None:
    """Judge an existing row; None when it changed under us and the caller should look again."""
    with ctx.sessions.begin() as s:
        rec = s.get(IdempotencyRecord, (merchant_id, key))
        if rec is None:
            return None  # released by a failed attempt in the meantime: insert afresh
        if rec.request_sha256 != digest:
            raise IdempotencyKeyReused("This Idempotency-Key was used with another request body.")
        if rec.state == "done":
            assert rec.response_status is not None and rec.response_body is not None
            return StoredResponse(rec.response_status, bytes(rec.response_body))
        if rec.locked_until > now:
            raise IdempotencyInProgress("A request with this Idempotency-Key is still running; retry later.")
        # The lease ran out: the worker that held it died before committing. Take it over; the new lease
        # end is strictly later than the old one, so the old holder's completion no longer matches.
        new_lease = max(lease, rec.locked_until + dt.timedelta(microseconds=1))
        taken = _rowcount(s.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.merchant_id == merchant_id,
                IdempotencyRecord.key == key,
                IdempotencyRecord.state == "in_progress",
                IdempotencyRecord.locked_until == rec.locked_until,
            )
            .values(locked_until=new_lease)
            .execution_options(synchronize_session=False)
        ))
    return IdempotencyClaim(merchant_id, key, new_lease) if taken == 1 else None


def _relax_durability(s: Session) -> None:
    # The lease row and a stored refusal need not wait for their own WAL flush: losing them in a crash
    # only lets a retry run again, and the effect's commit (synchronous) flushes all earlier WAL anyway.
    if is_postgres(s):
        s.execute(text("SET LOCAL synchronous_commit TO OFF"))


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def _finish(session: Session, claim: IdempotencyClaim, status: int, body: bytes) -> int:
    return _rowcount(session.execute(
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.merchant_id == claim.merchant_id,
            IdempotencyRecord.key == claim.key,
            IdempotencyRecord.state == "in_progress",
            IdempotencyRecord.locked_until == claim.locked_until,
        )
        .values(state="done", response_status=status, response_body=body)
        .execution_options(synchronize_session=False)
    ))


def lease_lost() -> VoucherServiceError:
    """The refusal when another attempt took the key over before this one could complete it."""
    return IdempotencyInProgress("Another attempt with this Idempotency-Key took over; retry to get its answer.")


def complete(session: Session, claim: IdempotencyClaim, status: int, body: bytes) -> None:
    """Store the answer in the effect's own transaction; raise when another attempt took the key over."""
    if _finish(session, claim, status, body) != 1:
        raise lease_lost()


def store_error(ctx: ServiceContext, claim: IdempotencyClaim, status: int, body: bytes) -> None:
    """Keep a failure's answer, so a retry with the key gets the same failure."""
    with ctx.sessions.begin() as s:
        _relax_durability(s)
        _finish(s, claim, status, body)


def release(ctx: ServiceContext, claim: IdempotencyClaim) -> None:
    """Forget an unfinished attempt, so a retry with the key can run again."""
    with ctx.sessions.begin() as s:
        s.execute(
            delete(IdempotencyRecord)
            .where(
                IdempotencyRecord.merchant_id == claim.merchant_id,
                IdempotencyRecord.key == claim.key,
                IdempotencyRecord.state == "in_progress",
                IdempotencyRecord.locked_until == claim.locked_until,
            )
            .execution_options(synchronize_session=False)
        )


def run_once(
    ctx: ServiceContext, merchant_id: str, key: str, route: str, raw_body: bytes,
    action: Callable[[IdempotencyClaim], Outcome],
    refusal: Callable[[VoucherServiceError], tuple[int, bytes]],
) -> StoredResponse:
    """Do `action` once per (merchant, key); a repeat gets the first answer, byte for byte.

    A definite refusal is stored too (as `refusal` renders it), so a retry with the key gets the same
    failure; transient failures and crashes release the key so a retry can run again. The API and the
    checkout page both redeem and reverse through here.
    """
    started = begin(ctx, merchant_id, key, route, raw_body)
    if isinstance(started, StoredResponse):
        return started
    try:
        outcome = action(started)
    except VoucherServiceError as exc:
        if exc.code in TRANSIENT_CODES:
            release(ctx, started)
            raise
        status, body = refusal(exc)
        store_error(ctx, started, status, body)
        return StoredResponse(status, body)
    except BaseException:
        release(ctx, started)  # nothing committed: let a retry run again
        raise
    return StoredResponse(outcome.status, outcome.body)


def stored_answer(ctx: ServiceContext, merchant_id: str, key: str) -> StoredResponse | None:
    """The answer a key already has, or None while it has none (unused, or still running)."""
    with ctx.sessions() as s:
        rec = s.get(IdempotencyRecord, (merchant_id, key))
        if rec is None or rec.state != "done" or rec.response_status is None or rec.response_body is None:
            return None
        return StoredResponse(rec.response_status, bytes(rec.response_body))
