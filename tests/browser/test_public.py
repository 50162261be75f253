"""`/` and `/check` in a real browser: both languages, phone and desktop, axe, no console error."""

from __future__ import annotations

import pytest

from tests.browser.support import assert_translated, check_axe, screenshot


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
