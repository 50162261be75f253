"""Reports for administrators: sales of certified products by producing county against the targets."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from voucher_service.adapters.db.models import CertifiedProduct, County, Program, ProgramTarget, Redemption
from voucher_service.adapters.db.models import RedemptionLine as Line
from voucher_service.domain.errors import NotFound
from voucher_service.domain.states import RedemptionStatus
from voucher_service.services.context import ServiceContext

COUNTY_COLUMNS = (
    "county_code",
    "county_name",
    "redemptions",
    "eligible_sales_fen",
    "discount_fen",
    "target_fen",
)


@dataclass(frozen=True)
class CountyTotals:
    """What the active redemptions' eligible lines add up to in one producing county."""

    county_code: str
    redemptions: int
    eligible_sales_fen: int
    discount_fen: int


def county_totals(
    s: Session,
    program_id: str,
    *,
    merchant_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    count_redemptions: bool = True,
) -> dict[str, CountyTotals]:
    """Per producing county: redemptions, eligible sales net of returned units, and discount shares.

    Without `count_redemptions` the redemptions are not counted (0), which spares a grouping by
    redemption when only the amounts are wanted (the reconciliation report's chart).
    """
    # A returned unit no longer counts as a sale; the discount stays as long as the redemption is active
    # (a return that breaks the minimum spend reverses the whole redemption instead).
    net_sales = Line.line_total_fen - Line.unit_price_fen * func.coalesce(Line.returned_quantity, 0)
    keys = [Line.county_code, Line.redemption_id] if count_redemptions else [Line.county_code]
    lines = (
        select(
            Line.county_code.label("county_code"),
            func.sum(net_sales).label("sales"),
            func.sum(Line.discount_share_fen).label("discount"),
        )
        .join(Redemption, Redemption.id == Line.redemption_id)
        .where(
            Redemption.program_id == program_id,
            Redemption.status == RedemptionStatus.ACTIVE,
            Line.eligible.is_(True),
            Line.county_code.is_not(None),
        )
        .group_by(*keys)
    )
    if merchant_id is not None:
        lines = lines.where(Redemption.merchant_id == merchant_id)
    if start is not None:
        lines = lines.where(Redemption.redeemed_at >= start)
    if end is not None:
        lines = lines.where(Redemption.redeemed_at < end)
    # Per county and redemption first, then per county: a hash aggregate where COUNT(DISTINCT) would sort.
    inner = lines.subquery()
    counted = func.count() if count_redemptions else func.sum(0)
    query = select(
        inner.c.county_code, counted, func.sum(inner.c.sales), func.sum(inner.c.discount)
    ).group_by(inner.c.county_code)
    return {
        str(code): CountyTotals(str(code), int(n or 0), int(sales or 0), int(discount or 0))
        for code, n, sales, discount in s.execute(query)
    }


def county_names(s: Session, codes: Iterable[str]) -> dict[str, str]:
    """County names from the registry's County table, else from a certified product of that county."""
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    names = dict(s.execute(select(County.code, County.name).where(County.code.in_(wanted))).all())
    missing = [c for c in wanted if c not in names]
    if missing:
        rows = s.execute(
            select(CertifiedProduct.county_code, func.min(CertifiedProduct.county_name))
            .where(CertifiedProduct.county_code.in_(missing))
            .group_by(CertifiedProduct.county_code)
        )
        names.update({code: name for code, name in rows if name})
    return names


def progress(sales_fen: int, target_fen: int) -> tuple[int | None, str | None]:
    """Progress against a target in basis points (floor) and as a percentage string; None without a target."""
    if target_fen <= 0:
        return None, None
    bp = sales_fen * 10_000 // target_fen
    return bp, f"{bp // 100}.{bp % 100:02d}"


def counties_report(ctx: ServiceContext, program_id: str) -> dict[str, Any]:
    """The programme's producing counties (with sales, or with a target) in county-code order."""
    with ctx.read_session() as s:
        if s.get(Program, program_id) is None:
            raise NotFound(f"No programme {program_id}.")
        totals = county_totals(s, program_id)
        targets = dict(
            s.execute(
                select(ProgramTarget.county_code, ProgramTarget.target_fen).where(
                    ProgramTarget.program_id == program_id
                )
            ).all()
        )
        codes = sorted(set(totals) | set(targets))
        names = county_names(s, codes)
    counties = []
    for code in codes:
        t = totals.get(code, CountyTotals(code, 0, 0, 0))
        target = int(targets.get(code, 0))
        bp, pct = progress(t.eligible_sales_fen, target)
        counties.append(
            {
                "county_code": code,
                "county_name": names.get(code, ""),
                "redemptions": t.redemptions,
                "eligible_sales_fen": t.eligible_sales_fen,
                "discount_fen": t.discount_fen,
                "target_fen": target,
                "progress_bp": bp,
                "progress_pct": pct,
            }
        )
    return {"program_id": program_id, "counties": counties}


def write_counties_csv(report: dict[str, Any], out: IO[str]) -> None:
    """Write the counties report as CSV with the contract's columns."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COUNTY_COLUMNS)
    for row in report["counties"]:
        writer.writerow([row[c] for c in COUNTY_COLUMNS])
