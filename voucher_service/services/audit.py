"""The books' audit: the budget identity of every programme, computed two independent ways, and the
integrity of the hash-chained audit log.

budget = unallocated + unclaimed + outstanding + redeemed + expired + void, in fen, where each bucket is
once the sum of the ledger's movements into and out of it, and once what the current state says:
  unallocated  budget - the tiers' face value x quantity (once the pool is minted)
  unclaimed    face value of `available` vouchers
  outstanding  face value of `issued` vouchers
  redeemed     face value of `redeemed` vouchers, and also the active redemptions' discounts
  expired      face value of `expired` vouchers not recycled into the pool
  void         face value of `void` vouchers
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import AuditEntry, LedgerEntry, Program, Redemption, Tier, Voucher
from voucher_service.domain.errors import NotFound
from voucher_service.domain.states import RedemptionStatus, VoucherStatus
from voucher_service.services import audit_log
from voucher_service.services.context import ServiceContext
from voucher_service.services.ledger import BUCKETS

SHOWN = 10
STATE_OF_STATUS = {
    VoucherStatus.AVAILABLE: "unclaimed",
    VoucherStatus.ISSUED: "outstanding",
    VoucherStatus.REDEEMED: "redeemed",
    VoucherStatus.EXPIRED: "expired",
    VoucherStatus.VOID: "void",
}


@dataclass
class ProgramBooks:
    """One programme's buckets as the ledger and as the current state have them."""

    program_id: str
    name: str
    budget_fen: int
    ledger: dict[str, int]
    state: dict[str, int]
    redemptions_fen: int
    problems: list[str] = field(default_factory=list)


@dataclass
class AuditReport:
    """What `voucher-admin audit` found."""

    programs: list[ProgramBooks]
    sealed: int
    chain_entries: int
    chain_problems: list[str]

    @property
    def problems(self) -> list[str]:
        return [p for books in self.programs for p in books.problems] + self.chain_problems

    @property
    def ok(self) -> bool:
        return not self.problems


def run_audit(ctx: ServiceContext, program_id: str | None = None) -> AuditReport:
    """Seal pending audit entries, then check every programme's budget identity and the audit chain."""
    with ctx.sessions() as s:
        if program_id is not None and s.get(Program, program_id) is None:
            raise NotFound(f"No programme {program_id}.")
        high_water = s.scalar(select(func.max(AuditEntry.id))) or 0
    sealed = audit_log.seal_all(ctx.sessions)
    with ctx.sessions.begin() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        programs = _books(s, program_id)
        for books in programs:
            _check(books)
            if books.problems:
                books.problems.extend(_where(s, books.program_id))
        chain = audit_log.verify_chain(s)
        # Entries appended after sealing began are legitimately unsealed; older ones must be sealed.
        problems = [p for p in chain.problems if not p.endswith("are not sealed yet")]
        stuck = s.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.seq.is_(None), AuditEntry.id <= high_water)
        )
        if stuck:
            problems.append(f"{stuck} audit entries that existed before this audit are still unsealed")
    return AuditReport(programs, sealed, chain.entries, problems)


def _books(s: Session, program_id: str | None) -> list[ProgramBooks]:
    def scoped(query: Any, column: Any) -> Any:
        return query.where(column == program_id) if program_id is not None else query

    programs = list(s.scalars(scoped(select(Program).order_by(Program.created_at, Program.id), Program.id)))
    ledger: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(BUCKETS, 0))
    for bucket_col, sign in ((LedgerEntry.to_bucket, 1), (LedgerEntry.from_bucket, -1)):
        rows = s.execute(
            scoped(
                select(LedgerEntry.program_id, bucket_col, func.sum(LedgerEntry.amount_fen)).group_by(
                    LedgerEntry.program_id, bucket_col
                ),
                LedgerEntry.program_id,
            )
        )
        for pid, bucket, fen in rows:
            ledger[pid][bucket] = ledger[pid].get(bucket, 0) + sign * int(fen)
    recycled = case((Voucher.recycled_at.is_(None), 0), else_=1)
    vouchers = s.execute(
        scoped(
            select(Voucher.program_id, Voucher.status, recycled, func.sum(Voucher.face_value_fen)).group_by(
                Voucher.program_id, Voucher.status, recycled
            ),
            Voucher.program_id,
        )
    )
    state: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(BUCKETS, 0))
    for pid, status, was_recycled, fen in vouchers:
        bucket = STATE_OF_STATUS.get(status)
        if bucket is None or (status == VoucherStatus.EXPIRED and was_recycled):
            continue  # a recycled voucher's value lives on in the fresh pool row that replaced it
        state[pid][bucket] += int(fen)
    minted = dict(
        s.execute(
            scoped(
                select(Tier.program_id, func.sum(Tier.face_value_fen * Tier.quantity)).group_by(
                    Tier.program_id
                ),
                Tier.program_id,
            )
        ).all()
    )
    redeemed = dict(
        s.execute(
            scoped(
                select(Redemption.program_id, func.sum(Redemption.discount_fen))
                .where(Redemption.status == RedemptionStatus.ACTIVE)
                .group_by(Redemption.program_id),
                Redemption.program_id,
            )
        ).all()
    )
    out = []
    for p in programs:
        st = state[p.id]
        st["unallocated"] = p.budget_fen - (int(minted.get(p.id, 0)) if p.activated_at is not None else 0)
        led = dict(ledger[p.id])
        led["unallocated"] = p.budget_fen + led.get("unallocated", 0)
        out.append(ProgramBooks(p.id, p.name, p.budget_fen, led, st, int(redeemed.get(p.id, 0))))
    return out


def _check(b: ProgramBooks) -> None:
    where = f"programme {b.program_id} ({b.name})"
    for bucket in BUCKETS:
        if b.ledger.get(bucket, 0) != b.state.get(bucket, 0):
            b.problems.append(
                f"{where}: bucket {bucket}: ledger {b.ledger.get(bucket, 0)} fen, "
                f"state {b.state.get(bucket, 0)} fen"
            )
    if b.redemptions_fen != b.state["redeemed"]:
        b.problems.append(
            f"{where}: bucket redeemed: redeemed vouchers' face value {b.state['redeemed']} fen, "
            f"active redemptions' discounts {b.redemptions_fen} fen"
        )
    for side, buckets in (("ledger", b.ledger), ("state", b.state)):
        total = sum(buckets.get(x, 0) for x in BUCKETS)
        if total != b.budget_fen:
            b.problems.append(
                f"{where}: the {side}'s buckets add up to {total} fen, not the budget {b.budget_fen} fen"
            )


def _where(s: Session, program_id: str) -> list[str]:
    """Point at the rows behind a broken identity: movements and redemptions that disagree with vouchers."""
    found: list[str] = []
    entries = s.execute(
        select(
            LedgerEntry.id,
            LedgerEntry.kind,
            LedgerEntry.voucher_id,
            LedgerEntry.amount_fen,
            Voucher.face_value_fen,
        )
        .join(Voucher, Voucher.id == LedgerEntry.voucher_id)
        .where(LedgerEntry.program_id == program_id, LedgerEntry.amount_fen != Voucher.face_value_fen)
        .order_by(LedgerEntry.id)
        .limit(SHOWN)
    )
    for entry_id, kind, voucher_id, amount, face in entries:
        found.append(
            f"  ledger entry {entry_id} ({kind}, voucher {voucher_id}): {amount} fen, "
            f"the voucher's face value is {face} fen"
        )
    mints = s.execute(
        select(LedgerEntry.id, LedgerEntry.ref, LedgerEntry.amount_fen, Tier.face_value_fen * Tier.quantity)
        .join(Tier, and_(Tier.program_id == LedgerEntry.program_id, Tier.code == LedgerEntry.ref))
        .where(
            LedgerEntry.program_id == program_id,
            LedgerEntry.kind == "mint",
            LedgerEntry.amount_fen != Tier.face_value_fen * Tier.quantity,
        )
        .order_by(LedgerEntry.id)
        .limit(SHOWN)
    )
    for entry_id, tier, amount, expected in mints:
        found.append(f"  ledger entry {entry_id} (mint {tier}): {amount} fen, the tier mints {expected} fen")
    redemptions = s.execute(
        select(Redemption.id, Redemption.voucher_id, Redemption.discount_fen, Voucher.face_value_fen)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(
            Redemption.program_id == program_id,
            Redemption.status == RedemptionStatus.ACTIVE,
            Redemption.discount_fen != Voucher.face_value_fen,
        )
        .order_by(Redemption.id)
        .limit(SHOWN)
    )
    for rid, voucher_id, discount, face in redemptions:
        found.append(
            f"  redemption {rid} (voucher {voucher_id}): discount {discount} fen, "
            f"the voucher's face value is {face} fen"
        )
    return found


def program_books(ctx: ServiceContext, program_id: str) -> ProgramBooks:
    """One programme's budget identity as the audit computes it (read only: nothing is sealed)."""
    with ctx.sessions.begin() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        if s.get(Program, program_id) is None:
            raise NotFound(f"No programme {program_id}.")
        (books,) = _books(s, program_id)
        _check(books)
    return books
