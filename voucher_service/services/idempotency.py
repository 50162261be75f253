"""Idempotency-Key handling: the first request with a key does the work, later ones get its answer.

Per (merchant, key) a row records the request's fingerprint (sha256 of route and raw body). The first
request inserts it `in_progress` with a lease, in its own short committed transaction; the effect's own
transaction then marks it `done` with the exact response bytes, so effect and answer commit together.
The lease end (`locked_until`) doubles as a fencing token: a retry may take over a row whose lease has
run out (its worker died), and the slow original can then no longer complete it, so the effect can only
commit once per key.

The lease is short (`idempotency_lease_s`, 6 s) and a per-process keeper renews it while the request
runs (every third of a lease, only for requests that are still running by then, so the fast path never
pays for it). A request that dies, or is cut off with its database and cannot even release its row,
stops being renewed, and a retry may take its key over at most one lease later; the 409 that retry gets
meanwhile says when in Retry-After.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import BigInteger, CursorResult, Result, bindparam, delete, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from voucher_service.adapters.db.engine import is_postgres
from voucher_service.adapters.db.models import IdempotencyRecord
from voucher_service.adapters.db.rows import OnDriver, built_once, insert_row, row_params, table_of
from voucher_service.domain.errors import IdempotencyInProgress, IdempotencyKeyReused, VoucherServiceError
from voucher_service.domain.states import IdempotencyState
from voucher_service.services.context import ServiceContext

_KEYS = table_of(IdempotencyRecord)

# The lease row on PostgreSQL: SET LOCAL synchronous_commit (see _relax_durability) folded into the
# INSERT, which returns no row when the key exists already.
_relaxed = select(func.set_config("synchronous_commit", "off", True).label("relaxed")).subquery("relaxed")
PG_INSERT_LEASE = built_once(
    insert_row(_KEYS, "k_", source=_relaxed, insert_of=pg_insert)
    .on_conflict_do_nothing(index_elements=[_KEYS.c.merchant_id, _KEYS.c.key])
    .returning(_KEYS.c.key)
)

# The key taken inside the effect's own transaction (PostgreSQL): a transaction-scoped advisory lock on
# the key is the in-flight marker (it cannot outlive its request: it goes with the transaction, even
# when the connection is cut), and the row is inserted only while we hold it. `got` is false while
# another request runs with the key; `inserted` false when the key already has a (committed) row.
_locked = select(func.pg_try_advisory_xact_lock(bindparam("lock_key", type_=BigInteger)).label("got")).cte(
    "locked"
)
_taken = (
    insert_row(_KEYS, "k_", source=select(_locked.c.got).where(_locked.c.got).subquery(), insert_of=pg_insert)
    .on_conflict_do_nothing(index_elements=[_KEYS.c.merchant_id, _KEYS.c.key])
    .returning(_KEYS.c.key)
    .cte("taken")
)
PG_TAKE_KEY = built_once(select(_locked.c.got, exists(_taken.select()).label("inserted")))
_PG_TAKE_KEY = OnDriver(PG_TAKE_KEY)


log = logging.getLogger(__name__)

# Failures worth trying again with the same key: their answers are not stored.
TRANSIENT_CODES = frozenset({"idempotency_in_progress", "rate_limited"})
_ATTEMPTS = 5


@dataclass(frozen=True)
class StoredResponse:
    """The answer a key already has: replayed byte for byte, status included."""

    status: int
    body: bytes


class IdempotencyClaim:
    """This request holds the key's lease until `locked_until` and may complete it.

    `locked_until` moves forward while the keeper renews the lease; `fence()` stops the renewals and
    gives the value the completing statement must match."""

    def __init__(self, merchant_id: str, key: str, locked_until: dt.datetime) -> None:
        self.merchant_id = merchant_id
        self.key = key
        self.locked_until = locked_until
        self.lock = threading.Lock()
        self.fenced = False

    def fence(self) -> dt.datetime:
        """The lease end to complete (or release) against; no renewal changes it after this call."""
        with self.lock:
            self.fenced = True
            return self.locked_until

    def __repr__(self) -> str:
        return f"IdempotencyClaim({self.merchant_id!r}, {self.key!r}, {self.locked_until.isoformat()})"


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
    ctx: ServiceContext,
    merchant_id: str,
    key: str,
    route: str,
    digest: str,
    now: dt.datetime,
    lease: dt.datetime,
) -> bool:
    """Insert the key's row `in_progress` in its own committed transaction; False when it exists."""
    values = {
        "merchant_id": merchant_id,
        "key": key,
        "route": route[:200],
        "request_sha256": digest,
        "locked_until": lease,
        "created_at": now,
    }
    if is_postgres(ctx.engine):
        # One round trip, no unit of work; the conflict (a key already there) is not an error.
        params = row_params(_KEYS, "k_", {**values, "state": IdempotencyState.IN_PROGRESS})
        with ctx.sessions.begin() as s:
            return s.connection().execute(PG_INSERT_LEASE, params).first() is not None
    try:
        with ctx.sessions.begin() as s:
            _relax_durability(s)
            s.add(IdempotencyRecord(state=IdempotencyState.IN_PROGRESS, **values))
        return True
    except IntegrityError:
        return False


def _existing(
    ctx: ServiceContext, merchant_id: str, key: str, digest: str, now: dt.datetime, lease: dt.datetime
) -> IdempotencyClaim | StoredResponse | None:
    """Judge an existing row; None when it changed under us and the caller should look again."""
    with ctx.sessions.begin() as s:
        return _judge(s, ctx, merchant_id, key, digest, now, lease)


def _judge(
    s: Session,
    ctx: ServiceContext,
    merchant_id: str,
    key: str,
    digest: str,
    now: dt.datetime,
    lease: dt.datetime,
) -> IdempotencyClaim | StoredResponse | None:
    """Judge the key's row in the session's transaction: its answer, or a lapsed lease taken over."""
    rec = s.get(IdempotencyRecord, (merchant_id, key), populate_existing=True)
    if rec is None:
        return None  # released by a failed attempt in the meantime: insert afresh
    if rec.request_sha256 != digest:
        raise IdempotencyKeyReused("This Idempotency-Key was used with another request body.")
    if rec.state == IdempotencyState.DONE:
        assert rec.response_status is not None and rec.response_body is not None
        return StoredResponse(rec.response_status, bytes(rec.response_body))
    if rec.locked_until > now:
        wait = math.ceil((rec.locked_until - now).total_seconds())
        raise IdempotencyInProgress(
            "A request with this Idempotency-Key is still running; retry later.",
            retry_after=min(wait, ctx.settings.idempotency_lease_s),
        )
    # The lease ran out: the worker that held it died before committing. Take it over; the new lease
    # end is strictly later than the old one, so the old holder's completion no longer matches.
    new_lease = max(lease, rec.locked_until + dt.timedelta(microseconds=1))
    taken = _rowcount(
        s.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.merchant_id == merchant_id,
                IdempotencyRecord.key == key,
                IdempotencyRecord.state == IdempotencyState.IN_PROGRESS,
                IdempotencyRecord.locked_until == rec.locked_until,
            )
            .values(locked_until=new_lease)
            .execution_options(synchronize_session=False)
        )
    )
    return IdempotencyClaim(merchant_id, key, new_lease) if taken == 1 else None


def _relax_durability(s: Session) -> None:
    # The lease row and a stored refusal need not wait for their own WAL flush: losing them in a crash
    # only lets a retry run again, and the effect's commit (synchronous) flushes all earlier WAL anyway.
    if is_postgres(s):
        s.execute(text("SET LOCAL synchronous_commit TO OFF"))


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def _finish(session: Session, claim: IdempotencyClaim, status: int, body: bytes) -> int:
    locked_until = claim.fence()
    return _rowcount(
        session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.merchant_id == claim.merchant_id,
                IdempotencyRecord.key == claim.key,
                IdempotencyRecord.state == IdempotencyState.IN_PROGRESS,
                IdempotencyRecord.locked_until == locked_until,
            )
            .values(state=IdempotencyState.DONE, response_status=status, response_body=body)
            .execution_options(synchronize_session=False)
        )
    )


def lease_lost() -> VoucherServiceError:
    """The refusal when another attempt took the key over before this one could complete it."""
    return IdempotencyInProgress(
        "Another attempt with this Idempotency-Key took over; retry to get its answer."
    )


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
    locked_until = claim.fence()
    with ctx.sessions.begin() as s:
        s.execute(
            delete(IdempotencyRecord)
            .where(
                IdempotencyRecord.merchant_id == claim.merchant_id,
                IdempotencyRecord.key == claim.key,
                IdempotencyRecord.state == IdempotencyState.IN_PROGRESS,
                IdempotencyRecord.locked_until == locked_until,
            )
            .execution_options(synchronize_session=False)
        )


class LeaseKeeper:
    """Renews the leases of this process's running requests, so only a dead request's lease lapses.

    A daemon thread runs while the process holds claims (started on demand, again after a fork). Each
    round renews the claims whose lease is at least a third spent, one short transaction each; a request
    that ends (or fences its claim to complete it) is not renewed again. The keeper holds its context
    weakly, so an app that is thrown away (tests make many) takes its keeper with it."""

    def __init__(self, sessions: sessionmaker[Session], lease_s: int, now: Any) -> None:
        self._sessions = weakref.ref(sessions)
        self._lease = dt.timedelta(seconds=lease_s)
        self._interval_s = max(0.2, lease_s / 3)
        self._now = weakref.WeakMethod(now)
        self._claims: set[IdempotencyClaim] = set()
        self._lock = threading.Lock()
        self._running_in: int | None = None  # the pid whose renewal thread is running

    def hold(self, claim: IdempotencyClaim) -> None:
        with self._lock:
            if self._running_in != os.getpid():  # none running here (idle, or gunicorn forked since)
                self._running_in = os.getpid()
                self._claims = set()
                threading.Thread(target=self._run, name="idempotency-leases", daemon=True).start()
            self._claims.add(claim)

    def drop(self, claim: IdempotencyClaim) -> None:
        with self._lock:
            self._claims.discard(claim)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval_s)
            with self._lock:
                if not self._claims:  # idle: stop; the next hold() starts a thread again
                    self._running_in = None
                    return
            try:
                self.renew_due()
            except Exception:  # the database is away: the leases lapse, as they should
                log.warning("renewing idempotency leases failed", exc_info=True)

    def renew_due(self) -> int:
        """Extend every held lease that is a third spent; return how many were extended."""
        sessions, clock = self._sessions(), self._now()
        if sessions is None or clock is None:
            return 0
        now = clock()
        due_before = now + self._lease - dt.timedelta(seconds=self._interval_s)
        with self._lock:
            due = [c for c in self._claims if c.locked_until <= due_before]
        renewed = 0
        for claim in due:
            with claim.lock:  # complete() waits for this renewal, then sees the new lease end
                if claim.fenced:
                    continue
                new_lease = max(now + self._lease, claim.locked_until + dt.timedelta(microseconds=1))
                with sessions.begin() as s:
                    _relax_durability(s)
                    moved = _rowcount(
                        s.execute(
                            update(IdempotencyRecord)
                            .where(
                                IdempotencyRecord.merchant_id == claim.merchant_id,
                                IdempotencyRecord.key == claim.key,
                                IdempotencyRecord.state == IdempotencyState.IN_PROGRESS,
                                IdempotencyRecord.locked_until == claim.locked_until,
                            )
                            .values(locked_until=new_lease)
                            .execution_options(synchronize_session=False)
                        )
                    )
                if moved == 1:
                    claim.locked_until = new_lease
                    renewed += 1
                else:  # taken over (or finished): nothing more to renew
                    claim.fenced = True
        return renewed


_keepers: weakref.WeakKeyDictionary[sessionmaker[Session], LeaseKeeper] = weakref.WeakKeyDictionary()
_keepers_lock = threading.Lock()


def keeper(ctx: ServiceContext) -> LeaseKeeper:
    """The lease keeper of this context's database."""
    with _keepers_lock:
        found = _keepers.get(ctx.sessions)
        if found is None:
            found = _keepers[ctx.sessions] = LeaseKeeper(
                ctx.sessions, ctx.settings.idempotency_lease_s, ctx.now
            )
        return found


@contextmanager
def kept_alive(ctx: ServiceContext, claim: IdempotencyClaim) -> Iterator[IdempotencyClaim]:
    """Renew the claim's lease for as long as the block runs."""
    k = keeper(ctx)
    k.hold(claim)
    try:
        yield claim
    finally:
        k.drop(claim)


@dataclass(frozen=True)
class KeyedRequest:
    """A request to do at most once per (merchant, Idempotency-Key); `refusal` renders a definite failure
    as the answer stored for the key (the API's problem+json), so a retry gets it byte for byte."""

    merchant_id: str
    key: str
    route: str
    raw_body: bytes
    refusal: Callable[[VoucherServiceError], tuple[int, bytes]]


class Once:
    """The idempotency owner's handle on one request, inside `owner()`.

    `answer` is set before the block runs when the key already has one (the block must then do nothing),
    and after it by `complete()` or a stored refusal. `complete()` stores the answer in the effect's own
    transaction; `claim` is the lease the effect's statement must still hold (None without a key).

    When `deferred`, nothing was written before the block: the block calls `take(session)` first thing
    in the effect's transaction, which claims the key there (or finds its answer), so the key, the effect
    and the answer commit together, once."""

    def __init__(
        self,
        claim: IdempotencyClaim | None,
        answer: StoredResponse | None = None,
        *,
        deferred: tuple[ServiceContext, KeyedRequest] | None = None,
    ) -> None:
        self.claim = claim
        self.answer = answer
        self._deferred = deferred

    @property
    def replayed(self) -> bool:
        """Whether the key already had its answer (nothing is to be done)."""
        return self.answer is not None

    @property
    def deferred(self) -> bool:
        """Whether the block must `take()` the key in its own transaction."""
        return self._deferred is not None

    def take(self, session: Session) -> StoredResponse | None:
        """Claim the key in the effect's transaction, or return its stored answer; raise when another
        request runs with it now, or the key was used with another request."""
        assert self._deferred is not None
        ctx, req = self._deferred
        now = ctx.now()
        lease = now + dt.timedelta(seconds=ctx.settings.idempotency_lease_s)
        digest = fingerprint(req.route, req.raw_body)
        params = _take_params(req, digest, now, lease, IdempotencyState.IN_PROGRESS, None, None)
        got, inserted = _PG_TAKE_KEY.one(session.connection(), params)
        if not got:
            raise IdempotencyInProgress(
                "A request with this Idempotency-Key is still running; retry later.", retry_after=1
            )
        if inserted:
            self.claim = IdempotencyClaim(req.merchant_id, req.key, lease)
            return None
        found = _judge(session, ctx, req.merchant_id, req.key, digest, now, lease)
        if isinstance(found, StoredResponse):
            self.answer = found
            return found
        if found is None:  # taken over by another request between our reads: it runs now
            raise IdempotencyInProgress("A request with this Idempotency-Key is still running; retry later.")
        self.claim = found
        return None

    def store_refusal(self, status: int, body: bytes) -> StoredResponse:
        """After the effect's transaction rolled back: keep its refusal as the key's answer (unless another
        request gave the key one meanwhile: that one is the answer then)."""
        assert self._deferred is not None
        ctx, req = self._deferred
        now = ctx.now()
        digest = fingerprint(req.route, req.raw_body)
        params = _take_params(req, digest, now, now, IdempotencyState.DONE, status, body)
        with ctx.sessions.begin() as s:
            _relax_durability(s)
            row = s.connection().execute(PG_TAKE_KEY, params).one()
            if row.got and not row.inserted:
                rec = s.get(IdempotencyRecord, (req.merchant_id, req.key))
                if rec is not None and rec.state == IdempotencyState.DONE and rec.response_body is not None:
                    assert rec.response_status is not None
                    return StoredResponse(rec.response_status, bytes(rec.response_body))
        return StoredResponse(status, body)

    def complete(self, session: Session, status: int, body: bytes) -> None:
        """Store the answer in the effect's transaction; raise when another attempt took the key over."""
        if self.claim is not None:
            complete(session, self.claim, status, body)
        self.answer = StoredResponse(status, body)

    def completed(self, status: int, body: bytes) -> None:
        """Note an answer the effect's own statement already stored under the claim."""
        self.answer = StoredResponse(status, body)

    def result(self) -> StoredResponse:
        """The request's answer, stored or replayed."""
        assert self.answer is not None, "the block neither completed nor raised"
        return self.answer


def _lock_key(merchant_id: str, key: str) -> int:
    """The key's advisory lock number (a collision only makes two keys wait for each other)."""
    digest = hashlib.blake2b(f"{merchant_id}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _take_params(
    req: KeyedRequest,
    digest: str,
    now: dt.datetime,
    lease: dt.datetime,
    state: IdempotencyState,
    status: int | None,
    body: bytes | None,
) -> dict[str, Any]:
    values = {
        "merchant_id": req.merchant_id,
        "key": req.key,
        "route": req.route[:200],
        "request_sha256": digest,
        "state": state,
        "locked_until": lease,
        "response_status": status,
        "response_body": body,
        "created_at": now,
    }
    return {"lock_key": _lock_key(req.merchant_id, req.key), **row_params(_KEYS, "k_", values)}


@contextmanager
def owner(ctx: ServiceContext, request: KeyedRequest | None, *, deferred: bool = False) -> Iterator[Once]:
    """Own one request's Idempotency-Key: begin (claim it, or find its answer), keep its lease while the
    block runs, and on the way out keep the completed answer, store a definite refusal (suppressing
    it: `result()` is then that refusal), or release the key after a transient failure or a crash so a
    retry can run again. Without a key the block simply runs.

    `deferred` (PostgreSQL only): nothing is written before the block, which takes the key in the
    effect's own transaction (`Once.take`), so a request commits once; a failure has nothing to release
    (its transaction took the key with it) and a refusal is stored afterwards."""
    if request is None:
        yield Once(None)
        return
    if deferred and is_postgres(ctx.engine):
        once = Once(None, deferred=(ctx, request))
        try:
            yield once
        except VoucherServiceError as exc:
            if once.claim is None or exc.code in TRANSIENT_CODES:
                raise  # not ours yet (in progress elsewhere, key reused), or worth a retry
            once.answer = once.store_refusal(*request.refusal(exc))
        return
    started = begin(ctx, request.merchant_id, request.key, request.route, request.raw_body)
    if isinstance(started, StoredResponse):
        yield Once(None, started)
        return
    once = Once(started)
    with kept_alive(ctx, started):  # renewed while the block runs, never after
        try:
            yield once
        except VoucherServiceError as exc:
            if exc.code in TRANSIENT_CODES:
                release_at_best(ctx, started)
                raise
            status, body = request.refusal(exc)
            store_error(ctx, started, status, body)
            once.answer = StoredResponse(status, body)
        except BaseException:
            release_at_best(ctx, started)  # nothing committed: let a retry run again
            raise


def release_at_best(ctx: ServiceContext, claim: IdempotencyClaim) -> None:
    """Release the key, at best: when the database is gone too, the lease (no longer renewed) lapses
    within one lease instead, and the original failure is what the client hears."""
    try:
        release(ctx, claim)
    except Exception:
        log.warning("could not release Idempotency-Key %r; its lease will lapse", claim.key, exc_info=True)


def stored_answer(ctx: ServiceContext, merchant_id: str, key: str) -> StoredResponse | None:
    """The answer a key already has, or None while it has none (unused, or still running)."""
    with ctx.sessions() as s:
        rec = s.get(IdempotencyRecord, (merchant_id, key))
        if (
            rec is None
            or rec.state != IdempotencyState.DONE
            or rec.response_status is None
            or rec.response_body is None
        ):
            return None
        return StoredResponse(rec.response_status, bytes(rec.response_body))
