"""/console in a real browser: an administrator logs in with an admin token, sees an API redemption in
the dashboard, imports a registry file with a bad line (its number shown, nothing committed), reconciles
an uploaded statement and downloads its four files, settles, creates and activates a programme; both
languages with no untranslated text, console error or serious axe violation; a forged or missing CSRF
token changes nothing; no one but an administrator reaches the console."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import LiveServer
from tests.browser.support import assert_translated, check_axe, screenshot
from tests.helpers import MerchantCaller, issue_test_voucher
from voucher_service.domain.clock import local_date
from voucher_service.domain.registry_generator import generate_registry, registry_csv
from voucher_service.services import registry, staff

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.slow
HEADER = (
    "certification_no,certification_type,product_name,category,supplier_id,supplier_name,county_code,"
    "county_name,gtins,valid_from,valid_to,status"
)
GOOD = "GX-2031-0001,guangxi,巴马香米 5kg,grain,S1,巴马供应商,451227,巴马瑶族自治县,6901234567892,2026-01-01,2099-12-31,active"
BAD_GTIN = GOOD.replace("GX-2031-0001", "GX-2031-0002").replace("6901234567892", "6901234567893")


@dataclass
class Books:
    live: LiveServer
    program_id: str
    shop: MerchantCaller
    redemption: dict[str, Any]


def redeem_through_api(live: LiveServer, program_id: str, shop: MerchantCaller, gtin: str) -> dict[str, Any]:
    _vid, token = issue_test_voucher(live.ctx, program_id, "T50", holder=secrets.token_hex(8))
    resp = shop.post(
        "/api/v1/redemptions",
        {
            "token": token,
            "order_id": "C-" + secrets.token_hex(4),
            "channel": "offline",
            "items": [{"gtin": gtin, "name": "certified", "quantity": 2, "unit_price_fen": 9000}],
        },
        headers={"Idempotency-Key": secrets.token_hex(8)},
    )
    assert resp.status_code == 201, resp.get_json()
    return dict(resp.get_json())


@pytest.fixture
def books(live: LiveServer) -> Books:
    rows = generate_registry(seed=7)
    registry.import_products(live.ctx, registry_csv(rows), "test")
    today = local_date(dt.datetime.now(dt.UTC)).isoformat()
    gtin = next(r[8].split("|")[0] for r in rows if r[11] == "active" and r[9] <= today <= r[10])
    program = live.admin.create_program()
    shop = live.admin.create_merchant("百色芒果小店", enrol_in=program["id"])
    return Books(live, program["id"], shop, redeem_through_api(live, program["id"], shop, gtin))


def log_in(page: Any, live: LiveServer, lang: str = "zh") -> None:
    page.goto(live.url("/console/" + ("?lang=en" if lang == "en" else "")))
    assert "/console/login" in page.url  # no session: the login page
    page.fill("#token", live.admin_token)
    page.click("#login-submit")
    page.wait_for_selector("#programs-title")


def program_status(live: LiveServer, program_id: str) -> str:
    return str(live.admin.get(f"/api/v1/programs/{program_id}").get_json()["status"])


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_dashboard_shows_a_redemption_made_through_the_api(new_page: Any, books: Books, lang: str) -> None:
    page = new_page("desktop", lang)
    live = books.live
    page.goto(live.url("/console/login"))
    page.fill("#token", "vat_wrong-token")
    page.click("#login-submit")
    page.wait_for_selector("#login-error")
    log_in(page, live, lang)
    page.click(f'tr[data-program="{books.program_id}"] a')
    page.wait_for_selector('#dashboard[data-ready="1"]', state="attached")
    t50 = page.locator('tr[data-tier="T50"]')
    assert t50.locator(".claimed").inner_text() == "1" and t50.locator(".redeemed").inner_text() == "1"
    assert page.locator('td[data-bucket="redeemed"]').inner_text() == "¥50.00"
    assert page.locator('td[data-bucket="unallocated"]').inner_text() == "¥9,990,000.00"
    assert page.locator("#identity-verdict.ok").is_visible()
    assert page.locator("#counties tbody tr").count() >= 1
    for chart in ("chart-buckets", "chart-tiers", "chart-daily", "chart-counties"):
        assert page.evaluate(f"() => !!Chart.getChart(document.getElementById('{chart}'))")
    assert page.evaluate("() => window.consoleYuan('123456789')") == "¥1,234,567.89"
    assert page.evaluate("() => window.consoleYuan('5')") == "¥0.05"
    if lang == "zh":
        assert_translated(page)
    check_axe(page)
    screenshot(page, f"console-dashboard{'-en' if lang == 'en' else ''}")
    for path in (
        "/console/merchants",
        "/console/registry",
        "/console/reconcile",
        "/console/audit",
        "/console/",
    ):
        page.goto(live.url(path))
        if lang == "zh":
            assert_translated(page)
        check_axe(page)
        if lang == "zh" and path == "/console/merchants":
            screenshot(page, "console-merchants")
    page.goto(live.url("/console/audit"))
    assert page.locator("#audit-verdict.ok").is_visible()
    if lang == "zh":
        screenshot(page, "console-audit")
    page.click("#logout")
    page.goto(live.url("/console/"))
    assert "/console/login" in page.url


def test_a_registry_file_with_a_bad_line_shows_its_number_and_commits_nothing(
    new_page: Any, books: Books, tmp_path: Path
) -> None:
    page = new_page("desktop", "zh")
    live = books.live
    log_in(page, live)
    page.goto(live.url("/console/registry"))
    bad = tmp_path / "registry.csv"
    bad.write_text(f"{HEADER}\n{GOOD}\n{BAD_GTIN}\n", encoding="utf-8")
    page.set_input_files("#file", str(bad))
    page.click("#import")
    page.wait_for_selector("#registry-errors")
    assert page.locator("#registry-errors td.line").all_inner_texts() == ["3"]
    assert_translated(page)
    check_axe(page)
    screenshot(page, "console-registry")
    assert live.admin.get("/api/v1/products/GX-2031-0001").status_code == 404  # the good line was not kept
    good = tmp_path / "good.csv"
    good.write_text(f"{HEADER}\n{GOOD}\n", encoding="utf-8")
    page.set_input_files("#file", str(good))
    page.click("#import")
    page.wait_for_selector("#registry-ok")
    assert live.admin.get("/api/v1/products/GX-2031-0001").status_code == 200


def test_a_reconciliation_offers_its_four_files_and_settles_once(
    new_page: Any, books: Books, tmp_path: Path
) -> None:
    page = new_page("desktop", "zh")
    live, r = books.live, books.redemption
    log_in(page, live)
    page.goto(live.url("/console/reconcile"))
    statement = tmp_path / "statement.csv"
    statement.write_text(
        "order_id,voucher_id,redeemed_at,discount_fen,status\n"
        f"{r['order_id']},{r['voucher_id']},{r['redeemed_at']},{r['discount_fen']},redeemed\n"
        f"GHOST-1,{'0' * 8}-0000-4000-8000-{'0' * 12},{r['redeemed_at']},2000,redeemed\n",
        encoding="utf-8",
    )
    page.select_option("#r-program", books.program_id)
    page.select_option("#r-merchant", books.shop.id)
    page.set_input_files("#r-statement", str(statement))
    page.click("#reconcile")
    page.wait_for_selector("#run-files")
    assert page.locator('tr[data-category="missing_in_ledger"] td.num').inner_text() == "1"
    assert page.locator("#payable").inner_text() == "¥50.00"
    got: dict[str, bytes] = {}
    for name in ("summary.json", "discrepancies.csv", "settlement.csv", "report.html"):
        with page.expect_download() as info:
            page.click(f'#run-files a:text-is("{name}")')
        got[name] = Path(info.value.path()).read_bytes()
    summary = json.loads(got["summary.json"])
    assert summary["payable_fen"] == 5000 and summary["categories"]["missing_in_ledger"] == 1
    disc = list(csv.DictReader(io.StringIO(got["discrepancies.csv"].decode())))
    assert [(d["category"], d["order_id"]) for d in disc] == [("missing_in_ledger", "GHOST-1")]
    assert list(csv.DictReader(io.StringIO(got["settlement.csv"].decode())))[0]["payable_fen"] == "5000"
    assert b"<html" in got["report.html"].lower() and summary["input_sha256"].encode() in got["report.html"]
    assert_translated(page)
    check_axe(page)
    screenshot(page, "console-reconciliation")
    submit(page, "#settle")
    assert page.locator("#settlements li").count() == 1
    assert "¥50.00" in page.locator("#settlements li").inner_text()  # a batch, not "Not settled yet."
    submit(page, "#settle")  # again: nothing new to pay
    assert page.locator("#settlements li").count() == 1
    assert "¥50.00" in page.locator("#settlements li").inner_text()


def submit(page: Any, selector: str) -> None:
    """Click a form's button and wait for the page it leads to. Waiting for a notice alone is a race: the
    page being left may show one already (the previous action's), and assertions would then read it."""
    with page.expect_navigation():
        page.click(selector)
    page.wait_for_selector(".notice-ok")


def test_create_and_activate_a_programme(new_page: Any, books: Books) -> None:
    page = new_page("desktop", "en")
    live = books.live
    log_in(page, live, "en")
    page.fill("#name", "Baise mango week")
    page.fill("#budget", "1,000")
    page.fill("#starts_on", "2026-01-01")
    page.fill("#ends_on", "2099-01-31")
    page.fill("#tier_code_0", "T10")
    page.fill("#tier_face_0", "10")
    page.fill("#tier_min_0", "30.00")
    page.fill("#tier_quantity_0", "200")  # 2,000 yuan of vouchers: over the budget
    page.click("#create-program")
    page.wait_for_selector("#program-errors")
    page.fill("#tier_quantity_0", "100")
    page.fill("#targets", "451227,500")
    page.click("#create-program")
    page.wait_for_selector("#program-status")
    program_id = page.url.rstrip("/").split("/")[-1]
    body = live.admin.get(f"/api/v1/programs/{program_id}").get_json()
    assert body["status"] == "draft" and body["budget_fen"] == 100_000
    assert body["tiers"] == [{"code": "T10", "face_value_fen": 1000, "min_spend_fen": 3000, "quantity": 100}]
    assert body["targets"] == [{"county_code": "451227", "target_fen": 50_000}]
    screenshot(page, "console-programme-created-en")
    submit(page, "button.activate")
    assert program_status(live, program_id) == "active"
    submit(page, "button.suspend")
    assert program_status(live, program_id) == "suspended"
    page.goto(live.url("/console/?lang=zh"))
    screenshot(page, "console-programmes")


def test_a_forged_or_missing_csrf_token_changes_nothing(new_page: Any, books: Books) -> None:
    page = new_page("desktop", "zh")
    live = books.live
    draft = live.admin.create_program(activate=False)
    log_in(page, live)
    url = live.url(f"/console/programs/{draft['id']}/activate")
    for form in ({}, {"csrf_token": "0" * 64}):
        resp = page.request.post(url, form=form, max_redirects=0)
        assert resp.status == 403
    resp = page.request.post(
        live.url("/console/merchants"),
        form={"name": "Forged", "channels": "online", "csrf_token": "forged"},
        max_redirects=0,
    )
    assert resp.status == 403
    assert program_status(live, draft["id"]) == "draft"
    page.goto(live.url("/console/merchants"))
    assert "Forged" not in page.content()
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    resp = page.request.post(url, form={"csrf_token": token}, max_redirects=0)
    assert resp.status == 302 and program_status(live, draft["id"]) == "active"  # the real token works


def test_no_one_but_an_administrator_reaches_the_console(new_page: Any, books: Books) -> None:
    live = books.live
    draft = live.admin.create_program(activate=False)
    staff.create_staff(live.ctx, books.shop.id, "console-cashier", "till-password-01", "test")
    nobody = new_page("desktop", "zh")
    cashier = new_page("desktop", "zh")
    cashier.goto(live.url("/checkout/login"))
    cashier.fill("#username", "console-cashier")
    cashier.fill("#password", "till-password-01")
    cashier.click("#login-submit")
    cashier.wait_for_url(re.compile(r"/checkout/?$"))
    consumer = new_page("desktop", "zh")
    consumer.goto(live.url("/wallet/login"))
    consumer.fill("#phone", "13800138000")
    consumer.click("#phone-form button[type=submit]")
    consumer.wait_for_selector("#code")
    consumer.fill("#code", live.sms_code("13800138000"))
    consumer.click("#code-form button[type=submit]")
    consumer.wait_for_selector("#mine-title")
    run_id = "00000000-0000-4000-8000-000000000000"
    for page in (nobody, cashier, consumer):
        for path in (
            "/console/",
            f"/console/programs/{draft['id']}",
            "/console/merchants",
            "/console/registry",
            "/console/reconcile",
            "/console/audit",
            f"/console/runs/{run_id}/summary.json",
        ):
            page.goto(live.url(path))
            assert "/console/login" in page.url, path
        page.goto(live.url("/console/login"))
        token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
        resp = page.request.post(
            live.url(f"/console/programs/{draft['id']}/activate"), form={"csrf_token": token}, max_redirects=0
        )
        assert resp.status == 302 and "/console/login" in resp.headers["location"]
        json_resp = page.request.get(
            live.url(f"/console/programs/{draft['id']}/dashboard.json"), headers={"X-Requested-With": "fetch"}
        )
        assert json_resp.status == 401
    assert program_status(live, draft["id"]) == "draft"
