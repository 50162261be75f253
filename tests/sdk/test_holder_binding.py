"""The SDK with holder-bound vouchers (CONTRACT §10), against the real app: VoucherClient.verify() and
OfflineTerminal.redeem() check a VP1 live code's two signatures and freshness with no network, refuse a
stale one and a bare VC1, and learn a re-binding from the revocations feed at the next refresh."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from merchant_sdk import (
    OfflineTerminal,
    PresentationInvalid,
    PresentationRequired,
    PresentationStale,
    TokenMalformed,
    VoucherClient,
)
from tests.helpers import MerchantCaller, consumer_headers
from tests.presentations import Device
from tests.redemption_support import add_product, random_gtin
from tests.sdk.conftest import LiveApp
from tests.sdk.support import dead_port

PHONE = "13800138000"


@dataclass
class Till:
    live: LiveApp
    program_id: str
    merchant: MerchantCaller
    gtin: str
    now: float  # the one clock of the service, the client and the terminal in these tests

    def clock(self) -> float:
        return self.now

    def client(self, **kw: Any) -> VoucherClient:
        return self.live.client(self.merchant.id, self.merchant.secret, clock=self.clock, **kw)

    def claim(self, device: Device) -> dict[str, Any]:
        app = self.live.app
        assert self.live.ctx.settings.sms_outbox
        headers = consumer_headers(app.test_client(), self.live.ctx.settings.sms_outbox, PHONE)
        resp = app.test_client().post(
            f"/api/v1/programs/{self.program_id}/claims",
            json={"tier": "T50", "device_key": device.jwk()},
            headers=headers,
        )
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()  # type: ignore[no-any-return]

    def items(self) -> list[dict[str, Any]]:
        return [{"gtin": self.gtin, "quantity": 2, "unit_price_fen": 9000}]


@pytest.fixture
def till(live_app: LiveApp) -> Iterator[Till]:
    program = live_app.admin.create_program(holder_binding="required")
    merchant = live_app.admin.create_merchant(enrol_in=program["id"])
    gtin = random_gtin()
    add_product(live_app.ctx, f"CERT-{gtin}", [gtin])
    t = Till(live_app, program["id"], merchant, gtin, live_app.ctx.now().timestamp())
    live_app.ctx.clock = lambda: dt.datetime.fromtimestamp(int(t.now), dt.UTC)
    yield t


def offline(client: VoucherClient) -> None:
    """Cut the network: every request now fails to connect."""
    client.base_url = f"http://127.0.0.1:{dead_port()}"
    client.max_retries = 0


def test_verify_checks_a_live_code_offline_and_refuses_stale_ones_and_bare_tokens(till: Till) -> None:
    device = Device()
    voucher = till.claim(device)
    client = till.client()
    client.refresh_keys()
    offline(client)
    code = device.present(voucher["token"], int(till.now))
    claims = client.verify(code)
    assert claims.voucher_id == voucher["voucher_id"] and claims.presented_at == int(till.now)
    assert claims.holder_key_thumbprint is not None
    with pytest.raises(PresentationRequired):
        client.verify(voucher["token"])
    with pytest.raises(PresentationInvalid):
        client.verify(Device().present(voucher["token"], int(till.now)))
    till.now += 61
    with pytest.raises(PresentationStale):
        client.verify(code)
    with pytest.raises(TokenMalformed):
        client.verify(code[:-3])


def test_an_offline_terminal_redeems_a_live_code_with_no_network_and_syncs_it(
    till: Till, tmp_path: Path
) -> None:
    device = Device()
    voucher = till.claim(device)
    client = till.client()
    terminal = OfflineTerminal(client, "till-1", str(tmp_path / "journal.sqlite3"), clock=till.clock)
    terminal.refresh()
    offline(client)
    till.now += 30
    with pytest.raises(PresentationRequired):
        terminal.redeem(voucher["token"], till.items(), order_id="O-bare")
    shot = device.present(voucher["token"], int(till.now))
    till.now += 61
    with pytest.raises(PresentationStale):
        terminal.redeem(shot, till.items(), order_id="O-stale")
    done = terminal.redeem(device.present(voucher["token"], int(till.now)), till.items(), order_id="O-1")
    assert done.discount_fen == 5000 and done.voucher_id == voucher["voucher_id"]
    assert terminal.records()[0].payload["token"].startswith("VP1:")
    # Back online, hours later: the service judges the presentation as of the record's time.
    client.base_url = till.live.base_url
    till.now += 3 * 3600
    report = terminal.sync()
    assert [(r.status, r.code) for r in report.results] == [("accepted", None)]


def test_a_terminal_refuses_the_old_phone_after_rebinding_from_its_next_refresh(
    till: Till, tmp_path: Path
) -> None:
    old, new = Device(), Device()
    voucher = till.claim(old)
    client = till.client()
    terminal = OfflineTerminal(client, "till-2", str(tmp_path / "journal.sqlite3"), clock=till.clock)
    terminal.refresh()
    app = till.live.app
    assert till.live.ctx.settings.sms_outbox
    headers = consumer_headers(app.test_client(), till.live.ctx.settings.sms_outbox, PHONE)
    resp = app.test_client().put(
        f"/api/v1/consumer/vouchers/{voucher['voucher_id']}/binding",
        json={"device_key": new.jwk()},
        headers=headers,
    )
    assert resp.status_code == 200, resp.get_json()
    new_token = resp.get_json()["token"]
    terminal.refresh()  # the revocations feed carries the replaced key
    offline(client)
    with pytest.raises(PresentationInvalid):
        terminal.redeem(old.present(voucher["token"], int(till.now)), till.items(), order_id="O-old")
    with pytest.raises(PresentationInvalid):
        terminal.redeem(old.present(new_token, int(till.now)), till.items(), order_id="O-old-2")
    done = terminal.redeem(new.present(new_token, int(till.now)), till.items(), order_id="O-new")
    assert done.discount_fen == 5000


def test_at_upload_an_old_key_counts_for_records_made_before_the_rebinding_only(
    till: Till, tmp_path: Path
) -> None:
    client = till.client()
    terminal = OfflineTerminal(client, "till-3", str(tmp_path / "journal.sqlite3"), clock=till.clock)
    before, after = Device(), Device()
    early = till.claim(before)
    late = till.claim(after)
    terminal.refresh()
    offline(client)
    # Made with the bound key before the holder re-bound it: the holder had the phone then.
    terminal.redeem(before.present(early["token"], int(till.now)), till.items(), order_id="O-early")
    till.now += 100
    app = till.live.app
    assert till.live.ctx.settings.sms_outbox
    headers = consumer_headers(app.test_client(), till.live.ctx.settings.sms_outbox, PHONE)
    for voucher in (early, late):
        resp = app.test_client().put(
            f"/api/v1/consumer/vouchers/{voucher['voucher_id']}/binding",
            json={"device_key": Device().jwk()},
            headers=headers,
        )
        assert resp.status_code in (200, 409), resp.get_json()  # the early one is already redeemed
    till.now += 100
    # The till, still offline, does not know of the re-binding and takes the old phone's code ...
    terminal.redeem(after.present(late["token"], int(till.now)), till.items(), order_id="O-late")
    client.base_url = till.live.base_url
    report = terminal.sync()
    # ... which the service refuses, since it was made after the key was replaced.
    assert [(r.status, r.code) for r in report.results] == [
        ("accepted", None),
        ("rejected", "presentation_invalid"),
    ]
