"""The dispute pages over HTTP (Flask test client, SQLite): a cashier sees only its own shop's runs and
contests a discrepancy with a note (the audit log names the staff member); a note that is empty, a
discrepancy that cannot be disputed, another shop's run or a missing CSRF token change nothing; in the
console a rejection needs a note, and an accepted dispute is paid by the next settlement, once."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.bill_files import WxBill
from tests.integration.books_fixtures import BAMA, BooksEnv, open_books
from voucher_service.adapters.db.models import AuditEntry, Dispute, SettledRedemption
from voucher_service.services import disputes, settlement, staff

TIERS = [{"code": "T50", "face_value_fen": 5000, "min_spend_fen": 15000, "quantity": 50}]
DAY = dt.datetime(2026, 12, 5, 4, 0, tzinfo=dt.UTC)
PASSWORD = "till-password-01"
CSRF_RE = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)">')


@pytest.fixture
def env(request: pytest.FixtureRequest) -> BooksEnv:
    return open_books(request, "sqlite", tiers=TIERS)


def reconcile(env: BooksEnv, tmp_path: Path, bill: WxBill, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "bill.csv"
    path.write_bytes(bill.bytes())
    capsys.readouterr()
    code = env.cli(
        "reconcile", "--program", env.program["id"], "--merchant", env.merchant.id, "--statement", str(path),
        "--format", "wechatpay", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code in (0, 1)
    match = re.search(r"^run ([0-9a-f-]{36})$", capsys.readouterr().out, re.M)
    assert match
    return match.group(1)


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match
    return match.group(1)


def cashier_client(env: BooksEnv, merchant_id: str, username: str) -> tuple[Any, str]:
    staff.create_staff(env.ctx, merchant_id, username, PASSWORD, "test")
    client = env.admin.client.application.test_client()
    csrf = csrf_of(client.get("/checkout/login").get_data(as_text=True))
    resp = client.post(
        "/checkout/login", data={"csrf_token": csrf, "username": username, "password": PASSWORD}
    )
    assert resp.status_code == 302
    return client, csrf_of(client.get("/checkout/reconciliations").get_data(as_text=True))


def admin_client(env: BooksEnv) -> tuple[Any, str]:
    client = env.admin.client.application.test_client()
    csrf = csrf_of(client.get("/console/login").get_data(as_text=True))
    token = env.admin.headers["Authorization"].split(" ", 1)[1]
    assert client.post("/console/login", data={"csrf_token": csrf, "token": token}).status_code == 302
    return client, csrf_of(client.get("/console/disputes").get_data(as_text=True))


def discrepancy_ids(env: BooksEnv, run_id: str) -> dict[str, int]:
    run = disputes.merchant_run(env.ctx, env.merchant.id, run_id)
    return {d["order_id"]: d["discrepancy_id"] for d in run["discrepancy_list"]}


def test_a_cashier_contests_a_discrepancy_of_its_own_shop_only(env, tmp_path, capsys):
    b = env.books
    b.redeem("ORD-OK", at=DAY, lines=[(BAMA, 1, 20_000)])
    late = b.redeem("ORD-LATE", at=DAY, lines=[(BAMA, 1, 20_000)])
    run_id = reconcile(env, tmp_path, WxBill().pay("ORD-OK", 15_000).pay("ORD-OK", 15_000), capsys)
    ids = discrepancy_ids(env, run_id)
    other = env.admin.create_merchant(name="另一家", enrol_in=env.program["id"])
    client, csrf = cashier_client(env, env.merchant.id, "till-own")
    stranger, stranger_csrf = cashier_client(env, other.id, "till-other")

    listing = client.get("/checkout/reconciliations").get_data(as_text=True)
    assert f'data-run="{run_id}"' in listing
    assert run_id not in stranger.get("/checkout/reconciliations").get_data(as_text=True)
    assert stranger.get(f"/checkout/reconciliations/{run_id}").status_code == 403
    page = client.get(f"/checkout/reconciliations/{run_id}").get_data(as_text=True)
    assert f'id="d-{ids["ORD-LATE"]}"' in page and "contest-form" in page

    url = f"/checkout/reconciliations/{run_id}/disputes"
    form = {"csrf_token": csrf, "discrepancy_id": str(ids["ORD-LATE"]), "note": "小票 0042，现金支付"}
    assert client.post(url, data={**form, "csrf_token": "0" * 64}).status_code == 403
    assert client.post(url, data={k: v for k, v in form.items() if k != "csrf_token"}).status_code == 403
    assert stranger.post(url, data={**form, "csrf_token": stranger_csrf}).status_code == 403
    empty = client.post(url, data={**form, "note": "  \t "}, follow_redirects=True)
    assert "请填写 1 至 1000 个字符的说明" in empty.get_data(as_text=True)
    dup = {**form, "discrepancy_id": str(ids["ORD-OK"]), "note": "x"}  # duplicate_in_statement: no
    assert "此差异不能申诉" in client.post(url, data=dup, follow_redirects=True).get_data(as_text=True)
    assert client.post(url, data={**form, "discrepancy_id": "1x"}).status_code == 400
    with env.ctx.sessions() as s:
        assert s.scalars(select(Dispute)).first() is None  # nothing of the above opened one

    resp = client.post(url, data=form)
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"#d-{ids['ORD-LATE']}")
    shown = client.get(resp.headers["Location"].split("#")[0]).get_data(as_text=True)
    assert "申诉已提交" in shown and "待处理：等待管理员审核" in shown
    again = client.post(url, data=form, follow_redirects=True).get_data(as_text=True)  # a resubmitted form
    assert "此差异不能申诉，或已提出过申诉" in again
    with env.ctx.sessions() as s:
        (d,) = s.scalars(select(Dispute))
        assert (d.redemption_id, d.note, d.amount_fen) == (late.id, "小票 0042，现金支付", 5000)
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "dispute.opened")).one()
    assert entry.actor.startswith("staff:stf_")


def test_the_console_rejects_only_with_a_note_and_an_accepted_dispute_is_paid_once(env, tmp_path, capsys):
    b = env.books
    b.redeem("ORD-OK", at=DAY, lines=[(BAMA, 1, 20_000)])
    late = b.redeem("ORD-LATE", at=DAY, lines=[(BAMA, 1, 20_000)])
    wrong = b.redeem("ORD-WRONG", at=DAY, lines=[(BAMA, 1, 20_000)])
    run_id = reconcile(env, tmp_path, WxBill().pay("ORD-OK", 15_000).pay("ORD-WRONG", 14_000), capsys)
    ids = discrepancy_ids(env, run_id)
    accept_me = disputes.open_dispute(env.ctx, env.merchant.id, run_id, ids["ORD-LATE"], "paid in cash")
    reject_me = disputes.open_dispute(env.ctx, env.merchant.id, run_id, ids["ORD-WRONG"], "bill is wrong")
    client, csrf = admin_client(env)
    queue = client.get("/console/disputes").get_data(as_text=True)
    assert accept_me["dispute_id"] in queue and reject_me["dispute_id"] in queue

    def decide(dispute_id: str, decision: str, note: str = "", token: str = csrf) -> Any:
        return client.post(
            f"/console/disputes/{dispute_id}",
            data={"csrf_token": token, "decision": decision, "note": note},
            follow_redirects=True,
        )

    assert decide(reject_me["dispute_id"], "reject", token="f" * 64).status_code == 403
    assert "驳回时须填写给商户的说明" in decide(reject_me["dispute_id"], "reject").get_data(as_text=True)
    assert decide(accept_me["dispute_id"], "maybe").status_code == 400
    assert len(disputes.list_disputes(env.ctx, status="open")) == 2  # neither attempt decided anything
    assert "申诉已驳回" in decide(reject_me["dispute_id"], "reject", "账单金额正确").get_data(as_text=True)
    assert "申诉已受理：¥50.00" in decide(accept_me["dispute_id"], "accept").get_data(as_text=True)
    assert "此申诉现在无法处理" in decide(accept_me["dispute_id"], "reject", "again").get_data(as_text=True)
    decided = {d["dispute_id"]: d for d in disputes.list_disputes(env.ctx, status=None)}
    assert decided[accept_me["dispute_id"]]["status"] == "accepted"
    assert decided[reject_me["dispute_id"]]["decision_note"] == "账单金额正确"
    assert decided[accept_me["dispute_id"]]["decided_by"].startswith("console:")

    first = settlement.settle_run(env.ctx, run_id, "test")
    assert first["disputes_paid"] == 1 and first["disputes_paid_fen"] == 5000
    assert settlement.settle_run(env.ctx, run_id, "test")["disputes_paid"] == 0
    with env.ctx.sessions() as s:
        paid = [p.redemption_id for p in s.scalars(select(SettledRedemption))]
    assert paid.count(late.id) == 1 and wrong.id not in paid
    accepted_tab = client.get("/console/disputes?status=accepted").get_data(as_text=True)
    assert "是，结算批次" in accepted_tab and reject_me["dispute_id"] not in accepted_tab
    assert client.get("/console/disputes?status=bogus").status_code == 404
