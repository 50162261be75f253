"""Holder-bound live codes in a real browser (CONTRACT §10): the wallet claims with a WebCrypto device key,
its live QR changes every 20 s, the cashier page redeems it through a fake camera, a screenshot replayed
61 s later and a bare VC1 are refused, and re-binding on a new phone refuses the old phone's code.

Clocks are moved, never slept on: the service's through `ctx.clock`, the wallet's with Playwright's."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from tests.browser.conftest import CHROMIUM, FLAGS, VIEWPORTS, LiveServer
from tests.browser.fake_camera import still_y4m
from tests.browser.support import assert_translated, check_axe, screenshot
from tests.browser.test_checkout import PASSWORD, fill_basket_and_check_preview, login
from tests.browser.test_wallet import api_vouchers, log_in
from tests.helpers import MerchantCaller, problem_code
from voucher_service.domain.clock import local_date
from voucher_service.domain.registry_generator import generate_registry, registry_csv
from voucher_service.services import registry, staff

pytestmark = pytest.mark.slow
PHONE = "13800138000"


class Clock:
    """The service's clock: real time plus what the test moved it by."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return (dt.datetime.now(dt.UTC) + self.offset).replace(microsecond=0)

    def tick(self, seconds: int) -> None:
        self.offset += dt.timedelta(seconds=seconds)

    def set_unix(self, unix: int) -> None:
        self.offset += dt.datetime.fromtimestamp(unix, dt.UTC) - self()


def presented_at(code: str) -> int:
    """The unix time a VP1 says the phone made it."""
    import cbor2

    from voucher_service.adapters.base45 import b45decode

    return int(cbor2.loads(cbor2.loads(b45decode(code[4:])).value[2])[6])


class Bound:
    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.clock = Clock()
        live.ctx.clock = self.clock
        rows = generate_registry(seed=11)
        registry.import_products(live.ctx, registry_csv(rows), "test")
        today = local_date(dt.datetime.now(dt.UTC)).isoformat()
        self.gtin = next(r[8].split("|")[0] for r in rows if r[11] == "active" and r[9] <= today <= r[10])
        program = live.admin.create_program(holder_binding="required")
        self.program_id = program["id"]
        self.shop: MerchantCaller = live.admin.create_merchant(
            "华润万家龙岗中心城店", enrol_in=self.program_id
        )
        staff.create_staff(live.ctx, self.shop.id, "cashier-vp", PASSWORD, "test")

    def preview(self, code: str) -> Any:
        items = [{"gtin": self.gtin, "quantity": 3, "unit_price_fen": 9000}]
        body = {"token": code, "order_id": "ORD-VP", "channel": "offline", "items": items}
        return self.shop.post("/api/v1/redemptions/preview", body)


@pytest.fixture
def bound(live: LiveServer) -> Bound:
    return Bound(live)


def claim_bound(page: Any, live: LiveServer) -> str:
    log_in(page, live, PHONE)
    page.click('button[data-tier="T50"]')
    page.wait_for_selector("#voucher-vp:not(.hidden)")
    return page.url.rsplit("/", 1)[-1]


def shown_code(page: Any) -> tuple[str, Image.Image]:
    """The live code as the page shows it: decoded from a screenshot of the QR (and the page's copy)."""
    shot = Image.open(io.BytesIO(page.locator("#voucher-vp").screenshot()))
    found = zxingcpp.read_barcodes(shot)
    assert len(found) == 1
    assert found[0].text == page.locator("#voucher-vp").get_attribute("data-code")
    return found[0].text, shot


def test_a_bound_voucher_shows_a_live_code_that_changes_and_redeems_only_while_fresh(
    bound: Bound, new_page: Any
) -> None:
    live = bound.live
    page = new_page("phone", "zh")
    page.clock.install()
    voucher_id = claim_bound(page, live)
    code, shot = shown_code(page)
    assert code.startswith("VP1:")
    check_axe(page)
    assert_translated(page)
    screenshot(page, "wallet-live-code-zh-phone")
    # The QR at error correction M: its version as drawn (and as zxing read it).
    version = int(page.locator("#voucher-vp").get_attribute("data-version"))
    found = zxingcpp.read_barcodes(shot)[0]
    assert found.ec_level == "M"
    print(f"VP1 live code: {len(code)} characters, QR version {version} at EC M (zxing: {found.extra})")
    assert version <= 20  # scannable from a phone screen
    # 20 s later the page has drawn a new code (the service's clock moves with it).
    page.clock.run_for(20_000)
    bound.clock.tick(20)
    page.wait_for_function("old => document.getElementById('voucher-vp').dataset.code !== old", arg=code)
    newer, _ = shown_code(page)
    assert newer != code and newer.startswith("VP1:")
    # The VC1 alone (as the API lists it, or printed) is refused; the live code is not.
    token = api_vouchers(live, PHONE)[voucher_id]["token"]
    assert problem_code(bound.preview(token)) == "presentation_required"
    assert bound.preview(newer).status_code == 200
    # The first screenshot, replayed 61 s after it was drawn, is refused.
    bound.clock.set_unix(presented_at(code) + 61)
    resp = bound.preview(code)
    assert resp.status_code == 422 and problem_code(resp) == "presentation_stale"


def test_the_cashier_page_redeems_the_live_code_through_the_camera(
    bound: Bound, new_page: Any, browser: Any, tmp_path: Path
) -> None:
    live = bound.live
    wallet = new_page("phone", "en")
    voucher_id = claim_bound(wallet, live)
    code, shot = shown_code(wallet)
    video = still_y4m(shot, tmp_path / "live-code.y4m")
    camera = browser.browser_type.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            *FLAGS,
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
        ],
    )
    errors: list[str] = []
    try:
        context = camera.new_context(
            viewport=VIEWPORTS["phone"], locale="en-US", extra_http_headers={"Accept-Language": "en-US"}
        )
        context.grant_permissions(["camera"], origin=live.base_url)
        context.set_default_timeout(20_000)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        login(page, live, "cashier-vp", "en")
        page.click("#voucher-camera")
        page.wait_for_selector("#voucher-status.ok", timeout=30_000)
        assert page.evaluate("JSON.parse(document.getElementById('redeem-basket').value).token") == code

        fill_basket_and_check_preview(page, SimpleNamespace(gtin=bound.gtin), "en")
        page.click("#redeem")
        page.wait_for_url(re.compile(r"/checkout/receipts/"))
        assert page.inner_text("#receipt-discount") == "−¥50.00"
        context.close()
    finally:
        camera.close()
    assert not errors, errors
    listed = bound.shop.get("/api/v1/redemptions").get_json()["redemptions"]
    assert [r["voucher_id"] for r in listed] == [voucher_id]


def test_rebinding_on_a_new_phone_refuses_the_old_phones_code(bound: Bound, new_page: Any) -> None:
    live = bound.live
    old_phone = new_page("phone", "zh")
    voucher_id = claim_bound(old_phone, live)
    old_code, _ = shown_code(old_phone)
    # The resident lost that phone: logs in by SMS on a new one (its own browser storage, no key).
    new_phone = new_page("phone", "zh")
    log_in(new_phone, live, PHONE)
    new_phone.goto(live.url(f"/wallet/vouchers/{voucher_id}"))
    new_phone.wait_for_selector("#rebind:not(.hidden)")
    assert new_phone.locator("#voucher-vp.hidden").count() == 1
    check_axe(new_phone)
    assert_translated(new_phone)
    screenshot(new_phone, "wallet-rebind-zh-phone")
    with new_phone.expect_navigation():
        new_phone.click("#rebind-submit")
    new_phone.wait_for_selector("#voucher-vp:not(.hidden)")
    new_code, _ = shown_code(new_phone)
    # The old phone's code is refused at once; the old phone, reloaded, has no key for the new binding.
    assert problem_code(bound.preview(old_code)) == "presentation_invalid"
    assert bound.preview(new_code).status_code == 200
    old_phone.reload()
    old_phone.wait_for_selector("#rebind:not(.hidden)")
    with live.ctx.sessions() as s:
        from sqlalchemy import select

        from voucher_service.adapters.db.models import AuditEntry

        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.entity_id == voucher_id)).all()
    assert "voucher.rebound" in actions
