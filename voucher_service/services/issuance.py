"""Claiming vouchers under a rush, a holder's vouchers, and their QR codes.

The claim path funnels nothing through one row or one lock:
- a sold-out tier is refused from a FastStore gate before any database work;
- the per-person limit is one counter row per (programme, holder), so only one holder's own
  claims contend, and its conditional upsert never lets the count pass the limit;
- the voucher is taken from the pre-minted pool with FOR UPDATE SKIP LOCKED, so concurrent claims
  take different rows and the tier (and the budget) cannot be overspent by construction;
- the ledger and audit entries are appended, never read, in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from voucher_service.adapters import qr
from voucher_service.adapters.db import claims as claims_db
from voucher_service.adapters.db.models import Enrolment, Program, Tier, Voucher
from voucher_service.adapters.lru import LRU
from voucher_service.adapters.signing import LoadedKey, encode_token
from voucher_service.domain.books import CLAIM_MOVE
from voucher_service.domain.clock import rfc3339
from voucher_service.domain.errors import (
    ClaimLimitReached,
    Forbidden,
    MerchantNotEnrolled,
    NotFound,
    ProgramNotActive,
    TierSoldOut,
    ValidationFailed,
    VoucherServiceError,
)
from voucher_service.domain.presentations import HolderKey
from voucher_service.domain.programs import voucher_window, window_verdict
from voucher_service.domain.states import ProgramStatus, VoucherStatus, check_transition
from voucher_service.domain.tokens import VoucherClaims
from voucher_service.services import admission, audit_log, holder_binding, idempotency, ledger, shards
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import SessionClaims
from voucher_service.services.idempotency import KeyedRequest, Once, StoredResponse
from voucher_service.services.nonces import PendingNonce
from voucher_service.services.programs import sold_out_key, sold_out_keys
from voucher_service.services.redemption_records import encode_json

# A gate may hide vouchers that come back to the pool (recycled after expiry) for this long at most.
SOLD_OUT_GATE_TTL_S = 60
RATE_WINDOW_S = 60
QR_CACHE_TTL_S = 86_400
MAX_LISTED_VOUCHERS = 500
EventCounter = Callable[[str], None]


@dataclass(frozen=True)
class TierTerms:
    code: str
    face_value_fen: int
    min_spend_fen: int


@dataclass(frozen=True)
class ProgramTerms:
    """What a claim needs to know of a programme and that does not change once it is created."""

    id: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    voucher_validity_days: int
    per_person_limit: int
    tiers: dict[str, TierTerms]


@dataclass(frozen=True)
class Claimant:
    """Who a voucher is claimed for, and by whom."""

    holder_hash: str
    actor: str
    merchant_id: str | None = None  # the platform merchant claiming on the holder's behalf
    holder_key: HolderKey | None = None  # the device key a holder-bound voucher names (CONTRACT §10)


class ProgramCatalog:
    """Programme terms and enrolments kept in process for a short while, so claims skip those reads.

    Only facts that do not change are cached (terms are fixed at creation, enrolments are never
    withdrawn); the programme's status is read inside each claim's transaction.
    """

    def __init__(self, ttl_s: float = 30.0, max_size: int = 1024) -> None:
        self._ttl = ttl_s
        # Bounded: only existing programmes and real enrolments get in, but never without a limit.
        self._terms: LRU[str, tuple[float, ProgramTerms]] = LRU(max_size)
        self._enrolled: LRU[tuple[str, str], float] = LRU(4 * max_size)

    def terms(self, ctx: ServiceContext, program_id: str) -> ProgramTerms:
        """The programme's terms; raise NotFound for an unknown programme (never cached)."""
        now = time.monotonic()
        hit = self._terms.get(program_id)
        if hit and hit[0] > now:
            return hit[1]
        with ctx.sessions() as s:
            program = s.get(Program, program_id)
            if program is None:
                raise NotFound(f"No programme {program_id}.")
            tiers = s.scalars(select(Tier).where(Tier.program_id == program_id))
            terms = ProgramTerms(
                id=program.id,
                starts_at=program.starts_at,
                ends_at=program.ends_at,
                voucher_validity_days=program.voucher_validity_days,
                per_person_limit=program.per_person_limit,
                tiers={t.code: TierTerms(t.code, t.face_value_fen, t.min_spend_fen) for t in tiers},
            )
        self._terms.put(program_id, (now + self._ttl, terms))
        return terms

    def is_enrolled(self, ctx: ServiceContext, program_id: str, merchant_id: str) -> bool:
        """Whether the merchant takes part in the programme (positive answers are cached)."""
        now = time.monotonic()
        if (self._enrolled.get((program_id, merchant_id)) or 0.0) > now:
            return True
        with ctx.sessions() as s:
            enrolled = s.get(Enrolment, (program_id, merchant_id)) is not None
        if enrolled:
            self._enrolled.put((program_id, merchant_id), now + self._ttl)
        return enrolled

    def cached(self, program_id: str, merchant_id: str | None) -> ProgramTerms | None:
        """The programme's terms when they (and the merchant's enrolment) are cached; no database work."""
        now = time.monotonic()
        hit = self._terms.get(program_id)
        if hit is None or hit[0] <= now:
            return None
        if merchant_id is not None and (self._enrolled.get((program_id, merchant_id)) or 0.0) <= now:
            return None
        return hit[1]


class _Refused(Exception):
    """Inside the claim transaction: roll back, then explain why (limit or empty pool)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _claim_limits(ctx: ServiceContext, claimant: Claimant) -> list[admission.Limit]:
    """The holder's claim limit, then the platform merchant's (under its nonce's hash tag)."""
    per_minute = ctx.settings.claim_rate_per_minute
    holder = claimant.holder_hash
    limits = [
        admission.Limit(
            f"{shards.holder_tag(holder)}:rate:claim:holder:{holder}",
            RATE_WINDOW_S,
            per_minute,
            "Too many claims by this holder",
        )
    ]
    if claimant.merchant_id is not None:
        merchant = claimant.merchant_id
        limits.append(
            admission.Limit(
                f"{shards.merchant_tag(merchant)}:rate:claim:merchant:{merchant}",
                RATE_WINDOW_S,
                per_minute,
                "Too many claims by this merchant",
            )
        )
    return limits


def _tier_of(terms: ProgramTerms, tier_code: str, now: dt.datetime) -> TierTerms:
    """The tier claimed, once the programme's (fixed) window is open; the status is checked in the
    transaction."""
    verdict = window_verdict(ProgramStatus.ACTIVE, terms.starts_at, terms.ends_at, now)
    if verdict:
        raise ProgramNotActive(f"Claims are closed: {verdict}.")
    tier = terms.tiers.get(tier_code)
    if tier is None:
        known = ", ".join(sorted(terms.tiers))
        raise ValidationFailed(
            f"Programme {terms.id} has no tier {tier_code!r}.",
            [{"field": "tier", "message": f"must be one of {known}"}],
        )
    return tier


def claim_voucher(
    ctx: ServiceContext,
    program_id: str,
    tier_code: str,
    claimant: Claimant,
    *,
    catalog: ProgramCatalog | None = None,
    count: EventCounter | None = None,
    once: Once | None = None,
    present: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    nonce: PendingNonce | None = None,
    session: SessionClaims | None = None,
) -> dict[str, Any]:
    """Issue one pool voucher of a tier to a holder; return the voucher with its signed token.

    Under an Idempotency-Key (`once`), the answer (the voucher as `present` shows it) is stored in the
    claim's own transaction. `nonce`, a platform request's nonce not yet remembered (or `session`, a
    consumer session not yet checked against logouts), is checked first, in the same FastStore round
    trip as the rate limits and, when the programme is cached, the sold-out gate.
    """
    count = count or (lambda _event: None)
    catalog = catalog or ProgramCatalog()
    limits = _claim_limits(ctx, claimant)
    now = ctx.now()
    # Checked in this order, as if one after the other: nonce, limits, programme, enrolment, window,
    # tier, gate. With the programme cached, its checks need no database, so the gate joins the script
    # (its copy under the last limit's hash tag) and a refusal of theirs waits for the script's verdict.
    terms = catalog.cached(program_id, claimant.merchant_id)
    tier: TierTerms | None = None
    refusal: VoucherServiceError | None = None
    gate: str | None = None
    if terms is not None:
        try:
            tier = _tier_of(terms, tier_code, now)
            merchant = claimant.merchant_id
            tag = shards.merchant_tag(merchant) if merchant else shards.holder_tag(claimant.holder_hash)
            gate = sold_out_key(program_id, tier_code, tag)
        except VoucherServiceError as exc:
            refusal = exc
    closed = admission.admit(ctx, nonce, limits, gate, session)
    if refusal is not None:
        raise refusal
    if terms is None or tier is None:  # not cached: read now that the limits let the claim through
        terms = catalog.terms(ctx, program_id)
        merchant = claimant.merchant_id
        if merchant is not None and not catalog.is_enrolled(ctx, program_id, merchant):
            raise MerchantNotEnrolled(f"Merchant {merchant} is not enrolled in this programme.")
        tier = _tier_of(terms, tier_code, now)
        closed = ctx.store.get(sold_out_key(program_id, tier_code)) is not None
    if closed:
        count("claims_sold_out_fast")
        raise TierSoldOut(f"Tier {tier_code} is sold out.")
    claimant, bind = holder_binding.prepare_claim(ctx, program_id, claimant, None)
    # Fetched before the transaction: the key ring may reload from the database, and on SQLite a
    # second connection opened inside our write transaction would wait for our own lock.
    key = ctx.keys.active()
    try:
        with ctx.sessions.begin() as s:
            out = _claim_in_transaction(s, key, terms, tier, claimant, now)
            if bind is not None:  # the holder's device key, in the claim's own transaction
                bind(s, out)
            if once is not None:
                once.complete(s, 201, encode_json(present(out) if present else out))
    except _Refused as refused:
        error = _explain_refusal(ctx, terms, tier, refused.reason)
        count(f"claims_refused_{error.code}")
        raise error from None
    count("claims_issued")
    return out


def claim_once(
    ctx: ServiceContext,
    program_id: str,
    tier_code: str,
    claimant: Claimant,
    keyed: KeyedRequest,
    *,
    catalog: ProgramCatalog | None = None,
    count: EventCounter | None = None,
    present: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> StoredResponse:
    """Claim at most once per Idempotency-Key (a platform's retry gets the same voucher, byte for byte)."""
    with idempotency.owner(ctx, keyed) as once:
        if not once.replayed:
            claim_voucher(
                ctx, program_id, tier_code, claimant, catalog=catalog, count=count, once=once, present=present
            )
    return once.result()


def _claim_in_transaction(
    s: Session, key: LoadedKey, terms: ProgramTerms, tier: TierTerms, claimant: Claimant, now: dt.datetime
) -> dict[str, Any]:
    reservation = claims_db.reserve(s, terms.id, tier.code, claimant.holder_hash, terms.per_person_limit)
    if not reservation.counted:
        raise _Refused("limit")
    voucher_id = reservation.voucher_id
    if voucher_id is None:
        raise _Refused("empty")
    valid_from, expires_at = voucher_window(now, terms.voucher_validity_days, terms.ends_at)
    claims = VoucherClaims(
        voucher_id=voucher_id,
        program_id=terms.id,
        tier=tier.code,
        face_value_fen=tier.face_value_fen,
        min_spend_fen=tier.min_spend_fen,
        iat=int(now.timestamp()),
        nbf=int(valid_from.timestamp()),
        exp=int(expires_at.timestamp()),
        holder_key=claimant.holder_key,
    )
    assert key.private_key is not None
    token = encode_token(key.private_key, key.kid_bytes, claims.to_cbor_map())
    audit_data = {
        "program_id": terms.id,
        "tier": tier.code,
        "holder": claimant.holder_hash[:12],
        "merchant_id": claimant.merchant_id,
    }
    claims_db.issue(
        s,
        claims_db.Issue(
            voucher_id=voucher_id,
            voucher=claims_db.IssuedVoucher(
                status=check_transition(VoucherStatus.AVAILABLE, VoucherStatus.ISSUED),
                holder_hash=claimant.holder_hash,
                claimed_by_merchant_id=claimant.merchant_id,
                claimed_at=now,
                valid_from=valid_from,
                expires_at=expires_at,
                kid=key.kid,
                token=token,
                status_changed_at=now,
            ),
            ledger=ledger.entry(
                program_id=terms.id,
                kind="claim",
                from_bucket=CLAIM_MOVE[0],
                to_bucket=CLAIM_MOVE[1],
                amount_fen=tier.face_value_fen,
                at=now,
                voucher_id=voucher_id,
                ref=tier.code,
            ),
            audit=audit_log.entry(claimant.actor, "voucher.claimed", "voucher", voucher_id, audit_data, now),
        ),
    )
    return {
        "voucher_id": voucher_id,
        "program_id": terms.id,
        "tier": tier.code,
        "face_value_fen": tier.face_value_fen,
        "min_spend_fen": tier.min_spend_fen,
        "valid_from": rfc3339(valid_from),
        "expires_at": rfc3339(expires_at),
        "token": token,
    }


def _explain_refusal(
    ctx: ServiceContext, terms: ProgramTerms, tier: TierTerms, reason: str
) -> VoucherServiceError:
    """After a rollback: a programme that is not active comes first, then the limit, then sold out."""
    with ctx.sessions() as s:
        status = s.scalar(select(Program.status).where(Program.id == terms.id))
        if status != ProgramStatus.ACTIVE:
            return ProgramNotActive(f"Claims are closed: the programme is {status}.")
        if reason == "limit":
            limit = terms.per_person_limit
            return ClaimLimitReached(f"This holder already has {limit} voucher(s) of this programme.")
        # SKIP LOCKED also skips rows other claims hold; close the gate only once none is left at all.
        left = s.scalar(
            select(Voucher.id)
            .limit(1)
            .where(
                Voucher.program_id == terms.id,
                Voucher.tier_code == tier.code,
                Voucher.status == VoucherStatus.AVAILABLE,
            )
        )
    if left is None:
        ctx.store.set_many(sold_out_keys(terms.id, tier.code), b"1", SOLD_OUT_GATE_TTL_S)
    return TierSoldOut(f"Tier {tier.code} is sold out.")


def holder_vouchers(ctx: ServiceContext, holder_hash: str) -> list[dict[str, Any]]:
    """A holder's vouchers, newest first; an issued voucher past its expiry shows as expired."""
    now = ctx.now()
    with ctx.sessions() as s:
        # Per programme, so the (program_id, holder_hash) index serves it: there are few programmes
        # and millions of vouchers.
        rows = s.scalars(
            select(Voucher)
            .where(Voucher.program_id.in_(select(Program.id)), Voucher.holder_hash == holder_hash)
            .order_by(Voucher.claimed_at.desc(), Voucher.id)
            .limit(MAX_LISTED_VOUCHERS)
        ).all()
    out = []
    for v in rows:
        status = v.status
        if status == VoucherStatus.ISSUED and v.expires_at is not None and v.expires_at <= now:
            status = VoucherStatus.EXPIRED
        out.append(
            {
                "voucher_id": v.id,
                "program_id": v.program_id,
                "tier": v.tier_code,
                "face_value_fen": v.face_value_fen,
                "min_spend_fen": v.min_spend_fen,
                "status": status,
                "valid_from": rfc3339(v.valid_from),
                "expires_at": rfc3339(v.expires_at),
                "token": v.token,
            }
        )
    return out


@dataclass(frozen=True)
class QrImage:
    body: bytes
    content_type: str
    etag: str  # unquoted entity tag


def voucher_qr(
    ctx: ServiceContext, voucher_id: str, fmt: str, *, holder_hash: str | None, merchant_id: str | None
) -> QrImage:
    """The QR code of a claimed voucher's token, for its holder or the platform that claimed it."""
    with ctx.sessions() as s:
        row = s.execute(
            select(Voucher.token, Voucher.holder_hash, Voucher.claimed_by_merchant_id).where(
                Voucher.id == voucher_id
            )
        ).first()
    if row is None or row.token is None:
        raise NotFound(f"No voucher {voucher_id}.")
    allowed = (holder_hash is not None and row.holder_hash == holder_hash) or (
        merchant_id is not None and row.claimed_by_merchant_id == merchant_id
    )
    if not allowed:
        raise Forbidden("Only the voucher's holder, or the platform that claimed it, may see its QR code.")
    # The token is part of the key: a voucher that is reissued after recycling gets a new image.
    digest = hashlib.sha256(f"{row.token}\x00{fmt}".encode()).hexdigest()[:32]
    key = f"qr:{voucher_id}:{digest}"
    body = ctx.store.get(key)
    if body is None:
        body = qr.render(row.token, fmt)
        ctx.store.set(key, body, QR_CACHE_TTL_S)
    return QrImage(body, qr.FORMATS[fmt], digest)
