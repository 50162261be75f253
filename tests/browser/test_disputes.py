"""Disputes in a real browser: a cashier opens the reconciliation tab of the checkout pages on a phone,
sees the shop's run and its settlement, and contests two discrepancies with a note; the administrator
accepts one and rejects the other in the console; the next settlement (the run page's button) pays the
accepted one exactly once and never the rejected one; the cashier then sees both outcomes. Both
languages, no untranslated text, console error or serious axe violation; forged CSRF tokens change
nothing; another shop's cashier never sees the run."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from tests.browser.conftest import LiveServer
from tests.browser.support import assert_translated, check_axe, screenshot
from tests.helpers import MerchantCaller, issue_test_voucher
from voucher_service.adapters.db.models import AuditEntry, SettledRedemption
from voucher_service.domain.clock import local_date
from voucher_service.domain.registry_generator import generate_registry, registry_csv
from voucher_service.services import console, disputes, registry, settlement, staff

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.slow
PASSWORD = "till-password-01"


@dataclass
class Disputed:
    """A console reconciliation run of one shop: ORD-OK matched, ORD-LATE missing from the bill,
    ORD-WRONG with the wrong discount in it."""

    live: LiveServer
    program_id: str
    shop: MerchantCaller
    run_id: str
    redemptions: dict[str, dict[str, Any]]


def redeem(
    live: LiveServer, program_id: str, shop: MerchantCaller, gtin: str, order_id: str
) -> dict[str, Any]:
    _vid, token = issue_test_voucher(live.ctx, program_id, "T50", holder=secrets.token_hex(8))
    resp = shop.post(
        "/api/v1/redemptions",
        {
            "token": token,
            "order_id": order_id,
            "channel": "offline",
            "items": [{"gtin": gtin, "name": "certified", "quantity": 2, "unit_price_fen": 9000}],
        },
        headers={"Idempotency-Key": secrets.token_hex(8)},
    )
    assert resp.status_code == 201, resp.get_json()
    return dict(resp.get_json())


@pytest.fixture
def disputed(live: LiveServer) -> Disputed:
    rows = generate_registry(seed=13)
    registry.import_products(live.ctx, registry_csv(rows), "test")
    today = local_date(dt.datetime.now(dt.UTC)).isoformat()
    gtin = next(r[8].split("|")[0] for r in rows if r[11] == "active" and r[9] <= today <= r[10])
    program = live.admin.create_program()
    shop = live.admin.create_merchant("百色芒果小店", enrol_in=program["id"])
    staff.create_staff(live.ctx, shop.id, "mango-till", PASSWORD, "test")
    other = live.admin.create_merchant("天虹超市", enrol_in=program["id"])
    staff.create_staff(live.ctx, other.id, "other-till", PASSWORD, "test")
    made = {o: redeem(live, program["id"], shop, gtin, o) for o in ("ORD-OK", "ORD-LATE", "ORD-WRONG")}
    lines = ["order_id,voucher_id,redeemed_at,discount_fen,status"]
    for order, discount in (("ORD-OK", 5000), ("ORD-WRONG", 4000)):
        r = made[order]
        lines.append(f"{order},{r['voucher_id']},{r['redeemed_at']},{discount},redeemed")
    result = console.reconcile_upload(
        live.ctx, program["id"], shop.id, "native", ("\n".join(lines) + "\n").encode(), "bill.csv", "test"
    )
    assert result.exit_code == 1, result.error
    assert settlement.settle_run(live.ctx, result.run_id, "test")["payable_fen"] == 5000  # ORD-OK
    return Disputed(live, program["id"], shop, result.run_id, made)


def cashier_login(page: Any, live: LiveServer, username: str, lang: str = "zh") -> None:
    page.goto(live.url(f"/checkout/?lang={lang}"))
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(re.compile(r"/checkout/(\?.*)?$"))


def admin_login(page: Any, live: LiveServer, lang: str = "zh") -> None:
    page.goto(live.url("/console/" + ("?lang=en" if lang == "en" else "")))
    page.fill("#token", live.admin_token)
    page.click("#login-submit")
    page.wait_for_selector("#programs-title")


def contest(page: Any, order_id: str, note: str) -> None:
    item = page.locator(f'li.discrepancy[data-order="{order_id}"]')
    item.locator("summary").click()
    item.locator("textarea").fill(note)
    with page.expect_navigation():
        item.locator("button.contest-submit").click()
    assert page.locator(".notice-ok").is_visible()


def submit(page: Any, button: Any) -> None:
    """Click a form's button and wait for the page it leads to."""
    with page.expect_navigation():
        button.click()


def settled(live: LiveServer, redemption_id: str) -> list[int]:
    with live.ctx.sessions() as s:
        rows = s.scalars(select(SettledRedemption).where(SettledRedemption.redemption_id == redemption_id))
        return [r.discount_fen for r in rows]


def test_a_contested_discrepancy_accepted_in_the_console_is_paid_once_and_a_rejected_one_never(
    new_page: Any, disputed: Disputed
) -> None:
    live, run_id = disputed.live, disputed.run_id
    late, wrong = disputed.redemptions["ORD-LATE"], disputed.redemptions["ORD-WRONG"]
    till = new_page("phone", "zh")
    cashier_login(till, live, "mango-till")
    till.click("#nav-reconciliations")
    till.wait_for_selector(f'li[data-run="{run_id}"]')
    assert till.locator(".run-payable").inner_text() == "¥50.00"  # ORD-OK only
    assert_translated(till)
    check_axe(till)
    screenshot(till, "checkout-reconciliations")
    till.click(f'li[data-run="{run_id}"] a.run-link')
    till.wait_for_selector("#discrepancy-list")
    categories = till.locator("li.discrepancy").evaluate_all("els => els.map(e => e.dataset.category)")
    assert sorted(categories) == ["amount_mismatch", "missing_in_statement"]
    till.locator('li.discrepancy[data-order="ORD-LATE"] summary').click()
    assert_translated(till)
    check_axe(till)
    screenshot(till, "checkout-reconciliation-run")
    till.locator('li.discrepancy[data-order="ORD-LATE"] summary').click()  # closed again
    contest(till, "ORD-LATE", "小票 0042：顾客现金付款，账单漏记")
    contest(till, "ORD-WRONG", "The bill should say 50.00")
    assert till.locator('#run-disputes li[data-status="open"]').count() == 2
    assert till.locator("li.discrepancy details.contest").count() == 0  # no second dispute of either

    admin = new_page("desktop", "zh")
    admin_login(admin, live)
    admin.click("#nav-disputes")
    admin.wait_for_selector("#disputes")
    assert admin.locator('#disputes li[data-status="open"]').count() == 2
    assert_translated(admin)
    check_axe(admin)
    screenshot(admin, "console-disputes")
    by_order = {d["order_id"]: d["dispute_id"] for d in disputes.list_disputes(live.ctx, status="open")}
    rejected = admin.locator(f'li[data-dispute="{by_order["ORD-WRONG"]}"]')
    submit(admin, rejected.locator("button.reject"))  # without a note: refused, still open
    assert admin.locator(".notice-error").is_visible()
    assert admin.locator('#disputes li[data-status="open"]').count() == 2
    rejected = admin.locator(f'li[data-dispute="{by_order["ORD-WRONG"]}"]')
    rejected.locator("textarea").fill("账单上的 40.00 元是正确的")
    submit(admin, rejected.locator("button.reject"))
    assert admin.locator(".notice-ok").is_visible()
    accepted = admin.locator(f'li[data-dispute="{by_order["ORD-LATE"]}"]')
    accepted.locator("textarea").fill("小票已核实")
    submit(admin, accepted.locator("button.accept"))
    assert "¥50.00" in admin.locator(".notice-ok").inner_text()
    assert admin.locator("#no-disputes").is_visible()
    admin.click("#filter-all")
    admin.wait_for_selector('#disputes li[data-status="accepted"]')
    assert admin.locator('#disputes li[data-status="rejected"]').count() == 1
    screenshot(admin, "console-disputes-decided")

    assert settled(live, late["redemption_id"]) == []  # accepting pays nothing by itself
    admin.locator(f'li[data-dispute="{by_order["ORD-LATE"]}"] a').click()  # to the run, to settle it
    admin.wait_for_selector("#settle")
    submit(admin, admin.locator("#settle"))
    assert settled(live, late["redemption_id"]) == [5000]
    assert settled(live, wrong["redemption_id"]) == []
    again = settlement.settle_run(live.ctx, run_id, "test")  # the settlement after: nothing twice
    assert again["disputes_paid"] == 0 and again["payable_fen"] == 0
    assert settled(live, late["redemption_id"]) == [5000] and settled(live, wrong["redemption_id"]) == []
    with live.ctx.sessions() as s:
        actions = sorted(
            (a.action, a.actor.split(":")[0])
            for a in s.scalars(select(AuditEntry).where(AuditEntry.entity == "dispute"))
        )
    assert actions == [
        ("dispute.accepted", "console"),
        ("dispute.opened", "staff"),
        ("dispute.opened", "staff"),
        ("dispute.paid", "console"),
        ("dispute.rejected", "console"),
    ]

    till.reload()
    assert till.locator('#run-disputes li[data-status="accepted"] .badge').inner_text() == "已受理，已结算"
    assert (
        "账单上的 40.00 元是正确的" in till.locator('#run-disputes li[data-status="rejected"]').inner_text()
    )
    assert_translated(till)
    check_axe(till)
    screenshot(till, "checkout-reconciliation-decided")
    till.click("#nav-reconciliations")
    till.wait_for_selector(f'li[data-run="{run_id}"] .settled-batch')
    assert till.locator(".settled-batch").count() == 2  # the first batch (ORD-OK) and the dispute's

    phone_admin = new_page("phone", "zh")
    admin_login(phone_admin, live)
    phone_admin.goto(live.url("/console/disputes?status=all"))
    check_axe(phone_admin)
    screenshot(phone_admin, "console-disputes-phone")


def test_the_tab_and_the_queue_in_english_and_what_others_cannot_do(
    new_page: Any, disputed: Disputed
) -> None:
    live, run_id = disputed.live, disputed.run_id
    till = new_page("desktop", "en")
    cashier_login(till, live, "mango-till", "en")
    till.goto(live.url(f"/checkout/reconciliations/{run_id}"))
    assert "Missing from your bill" in till.locator("#discrepancy-list").inner_text()
    contest(till, "ORD-LATE", "Receipt 0042")
    check_axe(till)
    screenshot(till, "checkout-reconciliation-run-en")
    (open_dispute,) = disputes.list_disputes(live.ctx, status="open")
    forged = till.request.post(
        live.url(f"/checkout/reconciliations/{run_id}/disputes"),
        form={"csrf_token": "0" * 64, "discrepancy_id": "1", "note": "forged"},
        max_redirects=0,
    )
    assert forged.status == 403

    stranger = new_page("phone", "zh")
    cashier_login(stranger, live, "other-till")
    stranger.goto(live.url("/checkout/reconciliations"))
    assert stranger.locator("#no-runs").is_visible()
    assert stranger.goto(live.url(f"/checkout/reconciliations/{run_id}")).status == 403
    token = stranger.locator('meta[name="csrf-token"]').get_attribute("content")
    resp = stranger.request.post(
        live.url(f"/console/disputes/{open_dispute['dispute_id']}"),
        form={"csrf_token": token, "decision": "accept", "note": ""},
        max_redirects=0,
    )
    assert resp.status == 302 and "/console/login" in resp.headers["location"]  # a cashier is no admin

    admin = new_page("desktop", "en")
    admin_login(admin, live, "en")
    admin.goto(live.url("/console/disputes"))
    forged = admin.request.post(
        live.url(f"/console/disputes/{open_dispute['dispute_id']}"),
        form={"csrf_token": "forged", "decision": "accept"},
        max_redirects=0,
    )
    assert forged.status == 403
    assert disputes.list_disputes(live.ctx, status="open") == [open_dispute]  # nothing decided it
    check_axe(admin)
    screenshot(admin, "console-disputes-en")
