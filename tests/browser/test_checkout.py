"""/checkout in a real browser: a cashier logs in, the voucher arrives through a fake camera or as
keyboard-wedge text, the basket gets a certified and an uncertified line, the preview says which is which,
the voucher is redeemed once whatever the double clicks, reloads and retries, the receipt shows, returns
work; a cashier never sees another merchant's redemptions; a forged or missing CSRF token changes nothing."""

from __future__ import annotations

import datetime as dt
import io
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select

from tests.browser.conftest import CHROMIUM, FLAGS, VIEWPORTS, LiveServer
from tests.browser.fake_camera import still_y4m
from tests.browser.support import assert_translated, check_axe, screenshot
from tests.helpers import MerchantCaller, issue_test_voucher
from voucher_service.adapters import qr
from voucher_service.adapters.db.models import Redemption
from voucher_service.domain.clock import local_date
from voucher_service.domain.gtin import with_check_digit
from voucher_service.domain.registry_generator import generate_registry, registry_csv
from voucher_service.services import registry, staff

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.slow
PASSWORD = "till-password-01"
UNCERTIFIED = with_check_digit("690000000001")  # a valid EAN-13 that no certified product has
TEXT = {
    "en": {
        "uncertified": "Not eligible: not a certified product",
        "eligible": "Eligible: certified product",
        "pays": "Customer pays",
        "redeemed": "Redeemed",
    },
    "zh": {
        "uncertified": "不可用券：不是认定的扶贫产品",
        "eligible": "可用券：认定的扶贫产品",
        "pays": "顾客应付",
        "redeemed": "已核销",
    },
}


@dataclass
class Shop:
    """An enrolled merchant with one cashier."""

    caller: MerchantCaller
    username: str


@dataclass
class Till:
    """What a checkout test needs: the live app, a programme, two shops, a certified barcode."""

    live: LiveServer
    program_id: str
    a: Shop
    b: Shop
    gtin: str

    def voucher(self) -> tuple[str, str]:
        """A fresh T50 voucher (50 off a 150 minimum spend): (voucher_id, token)."""
        return issue_test_voucher(self.live.ctx, self.program_id, "T50", holder=secrets.token_hex(8))


@pytest.fixture
def till(live: LiveServer) -> Till:
    ctx = live.ctx
    rows = generate_registry(seed=11)
    registry.import_products(ctx, registry_csv(rows), "test")
    today = local_date(dt.datetime.now(dt.UTC)).isoformat()
    gtin = next(r[8].split("|")[0] for r in rows if r[11] == "active" and r[9] <= today <= r[10])
    assert all(UNCERTIFIED not in r[8].split("|") for r in rows)
    program = live.admin.create_program()
    shops = []
    for name, username in (("华润万家龙岗中心城店", "cashier-a"), ("天虹超市", "cashier-b")):
        caller = live.admin.create_merchant(name, enrol_in=program["id"])
        staff.create_staff(ctx, caller.id, username, PASSWORD, "test")
        shops.append(Shop(caller, username))
    return Till(live, program["id"], shops[0], shops[1], gtin)


def login(page: Any, live: LiveServer, username: str, lang: str = "zh") -> None:
    page.goto(live.url(f"/checkout/?lang={lang}"))
    assert "/checkout/login" in page.url
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(re.compile(r"/checkout/(\?.*)?$"))


def add_line(page: Any, gtin: str, qty: str, price: str) -> None:
    """As with a handheld scanner: the barcode is typed with Enter, then quantity and price."""
    page.click("#gtin")
    page.keyboard.type(gtin)
    page.keyboard.press("Enter")  # the scanner's Enter moves on to the price
    page.fill("#qty", qty)
    page.fill("#price", price)
    page.keyboard.press("Enter")


def redemptions_of(live: LiveServer, voucher_id: str) -> int:
    with live.ctx.sessions() as s:
        return int(
            s.scalar(select(func.count()).select_from(Redemption).where(Redemption.voucher_id == voucher_id))
        )


def fill_basket_and_check_preview(page: Any, till: Till, lang: str) -> None:
    add_line(page, till.gtin, "3", "90.00")  # 270.00 certified: reaches the 150.00 minimum spend
    add_line(page, UNCERTIFIED, "1", "12.5")
    page.wait_for_function(
        "() => document.querySelectorAll('.basket-line').length === 2 && !!document.getElementById('to-pay')"
    )
    lines = page.locator(".basket-line")
    assert TEXT[lang]["eligible"] in lines.nth(0).inner_text()
    assert TEXT[lang]["uncertified"] in lines.nth(1).inner_text()
    assert page.inner_text("#order-total") == "¥282.50"
    assert page.inner_text("#eligible-total") == "¥270.00"
    assert page.inner_text("#discount") == "−¥50.00"
    assert page.inner_text("#to-pay") == "¥232.50"
    assert page.is_enabled("#redeem")


def redeem_form_fields(page: Any) -> dict[str, str]:
    return page.evaluate("""() => Object.fromEntries(new FormData(document.getElementById('redeem-form')))""")


def test_keyboard_wedge_checkout_redeems_once_and_takes_returns_in_english(till: Till, new_page: Any) -> None:
    run_wedge_checkout(till, new_page, "en")


def test_keyboard_wedge_checkout_in_chinese(till: Till, new_page: Any) -> None:
    run_wedge_checkout(till, new_page, "zh")


def run_wedge_checkout(till: Till, new_page: Any, lang: str) -> None:
    live = till.live
    page = new_page("phone", lang)
    page.goto(live.url(f"/checkout/login?lang={lang}"))
    check_axe(page)
    if lang == "zh":
        assert_translated(page)
    screenshot(page, f"checkout-login-{lang}-phone")
    login(page, live, till.a.username, lang)
    voucher_id, token = till.voucher()
    # A keyboard-wedge scanner: the focused voucher field gets a fast burst of keystrokes, then Enter.
    assert page.evaluate("document.activeElement.id") == "voucher"
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    page.wait_for_selector("#voucher-status.ok")
    assert page.evaluate("document.activeElement.id") == "gtin"
    fill_basket_and_check_preview(page, till, lang)
    check_axe(page)
    if lang == "zh":
        assert_translated(page)
    screenshot(page, f"checkout-preview-{lang}-phone")

    # A bad price is refused in words, and the basket cannot be redeemed while it is there.
    add_line(page, UNCERTIFIED, "1", "12.345")
    page.wait_for_selector(".line-error")
    assert "12.345" in page.inner_text(".line-error") and page.is_disabled("#redeem")
    page.click("#line-2 .remove-line")
    page.wait_for_function(
        "() => document.querySelectorAll('.basket-line').length === 2 && !document.getElementById('redeem').disabled"
    )

    fields = redeem_form_fields(page)
    page.dblclick("#redeem")
    page.wait_for_url(re.compile(r"/checkout/receipts/[0-9a-f-]{36}"))
    receipt_url = page.url
    assert page.inner_text("#receipt-discount") == "−¥50.00"
    assert page.inner_text("#receipt-to-pay") == "¥232.50"
    assert page.inner_text("#receipt-text").startswith("VR1:")
    assert page.locator("img.receipt-qr").evaluate("img => img.complete && img.naturalWidth > 0")
    check_axe(page)
    if lang == "zh":
        assert_translated(page)
    screenshot(page, f"checkout-receipt-{lang}-phone")
    page.reload()
    assert page.url == receipt_url
    # Reopening the checkout shows the same receipt: the checkout's key already has its answer.
    page.goto(live.url("/checkout/"))
    assert page.url == receipt_url
    # A flaky-Wi-Fi retry of the same form gets the same receipt, not a second redemption.
    again = page.request.post(live.url("/checkout/redeem"), form=fields, max_redirects=0)
    assert again.status == 303 and again.headers["location"].endswith(receipt_url.split("/checkout")[1])
    assert redemptions_of(live, voucher_id) == 1
    listed = till.a.caller.get("/api/v1/redemptions").get_json()["redemptions"]
    assert [r["voucher_id"] for r in listed].count(voucher_id) == 1  # the API sees the one redemption too

    # Returns by line: one unit of the certified line back leaves 180.00 >= 150.00, the discount holds.
    page.fill("#qty-0", "1")
    with page.expect_navigation():
        page.click("#return-lines")
    assert page.locator("#receipt-notice.notice-ok").count() == 1
    assert page.locator("#receipt-clawback").count() == 0 and page.locator("#receipt .badge.ok").count() == 1
    # Everything else back: below the minimum spend, the whole discount is clawed back.
    with page.expect_navigation():
        page.click("#return-all")
    assert page.locator("#receipt-notice.notice-ok").count() == 1
    assert page.inner_text("#receipt-clawback") == "¥50.00"
    assert page.locator("#receipt .badge.bad").count() == 1 and page.locator("#return-all").count() == 0
    page.goto(live.url("/checkout/today"))
    assert page.locator("#today-list li").count() == 1
    check_axe(page)
    if lang == "zh":
        assert_translated(page)
    screenshot(page, f"checkout-today-{lang}-phone")
    page.click("#logout")
    page.wait_for_url(re.compile(r"/checkout/login"))
    page.goto(live.url("/checkout/today"))
    assert "/checkout/login" in page.url


@pytest.fixture
def camera_browser(till: Till, browser: Any, tmp_path: Path) -> Iterator[Any]:
    """A second Chromium (same Playwright) whose camera films the QR code of a fresh voucher (Y4M file)."""
    voucher_id, token = till.voucher()
    image = Image.open(io.BytesIO(qr.render(token, "png")))
    video = still_y4m(image, tmp_path / "voucher.y4m")
    flags = [
        *FLAGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    camera = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=flags)
    camera.voucher = (voucher_id, token)
    yield camera
    camera.close()


def test_the_voucher_arrives_through_the_camera(till: Till, camera_browser: Any) -> None:
    live = till.live
    voucher_id, token = camera_browser.voucher
    context = camera_browser.new_context(
        viewport=VIEWPORTS["phone"], locale="en-US", extra_http_headers={"Accept-Language": "en-US,en;q=0.9"}
    )
    context.grant_permissions(["camera"], origin=live.base_url)
    context.set_default_timeout(20_000)
    off_site: list[str] = []
    errors: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(live.base_url) or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            off_site.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        login(page, live, till.a.username, "en")
        page.click("#voucher-camera")  # shown only when camera scanning is possible
        page.wait_for_selector("#voucher-status.ok", timeout=30_000)
        assert page.evaluate("JSON.parse(document.getElementById('redeem-basket').value).token") == token
        fill_basket_and_check_preview(page, till, "en")
        page.click("#redeem")
        page.wait_for_url(re.compile(r"/checkout/receipts/"))
        assert page.inner_text("#receipt-discount") == "−¥50.00"
        assert redemptions_of(live, voucher_id) == 1
    finally:
        context.close()
    assert not off_site, off_site
    assert not errors, errors


def test_a_cashier_never_sees_another_merchants_redemptions(till: Till, new_page: Any) -> None:
    live = till.live
    voucher_id, token = till.voucher()
    items = [{"gtin": till.gtin, "quantity": 2, "unit_price_fen": 9000}]
    made = till.a.caller.post(
        "/api/v1/redemptions",
        {"token": token, "order_id": "A-1", "channel": "offline", "items": items},
        headers={"Idempotency-Key": "a-1"},
    )
    assert made.status_code == 201, made.get_json()
    rid = made.get_json()["redemption_id"]

    page = new_page("phone", "en")
    login(page, live, till.b.username, "en")
    page.goto(live.url("/checkout/today"))
    assert page.locator("#no-redemptions").count() == 1 and rid not in page.content()
    for path in (f"/checkout/receipts/{rid}", f"/checkout/receipts/{rid}/receipt.svg"):
        resp = page.request.get(live.url(path))
        assert resp.status == 403 and "VR1:" not in resp.text(), path
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    form = {"csrf_token": csrf, "key": "rev-" + "x" * 30, "action": "all"}
    resp = page.request.post(live.url(f"/checkout/receipts/{rid}/returns"), form=form, max_redirects=0)
    assert resp.status == 403
    with live.ctx.sessions() as s:
        assert s.get(Redemption, rid).status == "active"  # type: ignore[union-attr]


def test_a_forged_or_missing_csrf_token_changes_nothing(till: Till, new_page: Any) -> None:
    live = till.live
    page = new_page("phone", "en")
    login(page, live, till.a.username, "en")
    voucher_id, token = till.voucher()
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    fill_basket_and_check_preview(page, till, "en")
    fields = redeem_form_fields(page)
    for forged in (
        {**fields, "csrf_token": "0" * 64},
        {k: v for k, v in fields.items() if k != "csrf_token"},
    ):
        resp = page.request.post(live.url("/checkout/redeem"), form=forged, max_redirects=0)
        assert resp.status == 403
    assert redemptions_of(live, voucher_id) == 0
    # The same request with the right token redeems (so the refusals above were the token's doing).
    resp = page.request.post(live.url("/checkout/redeem"), form=fields, max_redirects=0)
    assert resp.status == 303 and redemptions_of(live, voucher_id) == 1
    rid = resp.headers["location"].rsplit("/", 1)[1]
    resp = page.request.post(
        live.url(f"/checkout/receipts/{rid}/returns"),
        max_redirects=0,
        form={"key": "rev-" + "y" * 30, "action": "all"},
    )
    assert resp.status == 403
    with live.ctx.sessions() as s:
        assert s.get(Redemption, rid).status == "active"  # type: ignore[union-attr]


def test_wrong_passwords_are_refused_then_rate_limited(till: Till, new_page: Any) -> None:
    live = till.live
    page = new_page("phone", "en")
    page.goto(live.url("/checkout/login?lang=en"))
    page.fill("#username", till.a.username)
    page.fill("#password", "not the password")
    page.click("#login-submit")
    assert page.inner_text("#login-error") == "Wrong username or password."
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    statuses = [
        page.request.post(
            live.url("/checkout/login"),
            form={"csrf_token": csrf, "username": till.a.username, "password": "still wrong!"},
        ).status
        for _ in range(live.ctx.settings.staff_login_attempts)
    ]
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
