"""Holder binding (CONTRACT §10) through the API: claims with a device key, VP1 presentations at the
till (fresh, stale, wrong key, bare VC1), low-s rules, re-binding with its audit and revocation feed,
`off` and `optional` programmes as before, and pycose verifying a VP1 against the token's cnf key."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import cbor2
import pytest
from sqlalchemy import select

from tests.helpers import Admin, MerchantCaller, consumer_headers, problem_code
from tests.presentations import Device, with_twin_signature
from tests.redemption_support import add_product, random_gtin
from tests.token_variants import high_s_variant
from voucher_service.adapters.base45 import b45decode
from voucher_service.adapters.db.models import AuditEntry, HolderBinding
from voucher_service.domain.presentations import HolderKey
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import create_admin_token

PHONE = "13800138000"


@dataclass
class World:
    app: Any
    ctx: ServiceContext
    admin: Admin
    shop: MerchantCaller
    program_id: str
    gtin: str
    now: dt.datetime

    def consumer(self, phone: str = PHONE) -> dict[str, str]:
        assert self.ctx.settings.sms_outbox
        return consumer_headers(self.app.test_client(), self.ctx.settings.sms_outbox, phone)

    def claim(self, headers: dict[str, str], **extra: Any) -> Any:
        return self.app.test_client().post(
            f"/api/v1/programs/{self.program_id}/claims", json={"tier": "T50", **extra}, headers=headers
        )

    def bound_voucher(self, device: Device, phone: str = PHONE) -> dict[str, Any]:
        resp = self.claim(self.consumer(phone), device_key=device.jwk())
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()  # type: ignore[no-any-return]

    def body(self, token: str, order: str = "ORD-1") -> dict[str, Any]:
        items = [{"gtin": self.gtin, "quantity": 2, "unit_price_fen": 9000}]
        return {"token": token, "order_id": order, "channel": "offline", "items": items}

    def preview(self, token: str) -> Any:
        return self.shop.post("/api/v1/redemptions/preview", self.body(token))

    def redeem(self, token: str, key: str) -> Any:
        return self.shop.post("/api/v1/redemptions", self.body(token, key), headers={"Idempotency-Key": key})

    def unix(self) -> int:
        return int(self.ctx.now().timestamp())

    def tick(self, seconds: int) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _world(app: Any, holder_binding: str) -> World:
    ctx: ServiceContext = app.extensions["voucher"]
    admin = Admin(app.test_client(), create_admin_token(ctx, "tester"))
    program = admin.create_program(holder_binding=holder_binding)
    assert program["holder_binding"] == holder_binding
    shop = admin.create_merchant("华润万家", enrol_in=program["id"])
    gtin = random_gtin()
    add_product(ctx, f"CERT-{gtin}", [gtin])
    world = World(app, ctx, admin, shop, program["id"], gtin, ctx.now())
    ctx.clock = lambda: world.now  # the tests move the service's clock; nothing sleeps
    return world


@pytest.fixture
def required(app: Any) -> World:
    return _world(app, "required")


@pytest.fixture(params=["app", pytest.param("pg_app", marks=pytest.mark.postgres)])
def required_any(request: pytest.FixtureRequest) -> World:
    return _world(request.getfixturevalue(request.param), "required")


def test_a_required_programme_refuses_a_claim_without_a_device_key(required: World) -> None:
    resp = required.claim(required.consumer())
    assert resp.status_code == 400 and problem_code(resp) == "validation_error"
    assert resp.get_json()["errors"][0]["field"] == "device_key"
    for bad in ({"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43}, {"kty": "RSA"}):
        resp = required.claim(required.consumer(), device_key=bad)
        assert resp.status_code == 400 and problem_code(resp) == "validation_error", bad


def test_the_signed_token_names_the_device_key_in_cnf(required: World) -> None:
    device = Device()
    voucher = required.bound_voucher(device)
    raw = b45decode(voucher["token"][4:])
    claims = cbor2.loads(cbor2.loads(raw).value[2])
    n = device.key.public_key().public_numbers()
    assert claims[8] == {1: {1: 2, -1: 1, -2: n.x.to_bytes(32, "big"), -3: n.y.to_bytes(32, "big")}}
    with required.ctx.sessions() as s:
        row = s.scalars(select(HolderBinding).where(HolderBinding.voucher_id == voucher["voucher_id"])).one()
    assert row.thumbprint == HolderKey(n.x.to_bytes(32, "big"), n.y.to_bytes(32, "big")).thumbprint_hex()
    assert row.revoked_at is None


def test_only_a_fresh_presentation_from_the_bound_device_redeems(required_any: World) -> None:
    w = required_any
    device = Device()
    token = w.bound_voucher(device)["token"]
    # A bare VC1 (a photographed or printed token) is refused.
    resp = w.redeem(token, "bare")
    assert resp.status_code == 422 and problem_code(resp) == "presentation_required"
    # Another device's signature over the same token is refused.
    resp = w.redeem(Device().present(token, w.unix()), "thief")
    assert resp.status_code == 422 and problem_code(resp) == "presentation_invalid"
    # A screenshot replayed 61 s later is refused as stale; one dated 11 s ahead is refused too.
    shot = device.present(token, w.unix())
    w.tick(61)
    resp = w.redeem(shot, "replay")
    assert resp.status_code == 422 and problem_code(resp) == "presentation_stale"
    resp = w.preview(device.present(token, w.unix() + 11))
    assert problem_code(resp) == "presentation_stale"
    # Exactly 60 s old, or 10 s ahead (the clock allowance), is still fresh.
    at = w.unix()
    w.tick(60)
    assert w.preview(device.present(token, at)).status_code == 200
    assert w.preview(device.present(token, w.unix() + 10)).status_code == 200
    resp = w.redeem(device.present(token, w.unix()), "fresh")
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["discount_fen"] == 5000
    again = w.redeem(device.present(token, w.unix()), "again")
    assert problem_code(again) == "voucher_already_redeemed"


def test_browser_signatures_with_high_s_are_accepted_but_the_token_inside_stays_low_s(
    required: World,
) -> None:
    device = Device()
    token = required.bound_voucher(device)["token"]
    now = required.unix()
    high = device.present_with_s(token, now, high=True)
    assert required.preview(high).status_code == 200
    assert required.preview(with_twin_signature(high)).status_code == 200  # its low-s twin too
    # The VC1 inside a presentation is held to low-s like any VC1: one voucher, one token.
    resp = required.preview(device.present(high_s_variant(token), now))
    assert resp.status_code == 422 and problem_code(resp) == "token_invalid"


def test_rebinding_moves_the_voucher_to_the_new_phone_and_the_old_key_stops_at_once(required: World) -> None:
    w = required
    old, new = Device(), Device()
    voucher = w.bound_voucher(old)
    old_token = voucher["token"]
    feed = w.shop.get(f"/api/v1/programs/{w.program_id}/revocations?since=0").get_json()
    assert feed["revoked_holder_keys"] == []
    since = feed["version"]
    # The resident lost the phone: logs in again by SMS on the new one and re-binds.
    path = f"/api/v1/consumer/vouchers/{voucher['voucher_id']}/binding"
    resp = w.app.test_client().put(path, json={"device_key": new.jwk()}, headers=w.consumer())
    assert resp.status_code == 200, resp.get_json()
    new_token = resp.get_json()["token"]
    assert new_token != old_token
    # The old phone's code is refused, with the old token or the new one; the new phone's works.
    assert problem_code(w.preview(old.present(old_token, w.unix()))) == "presentation_invalid"
    assert problem_code(w.preview(old.present(new_token, w.unix()))) == "presentation_invalid"
    assert w.preview(new.present(new_token, w.unix())).status_code == 200
    listed = w.app.test_client().get("/api/v1/consumer/vouchers", headers=w.consumer()).get_json()
    assert [v["token"] for v in listed["vouchers"]] == [new_token]
    # The tills learn it from the revocations feed; the voucher itself stays redeemable.
    feed = w.shop.get(f"/api/v1/programs/{w.program_id}/revocations?since={since}").get_json()
    n = old.key.public_key().public_numbers()
    old_thumb = HolderKey(n.x.to_bytes(32, "big"), n.y.to_bytes(32, "big")).thumbprint_hex()
    assert feed["revoked_holder_keys"] == [{"voucher_id": voucher["voucher_id"], "thumbprint": old_thumb}]
    assert feed["voucher_ids"] == [] and feed["version"] > since
    with w.ctx.sessions() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "voucher.rebound")).one()
    assert entry.entity_id == voucher["voucher_id"] and entry.actor.startswith("consumer:")
    assert entry.data["old_keys"] == [old_thumb] and entry.data["new_key"] != old_thumb
    # Another resident cannot re-bind it.
    other = w.app.test_client().put(
        path, json={"device_key": Device().jwk()}, headers=w.consumer("13900139000")
    )
    assert other.status_code == 404
    assert w.redeem(new.present(new_token, w.unix()), "after-rebind").status_code == 201


@pytest.mark.parametrize("mode", ["off", "optional"])
def test_off_and_optional_programmes_redeem_bare_tokens_as_before(app: Any, mode: str) -> None:
    w = _world(app, mode)
    resp = w.claim(w.consumer())
    assert resp.status_code == 201
    assert 8 not in cbor2.loads(cbor2.loads(b45decode(resp.get_json()["token"][4:])).value[2])
    assert w.redeem(resp.get_json()["token"], "bare").status_code == 201
    feed = w.shop.get(f"/api/v1/programs/{w.program_id}/revocations?since=0").get_json()
    assert ("revoked_holder_keys" in feed) == (mode != "off")


def test_off_ignores_a_device_key_and_optional_binds_with_one(app: Any) -> None:
    off = _world(app, "off")
    token = off.bound_voucher(Device())["token"]
    assert off.redeem(token, "off-bare").status_code == 201  # a bearer token, as before
    optional = _world(app, "optional")
    device = Device()
    token = optional.bound_voucher(device, phone="13900139000")["token"]
    assert problem_code(optional.preview(token)) == "presentation_required"
    assert optional.redeem(device.present(token, optional.unix()), "opt-vp").status_code == 201


def test_pycose_verifies_the_presentation_against_the_key_in_the_cnf_claim(required: World) -> None:
    from pycose.keys import EC2Key
    from pycose.keys.curves import P256
    from pycose.messages import Sign1Message

    device = Device()
    token = required.bound_voucher(device)["token"]
    code = device.present(token, required.unix())
    message = Sign1Message.decode(b45decode(code[4:]))
    payload = cbor2.loads(message.payload)
    inner = cbor2.loads(payload[-70201]).value
    cose_key = cbor2.loads(inner[2])[8][1]
    message.key = EC2Key(crv=P256, x=cose_key[-2], y=cose_key[-3])
    assert message.verify_signature()
    assert payload[6] == required.unix()
    # and the VC1 inside verifies with the service's key from /keys, as any VC1 does
    jwk = next(
        k
        for k in required.app.test_client().get("/api/v1/keys").get_json()["keys"]
        if k["status"] == "active"
    )
    from voucher_service.adapters.signing import b64url_decode

    token_message = Sign1Message.decode(payload[-70201])
    token_message.key = EC2Key(crv=P256, x=b64url_decode(jwk["x"]), y=b64url_decode(jwk["y"]))
    assert token_message.verify_signature()
