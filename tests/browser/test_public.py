"""`/` and `/check` in a real browser: both languages, phone and desktop, axe, no console error."""

from __future__ import annotations

import datetime as dt

import pytest
import zxingcpp
from PIL import Image

from tests.browser.support import assert_translated, check_axe, fake_camera_args, screenshot, y4m_of
from voucher_service.domain.clock import local_date
from voucher_service.domain.gtin import with_check_digit
from voucher_service.domain.registry_generator import generate_registry, registry_csv
from voucher_service.services import registry


@pytest.mark.parametrize("width", ["phone", "desktop"])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_home_lists_open_programmes_and_the_ways_in(live, new_page, lang, width):
    program = live.admin.create_program(name="龙岗区扶贫产品消费券")
    live.admin.create_program(name="已暂停的活动", activate=False)
    page = new_page(width, lang)
    page.goto(live.url("/"))
    assert page.locator("html").get_attribute("lang") == ("zh-CN" if lang == "zh" else "en")
    body = page.inner_text("main")
    assert program["name"] in body
    assert "已暂停的活动" not in body  # a draft programme is not open
    assert "¥50.00" in body and "¥150.00" in body  # T50: 50 off a 150 minimum spend, from integer fen
    for href in ("/wallet/", "/check", "/checkout", "/console"):
        assert page.locator(f'.ways a[href="{href}"]').count() == 1, href
    if lang == "zh":
        assert "进行中的活动" in body
        assert_translated(page)
    else:
        assert "Open programmes" in body
    check_axe(page)
    screenshot(page, f"home-{lang}-{width}")


def _registry(live):
    """Three products: certified now (Guangxi mark), expired, suspended; from the seed generator's rows."""
    rows = generate_registry(seed=7)
    today = local_date(dt.datetime.now(dt.UTC))
    ok = next(r for r in rows if r[1] == "guangxi" and r[11] == "active")
    ok = [
        *ok[:9],
        (today - dt.timedelta(days=30)).isoformat(),
        (today + dt.timedelta(days=300)).isoformat(),
        "active",
    ]
    old = next(r for r in rows if r[1] == "national" and r[11] == "active")
    old = [
        *old[:9],
        (today - dt.timedelta(days=800)).isoformat(),
        (today - dt.timedelta(days=1)).isoformat(),
        "active",
    ]
    off = next(r for r in rows if r[1] == "shenzhen" and r[11] == "suspended")
    registry.import_products(live.ctx, registry_csv([ok, old, off]), "test")
    return ok, old, off


def _check(page, live, gtin_text):
    page.goto(live.url("/check"))
    page.click("#gtin")
    # A handheld scanner is a keyboard: the digits arrive as key presses, then Enter.
    page.keyboard.type(gtin_text, delay=5)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    return page.inner_text("main")


@pytest.mark.parametrize("width", ["phone", "desktop"])
def test_check_answers_certified_or_not_under_which_mark_from_which_county_until_when(live, new_page, width):
    ok, old, off = _registry(live)
    page = new_page(width, "zh")
    text = _check(page, live, ok[8].split("|")[0])
    assert "已认定" in text and ok[2] in text
    assert "广西扶贫产品标识" in text and ok[7] in text and ok[10] in text and ok[0] in text
    assert page.locator("#check-result.ok").count() == 1
    assert_translated(page)
    check_axe(page)
    screenshot(page, f"check-certified-zh-{width}")

    text = _check(page, live, old[8].split("|")[0])
    assert "当前未认定" in text and "认定已过期" in text and "国家扶贫产品认定" in text
    text = _check(page, live, off[8].split("|")[0])
    assert "当前未认定" in text and "认定已暂停" in text and "圳品" in text
    assert page.locator("#check-result.bad").count() == 1
    check_axe(page)

    unknown = with_check_digit("697000000001")
    text = _check(page, live, unknown)
    assert "未认定" in text and "不在扶贫产品认定目录中" in text

    body = ok[8].split("|")[0]
    wrong = body[:-1] + str((int(body[-1]) + 1) % 10)
    text = _check(page, live, wrong)
    assert f"应为 {body[-1]}，而不是 {wrong[-1]}" in text  # the check digit error, explained
    assert page.locator("#check-result").count() == 0
    assert_translated(page)
    check_axe(page)
    screenshot(page, f"check-digit-error-zh-{width}")


@pytest.mark.parametrize("width", ["phone", "desktop"])
def test_check_in_english(live, new_page, width):
    ok, _old, _off = _registry(live)
    page = new_page(width, "en")
    text = _check(page, live, "６９" + ok[8].split("|")[0][2:])  # fullwidth digits from a Chinese IME
    assert "Certified" in text and "Guangxi poverty-alleviation product mark" in text
    check_axe(page)
    screenshot(page, f"check-certified-en-{width}")
    text = _check(page, live, "12345")
    assert "8, 12, 13 or 14 digits; this one has 5" in text
    text = _check(page, live, "69٣1234567890")  # an Arabic-Indic digit is not a barcode digit
    assert "only the digits 0-9" in text
    check_axe(page)


def test_check_scans_a_product_barcode_with_the_camera(live, launch_chromium, tmp_path):
    """The camera path: Chromium's fake camera shows an EAN-13; the polyfill (ZXing WebAssembly served
    by the app) reads it and the page answers for that product."""
    ok, _old, _off = _registry(live)
    gtin = ok[8].split("|")[0]
    barcode = zxingcpp.write_barcode_to_image(
        zxingcpp.create_barcode(gtin, zxingcpp.BarcodeFormat.EAN13), scale=4
    )
    video = y4m_of(Image.fromarray(barcode), tmp_path / "ean13.y4m")
    cam = launch_chromium(*fake_camera_args(video))
    context = cam.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN", permissions=["camera"])
    errors: list[str] = []
    context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(live.base_url) else r.abort())
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live.url("/check"))
    page.click("#scan-start")
    page.wait_for_selector("#check-result", timeout=30_000)
    assert page.input_value("#gtin") == gtin
    assert "已认定" in page.inner_text("#check-result")
    assert not errors, errors
