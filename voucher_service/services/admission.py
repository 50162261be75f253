"""What a request must pass in the FastStore before its database work, asked in one round trip.

A claim's request nonce, its rate limits and its tier's sold-out gate are the steps of one Lua script
(FastStore.admit): the script stops at the first step that refuses, so a replayed request counts against
no limit and a limited one reads no gate, exactly as when each was asked on its own. The keys of one
request share a hash tag where they can (services.shards); where they cannot (a platform's claim counts
against its holder's limit too), a Redis Cluster runs one script per slot, in the same order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from voucher_service.adapters.redis_store import CountStep, FlagStep, Step
from voucher_service.domain.errors import RateLimited, Unauthorized
from voucher_service.services import credentials, nonces
from voucher_service.services.context import ServiceContext


@dataclass(frozen=True)
class Limit:
    """At most `limit` hits per fixed window of `window_s` on the counter `key` (with its hash tag)."""

    key: str
    window_s: int
    limit: int
    refusal: str  # what the 429 says, before "; retry after N s."


def admit(
    ctx: ServiceContext,
    nonce: nonces.PendingNonce | None,
    limits: Sequence[Limit],
    gate: str | None = None,
    session: credentials.SessionClaims | None = None,
) -> bool:
    """Remember the nonce (or check the consumer session), count the limits in order and read the gate;
    raise as the first refusing check would (replayed_request, service_unavailable, unauthorized,
    rate_limited); return whether `gate` is set."""
    now = int(time.time())
    counts = [CountStep(f"{lim.key}:{now // lim.window_s}", lim.window_s + 1, lim.limit) for lim in limits]
    after: list[Step] = [*counts, *([FlagStep(gate)] if gate is not None else [])]
    if session is not None:
        results = ctx.store.admit([credentials.session_step(session), *after])
        verdict = cast(int, results[0])
        if not credentials.session_live(ctx, session, verdict):
            raise Unauthorized("Invalid or expired credentials.")
        results = results[1:]
        if after and not results:  # the state was not cached: read, then the rest
            results = ctx.store.admit(after)
    elif nonce is None:
        results = ctx.store.admit(after)
    else:
        check = nonces.nonce_check(ctx, nonce)
        results = ctx.store.admit([check.step, *after])
        nonces.judge(ctx, check, results[0])
        results = results[1:]
        if after and not results:  # the script stopped at the nonce: its epoch had to be settled first
            results = ctx.store.admit(after)
    for lim, hits in zip(limits, results, strict=False):
        if cast(int, hits) > lim.limit:
            reset = lim.window_s - int(time.time()) % lim.window_s
            raise RateLimited(reset, f"{lim.refusal}; retry after {reset} s.")
    return gate is not None and bool(results[len(counts)])
