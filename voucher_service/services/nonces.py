"""Merchant request nonces, and replay protection that survives the loss of Redis.

A nonce is remembered in Redis (SET NX with a TTL of twice the signature window). Redis may lose what it
holds (FLUSHALL, a restart without persistence, a failover to an empty node, an in-process store dying
with its process); a request whose nonce was lost could then be replayed while its timestamp is still
inside the window. So the nonces live in *epochs*:

- The database keeps, per Redis namespace (the key prefix), the current epoch number and `not_before`:
  the unix second before which no request signature is accepted any more (table `nonce_epochs`).
- Redis keeps the epoch number in marker keys without TTL, one per hash tag (services.shards). A nonce
  lives under its merchant's tag, next to that tag's marker, so the nonce SET NX and the GET of the
  marker are one Lua script: one round trip, as a bare SET NX was, and on a Redis Cluster too (the
  merchant's claim counter shares the tag, so a claim's nonce and limits are one script as well).
  Renaming the tags (as from the old `{nonce:<shard>}` ones) leaves the new markers missing, which is
  a loss: requests signed before the rename are refused, so no nonce slips through the move.
- Each worker caches the epoch it last read from the database. Normal case: the marker holds the cached
  epoch, and nothing else happens (no database access, no second round trip).
- A missing marker means Redis lost its data: the worker starts a new epoch in the database (row lock,
  so concurrent workers agree on one), with `not_before` a little after now, and writes every marker.
  A marker naming another epoch than the cached one makes a worker re-read the database.
- A request signed before the epoch began is refused as `replayed_request` (it could be a replay of a
  request whose nonce was lost); one signed after the loss was noticed but within the margin
  (`nonce_epoch_margin_s`, for clocks a little fast) gets `503 service_unavailable` with Retry-After,
  so a client signs it again. A namespace's very first epoch refuses nothing: no request was accepted
  before it. An in-process store knows when it began empty (its process started), so the epoch it
  starts begins then, without the margin.

Never fail open: when Redis or the database cannot be reached, the request is not accepted (503).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import cast

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from voucher_service.adapters.db.models import NonceEpoch
from voucher_service.adapters.redis_store import NonceStep
from voucher_service.domain.errors import ReplayedRequest, ServiceUnavailable
from voucher_service.services import shards
from voucher_service.services.context import ServiceContext

log = logging.getLogger(__name__)


def keys_for(merchant_id: str, nonce: str) -> tuple[str, str]:
    """(nonce key, its tag's epoch marker key): the merchant's hash tag, so one cluster slot."""
    tag = shards.merchant_tag(merchant_id)
    return f"{tag}:nonce:{merchant_id}:{nonce}", f"{tag}:epoch"


def all_markers() -> list[str]:
    """Every tag's epoch marker key."""
    return [f"{tag}:epoch" for tag in shards.all_tags()]


@dataclass(frozen=True)
class Epoch:
    """The current nonce epoch: requests signed before `not_before` (unix s) are refused."""

    number: int
    started: int  # unix seconds: when the loss was noticed (0 for a namespace's first epoch)
    not_before: int
    changed_at_ms: int


class NonceGuard:
    """One per database and namespace in each process: the cached epoch and the slow path's lock."""

    def __init__(self) -> None:
        self.cached: Epoch | None = None
        self.slow = threading.Lock()


_guards: weakref.WeakKeyDictionary[sessionmaker[Session], dict[str, NonceGuard]] = weakref.WeakKeyDictionary()
_guards_lock = threading.Lock()


def _guard(ctx: ServiceContext) -> NonceGuard:
    with _guards_lock:
        per_namespace = _guards.setdefault(ctx.sessions, {})
        return per_namespace.setdefault(ctx.settings.redis_prefix, NonceGuard())


@dataclass(frozen=True)
class PendingNonce:
    """The nonce of an authenticated merchant request, not yet remembered."""

    merchant_id: str
    nonce: str
    timestamp: int


@dataclass(frozen=True)
class NonceCheck:
    """A nonce's FastStore step, and the cached epoch it was built with."""

    pending: PendingNonce
    step: NonceStep
    epoch: Epoch | None


def nonce_check(ctx: ServiceContext, pending: PendingNonce) -> NonceCheck:
    """The step that remembers the nonce and reads its marker. Steps after it (rate limits, gates) run in
    the same script only when the request is sure to pass: the nonce is new, the marker holds the cached
    epoch and the request was signed after that epoch began."""
    nonce_key, marker = keys_for(pending.merchant_id, pending.nonce)
    epoch = _guard(ctx).cached
    go_on = epoch.number if epoch is not None and pending.timestamp >= epoch.not_before else None
    step = NonceStep(nonce_key, marker, 2 * ctx.settings.signature_window_s + 5, go_on)
    return NonceCheck(pending, step, epoch)


def use_nonce(ctx: ServiceContext, merchant_id: str, nonce: str, timestamp: int) -> None:
    """Remember the nonce of an authenticated merchant request; raise when it may be a replay."""
    check = nonce_check(ctx, PendingNonce(merchant_id, nonce, timestamp))
    judge(ctx, check, ctx.store.admit([check.step])[0])


def judge(ctx: ServiceContext, check: NonceCheck, result: object) -> None:
    """Raise when the nonce step's result (whether it set the nonce, the marker's epoch) may be a replay."""
    added, marked = cast(tuple[bool, int | None], result)
    timestamp = check.pending.timestamp
    epoch = check.epoch
    if epoch is None or marked != epoch.number:  # the rare path: a new epoch, a new worker, lost data
        epoch = _settle(ctx, _guard(ctx), check.step.marker)
    if not added:
        raise ReplayedRequest("This X-Voucher-Nonce was already used.")
    if timestamp < epoch.started:
        raise ReplayedRequest(
            "This request was signed before replay protection restarted (Redis lost its data); "
            "sign it again with a new timestamp and nonce."
        )
    if timestamp < epoch.not_before:
        raise ServiceUnavailable(
            "Replay protection is restarting after Redis lost its data; sign the request again.",
            retry_after=max(1, epoch.not_before - int(time.time()) + 1),
        )


def _settle(ctx: ServiceContext, guard: NonceGuard, marker: str) -> Epoch:
    """Agree with the database on the current epoch, starting a new one when Redis lost its markers.

    Under the epoch row's lock, the shard's marker is read again: whoever starts an epoch writes every
    marker before committing, so a marker still missing here was lost after the current epoch began."""
    namespace = ctx.settings.redis_prefix
    margin = ctx.settings.nonce_epoch_margin_s
    with guard.slow:
        _ensure_row(ctx, namespace)
        with ctx.sessions.begin() as s:
            row = s.get(NonceEpoch, namespace, with_for_update=True)
            assert row is not None
            current = _epoch_of(ctx.store.get(marker))
            if current != row.epoch:
                if row.epoch == 0 and current is None:
                    row.epoch = 1  # the namespace's first epoch: nothing was accepted before it
                elif current is None or current > row.epoch:
                    # Redis lost the marker (or holds one from a later epoch than a restored database).
                    # An in-process store knows when it began empty (its process started): nothing
                    # it accepted is older. Redis does not say when it lost its data: from now on.
                    born = ctx.store.born_unix
                    start = born if born is not None else int(time.time())
                    row.epoch = max(row.epoch, current or 0) + 1
                    row.started_unix = start
                    row.not_before_unix = start + (margin if born is None else 0)
                    log.warning(
                        "Redis lost its nonces (namespace %r): nonce epoch %d begins; requests "
                        "signed before %d are refused",
                        namespace,
                        row.epoch,
                        start,
                    )
                # else: a marker left behind by an interrupted marker write; raise it to the epoch.
                ctx.store.raise_markers(all_markers(), row.epoch)
                row.changed_at_ms = int(time.time() * 1000)
            epoch = Epoch(row.epoch, row.started_unix, row.not_before_unix, row.changed_at_ms)
    guard.cached = epoch
    return epoch


def _ensure_row(ctx: ServiceContext, namespace: str) -> None:
    """Create the namespace's epoch row (epoch 0: no markers written yet) unless it exists."""
    with ctx.sessions() as s:
        if s.get(NonceEpoch, namespace) is not None:
            return
    try:
        with ctx.sessions.begin() as s:
            s.add(
                NonceEpoch(
                    namespace=namespace,
                    epoch=0,
                    started_unix=0,
                    not_before_unix=0,
                    changed_at_ms=int(time.time() * 1000),
                )
            )
    except IntegrityError:
        pass  # another worker created it a moment ago


def _epoch_of(value: bytes | None) -> int | None:
    return int(value) if value else None
