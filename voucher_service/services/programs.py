"""Programmes: create, activate (mint the voucher pool), suspend, read with statistics."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import Program, ProgramSuspension, ProgramTarget, Tier, Voucher
from voucher_service.domain.clock import rfc3339
from voucher_service.domain.errors import InvalidState, NotFound
from voucher_service.domain.programs import ProgramSpec, validate_program
from voucher_service.domain.states import ProgramStatus, VoucherStatus, check_transition
from voucher_service.services import audit_log, ledger, shards
from voucher_service.services.context import ServiceContext

MINT_CHUNK = 10_000
CLAIMED_STATUSES = frozenset(VoucherStatus) - {VoucherStatus.AVAILABLE}
log = logging.getLogger(__name__)


def create_program(ctx: ServiceContext, spec: ProgramSpec, actor: str) -> dict[str, Any]:
    """Store a draft programme after checking its tiers fit the budget."""
    validate_program(spec)
    now = ctx.now()
    program_id = str(uuid.uuid4())
    with ctx.sessions.begin() as s:
        s.add(
            Program(
                id=program_id,
                name=spec.name,
                budget_fen=spec.budget_fen,
                starts_at=spec.starts_at,
                ends_at=spec.ends_at,
                voucher_validity_days=spec.voucher_validity_days,
                per_person_limit=spec.per_person_limit,
                channels=list(spec.channels),
                eligibility={
                    "certification_types": list(spec.certification_types),
                    "county_codes": list(spec.county_codes) if spec.county_codes is not None else None,
                },
                max_offline_fen_per_terminal=spec.max_offline_fen_per_terminal,
                max_offline_hours=spec.max_offline_hours,
                timezone=spec.timezone,
                holder_binding=spec.holder_binding,
                status=check_transition(None, ProgramStatus.DRAFT),
                created_at=now,
            )
        )
        s.flush()
        for position, t in enumerate(spec.tiers):
            s.add(
                Tier(
                    program_id=program_id,
                    code=t.code,
                    face_value_fen=t.face_value_fen,
                    min_spend_fen=t.min_spend_fen,
                    quantity=t.quantity,
                    position=position,
                )
            )
        for county, target in spec.targets:
            s.add(ProgramTarget(program_id=program_id, county_code=county, target_fen=target))
        audit_log.record(
            s,
            actor,
            "program.created",
            "program",
            program_id,
            {
                "name": spec.name,
                "budget_fen": spec.budget_fen,
                "tiers": [[t.code, t.face_value_fen, t.min_spend_fen, t.quantity] for t in spec.tiers],
            },
            now,
        )
    return get_program(ctx, program_id, with_stats=False)


def _mint_pool(s: Session, program: Program, tiers: list[Tier], now: dt.datetime) -> None:
    # The pool is minted once, at first activation: claims then take rows from it with SKIP LOCKED,
    # so the tiers' quantities, and hence the budget, cannot be exceeded by construction.
    for tier in tiers:
        minted = check_transition(None, VoucherStatus.AVAILABLE)
        for start in range(0, tier.quantity, MINT_CHUNK):
            n = min(MINT_CHUNK, tier.quantity - start)
            s.execute(
                insert(Voucher),
                [
                    {
                        "id": str(uuid.uuid4()),
                        "program_id": program.id,
                        "tier_code": tier.code,
                        "face_value_fen": tier.face_value_fen,
                        "min_spend_fen": tier.min_spend_fen,
                        "status": minted,
                    }
                    for _ in range(n)
                ],
            )
        ledger.move(
            s,
            program_id=program.id,
            kind="mint",
            from_bucket="unallocated",
            to_bucket="unclaimed",
            amount_fen=tier.face_value_fen * tier.quantity,
            at=now,
            ref=tier.code,
        )


def activate_program(ctx: ServiceContext, program_id: str, actor: str) -> dict[str, Any]:
    """Open a draft or suspended programme for claims and redemptions."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        program = s.get(Program, program_id, with_for_update=True)
        if program is None:
            raise NotFound(f"No programme {program_id}.")
        if program.status == ProgramStatus.ACTIVE:
            raise InvalidState("The programme is already active.")
        if program.activated_at is None:
            tiers = list(s.scalars(select(Tier).where(Tier.program_id == program_id).order_by(Tier.position)))
            _mint_pool(s, program, tiers, now)
            program.activated_at = now
        program.status = check_transition(program.status, ProgramStatus.ACTIVE)
        for open_period in s.scalars(
            select(ProgramSuspension).where(
                ProgramSuspension.program_id == program_id, ProgramSuspension.resumed_at.is_(None)
            )
        ):
            open_period.resumed_at = now
        audit_log.record(s, actor, "program.activated", "program", program_id, {}, now)
    _clear_sold_out_gates(ctx, program_id)
    return get_program(ctx, program_id)


def suspend_program(ctx: ServiceContext, program_id: str, actor: str) -> dict[str, Any]:
    """Stop claims and redemptions until the programme is activated again."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        program = s.get(Program, program_id, with_for_update=True)
        if program is None:
            raise NotFound(f"No programme {program_id}.")
        if program.status != ProgramStatus.ACTIVE:
            raise InvalidState(f"Only an active programme can be suspended; this one is {program.status}.")
        program.status = check_transition(program.status, ProgramStatus.SUSPENDED)
        # A suspension resumed on this same clock tick is the same period going on, not a new one.
        period = s.get(ProgramSuspension, (program_id, now))
        if period is None:
            s.add(ProgramSuspension(program_id=program_id, suspended_at=now))
        else:
            period.resumed_at = None
        audit_log.record(s, actor, "program.suspended", "program", program_id, {}, now)
    return get_program(ctx, program_id)


def _clear_sold_out_gates(ctx: ServiceContext, program_id: str) -> None:
    with ctx.sessions() as s:
        codes = list(s.scalars(select(Tier.code).where(Tier.program_id == program_id)))
    forget_gates(ctx, [k for c in codes for k in sold_out_keys(program_id, c)])


def forget_gates(ctx: ServiceContext, keys: list[str]) -> None:
    """Drop sold-out gates after the database committed a change that reopens tiers. Best effort: when
    Redis is away the gates lapse by themselves (SOLD_OUT_GATE_TTL_S), and the committed change must
    not be answered as if it had failed."""
    try:
        ctx.store.delete(*keys)
    except Exception:
        log.warning("could not clear %d sold-out gates; they expire by themselves", len(keys), exc_info=True)


def sold_out_key(program_id: str, tier_code: str, tag: str = shards.tag(0)) -> str:
    """The Redis key of a tier's sold-out gate: its copy under a hash tag (services.shards). The gate is
    written under every tag, so a claim reads it in the same script as its other keys; any copy tells."""
    return f"{tag}:soldout:{program_id}:{tier_code}"


def sold_out_keys(program_id: str, tier_code: str) -> list[str]:
    """Every copy of a tier's sold-out gate (written and dropped together)."""
    return [sold_out_key(program_id, tier_code, tag) for tag in shards.all_tags()]


def program_stats(s: Session, program_id: str, tiers: list[Tier]) -> dict[str, Any]:
    """Claimed and redeemed counts and fen, and what is left to claim per tier."""
    rows = s.execute(
        select(
            Voucher.tier_code,
            Voucher.status,
            func.count(),
            func.coalesce(func.sum(Voucher.face_value_fen), 0),
        )
        .where(Voucher.program_id == program_id)
        .group_by(Voucher.tier_code, Voucher.status)
    ).all()
    stats: dict[str, Any] = {
        "claimed": 0,
        "redeemed": 0,
        "claimed_fen": 0,
        "redeemed_fen": 0,
        "remaining_by_tier": {t.code: 0 for t in tiers},
    }
    for tier_code, status, count, fen in rows:
        if status == VoucherStatus.AVAILABLE:
            stats["remaining_by_tier"][tier_code] = int(count)
        if status in CLAIMED_STATUSES:
            stats["claimed"] += int(count)
            stats["claimed_fen"] += int(fen)
        if status == VoucherStatus.REDEEMED:
            stats["redeemed"] += int(count)
            stats["redeemed_fen"] += int(fen)
    return stats


def program_to_json(program: Program, tiers: list[Tier], targets: list[ProgramTarget]) -> dict[str, Any]:
    """The programme as the API shows it (the body of §7 plus id, status and times)."""
    return {
        "id": program.id,
        "name": program.name,
        "status": program.status,
        "budget_fen": program.budget_fen,
        "starts_at": rfc3339(program.starts_at),
        "ends_at": rfc3339(program.ends_at),
        "timezone": program.timezone,
        "voucher_validity_days": program.voucher_validity_days,
        "per_person_limit": program.per_person_limit,
        "channels": list(program.channels),
        "tiers": [
            {
                "code": t.code,
                "face_value_fen": t.face_value_fen,
                "min_spend_fen": t.min_spend_fen,
                "quantity": t.quantity,
            }
            for t in tiers
        ],
        "eligibility": dict(program.eligibility),
        "targets": [{"county_code": t.county_code, "target_fen": t.target_fen} for t in targets],
        "offline": {
            "max_offline_fen_per_terminal": program.max_offline_fen_per_terminal,
            "max_offline_hours": program.max_offline_hours,
        },
        "holder_binding": program.holder_binding,
        "created_at": rfc3339(program.created_at),
        "activated_at": rfc3339(program.activated_at),
    }


def get_program(ctx: ServiceContext, program_id: str, with_stats: bool = True) -> dict[str, Any]:
    """A programme with its tiers, targets and (by default) statistics."""
    with ctx.sessions() as s:
        program = s.get(Program, program_id)
        if program is None:
            raise NotFound(f"No programme {program_id}.")
        tiers = list(s.scalars(select(Tier).where(Tier.program_id == program_id).order_by(Tier.position)))
        targets = list(
            s.scalars(
                select(ProgramTarget)
                .where(ProgramTarget.program_id == program_id)
                .order_by(ProgramTarget.county_code)
            )
        )
        out = program_to_json(program, tiers, targets)
        if with_stats:
            out["stats"] = program_stats(s, program_id, tiers)
    return out


def list_programs(ctx: ServiceContext) -> list[dict[str, Any]]:
    """Every programme, newest first, without statistics."""
    with ctx.sessions() as s:
        ids = list(s.scalars(select(Program.id).order_by(Program.created_at.desc(), Program.id)))
    return [get_program(ctx, pid, with_stats=False) for pid in ids]
