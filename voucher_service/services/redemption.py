"""Redeeming a voucher at checkout, exactly once, online or replayed from an offline till.

Exactly once is the database's job: the voucher row moves `issued -> redeemed` with one conditional
UPDATE, and the partial unique index on active redemptions is the second guard. The redemption, its
lines, the revocation event, the ledger movement, the audit entry and the idempotency answer all
commit in that one transaction.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import Engine, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper, Session

from voucher_service.adapters.db.models import (
    CertifiedProduct,
    Redemption,
    RedemptionLine,
    Voucher,
)
from voucher_service.adapters.db.redemptions import (
    AlreadyRedeemed,
    Completion,
    ProgramFacts,
    RedemptionWrite,
    VoucherFacts,
    checkout_facts,
    write_redemption,
)
from voucher_service.adapters.lru import LRU
from voucher_service.domain.books import BUCKET_OF_REDEEMABLE_STATUS
from voucher_service.domain.clock import local_date, parse_rfc3339
from voucher_service.domain.eligibility import (
    BasketLine,
    BasketVerdict,
    EligibilityScope,
    ProductSnapshot,
    gtin14,
    judge_basket,
)
from voucher_service.domain.errors import (
    MerchantNotEnrolled,
    NoEligibleItems,
    ProgramNotActive,
    ThresholdNotMet,
    TokenInvalid,
    ValidationFailed,
    VoucherAlreadyRedeemed,
    VoucherExpired,
    VoucherNotYetValid,
    VoucherServiceError,
    VoucherVoid,
)
from voucher_service.domain.programs import window_verdict
from voucher_service.domain.states import (
    OfflineVerdict,
    RedemptionStatus,
    VoucherStatus,
    check_transition,
)
from voucher_service.domain.tokens import ReceiptClaims, VoucherClaims
from voucher_service.services import audit_log, idempotency, ledger, registry, voucher_status
from voucher_service.services.context import ServiceContext
from voucher_service.services.idempotency import KeyedRequest, Once, StoredResponse
from voucher_service.services.redemption_records import encode_json, redemption_json
from voucher_service.services.tokens import sign_receipt, verify_voucher_token

# Which ledger bucket a voucher's face value sits in, by the status it is redeemed from.
BUCKET_OF_STATUS = BUCKET_OF_REDEEMABLE_STATUS


def _redeemable_from(*states: VoucherStatus) -> tuple[VoucherStatus, ...]:
    """States the redemption's write may take a voucher from, each checked against TRANSITIONS."""
    for state in states:
        check_transition(state, VoucherStatus.REDEEMED)
    return states


# Online, only an issued voucher; an offline till's record also one that has expired since it was made.
REDEEMABLE_FROM = {
    "online": _redeemable_from(VoucherStatus.ISSUED),
    "offline": _redeemable_from(VoucherStatus.ISSUED, VoucherStatus.EXPIRED),
}


@dataclass(frozen=True)
class RedemptionRequest:
    """A checkout as the merchant describes it."""

    token: str
    order_id: str
    channel: str
    terminal_id: str | None
    items: tuple[BasketLine, ...]


@dataclass(frozen=True)
class _Assessment:
    claims: VoucherClaims
    voucher: VoucherFacts
    program: ProgramFacts
    verdict: BasketVerdict
    at: dt.datetime


def preview_redemption(ctx: ServiceContext, merchant_id: str, req: RedemptionRequest) -> dict[str, Any]:
    """Compute what a redemption would give now, writing nothing."""
    now = ctx.now()
    claims = verify_voucher_token(ctx, req.token)
    with ctx.sessions() as s:
        a = _assess(s, merchant_id, req, claims, now, offline=False)
    r, lines = _rows(a, merchant_id, req, redemption_id="", receipt="", source="online")
    return redemption_json(r, lines, preview=True)


@dataclass(frozen=True)
class Redeemed:
    """A redemption just made: the contract's 201 object and its exact JSON bytes (as stored for the key)."""

    redemption: dict[str, Any]
    body: bytes


def redeem_once(
    ctx: ServiceContext, merchant_id: str, req: RedemptionRequest, keyed: KeyedRequest
) -> StoredResponse:
    """Redeem at most once per Idempotency-Key; a repeat gets the first answer (or refusal) byte for byte.

    On PostgreSQL the key is taken in the redemption's own transaction, so one commit does it all."""
    with idempotency.owner(ctx, keyed, deferred=True) as once:
        if not once.replayed:
            redeem_voucher(ctx, merchant_id, req, once)
    return once.result()


def redeem_voucher(
    ctx: ServiceContext, merchant_id: str, req: RedemptionRequest, once: Once | None = None
) -> Redeemed | None:
    """Redeem the voucher for this basket, once; store the answer under the key `once` owns. None when the
    key, taken in the transaction, turned out to have its answer already (`once.result()` is it)."""
    now = ctx.now()
    deferred = once is not None and once.deferred
    if not deferred:
        # Before the transaction: the key ring may read the database, which on SQLite cannot begin while
        # this thread holds the write lock.
        claims = verify_voucher_token(ctx, req.token)
        redemption_id, receipt = _receipt(ctx, claims, merchant_id, now)
    with ctx.sessions.begin() as s:
        if deferred:
            assert once is not None
            if once.take(s) is not None:
                return None  # the key's answer: replayed, nothing done
            # After the key: a repeat gets the stored answer even if its token no longer verifies.
            claims = verify_voucher_token(ctx, req.token)
            redemption_id, receipt = _receipt(ctx, claims, merchant_id, now)
        a = _assess(s, merchant_id, req, claims, now, offline=False)
        done = _record(ctx, s, merchant_id, req, a, redemption_id, receipt, source="online", once=once)
    voucher_status.status_changed(ctx, claims.voucher_id)  # an open voucher page shows it at once
    if ctx.settings.env == "test" and ctx.settings.crash_after_commit:
        # End-to-end tests kill the worker between the commit and the reply, as a crash would.
        os._exit(1)
    return done


def record_offline_redemption(
    ctx: ServiceContext,
    session: Session,
    merchant_id: str,
    terminal_id: str,
    payload: Mapping[str, Any],
    offline_rules: Callable[[Session, str, dt.datetime, int], None] | None = None,
) -> tuple[str, str | None, str | None]:
    """Record a redemption an offline till made, in the caller's transaction: (status, code, redemption_id).

    Judged as of the till's `redeemed_at` (a voucher valid then is accepted even if it has expired since);
    a voucher already redeemed gives ("conflict", "voucher_already_redeemed", None), never an exception.
    `offline_rules(session, program_id, redeemed_at, discount_fen)` then applies the offline limits
    (services.offline_sync) to a redemption that is otherwise sound, raising to refuse it.
    """
    try:
        req, at, voucher_id = _offline_request(payload, terminal_id)
        if at > ctx.now() + dt.timedelta(seconds=ctx.settings.signature_window_s):
            raise ValidationFailed(
                "redeemed_at is in the future.",
                [{"field": "redeemed_at", "message": "is later than the server's clock"}],
            )
        claims = verify_voucher_token(ctx, req.token, at=at, session=session)  # a VP1 is judged as of `at`
        if claims.voucher_id != voucher_id:
            raise TokenInvalid("The record's voucher_id is not the token's voucher.")
        redemption_id, receipt = _receipt(ctx, claims, merchant_id, at)
        with session.begin_nested():
            a = _assess(session, merchant_id, req, claims, at, offline=True)
            if offline_rules is not None:
                offline_rules(session, claims.program_id, at, a.verdict.discount_fen)
            _record(ctx, session, merchant_id, req, a, redemption_id, receipt, source="offline", once=None)
    except VoucherAlreadyRedeemed:
        return OfflineVerdict.CONFLICT, "voucher_already_redeemed", None
    except VoucherServiceError as exc:
        return OfflineVerdict.REJECTED, exc.code, None
    return OfflineVerdict.ACCEPTED, None, redemption_id


def _receipt(
    ctx: ServiceContext, claims: VoucherClaims, merchant_id: str, at: dt.datetime
) -> tuple[str, str]:
    """A new redemption id and its VR1 receipt, signed before any transaction opens: the key ring may read
    the database, which on SQLite cannot begin while this thread holds the write lock. The discount it
    states is the token's face value, which _assess holds to the voucher row's."""
    redemption_id = str(uuid.uuid4())
    moment = int(at.timestamp())
    facts = ReceiptClaims(redemption_id, claims.voucher_id, merchant_id, claims.face_value_fen, moment)
    return redemption_id, sign_receipt(ctx, facts)


# ---------------------------------------------------------------- judging


def _assess(
    s: Session,
    merchant_id: str,
    req: RedemptionRequest,
    claims: VoucherClaims,
    at: dt.datetime,
    *,
    offline: bool,
) -> _Assessment:
    """Check (after the token) voucher, enrolment, channel, programme and voucher state in the contract's
    order, then judge the basket; raise the first failure."""
    gtins = sorted({g for g in (gtin14(i.gtin) for i in req.items) if g is not None})
    facts = checkout_facts(s, claims.voucher_id, merchant_id)
    if (
        facts is None
        or facts.voucher.program_id != claims.program_id
        or facts.voucher.status == VoucherStatus.AVAILABLE
    ):
        raise TokenInvalid("The token names no issued voucher of its programme.")
    voucher, program, channels, registry_version = facts
    if not _same_issuance(voucher, claims):
        raise TokenInvalid("The token does not match this voucher's issuance (superseded or altered terms).")
    if channels is None:
        raise MerchantNotEnrolled("The merchant is not enrolled in this voucher's programme.")
    if req.channel not in channels or req.channel not in program.channels:
        raise MerchantNotEnrolled(f"The merchant is not enrolled for this programme's {req.channel} channel.")
    _check_program(program, at, offline)
    _check_voucher(voucher, claims, at, offline)
    by_gtin, by_sku = _registry_snapshot(s, merchant_id, req.items, gtins, registry_version)
    scope = EligibilityScope.from_program(program.eligibility)
    verdict = judge_basket(
        req.items,
        by_gtin,
        by_sku,
        scope,
        local_date(at, program.timezone),
        face_value_fen=voucher.face_value_fen,
        min_spend_fen=voucher.min_spend_fen,
    )
    lines = [v.to_json() for v in verdict.lines]
    if not verdict.has_eligible_line:
        raise NoEligibleItems("No line is a certified product within the programme's scope.", lines=lines)
    if not verdict.threshold_met:
        raise ThresholdNotMet(
            f"The eligible total {verdict.eligible_total_fen} fen is below the minimum spend of "
            f"{verdict.min_spend_fen} fen.",
            lines,
            eligible_total_fen=verdict.eligible_total_fen,
            min_spend_fen=verdict.min_spend_fen,
        )
    return _Assessment(claims, voucher, program, verdict, at)


def _same_issuance(voucher: VoucherFacts, claims: VoucherClaims) -> bool:
    # A voucher issued again (new window) must not be redeemed with an older token, and the token's
    # terms, on which the receipt is signed, must be the voucher's.
    if voucher.expires_at is None or voucher.valid_from is None:
        return False
    window = (int(voucher.valid_from.timestamp()), int(voucher.expires_at.timestamp()))
    terms = (voucher.tier_code, voucher.face_value_fen, voucher.min_spend_fen)
    stated = (claims.tier, claims.face_value_fen, claims.min_spend_fen)
    return window == (claims.nbf, claims.exp) and terms == stated


def _check_program(program: ProgramFacts, at: dt.datetime, offline: bool) -> None:
    if offline:
        # A till offline cannot learn of a suspension; what counts is that the programme ran then.
        activated = program.activated_at is not None and program.activated_at <= at
        if not activated or not program.starts_at <= at <= program.ends_at:
            raise ProgramNotActive("The programme was not running at the time of the offline redemption.")
        return
    why = window_verdict(program.status, program.starts_at, program.ends_at, at)
    if why is not None:
        raise ProgramNotActive(f"No redemptions now: {why}.")


def _check_voucher(voucher: VoucherFacts, claims: VoucherClaims, at: dt.datetime, offline: bool) -> None:
    assert voucher.expires_at is not None and voucher.valid_from is not None
    if voucher.status == VoucherStatus.VOID:
        raise VoucherVoid("The voucher was voided.")
    if voucher.status == VoucherStatus.REDEEMED:
        raise VoucherAlreadyRedeemed("The voucher was already redeemed.")
    moment = int(at.timestamp())
    expired_status = voucher.status == VoucherStatus.EXPIRED and not offline
    if expired_status or at >= voucher.expires_at or claims.time_verdict(moment) == "voucher_expired":
        raise VoucherExpired("The voucher has expired.")
    if at < voucher.valid_from or claims.time_verdict(moment) == "voucher_not_yet_valid":
        raise VoucherNotYetValid("The voucher is not valid yet.")
    if voucher.status not in BUCKET_OF_STATUS:
        raise TokenInvalid(f"The voucher cannot be redeemed in state {voucher.status}.")


def _snapshot(row: Any) -> ProductSnapshot:
    return ProductSnapshot(
        row.certification_no,
        row.certification_type,
        row.county_code,
        row.valid_from,
        row.valid_to,
        row.status,
    )


class ProductCache:
    """The registry facts of GTINs, kept in process per registry version (the last import's seq), so a
    redemption does not read the products of its basket again; imports are the only writers of the
    registry and each bumps the version. Bounded; only known GTINs are kept (an unknown one is looked up
    again, since a product may be added without an import in a test or a repair)."""

    def __init__(self, max_size: int = 20_000) -> None:
        self._known: LRU[tuple[int, str], ProductSnapshot] = LRU(max_size)

    def snapshots(self, s: Session, version: int, gtins: Sequence[str]) -> dict[str, ProductSnapshot]:
        """The products of the GTINs at this registry version, from the cache or, for the rest, the database."""
        found: dict[str, ProductSnapshot] = {}
        missing = []
        for g in gtins:
            hit = self._known.get((version, g))
            if hit is None:
                missing.append(g)
            else:
                found[g] = hit
        if missing:
            for g, row in registry.product_snapshots_by_gtin(s, missing).items():
                found[g] = snapshot = _snapshot(row)
                self._known.put((version, g), snapshot)
        return found


_caches: weakref.WeakKeyDictionary[Engine, ProductCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def product_cache(s: Session) -> ProductCache:
    """The product cache of the session's database (one per engine, so apps in one process never mix)."""
    engine = s.get_bind()
    assert isinstance(engine, Engine)
    with _caches_lock:
        found = _caches.get(engine)
        if found is None:
            found = _caches[engine] = ProductCache()
        return found


def _registry_snapshot(
    s: Session,
    merchant_id: str,
    items: Iterable[BasketLine],
    gtins: Sequence[str],
    registry_version: int,
) -> tuple[dict[str, ProductSnapshot], dict[str, ProductSnapshot]]:
    """The products the basket's GTINs (cached per registry version) and, for lines a GTIN does not
    resolve, approved SKUs stand for."""
    items = list(items)
    by_gtin = product_cache(s).snapshots(s, registry_version, gtins) if gtins else {}
    # Only lines whose GTIN is absent, or valid but unknown, fall back to the SKU mapping.
    skus = {
        i.sku
        for i in items
        if i.sku is not None
        and (i.gtin is None or (gtin14(i.gtin) is not None and gtin14(i.gtin) not in by_gtin))
    }
    by_sku: dict[str, ProductSnapshot] = {}
    if skus:
        certification_of = registry.approved_sku_map(s, merchant_id, sorted(skus))
        if certification_of:
            products = {
                p.certification_no: _snapshot(p)
                for p in s.scalars(
                    select(CertifiedProduct).where(
                        CertifiedProduct.certification_no.in_(sorted(set(certification_of.values())))
                    )
                )
            }
            by_sku = {sku: products[no] for sku, no in certification_of.items() if no in products}
    return by_gtin, by_sku


# ---------------------------------------------------------------- recording


def _rows(
    a: _Assessment, merchant_id: str, req: RedemptionRequest, *, redemption_id: str, receipt: str, source: str
) -> tuple[Redemption, list[RedemptionLine]]:
    v = a.verdict
    r = Redemption(
        id=redemption_id,
        voucher_id=a.voucher.id,
        program_id=a.program.id,
        merchant_id=merchant_id,
        order_id=req.order_id,
        channel=req.channel,
        terminal_id=req.terminal_id,
        order_total_fen=v.order_total_fen,
        eligible_total_fen=v.eligible_total_fen,
        discount_fen=v.discount_fen,
        clawed_back_fen=0,
        status=check_transition(None, RedemptionStatus.ACTIVE),
        redeemed_at=a.at,
        receipt=receipt,
        source=source,
    )
    lines = [
        RedemptionLine(
            redemption_id=redemption_id,
            index=lv.index,
            gtin=item.gtin,
            sku=item.sku,
            name=item.name,
            quantity=item.quantity,
            unit_price_fen=item.unit_price_fen,
            line_total_fen=lv.line_total_fen,
            eligible=lv.eligible,
            reason=lv.reason,
            certification_no=lv.certification_no,
            county_code=lv.county_code,
            discount_share_fen=lv.discount_share_fen,
            returned_quantity=0,
        )
        for lv, item in zip(v.lines, req.items, strict=True)
    ]
    return r, lines


def _record(
    ctx: ServiceContext,
    s: Session,
    merchant_id: str,
    req: RedemptionRequest,
    a: _Assessment,
    redemption_id: str,
    receipt: str,
    *,
    source: str,
    once: Once | None,
) -> Redeemed:
    """Take the voucher and write everything of the redemption in the session's transaction."""
    now = ctx.now()
    r, lines = _rows(a, merchant_id, req, redemption_id=redemption_id, receipt=receipt, source=source)
    payload = redemption_json(r, lines)
    body = encode_json(payload)
    allowed = REDEEMABLE_FROM[source]
    facts = {
        "voucher_id": a.voucher.id,
        "order_id": req.order_id,
        "discount_fen": a.verdict.discount_fen,
        "channel": req.channel,
        "terminal_id": req.terminal_id,
        "source": source,
    }
    actor = f"merchant:{merchant_id}"
    write = RedemptionWrite(
        redemption=_column_values(r),
        lines=[_column_values(x) for x in lines],
        event={"program_id": a.program.id, "voucher_id": a.voucher.id, "kind": "redeemed", "created_at": now},
        ledger=ledger.entry(
            program_id=a.program.id,
            kind="redeem",
            from_bucket=BUCKET_OF_STATUS[a.voucher.status],  # checked; the write takes the state it finds
            to_bucket="redeemed",
            amount_fen=a.verdict.discount_fen,
            at=now,
            voucher_id=a.voucher.id,
            ref=redemption_id,
        ),
        audit=audit_log.entry(actor, "redemption.created", "redemption", redemption_id, facts, now),
        allowed=allowed,
        now=now,
        completion=_completion(once, body),
    )
    try:
        written = write_redemption(s, write)
    except AlreadyRedeemed:  # the partial unique index: another active redemption of this voucher
        raise VoucherAlreadyRedeemed("The voucher was already redeemed.") from None
    if not written.finished:
        raise idempotency.lease_lost()
    if written.from_status is None:
        _refusal(s, a.voucher.id)
    if once is not None:
        once.completed(201, body)  # the write stored it under the claim
    return Redeemed(payload, body)


def _completion(once: Once | None, body: bytes) -> Completion | None:
    claim = None if once is None else once.claim
    if claim is None:
        return None
    return Completion(claim.merchant_id, claim.key, claim.fence(), 201, body)


def _column_values(row: Redemption | RedemptionLine) -> dict[str, Any]:
    mapper: Mapper[Any] = sa_inspect(type(row))
    return {attr.key: getattr(row, attr.key) for attr in mapper.column_attrs}


def _refusal(s: Session, voucher_id: str) -> NoReturn:
    """Raise why the voucher could not be taken, as it stands now (a fresh read, after our UPDATE)."""
    current, recycled_at = s.execute(
        select(Voucher.status, Voucher.recycled_at).where(Voucher.id == voucher_id)
    ).one()
    if current == VoucherStatus.REDEEMED:
        raise VoucherAlreadyRedeemed("The voucher was already redeemed.")
    if recycled_at is not None:
        # An offline till spent it before it expired, but its value has since gone back to the pool
        # and may be spent again: a double spend for reconciliation, not a plain refusal.
        raise VoucherAlreadyRedeemed("The voucher expired and its value was recycled to the pool.")
    if current == VoucherStatus.VOID:
        raise VoucherVoid("The voucher was voided.")
    raise VoucherExpired("The voucher has expired.")


# ---------------------------------------------------------------- offline records


def _bad(field: str, message: str) -> ValidationFailed:
    errors = [{"field": field, "message": message}]
    return ValidationFailed(f"The offline record's {field} {message}.", errors)


def _offline_request(
    payload: Mapping[str, Any], terminal_id: str
) -> tuple[RedemptionRequest, dt.datetime, str]:
    """Check an offline record's fields; raise ValidationFailed naming the first bad one."""

    token, order_id, voucher_id = payload.get("token"), payload.get("order_id"), payload.get("voucher_id")
    if not isinstance(token, str) or not token:
        raise _bad("token", "must be text")
    if not isinstance(order_id, str) or not 1 <= len(order_id) <= 128:
        raise _bad("order_id", "must be 1-128 characters")
    if not isinstance(voucher_id, str):
        raise _bad("voucher_id", "must be text")
    try:
        at = parse_rfc3339(str(payload.get("redeemed_at"))).replace(microsecond=0)
    except ValueError:
        raise _bad("redeemed_at", "must be an RFC 3339 time") from None
    items = payload.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= 200:
        raise _bad("items", "must be a list of 1-200 lines")
    lines = tuple(_basket_line(i, item) for i, item in enumerate(items))
    return RedemptionRequest(token, order_id, "offline", terminal_id, lines), at, voucher_id


def _basket_line(i: int, item: Any) -> BasketLine:
    if not isinstance(item, Mapping):
        raise _bad(f"items.{i}", "must be an object")
    gtin, sku, name = item.get("gtin"), item.get("sku"), item.get("name")
    qty, price = item.get("quantity"), item.get("unit_price_fen")
    if gtin is None and sku is None:
        raise _bad(f"items.{i}", "needs a gtin or a sku")
    for field, value, limit in (("gtin", gtin, 14), ("sku", sku, 64), ("name", name, 200)):
        if value is not None and (not isinstance(value, str) or not value or len(value) > limit):
            raise _bad(f"items.{i}.{field}", f"must be 1-{limit} characters")
    for field, value, low in (("quantity", qty, 1), ("unit_price_fen", price, 0)):
        if type(value) is not int or value < low:
            raise _bad(f"items.{i}.{field}", f"must be an integer of at least {low}")
    return BasketLine(gtin=gtin, sku=sku, quantity=qty, unit_price_fen=price, name=name)  # type: ignore[arg-type]
