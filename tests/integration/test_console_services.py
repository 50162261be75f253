"""The console's read models and runs, on SQLite and PostgreSQL: dashboard, merchant lists, registry
uploads, reconciliation of an uploaded statement kept by run id, and its settlement."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from sqlalchemy import func, select

from tests.integration.books_fixtures import BACKENDS, BAMA, DAY1, BooksEnv, open_books
from voucher_service.adapters.db.models import CertifiedProduct, SettledRedemption
from voucher_service.domain.errors import NotFound
from voucher_service.services import console
from voucher_service.services.ledger import BUCKETS
from voucher_service.services.settlement import settle_run

GOOD_ROW = (
    "GX-2026-0001,guangxi,巴马香米 5kg,grain,S1,巴马供应商,451227,巴马瑶族自治县,6951234000172,"
    "2026-01-01,2027-12-31,active"
)
HEADER = (
    "certification_no,certification_type,product_name,category,supplier_id,supplier_name,county_code,"
    "county_name,gtins,valid_from,valid_to,status"
)


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest) -> BooksEnv:
    return open_books(request)


def test_dashboard_buckets_add_up_to_the_budget_as_the_audit_computes_them(env: BooksEnv) -> None:
    env.books.redeem("O-1")
    env.books.claim("T50", DAY1 + dt.timedelta(days=1))
    board = console.dashboard(env.ctx, env.program["id"])
    budget = board["budget"]
    assert budget["holds"] and budget["problems"] == []
    assert sum(budget["buckets"][b] for b in BUCKETS) == budget["budget_fen"] == env.program["budget_fen"]
    t50 = next(t for t in board["tiers"] if t["code"] == "T50")
    assert (t50["claimed"], t50["redeemed"]) == (2, 1)
    assert budget["buckets"]["redeemed"] == t50["redeemed_fen"] == t50["face_value_fen"]
    assert budget["buckets"]["outstanding"] == t50["face_value_fen"]
    assert all(isinstance(v, int) for v in budget["buckets"].values())


def test_dashboard_counts_days_on_the_programmes_calendar(env: BooksEnv) -> None:
    # 16:30 UTC on 5 December is 00:30 on 6 December in Asia/Shanghai.
    late = dt.datetime(2026, 12, 5, 16, 30, tzinfo=dt.UTC)
    env.books.redeem("O-1", at=late)
    env.books.redeem("O-2", at=DAY1)
    daily = {d["day"]: d for d in console.dashboard(env.ctx, env.program["id"])["daily"]}
    assert daily["2026-12-06"]["redemptions"] == 1
    assert daily["2026-12-05"]["redemptions"] == 1
    # Each voucher was claimed an hour before: 23:30 and 11:00 on 5 December, local time.
    assert (daily["2026-12-05"]["claims"], daily["2026-12-06"]["claims"]) == (2, 0)


def test_dashboard_counties_are_the_county_report(env: BooksEnv) -> None:
    env.books.redeem("O-1")
    counties = {c["county_code"]: c for c in console.dashboard(env.ctx, env.program["id"])["counties"]}
    assert counties[BAMA]["redemptions"] == 1
    assert counties[BAMA]["eligible_sales_fen"] == 15000


def test_dashboard_of_an_unknown_programme_is_not_found(env: BooksEnv) -> None:
    with pytest.raises(NotFound):
        console.dashboard(env.ctx, "nope")


def test_merchants_are_listed_with_their_enrolments(env: BooksEnv) -> None:
    other = env.admin.create_merchant(name="百色芒果店")
    rows = {m["id"]: m for m in console.list_merchants(env.ctx)}
    assert rows[env.merchant.id]["programs"] == [env.program["id"]]
    assert rows[other.id]["programs"] == []
    assert "api_secret" not in rows[other.id]
    assert [e["merchant_id"] for e in console.list_enrolments(env.ctx, env.program["id"])] == [
        env.merchant.id
    ]


def test_a_registry_upload_with_a_bad_line_names_it_and_commits_nothing(env: BooksEnv) -> None:
    bad = GOOD_ROW.replace("GX-2026-0001", "GX-2026-0002").replace("6951234000172", "6951234000173")
    out = console.import_registry_upload(env.ctx, f"{HEADER}\n{GOOD_ROW}\n{bad}\n".encode(), "test")
    assert out.result is None
    assert [e["line"] for e in out.errors] == ["3"]
    with env.ctx.sessions() as s:
        # The PostgreSQL database is shared by the session's tests: look for this file's products only.
        kept = (
            select(func.count())
            .select_from(CertifiedProduct)
            .where(CertifiedProduct.certification_no.in_(["GX-2026-0001", "GX-2026-0002"]))
        )
        assert s.scalar(kept) == 0
    ok = console.import_registry_upload(env.ctx, f"{HEADER}\n{GOOD_ROW}\n".encode(), "test")
    assert ok.errors == [] and ok.result is not None and ok.result.total == 1


def test_an_uploaded_statement_is_reconciled_into_a_run_directory_and_settles_once(env: BooksEnv) -> None:
    r = env.books.redeem("O-1")
    missing = env.books.redeem("O-2")
    at = r.redeemed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    statement = f"order_id,voucher_id,redeemed_at,discount_fen,status\nO-1,{r.voucher_id},{at},{r.discount_fen},redeemed\n"
    result = console.reconcile_upload(
        env.ctx, env.program["id"], env.merchant.id, "native", statement.encode(), "../../etc/x.csv", "test"
    )
    assert result.exit_code == 1 and result.error is None
    for name in console.RUN_FILES:
        assert (
            console.run_file(env.ctx, result.run_id, name).parent == console.runs_dir(env.ctx) / result.run_id
        )
    summary = console.run_summary(env.ctx, result.run_id)
    assert summary == json.loads(console.run_file(env.ctx, result.run_id, "summary.json").read_text())
    assert summary["categories"]["missing_in_statement"] == 1 and summary["payable_fen"] == r.discount_fen
    rows = console.run_discrepancies(env.ctx, result.run_id)
    assert [(d["category"], d["order_id"]) for d in rows] == [("missing_in_statement", missing.order_id)]
    with console.run_file(env.ctx, result.run_id, "settlement.csv").open(encoding="utf-8") as fh:
        assert list(csv.DictReader(fh))[0]["payable_fen"] == str(r.discount_fen)
    first = settle_run(env.ctx, result.run_id, "test")
    again = settle_run(env.ctx, result.run_id, "test")
    assert first["payable_fen"] == r.discount_fen and again["settlement_id"] is None
    with env.ctx.sessions() as s:
        # Only this run's rows: the session's PostgreSQL database holds other tests' settlements too.
        paid = select(SettledRedemption.redemption_id).where(
            SettledRedemption.settlement_id == first["settlement_id"]
        )
        assert list(s.scalars(paid)) == [r.id]
        count = select(func.count()).select_from(SettledRedemption)
        assert s.scalar(count.where(SettledRedemption.redemption_id == r.id)) == 1


def test_an_unusable_statement_keeps_no_files_and_says_where(env: BooksEnv) -> None:
    result = console.reconcile_upload(
        env.ctx, env.program["id"], env.merchant.id, "native", b"order_id,voucher_id\nx,y\n", "s.csv", "test"
    )
    assert result.exit_code == 2 and result.error
    with pytest.raises(NotFound):
        console.run_file(env.ctx, result.run_id, "summary.json")


@pytest.mark.parametrize("name", ["statement", "../secret_key", "summary.json/..", ""])
def test_only_the_four_files_of_a_run_can_be_read(env: BooksEnv, name: str) -> None:
    r = env.books.redeem("O-1")
    at = r.redeemed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    stmt = io.StringIO(
        f"order_id,voucher_id,redeemed_at,discount_fen,status\nO-1,{r.voucher_id},{at},{r.discount_fen},redeemed\n"
    )
    result = console.reconcile_upload(
        env.ctx, env.program["id"], env.merchant.id, "native", stmt.getvalue().encode(), "s.csv", "test"
    )
    with pytest.raises(NotFound):
        console.run_file(env.ctx, result.run_id, name)
    with pytest.raises(NotFound):
        console.run_file(env.ctx, "../" + result.run_id, "summary.json")
