"""What the administrators' console reads and runs that no other face needs in this shape: a programme's
dashboard, lists of merchants and enrolments, a registry upload's outcome, reconciliations of uploaded
statements kept in run directories under the var dir (so their four files can be downloaded).

The rules stay where they are (programs, audit, reporting, registry, reconciliation, settlement);
this module only composes them.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import Enrolment, Merchant, Program, Redemption, Tier, Voucher
from voucher_service.domain.errors import NotFound, ValidationFailed
from voucher_service.domain.statements import FORMATS
from voucher_service.domain.states import RedemptionStatus, VoucherStatus
from voucher_service.services import audit, programs, registry, reporting
from voucher_service.services.context import ServiceContext
from voucher_service.services.ledger import BUCKETS
from voucher_service.services.merchants import merchant_to_json
from voucher_service.services.reconciliation import ReconcileRequest, ReconcileResult, reconcile
from voucher_service.services.reconciliation_files import _sqlite_local_day

RUN_FILES = ("summary.json", "discrepancies.csv", "settlement.csv", "report.html")
RUN_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STATEMENT_MAX_BYTES = 8 * 1024 * 1024


def _daily_counts(s: Session, tz: str, column: Any, *where: Any) -> dict[str, int]:
    """How many rows fall on each calendar day of the programme's time zone."""
    if s.get_bind().dialect.name == "postgresql":
        day = func.to_char(func.timezone(tz, column), "YYYY-MM-DD")
    else:
        driver = s.connection().connection.driver_connection
        driver.create_function("voucher_local_day", 2, _sqlite_local_day, deterministic=True)  # type: ignore[union-attr]
        day = func.voucher_local_day(column, tz)
    rows = s.execute(select(day.label("day"), func.count()).where(column.is_not(None), *where).group_by(day))
    return {str(d): int(n) for d, n in rows if d is not None}


def dashboard(ctx: ServiceContext, program_id: str) -> dict[str, Any]:
    """A programme's dashboard: budget identity buckets, claims and redemptions by tier and by day, counties."""
    program = programs.get_program(ctx, program_id)
    books = audit.program_books(ctx, program_id)
    tz = program["timezone"]
    with ctx.read_session() as s:
        tiers: dict[str, dict[str, Any]] = {
            t.code: {
                "code": t.code,
                "face_value_fen": t.face_value_fen,
                "quantity": t.quantity,
                "claimed": 0,
                "redeemed": 0,
                "claimed_fen": 0,
                "redeemed_fen": 0,
                "remaining": 0,
            }
            for t in s.scalars(select(Tier).where(Tier.program_id == program_id).order_by(Tier.position))
        }
        rows = s.execute(
            select(
                Voucher.tier_code,
                Voucher.status,
                func.count(),
                func.coalesce(func.sum(Voucher.face_value_fen), 0),
            )
            .where(Voucher.program_id == program_id)
            .group_by(Voucher.tier_code, Voucher.status)
        )
        for code, status, n, fen in rows:
            tier = tiers.get(code)
            if tier is None:
                continue
            if status == VoucherStatus.AVAILABLE:
                tier["remaining"] += int(n)
            if status in programs.CLAIMED_STATUSES:
                tier["claimed"] += int(n)
                tier["claimed_fen"] += int(fen)
            if status == VoucherStatus.REDEEMED:
                tier["redeemed"] += int(n)
                tier["redeemed_fen"] += int(fen)
        claims = _daily_counts(s, tz, Voucher.claimed_at, Voucher.program_id == program_id)
        redemptions = _daily_counts(
            s,
            tz,
            Redemption.redeemed_at,
            Redemption.program_id == program_id,
            Redemption.status == RedemptionStatus.ACTIVE,
        )
    days = sorted(set(claims) | set(redemptions))
    return {
        "program": program,
        "budget": {
            "budget_fen": books.budget_fen,
            "buckets": {b: books.ledger.get(b, 0) for b in BUCKETS},
            "state": {b: books.state.get(b, 0) for b in BUCKETS},
            "holds": not books.problems,
            "problems": list(books.problems),
        },
        "tiers": list(tiers.values()),
        "daily": [{"day": d, "claims": claims.get(d, 0), "redemptions": redemptions.get(d, 0)} for d in days],
        "counties": reporting.counties_report(ctx, program_id)["counties"],
    }


def list_merchants(ctx: ServiceContext) -> list[dict[str, Any]]:
    """Every merchant, newest first, with the programmes it is enrolled in."""
    with ctx.sessions() as s:
        enrolled: dict[str, list[str]] = {}
        for pid, mid in s.execute(
            select(Enrolment.program_id, Enrolment.merchant_id).order_by(Enrolment.enrolled_at)
        ):
            enrolled.setdefault(mid, []).append(pid)
        out = []
        for m in s.scalars(select(Merchant).order_by(Merchant.created_at.desc(), Merchant.id)):
            row = merchant_to_json(m)
            row["programs"] = enrolled.get(m.id, [])
            out.append(row)
    return out


def list_enrolments(ctx: ServiceContext, program_id: str) -> list[dict[str, Any]]:
    """The merchants enrolled in a programme, in order of enrolment."""
    with ctx.sessions() as s:
        if s.get(Program, program_id) is None:
            raise NotFound(f"No programme {program_id}.")
        rows = s.execute(
            select(Merchant.id, Merchant.name, Enrolment.enrolled_at)
            .join(Enrolment, Enrolment.merchant_id == Merchant.id)
            .where(Enrolment.program_id == program_id)
            .order_by(Enrolment.enrolled_at, Merchant.id)
        )
        return [{"merchant_id": mid, "name": name, "enrolled_at": at} for mid, name, at in rows]


@dataclass(frozen=True)
class RegistryUpload:
    """A registry file's outcome: what the import did, or its line-numbered errors (nothing committed)."""

    result: registry.ImportResult | None
    errors: list[dict[str, str]]


def import_registry_upload(ctx: ServiceContext, data: bytes, actor: str) -> RegistryUpload:
    """Import an uploaded registry file; a bad file gives its errors by line and commits nothing."""
    try:
        return RegistryUpload(registry.import_products(ctx, data, actor), [])
    except ValidationFailed as exc:
        return RegistryUpload(None, [dict(e) for e in exc.extra.get("errors") or []])


def runs_dir(ctx: ServiceContext) -> Path:
    """Where the console keeps its reconciliation runs' files (one directory per run id)."""
    return ctx.settings.var_dir / "reconciliation-runs"


def reconcile_upload(
    ctx: ServiceContext,
    program_id: str,
    merchant_id: str,
    fmt: str,
    statement: bytes,
    filename: str,
    actor: str,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> ReconcileResult:
    """Reconcile an uploaded statement as the CLI does, keeping the statement and the four files by run id."""
    if fmt not in FORMATS:
        raise ValidationFailed(
            "Unknown statement format.", [{"field": "format", "message": f"one of {', '.join(FORMATS)}"}]
        )
    if not statement:
        raise ValidationFailed(
            "The statement is empty.", [{"field": "statement", "message": "must not be empty"}]
        )
    if len(statement) > STATEMENT_MAX_BYTES:
        raise ValidationFailed(
            "The statement is too large.",
            [{"field": "statement", "message": f"at most {STATEMENT_MAX_BYTES} bytes"}],
        )
    base = runs_dir(ctx)
    work = base / f"upload-{uuid.uuid4()}"
    work.mkdir(parents=True)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename or "statement").name)[:80] or "statement"
    source = work / "statement"
    source.write_bytes(statement)
    req = ReconcileRequest(
        program_id=program_id,
        merchant_id=merchant_id,
        statement=source,
        out_dir=work,
        fmt=fmt,
        date_from=date_from,
        date_to=date_to,
        actor=actor,
    )
    result = reconcile(ctx, req)
    (work / "statement.name").write_text(name, encoding="utf-8")
    target = base / result.run_id
    if result.exit_code == 2:
        shutil.rmtree(work, ignore_errors=True)
    else:
        work.rename(target)
    return result


def run_file(ctx: ServiceContext, run_id: str, name: str) -> Path:
    """One of a console run's four files; NotFound for anything else."""
    if name not in RUN_FILES or not RUN_ID_RE.match(run_id):
        raise NotFound("No such file.")
    path = runs_dir(ctx) / run_id / name
    if not path.is_file():
        raise NotFound("No such file.")
    return path


def has_run_files(ctx: ServiceContext, run_id: str) -> bool:
    """Whether the console keeps this run's files (it was reconciled from the console)."""
    return bool(RUN_ID_RE.match(run_id)) and (runs_dir(ctx) / run_id / "summary.json").is_file()


def run_summary(ctx: ServiceContext, run_id: str) -> dict[str, Any]:
    """A console run's summary.json as a dict."""
    import json

    return dict(json.loads(run_file(ctx, run_id, "summary.json").read_text(encoding="utf-8")))


def run_discrepancies(ctx: ServiceContext, run_id: str, limit: int = 200) -> list[dict[str, str]]:
    """The first discrepancies of a console run (discrepancies.csv as rows)."""
    import csv

    with run_file(ctx, run_id, "discrepancies.csv").open(encoding="utf-8", newline="") as fh:
        out = []
        for i, row in enumerate(csv.DictReader(fh)):
            if i >= limit:
                break
            out.append(dict(row))
    return out


def list_console_runs(ctx: ServiceContext, limit: int = 20) -> list[dict[str, Any]]:
    """Recent reconciliation runs whose files the console keeps, newest first."""
    from voucher_service.services.reconciliation import list_runs

    base = runs_dir(ctx)
    return [r for r in list_runs(ctx, limit=limit * 5) if (base / r["id"] / "summary.json").is_file()][:limit]


def run_settlements(ctx: ServiceContext, run_id: str) -> list[dict[str, Any]]:
    """The settlement batches recorded from a run."""
    from voucher_service.adapters.db.models import Settlement

    with ctx.sessions() as s:
        rows = s.scalars(
            select(Settlement).where(Settlement.run_id == run_id).order_by(Settlement.created_at)
        )
        return [
            {
                "id": r.id,
                "redemptions": r.redemptions,
                "payable_fen": r.payable_fen,
                "created_at": r.created_at,
            }
            for r in rows
        ]
