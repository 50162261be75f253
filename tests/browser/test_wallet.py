"""The resident's wallet in a real browser: SMS login, claim, the QR is the API's token, the status
turns to used without a reload, isolation between residents, CSRF, both languages and widths."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import expect

from tests.browser.support import assert_translated, check_axe, screenshot
from voucher_service.domain.clock import local_date
from voucher_service.domain.registry_generator import generate_registry, registry_csv
from voucher_service.services import issuance, registry
from voucher_service.services.consumers import phone_holder

PHONE_A = "13800138000"
PHONE_B = "13900139000"


def log_in(page, live, phone, lang="zh"):
    """Log in through the pages with the code the SMS outbox received."""
    page.goto(live.url("/wallet/" + ("?lang=en" if lang == "en" else "")))
    assert page.url.split("?")[0].endswith("/wallet/login")  # not logged in: sent to the login page
    page.fill("#phone", phone)
    page.click("#phone-form button[type=submit]")
    page.wait_for_selector("#code")
    page.fill("#code", live.sms_code(phone))
    page.click("#code-form button[type=submit]")
    page.wait_for_selector("#mine-title")


def api_vouchers(live, phone):
    """The holder's vouchers as the API returns them (a separate API session for the same phone)."""
    client = live.app.test_client()
    assert client.post("/api/v1/consumer/otp", json={"phone": phone}).status_code == 202
    session = client.post("/api/v1/consumer/sessions", json={"phone": phone, "code": live.sms_code(phone)})
    assert session.status_code == 201, session.get_json()
    resp = client.get(
        "/api/v1/consumer/vouchers", headers={"Authorization": "Bearer " + session.get_json()["token"]}
    )
    assert resp.status_code == 200
    return {v["voucher_id"]: v for v in resp.get_json()["vouchers"]}


def certified_gtins(live, n=2):
    rows = generate_registry(seed=7)
    registry.import_products(live.ctx, registry_csv(rows), "test")
    today = local_date(dt.datetime.now(dt.UTC)).isoformat()
    return [r[8].split("|")[0] for r in rows if r[11] == "active" and r[9] <= today <= r[10]][:n]


def claim_in_page(page, tier="T50"):
    page.click(f'button[data-tier="{tier}"]')
    page.wait_for_selector("#voucher-qr")
    return page.url.rsplit("/", 1)[-1]


def test_resident_claims_and_shows_the_qr_of_the_api_token_which_turns_used_without_reload(live, new_page):
    program = live.admin.create_program()
    shop = live.admin.create_merchant("百色芒果直营店", enrol_in=program["id"])
    gtins = certified_gtins(live)
    page = new_page("phone", "zh")
    log_in(page, live, PHONE_A)
    voucher_id = claim_in_page(page)
    assert "减 ¥50.00" in page.inner_text("main")
    assert "百色芒果直营店" in page.inner_text("main")  # where to spend it: the enrolled shop
    expect(page.locator("#voucher-status")).to_have_text("可使用")
    page.wait_for_load_state("load")  # the QR image is in
    assert page.locator("#voucher-qr").evaluate("img => img.naturalWidth") > 0

    # The QR as the resident's phone shows it decodes to the token the API returns for this voucher.
    shot = page.locator("#voucher-qr").screenshot()
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(shot)))
    assert len(found) == 1
    token = api_vouchers(live, PHONE_A)[voucher_id]["token"]
    assert found[0].text == token
    screenshot(page, "wallet-voucher-zh-phone")

    # A merchant redeems through the API; the open page shows it used, with no reload.
    page.evaluate("window.__notReloaded = true")
    items = [{"gtin": gtins[0], "name": "巴马香米 5kg", "quantity": 2, "unit_price_fen": 9000}]
    resp = shop.post(
        "/api/v1/redemptions",
        {"token": token, "order_id": "ORD-1", "channel": "offline", "items": items},
        headers={"Idempotency-Key": "wallet-redeem-1"},
    )
    assert resp.status_code == 201, resp.get_json()
    # Polled every 1.5 s, the status cached at most 1 s: used within 3 s by construction; the wait
    # here is longer only so a loaded CI machine does not fail it (no timing assertions).
    expect(page.locator("#voucher-status")).to_have_text("已使用", timeout=15_000)
    assert page.evaluate("window.__notReloaded === true")
    assert page.locator("#voucher").get_attribute("data-status") == "redeemed"
    screenshot(page, "wallet-voucher-used-zh-phone")
    page.goto(live.url("/wallet/"))
    assert "已使用" in page.inner_text(".vouchers")


def test_a_resident_never_sees_another_residents_vouchers(live, new_page):
    program = live.admin.create_program()
    other = issuance.claim_voucher(
        live.ctx, program["id"], "T20", issuance.Claimant(phone_holder(live.ctx, PHONE_B), "test")
    )
    page = new_page("phone", "zh")
    log_in(page, live, PHONE_A)
    mine = claim_in_page(page, "T50")
    page.goto(live.url("/wallet/"))
    listed = page.locator(".vouchers a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert listed == [f"/wallet/vouchers/{mine}"]
    for suffix in ("", "/qr.png", "/status"):
        resp = page.request.get(live.url(f"/wallet/vouchers/{other['voucher_id']}{suffix}"))
        assert resp.status == 404, (suffix, resp.status)
    resp = page.goto(live.url(f"/wallet/vouchers/{other['voucher_id']}"))
    assert resp.status == 404
    assert "页面不存在" in page.inner_text("main")
    for suffix in ("", "/qr.png", "/status"):  # and the own voucher is there
        assert page.request.get(live.url(f"/wallet/vouchers/{mine}{suffix}")).status == 200


def test_a_forged_or_missing_csrf_token_changes_nothing(live, new_page):
    program = live.admin.create_program()
    page = new_page("phone", "zh")
    log_in(page, live, PHONE_A)
    holder = phone_holder(live.ctx, PHONE_A)
    form = {"program_id": program["id"], "tier": "T50"}
    for token in (None, "forged", page.locator("#logout-form input[name=csrf_token]").input_value()[::-1]):
        data = dict(form) if token is None else {**form, "csrf_token": token}
        resp = page.request.post(live.url("/wallet/claim"), form=data)
        assert resp.status == 403, resp.status
        resp = page.request.post(
            live.url("/wallet/logout"), form={} if token is None else {"csrf_token": token}
        )
        assert resp.status == 403
    assert issuance.holder_vouchers(live.ctx, holder) == []  # no claim was made
    page.goto(live.url("/wallet/"))
    assert page.locator("#mine-title").count() == 1  # still logged in: the forged logout did nothing
    # The real form, with its token, works (so the refusals above were about the token).
    page.click("#logout-form button[type=submit]")
    page.wait_for_selector("#phone")
    page.goto(live.url("/wallet/"))
    assert page.url.endswith("/wallet/login")


@pytest.mark.parametrize("width", ["phone", "desktop"])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_wallet_page_is_translated_accessible_and_clean(live, new_page, lang, width):
    program = live.admin.create_program()
    live.admin.create_merchant("华润万家龙岗中心城店", enrol_in=program["id"])
    page = new_page(width, lang)
    page.goto(live.url("/wallet/login" + ("?lang=en" if lang == "en" else "")))
    check_page(page, lang)
    screenshot(page, f"wallet-login-{lang}-{width}")
    page.fill("#phone", PHONE_A)
    page.click("#phone-form button[type=submit]")
    page.wait_for_selector("#code")
    check_page(page, lang)
    page.fill("#code", "000000" if live.sms_code(PHONE_A) != "000000" else "111111")
    page.click("#code-form button[type=submit]")
    page.wait_for_selector("#login-error")  # a wrong code is explained, in the page's language
    check_page(page, lang)
    page.fill("#code", live.sms_code(PHONE_A))
    page.click("#code-form button[type=submit]")
    page.wait_for_selector("#mine-title")
    check_page(page, lang)
    screenshot(page, f"wallet-home-{lang}-{width}")
    claim_in_page(page)
    page.wait_for_load_state("load")  # the QR image is in
    assert page.locator("#voucher-qr").evaluate("img => img.naturalWidth") > 0
    check_page(page, lang)
    screenshot(page, f"wallet-voucher-{lang}-{width}")
    page.goto(live.url("/wallet/vouchers/00000000-0000-0000-0000-000000000000"))
    check_page(page, lang)  # the error page too


def check_page(page, lang):
    if lang == "zh":
        assert_translated(page)
    check_axe(page)
