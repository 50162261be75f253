"""Offline terminals: the programmes a merchant's tills need, and their uploaded journals.

A journal record (docs/merchant-sdk.md, "Offline record format") is signed with the terminal's key
and chained by hash to the one before it. Each uploaded record is judged in its own transaction,
with the terminal's row locked so that two uploads of one terminal are judged one after the other:

- already stored with the same seq and hash -> "duplicate" (with the stored code and redemption id);
- a bad hash, a bad signature, or a link that does not continue the stored chain -> "rejected", and
  every later record of the upload too; nothing of them is stored, so the terminal can send the
  right records again;
- otherwise the redemption service records it ("accepted"), finds it double-spent ("conflict",
  kept for reconciliation) or refuses it ("rejected" with the service's code); all three are stored
  and extend the chain, since the record itself is authentic.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import (
    Enrolment,
    OfflineRecord,
    Program,
    ProgramSuspension,
    SkuMapping,
    Terminal,
    Tier,
)
from voucher_service.adapters.signing import b64url_decode, public_key_from_jwk, verify_es256_raw
from voucher_service.domain.clock import parse_rfc3339, rfc3339
from voucher_service.domain.errors import (
    NotFound,
    OfflineLimitExceeded,
    OfflineRefreshRequired,
    ProgramNotActive,
)
from voucher_service.domain.states import OfflineVerdict, SkuMappingStatus
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext

GENESIS_HASH = "0" * 64
MAX_RECORDS_PER_UPLOAD = 500
# Integrity verdicts: the record is not part of the terminal's chain and is not stored.
BAD_HASH = "record_hash_mismatch"
BAD_SIGNATURE = "bad_signature"
CHAIN_BROKEN = "chain_broken"
SEQ_CONFLICT = "seq_conflict"
AFTER_REJECTED = "previous_record_rejected"
MALFORMED = "record_malformed"


@dataclass(frozen=True)
class UploadedRecord:
    """One journal record as the terminal sent it."""

    seq: int
    prev_hash: str
    record_hash: str
    signature: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class RecordResult:
    """The verdict on one record."""

    seq: int
    status: str  # accepted | duplicate | conflict | rejected
    code: str | None = None
    redemption_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The per-record answer of POST /offline-redemptions."""
        return {
            "seq": self.seq,
            "status": self.status,
            "code": self.code,
            "redemption_id": self.redemption_id,
        }


# ---------------------------------------------------------------- programmes for tills


def merchant_programs(ctx: ServiceContext, merchant_id: str) -> list[dict[str, Any]]:
    """The programmes the merchant is enrolled in, with the tiers, scope and limits a till needs."""
    with ctx.sessions() as s:
        programs = list(
            s.scalars(
                select(Program)
                .join(Enrolment, Enrolment.program_id == Program.id)
                .where(Enrolment.merchant_id == merchant_id)
                .order_by(Program.starts_at, Program.id)
            )
        )
        tiers: dict[str, list[Tier]] = {p.id: [] for p in programs}
        if programs:
            rows = s.scalars(
                select(Tier).where(Tier.program_id.in_(list(tiers))).order_by(Tier.position, Tier.code)
            )
            for tier in rows:
                tiers[tier.program_id].append(tier)
    return [_program_json(p, tiers[p.id]) for p in programs]


def approved_sku_mappings(ctx: ServiceContext, merchant_id: str) -> list[dict[str, str]]:
    """The merchant's admin-approved SKU mappings, by SKU: a till resolves SKU-only lines with them."""
    with ctx.sessions() as s:
        rows = s.execute(
            select(SkuMapping.sku, SkuMapping.certification_no)
            .where(SkuMapping.merchant_id == merchant_id, SkuMapping.status == SkuMappingStatus.APPROVED)
            .order_by(SkuMapping.sku)
        )
        return [{"sku": sku, "certification_no": cert} for sku, cert in rows]


def _program_json(p: Program, tiers: Sequence[Tier]) -> dict[str, Any]:
    out = _program_terms_json(p, tiers)
    if p.holder_binding != "off":  # a till then refuses bare tokens of `required` (CONTRACT §10)
        out["holder_binding"] = p.holder_binding
    return out


def _program_terms_json(p: Program, tiers: Sequence[Tier]) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "status": p.status,
        "starts_at": rfc3339(p.starts_at),
        "ends_at": rfc3339(p.ends_at),
        "timezone": p.timezone,
        "channels": list(p.channels),
        "tiers": [
            {"code": t.code, "face_value_fen": t.face_value_fen, "min_spend_fen": t.min_spend_fen}
            for t in tiers
        ],
        "eligibility": {
            "certification_types": list(p.eligibility.get("certification_types") or []),
            "county_codes": p.eligibility.get("county_codes"),
        },
        "offline": {
            "max_offline_fen_per_terminal": p.max_offline_fen_per_terminal,
            "max_offline_hours": p.max_offline_hours,
        },
    }


# ---------------------------------------------------------------- the record format


def canonical_record(seq: int, payload: Mapping[str, Any]) -> bytes:
    """RFC 8785 (JCS) bytes of {"payload", "seq"}; raise ValueError for what JCS cannot carry (floats)."""
    _refuse_floats(payload)
    return json.dumps(
        {"payload": payload, "seq": seq},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


def _refuse_floats(value: Any) -> None:
    # Python and other JCS implementations may print a float differently; the format has none.
    if isinstance(value, float):
        raise ValueError("records carry no floating-point numbers")
    if isinstance(value, Mapping):
        for item in value.values():
            _refuse_floats(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_floats(item)


def chained_bytes(prev_hash: str, seq: int, payload: Mapping[str, Any]) -> bytes:
    """The bytes record_hash hashes and the signature covers: prev_hash (ASCII hex), canonical record."""
    return prev_hash.encode("ascii") + canonical_record(seq, payload)


def integrity_problem(
    record: UploadedRecord, prev_seq: int, prev_hash: str, public_key: ec.EllipticCurvePublicKey
) -> str | None:
    """None when the record is authentic and continues the chain at (prev_seq, prev_hash), else the code."""
    if record.seq != prev_seq + 1 or record.prev_hash != prev_hash:
        return CHAIN_BROKEN
    try:
        message = chained_bytes(record.prev_hash, record.seq, record.payload)
    except (ValueError, UnicodeEncodeError):
        return MALFORMED
    if hashlib.sha256(message).hexdigest() != record.record_hash:
        return BAD_HASH
    try:
        signature = b64url_decode(record.signature)
    except ValueError:
        return BAD_SIGNATURE
    if not verify_es256_raw(public_key, message, signature):
        return BAD_SIGNATURE
    return None


# ---------------------------------------------------------------- uploads


def sync_records(
    ctx: ServiceContext, merchant_id: str, terminal_id: str, records: Sequence[UploadedRecord], actor: str
) -> list[RecordResult]:
    """Judge uploaded journal records in seq order; raise NotFound when the terminal is not registered."""
    with ctx.sessions() as s:
        terminal = s.get(Terminal, (merchant_id, terminal_id))
        if terminal is None:
            raise NotFound(f"Terminal {terminal_id} is not registered for this merchant.")
        public_key = public_key_from_jwk(terminal.public_key_jwk)
    results: list[RecordResult] = []
    rejected = False
    rules = offline_rules(merchant_id, terminal_id, ctx.now())
    for record in sorted(records, key=lambda r: r.seq):
        if rejected:
            results.append(RecordResult(record.seq, OfflineVerdict.REJECTED, AFTER_REJECTED))
            continue
        result = _judge(ctx, merchant_id, terminal_id, public_key, record, actor, rules)
        rejected = result.status == OfflineVerdict.REJECTED and result.code in (
            BAD_HASH,
            BAD_SIGNATURE,
            CHAIN_BROKEN,
            SEQ_CONFLICT,
            MALFORMED,
        )
        results.append(result)
    return results


def _judge(
    ctx: ServiceContext,
    merchant_id: str,
    terminal_id: str,
    public_key: ec.EllipticCurvePublicKey,
    record: UploadedRecord,
    actor: str,
    rules: OfflineRules,
) -> RecordResult:
    """Judge one record in its own transaction, the terminal's row locked."""
    from voucher_service.services import redemption  # late: the redemption service imports much

    now = ctx.now()
    with ctx.sessions.begin() as s:
        # The lock loads the row; held here (the session's identity map holds rows weakly), the offline
        # rules then read the terminal from the session, not with another statement.
        locked = s.get(Terminal, (merchant_id, terminal_id), with_for_update=True)
        stored = s.get(OfflineRecord, (merchant_id, terminal_id, record.seq))
        if stored is not None:
            if stored.record_hash == record.record_hash:
                return RecordResult(record.seq, "duplicate", stored.code, stored.redemption_id)
            problem: str | None = SEQ_CONFLICT
        else:
            prev_seq, prev_hash = _chain_head(s, merchant_id, terminal_id)
            rules.chain_head(prev_seq)
            problem = integrity_problem(record, prev_seq, prev_hash, public_key)
        if problem is not None:
            audit_log.record(
                s,
                actor,
                "offline_record.refused",
                "terminal",
                f"{merchant_id}/{terminal_id}",
                {"seq": record.seq, "record_hash": record.record_hash[:64], "code": problem},
                now,
            )
            return RecordResult(record.seq, OfflineVerdict.REJECTED, problem)
        status, code, redemption_id = redemption.record_offline_redemption(
            ctx, s, merchant_id, terminal_id, record.payload, rules
        )
        row = _stored(merchant_id, terminal_id, record, status, code, redemption_id, now)
        s.add(row)
        audit_log.record(
            s,
            actor,
            f"offline_record.{status}",
            "terminal",
            f"{merchant_id}/{terminal_id}",
            {
                "seq": record.seq,
                "record_hash": record.record_hash,
                "code": code,
                "redemption_id": redemption_id,
            },
            now,
        )
        stored_row = _PeriodRow(row.seq, now, row.program_id, row.status, row.discount_fen)
        del locked
    rules.stored(stored_row)  # committed
    return RecordResult(record.seq, status, code, redemption_id)


# ---------------------------------------------------------------- the server's offline rules


def offline_rules(merchant_id: str, terminal_id: str, upload_started: dt.datetime) -> OfflineRules:
    """The checks the server makes on the sound offline redemptions of one upload (OfflineRules)."""
    return OfflineRules(merchant_id, terminal_id, upload_started)


@dataclass(frozen=True)
class _PeriodRow:
    """What the offline period's rule reads of a stored record (as stored)."""

    seq: int
    received_at: dt.datetime
    program_id: str | None
    status: str
    discount_fen: int


class OfflineRules:
    """The checks the server makes on a sound offline redemption, whatever the till checked itself.

    Called (`rules(session, program_id, redeemed_at, discount_fen)`) in seq order with the terminal's
    row locked, so the earliest records win:
    - dated inside a suspension of the programme -> ProgramNotActive (`program_not_active`);
    - dated more than `max_offline_hours` after the terminal's last refresh the server saw (its
      registration when it never refreshed) -> OfflineRefreshRequired (`offline_refresh_required`);
    - the discounts of this terminal's accepted records of the programme in the same offline period
      (the records after the last earlier upload received before this record's time), plus this one, over
      `max_offline_fen_per_terminal` -> OfflineLimitExceeded (`offline_limit_exceeded`).

    One object judges one upload. The offline period is read from the database only as far as the
    records stored before the upload's first record (the chain head then, `base`) and is cached per
    record time; the records the upload stored itself after `base` are kept here as stored, so a record
    costs the same however long the terminal's history or the upload is. That holds while the chain head
    under the lock is `base` plus this upload's own records (`chain_head`, told before each record is
    judged, checks it); when another upload of the terminal stored records in between, the period is
    read from the database again from the new head.
    """

    def __init__(self, merchant_id: str, terminal_id: str, upload_started: dt.datetime) -> None:
        self.merchant_id, self.terminal_id, self.upload_started = merchant_id, terminal_id, upload_started
        self._base: int | None = None  # the chain head the database's part of the period ends at
        self._mine: list[_PeriodRow] = []  # what this upload stored after `_base`, in seq order
        self._synced: dict[dt.datetime, int] = {}  # _synced_through(at) of the records up to `_base`
        self._all_synced_from: dt.datetime | None = None  # from this `at` on, all of them are
        self._spent: dict[tuple[str, int], int] = {}  # the discount in (synced, _base], by programme

    def chain_head(self, seq: int) -> None:
        """The terminal's chain head, read under its row lock before a record is judged."""
        if self._base is None or seq != self._base + len(self._mine):
            self._base, self._mine = seq, []
            self._synced.clear()
            self._spent.clear()
            self._all_synced_from = None

    def stored(self, row: _PeriodRow) -> None:
        """A record this upload stored (committed): the next one on the chain head it was told of."""
        if self._base is not None and row.seq == self._base + len(self._mine) + 1:
            self._mine.append(row)
        else:
            self._base = None  # not known to follow: the next record is told the head again

    def __call__(self, s: Session, program_id: str, at: dt.datetime, discount_fen: int) -> None:
        program = s.get(Program, program_id)
        assert program is not None  # the redemption's checks found it
        suspended = s.scalar(
            select(ProgramSuspension.suspended_at)
            .where(
                ProgramSuspension.program_id == program_id,
                ProgramSuspension.suspended_at <= at,
                or_(ProgramSuspension.resumed_at.is_(None), ProgramSuspension.resumed_at > at),
            )
            .limit(1)
        )
        if suspended is not None:
            raise ProgramNotActive(
                f"The programme was suspended at {rfc3339(suspended)}, before this record."
            )
        terminal = s.get(Terminal, (self.merchant_id, self.terminal_id))
        assert terminal is not None
        since = terminal.last_refresh_at or terminal.created_at
        if at > since + dt.timedelta(hours=program.max_offline_hours):
            raise OfflineRefreshRequired(
                f"The record is dated more than the programme's {program.max_offline_hours} h after the "
                f"terminal's last refresh ({rfc3339(since)})."
            )
        spent = self._period_discount_fen(s, program_id, min(at, self.upload_started))
        cap = program.max_offline_fen_per_terminal
        if spent + discount_fen > cap:
            raise OfflineLimitExceeded(
                f"Offline discounts of this terminal in this offline period would reach {spent + discount_fen} "
                f"fen, over the programme's {cap} fen per terminal."
            )

    def _period_discount_fen(self, s: Session, program_id: str, at: dt.datetime) -> int:
        """Accepted offline discount of the terminal and programme since its last upload before `at` (an
        earlier upload: `at` is capped at the current upload's start, whose own records never count as a
        boundary, however the till's clock runs)."""
        base = self._base
        if base is None:  # not told the chain head: all from the database
            synced = _synced_through(s, self.merchant_id, self.terminal_id, at, None)
            return _accepted_discount_fen(s, self.merchant_id, self.terminal_id, program_id, synced, None)
        synced = self._synced_through_base(s, base, at)
        for row in reversed(self._mine):  # this upload's own records, after `base`
            if row.received_at < at:
                synced = row.seq
                break
        spent = sum(
            r.discount_fen
            for r in self._mine
            if r.seq > synced and r.program_id == program_id and r.status == OfflineVerdict.ACCEPTED
        )
        if synced < base:
            key = (program_id, synced)
            if key not in self._spent:
                self._spent[key] = _accepted_discount_fen(
                    s, self.merchant_id, self.terminal_id, program_id, synced, base
                )
            spent += self._spent[key]
        return spent

    def _synced_through_base(self, s: Session, base: int, at: dt.datetime) -> int:
        # Stored records are never changed and the chain only grows, so what is known of the records up
        # to `base` stays true for the whole upload; the answer only grows with `at`, up to `base`.
        if base == 0 or (self._all_synced_from is not None and at >= self._all_synced_from):
            return base
        if at not in self._synced:
            self._synced[at] = _synced_through(s, self.merchant_id, self.terminal_id, at, base)
            if self._synced[at] == base:
                self._all_synced_from = at
        return self._synced[at]


def _synced_through(s: Session, merchant_id: str, terminal_id: str, at: dt.datetime, upto: int | None) -> int:
    """The last seq (up to `upto`) the terminal's uploads received before `at` had stored, 0 if none.

    The records stored by an upload received before `at` had all been made before it: a later record
    belongs to a new offline period. Records are stored in seq order, so the period is a seq range.
    Read backwards along the primary key from `upto`: only the records received since `at` are passed."""
    query = select(OfflineRecord.seq).where(
        OfflineRecord.merchant_id == merchant_id,
        OfflineRecord.terminal_id == terminal_id,
        OfflineRecord.received_at < at,
    )
    if upto is not None:
        query = query.where(OfflineRecord.seq <= upto)
    return int(s.scalar(query.order_by(OfflineRecord.seq.desc()).limit(1)) or 0)


def _accepted_discount_fen(
    s: Session, merchant_id: str, terminal_id: str, program_id: str, after: int, upto: int | None
) -> int:
    """The accepted discount of the terminal's records of the programme with seq in (after, upto]
    (index ix_offline_period: only those records are read)."""
    query = select(func.coalesce(func.sum(OfflineRecord.discount_fen), 0)).where(
        OfflineRecord.merchant_id == merchant_id,
        OfflineRecord.terminal_id == terminal_id,
        OfflineRecord.program_id == program_id,
        OfflineRecord.status == OfflineVerdict.ACCEPTED,
        OfflineRecord.seq > after,
    )
    if upto is not None:
        query = query.where(OfflineRecord.seq <= upto)
    return int(s.scalar(query) or 0)


def record_terminal_refresh(ctx: ServiceContext, merchant_id: str, terminal_id: str) -> bool:
    """Note that the terminal fetched what a till needs (the start of its offline hours); False if unknown."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        terminal = s.get(Terminal, (merchant_id, terminal_id), with_for_update=True)
        if terminal is None:
            return False
        terminal.last_refresh_at = now
    return True


def _chain_head(s: Session, merchant_id: str, terminal_id: str) -> tuple[int, str]:
    """The (seq, record_hash) the next record must continue: the last stored one, or the genesis."""
    row = s.execute(
        select(OfflineRecord.seq, OfflineRecord.record_hash)
        .where(OfflineRecord.merchant_id == merchant_id, OfflineRecord.terminal_id == terminal_id)
        .order_by(OfflineRecord.seq.desc())
        .limit(1)
    ).first()
    return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))


def _text(value: Any, limit: int) -> str | None:
    return value if isinstance(value, str) and len(value) <= limit else None


def _stored(
    merchant_id: str,
    terminal_id: str,
    record: UploadedRecord,
    status: str,
    code: str | None,
    redemption_id: str | None,
    now: dt.datetime,
) -> OfflineRecord:
    """The OfflineRecord row; fields that do not fit the columns are left empty (the payload keeps them)."""
    payload = record.payload
    try:
        redeemed_at: dt.datetime | None = parse_rfc3339(str(payload.get("redeemed_at")))
    except ValueError:
        redeemed_at = None
    discount = payload.get("discount_fen")
    return OfflineRecord(
        merchant_id=merchant_id,
        terminal_id=terminal_id,
        seq=record.seq,
        record_hash=record.record_hash,
        prev_hash=record.prev_hash,
        voucher_id=_text(payload.get("voucher_id"), 36),
        program_id=_text(payload.get("program_id"), 36),
        order_id=_text(payload.get("order_id"), 128),
        discount_fen=discount if type(discount) is int and 0 <= discount < 2**62 else 0,
        redeemed_at=redeemed_at,
        payload=dict(payload),
        status=status,
        code=code,
        redemption_id=redemption_id,
        received_at=now,
    )
