"""The files a reconciliation run leaves in its output directory.

summary.json, discrepancies.csv, settlement.csv and report.html (one self-contained page: Chart.js is
inlined, so it works with no network). Nothing in them depends on when or as which run they were made:
the same inputs give the same bytes.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import text
from sqlalchemy.orm import Session

from voucher_service.domain.money import format_yuan
from voucher_service.services import reconciliation_sql as q
from voucher_service.services.reporting import county_names, county_totals

WEB = Path(__file__).resolve().parents[1] / "web"
CHART_JS = WEB / "static" / "chart.umd.min.js"
DISCREPANCY_COLUMNS = (
    "category",
    "voucher_id",
    "order_id",
    "ledger_discount_fen",
    "statement_discount_fen",
    "detail",
    "line_no",
    "redemption_id",
    "statement",
)
SETTLEMENT_COLUMNS = (
    "merchant_id",
    "merchant_name",
    "matched_count",
    "payable_fen",
    "held_fen",
    "unclaimed_fen",
)
HTML_ROWS = 500

DAILY = f"""
SELECT {{day}} AS day, COUNT(*) AS redemptions, SUM(r.discount_fen) AS discount_fen
FROM redemptions r
WHERE r.program_id = :p AND r.merchant_id = :m AND r.status = {q.ACTIVE}
  AND r.redeemed_at >= :start AND r.redeemed_at < :end
GROUP BY 1 ORDER BY 1
"""
# The period's active redemptions that are not payable are exactly those the run's items name as
# mismatched, unclaimed or already settled: a few rows to join, not a million.
DAILY_NOT_PAYABLE = f"""
SELECT {{day}} AS day, COUNT(DISTINCT r.id) AS held
FROM reconciliation_items i
JOIN redemptions r ON r.id = i.redemption_id
WHERE i.run_id = :run
  AND i.category IN ('amount_mismatch', 'missing_in_statement', 'already_settled', 'refunded_in_statement')
  AND r.status = {q.ACTIVE} AND r.redeemed_at >= :start AND r.redeemed_at < :end
GROUP BY 1
"""


def write_outputs(
    s: Session,
    out_dir: Path,
    run_id: str,
    summary: dict[str, Any],
    window: tuple[dt.datetime, dt.datetime],
    tz: str,
) -> None:
    """Write the run's four files into `out_dir` (each replaced whole, never left half-written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []

    def target(name: str) -> Path:
        final = out_dir / name
        temp = out_dir / f".{name}.partial"
        staged.append((temp, final))
        return temp

    first_rows = _write_discrepancies(
        s, run_id, target("discrepancies.csv"), Locator(summary.get("statements", []))
    )
    with target("settlement.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(SETTLEMENT_COLUMNS)
        writer.writerow(
            [
                summary["merchant"],
                summary["merchant_name"],
                summary["matched"],
                summary["payable_fen"],
                summary["held_fen"],
                summary["unclaimed_fen"],
            ]
        )
    target("summary.json").write_text(
        json.dumps(summary, ensure_ascii=False, sort_keys=True, indent=2) + "\n", encoding="utf-8"
    )
    charts = _charts(s, run_id, summary, window, tz)
    target("report.html").write_text(render_report(summary, first_rows, charts), encoding="utf-8")
    for temp, final in staged:
        os.replace(temp, final)


class Locator:
    """Turns a run's line numbers (unique across its statement files) back into a file and its line."""

    DUPLICATE_DETAIL = re.compile(r"^(same order or voucher as line )([0-9]+)$")

    def __init__(self, files: list[dict[str, Any]]) -> None:
        self.names = [str(f["name"]) for f in files] or [""]
        self.offsets = [int(f["line_offset"]) for f in files] or [0]

    def locate(self, line_no: int | None) -> tuple[str, int | None]:
        """(file name, its own line) of a run line number; ('', None) for a row with no line."""
        if line_no is None:
            return "", None
        k = max(bisect.bisect_left(self.offsets, line_no) - 1, 0)
        return self.names[k], line_no - self.offsets[k]

    def detail(self, text: str) -> str:
        """A duplicate's 'same ... as line N' naming the file too when the run read several."""
        match = self.DUPLICATE_DETAIL.match(text)
        if not match or len(self.names) == 1:
            return text
        name, line = self.locate(int(match.group(2)))
        return f"{match.group(1)}{line} of {name}"

    def row(self, row: Any) -> list[Any]:
        """A DISCREPANCIES row as the CSV has it: its file's line, and the file."""
        values = list(row)
        name, line = self.locate(values[6])
        values[5] = self.detail(values[5])
        values[6] = line
        return [*values, name if values[6] is not None else ""]


def _write_discrepancies(s: Session, run_id: str, path: Path, locator: Locator) -> list[dict[str, Any]]:
    first: list[dict[str, Any]] = []
    result = s.execute(text(q.DISCREPANCIES), {"run": run_id}, execution_options={"yield_per": 5000})
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(DISCREPANCY_COLUMNS)
        for raw in result:
            row = locator.row(raw)
            writer.writerow(["" if v is None else v for v in row])
            if len(first) < HTML_ROWS:
                first.append(dict(zip(DISCREPANCY_COLUMNS, row, strict=True)))
    return first


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _sqlite_local_day(stored: str | None, tz: str) -> str | None:
    # SQLite keeps UTC datetimes as naive text and knows no time zones; PostgreSQL converts in SQL.
    if stored is None:
        return None
    return dt.datetime.fromisoformat(stored).replace(tzinfo=dt.UTC).astimezone(_zone(tz)).date().isoformat()


def _daily(s: Session, params: dict[str, Any]) -> list[dict[str, Any]]:
    if s.get_bind().dialect.name == "postgresql":
        day = "CAST(r.redeemed_at AT TIME ZONE :tz AS DATE)"
    else:
        driver = s.connection().connection.driver_connection
        driver.create_function("voucher_local_day", 2, _sqlite_local_day, deterministic=True)  # type: ignore[union-attr]
        day = "voucher_local_day(r.redeemed_at, :tz)"
    held = {str(d): int(n) for d, n in s.execute(q.statement(DAILY_NOT_PAYABLE.format(day=day)), params)}
    rows = s.execute(q.statement(DAILY.format(day=day)), {k: v for k, v in params.items() if k != "run"})
    return [
        {
            "day": str(d),
            "redemptions": int(n),
            "payable": int(n) - held.get(str(d), 0),
            "discount_fen": int(f),
        }
        for d, n, f in rows
    ]


def _charts(
    s: Session, run_id: str, summary: dict[str, Any], window: tuple[dt.datetime, dt.datetime], tz: str
) -> dict[str, Any]:
    start, end = window
    params = {
        "run": run_id,
        "p": summary["program"],
        "m": summary["merchant"],
        "start": start,
        "end": end,
        "tz": tz,
    }
    totals = county_totals(
        s, summary["program"], merchant_id=summary["merchant"], start=start, end=end, count_redemptions=False
    )
    names = county_names(s, totals)
    counties = [
        {
            "county_code": c,
            "county_name": names.get(c, ""),
            "eligible_sales_fen": t.eligible_sales_fen,
            "discount_fen": t.discount_fen,
        }
        for c, t in sorted(totals.items())
    ]
    return {"daily": _daily(s, params), "counties": counties}


@lru_cache(maxsize=1)
def _chart_js() -> str:
    # Inline the vendored library with its licence header; drop the source-map hint (no network).
    source = CHART_JS.read_text(encoding="utf-8")
    lines = [line for line in source.splitlines() if not line.startswith("//# sourceMappingURL=")]
    return "\n".join(lines).replace("</script", "<\\/script")


def render_report(
    summary: dict[str, Any], discrepancies: list[dict[str, Any]], charts: dict[str, Any]
) -> str:
    """Render report.html: summary, charts (daily redemptions, by county) and the discrepancies."""
    env = Environment(
        loader=FileSystemLoader(WEB / "templates"),
        autoescape=select_autoescape(["html"]),
        keep_trailing_newline=True,
    )
    env.filters["yuan"] = format_yuan
    return env.get_template("report.html").render(
        summary=summary,
        discrepancies=discrepancies,
        charts=charts,
        chart_js=_chart_js(),
        categories=q.CATEGORIES,
        html_rows=HTML_ROWS,
    )
