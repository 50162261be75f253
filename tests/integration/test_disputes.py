"""Disputes: a merchant sees its own reconciliations over the signed API and contests a discrepancy; an
administrator accepts or rejects it in the CLI; an accepted dispute is paid in the next settlement, once."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.bill_files import WxBill
from tests.integration.books_fixtures import BACKENDS, BAMA, BooksEnv, open_books
from voucher_service.adapters.db.models import AuditEntry, SettledRedemption

TIERS = [{"code": "T50", "face_value_fen": 5000, "min_spend_fen": 15000, "quantity": 50}]
DAY = dt.datetime(2026, 12, 5, 4, 0, tzinfo=dt.UTC)


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest) -> BooksEnv:
    return open_books(request, tiers=TIERS)


def run_bill(
    env: BooksEnv, tmp_path: Path, bill: WxBill, name: str, capsys: pytest.CaptureFixture[str]
) -> str:
    path = tmp_path / name
    path.write_bytes(bill.bytes())
    capsys.readouterr()
    code = env.cli(
        "reconcile", "--program", env.program["id"], "--merchant", env.merchant.id, "--statement", str(path),
        "--format", "wechatpay", "--out", str(tmp_path / f"out-{name}"),
    )  # fmt: skip
    assert code in (0, 1)
    match = re.search(r"^run ([0-9a-f-]{36})$", capsys.readouterr().out, re.M)
    assert match
    return match.group(1)


def settle(env: BooksEnv, run_id: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert env.cli("settle", "--run", run_id) == 0
    return capsys.readouterr().out


def test_a_dispute_from_contest_to_settlement_is_paid_exactly_once(env, tmp_path, capsys):
    b = env.books
    b.redeem("ORD-OK", at=DAY, lines=[(BAMA, 1, 20_000)])
    late = b.redeem("ORD-LATE", at=DAY, lines=[(BAMA, 1, 20_000)])  # the merchant's bill missed it
    wrong = b.redeem("ORD-WRONG", at=DAY, lines=[(BAMA, 1, 20_000)])
    run_id = run_bill(
        env, tmp_path, WxBill().pay("ORD-OK", 15_000).pay("ORD-WRONG", 14_000), "d1.csv", capsys
    )
    assert "payable_fen=5000" in settle(env, run_id, capsys)

    listing = env.merchant.get("/api/v1/merchant/reconciliations")
    assert listing.status_code == 200, listing.get_json()
    (run,) = listing.get_json()["reconciliations"]
    assert run["run_id"] == run_id and run["payable_fen"] == 5000 and run["held_fen"] == 5000
    assert [x["payable_fen"] for x in run["settlements"]] == [5000]
    detail = env.merchant.get(f"/api/v1/merchant/reconciliations/{run_id}").get_json()
    by_order = {d["order_id"]: d for d in detail["discrepancy_list"]}
    assert set(by_order) == {"ORD-LATE", "ORD-WRONG"}
    missing = by_order["ORD-LATE"]
    assert missing["category"] == "missing_in_statement" and missing["disputable"] is True
    assert by_order["ORD-WRONG"]["statement"] == "d1.csv" and by_order["ORD-WRONG"]["line_no"] == 3

    opened = env.merchant.post(
        f"/api/v1/merchant/reconciliations/{run_id}/disputes",
        {"discrepancy_id": missing["discrepancy_id"], "note": "Paid in cash, receipt 0042, 老王"},
    )
    assert opened.status_code == 201, opened.get_json()
    dispute = opened.get_json()
    assert (dispute["status"], dispute["amount_fen"], dispute["redemption_id"]) == ("open", 5000, late.id)
    again = env.merchant.post(
        f"/api/v1/merchant/reconciliations/{run_id}/disputes",
        {"discrepancy_id": missing["discrepancy_id"], "note": "again"},
    )
    assert again.status_code == 409 and again.get_json()["code"] == "invalid_state"
    wrong_dispute = env.merchant.post(
        f"/api/v1/merchant/reconciliations/{run_id}/disputes",
        {"discrepancy_id": by_order["ORD-WRONG"]["discrepancy_id"], "note": "the bill is right"},
    ).get_json()

    capsys.readouterr()
    assert env.cli("disputes", "list") == 0
    listed = capsys.readouterr().out
    assert dispute["dispute_id"] in listed and wrong_dispute["dispute_id"] in listed
    assert env.cli("disputes", "reject", wrong_dispute["dispute_id"], "--note", "14000 paid, not 15000") == 0
    assert env.cli("disputes", "accept", dispute["dispute_id"], "--note", "receipt seen") == 0
    assert env.cli("disputes", "accept", dispute["dispute_id"]) == 2  # decided already
    assert env.cli("disputes", "accept", wrong_dispute["dispute_id"]) == 2

    # The next settlement of this programme and merchant pays it: here, settling the same run again.
    out = settle(env, run_id, capsys)
    assert "payable_fen=5000" in out and "paid 1 accepted disputes" in out
    assert "payable_fen=0" in settle(env, run_id, capsys)  # never twice
    # A later run that matches the same redemption does not pay it again either.
    later = run_bill(env, tmp_path, WxBill("ALL", "2026-12-06").pay("ORD-LATE", 15_000), "d2.csv", capsys)
    assert "payable_fen=0" in settle(env, later, capsys)
    with env.ctx.sessions() as s:
        paid = list(s.scalars(select(SettledRedemption).where(SettledRedemption.redemption_id == late.id)))
        assert [p.discount_fen for p in paid] == [5000]
        assert (
            s.scalars(select(SettledRedemption).where(SettledRedemption.redemption_id == wrong.id)).first()
            is None
        )
        actions = [a for (a,) in s.execute(select(AuditEntry.action).where(AuditEntry.entity == "dispute"))]
    assert sorted(actions) == sorted(
        ["dispute.opened", "dispute.opened", "dispute.rejected", "dispute.accepted", "dispute.paid"]
    )
    shown = env.merchant.get("/api/v1/merchant/reconciliations").get_json()["reconciliations"]
    first = next(r for r in shown if r["run_id"] == run_id)
    states = {d["dispute_id"]: (d["status"], d["paid"]) for d in first["disputes"]}
    assert states == {
        dispute["dispute_id"]: ("accepted", True),
        wrong_dispute["dispute_id"]: ("rejected", False),
    }
    assert [x["payable_fen"] for x in first["settlements"]] == [5000, 5000]


def test_a_merchant_sees_only_its_own_runs_and_bad_disputes_get_clear_errors(env, tmp_path, capsys):
    env.books.redeem("ORD-1", at=DAY, lines=[(BAMA, 1, 20_000)])
    other = env.admin.create_merchant(name="另一家", enrol_in=env.program["id"])
    run_id = run_bill(env, tmp_path, WxBill().pay("ORD-1", 15_000).pay("ORD-1", 15_000), "bill.csv", capsys)
    assert other.get("/api/v1/merchant/reconciliations").get_json() == {
        "reconciliations": [],
        "next_cursor": None,
    }
    assert other.get(f"/api/v1/merchant/reconciliations/{run_id}").get_json()["code"] == "forbidden"
    (dup,) = env.merchant.get(f"/api/v1/merchant/reconciliations/{run_id}").get_json()["discrepancy_list"]
    assert dup["category"] == "duplicate_in_statement" and dup["disputable"] is False
    path = f"/api/v1/merchant/reconciliations/{run_id}/disputes"
    cases = [
        (other, {"discrepancy_id": dup["discrepancy_id"], "note": "x"}, 403, "forbidden"),
        (env.merchant, {"discrepancy_id": dup["discrepancy_id"], "note": "x"}, 409, "invalid_state"),
        (env.merchant, {"discrepancy_id": 10**12, "note": "x"}, 404, "not_found"),
        (env.merchant, {"discrepancy_id": dup["discrepancy_id"], "note": "   "}, 400, "validation_error"),
        (env.merchant, {"discrepancy_id": "1", "note": "x"}, 400, "validation_error"),
        (env.merchant, {"note": "x"}, 400, "validation_error"),
    ]
    for caller, body, status, code in cases:
        resp = caller.post(path, body)
        assert (resp.status_code, resp.get_json()["code"]) == (status, code), (body, resp.get_json())
    unsigned = env.admin.client.get("/api/v1/merchant/reconciliations")
    assert unsigned.status_code == 401
    assert env.merchant.get("/api/v1/merchant/reconciliations?cursor=@@").status_code == 400
    for n in range(2):
        run_bill(env, tmp_path, WxBill().pay("ORD-1", 15_000), f"more{n}.csv", capsys)
    page = env.merchant.get("/api/v1/merchant/reconciliations?limit=2").get_json()
    rest = env.merchant.get(
        f"/api/v1/merchant/reconciliations?limit=2&cursor={page['next_cursor']}"
    ).get_json()
    ids = [r["run_id"] for r in page["reconciliations"] + rest["reconciliations"]]
    # Newest first, ties broken by id: runs recorded within one clock tick may come in either order.
    assert len(ids) == len(set(ids)) == 3 and run_id in ids and rest["next_cursor"] is None
    spec = env.admin.client.get("/api/v1/openapi.json").get_json()
    assert "/api/v1/merchant/reconciliations/{run_id}/disputes" in spec["paths"]
    assert "DisputeIn" in spec["components"]["schemas"]
