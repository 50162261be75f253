"""Redis round trips on the hot paths, counted at the connection: one packed send is one round trip (a
pipeline is one too). A claim makes one: a platform's nonce (or a consumer session's state), the rate
limits and the sold-out gate in one script; a redemption one before its database work and one after its
commit (the voucher page's status bump)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.connection import Connection

from tests.conftest import REDIS_URL
from tests.helpers import Admin, MerchantCaller, consumer_headers, merchant_headers, problem_code
from tests.redemption_support import World, item, make_world
from voucher_service import create_app
from voucher_service.adapters.redis_store import RedisStore
from voucher_service.config import Settings
from voucher_service.services.credentials import create_admin_token


def _name(command: bytes | list[bytes]) -> str:
    data = command if isinstance(command, bytes) else b"".join(command)
    parts = data.split(b"\r\n")
    return parts[2].decode() if len(parts) > 2 else "?"


@dataclasses.dataclass
class Counted:
    app: Any
    ctx: Any
    admin: Admin
    sent: list[str]

    def count(self, call: Any) -> tuple[Any, list[str]]:
        """Run `call`; return its result and the commands sent to Redis meanwhile, one per round trip."""
        del self.sent[:]
        out = call()
        return out, list(self.sent)


@pytest.fixture
def counted(sqlite_settings: Settings) -> Iterator[Counted]:
    """The app on SQLite with the shared Redis, reached through a connection that counts round trips."""
    sent: list[str] = []

    class Counting(Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            sent.append(_name(command))
            super().send_packed_command(command, check_health)

    settings = dataclasses.replace(sqlite_settings, redis_url=REDIS_URL)
    app = create_app(settings)
    ctx = app.extensions["voucher"]
    pool = redis.ConnectionPool.from_url(REDIS_URL, connection_class=Counting)
    ctx.store = RedisStore(redis.Redis(connection_pool=pool), settings.redis_prefix)
    try:
        yield Counted(app, ctx, Admin(app.test_client(), create_admin_token(ctx, "ops")), sent)
    finally:
        pool.disconnect()
        ctx.engine.dispose()


def _platform(c: Counted, program_id: str) -> MerchantCaller:
    return c.admin.create_merchant("扶贫电商平台", ("online",), platform=True, enrol_in=program_id)


def test_a_platform_claim_makes_one_redis_round_trip(counted: Counted) -> None:
    program = counted.admin.create_program(per_person_limit=5)
    platform = _platform(counted, program["id"])
    path = f"/api/v1/programs/{program['id']}/claims"
    for i in range(2):  # warm: the nonce epoch settles, the script is loaded, the programme is cached
        assert platform.post(path, {"tier": "T20", "holder_ref": f"warm-{i}"}).status_code == 201
    for i in range(3):
        body = {"tier": "T20", "holder_ref": f"u-{i}"}
        resp, sent = counted.count(lambda: platform.post(path, body))  # noqa: B023 (called at once)
        assert resp.status_code == 201, resp.get_json()
        assert sent == ["EVALSHA"], sent


def test_refusals_keep_to_one_round_trip(counted: Counted) -> None:
    counted.ctx.settings = dataclasses.replace(counted.ctx.settings, claim_rate_per_minute=3)
    tiers = [{"code": "T20", "face_value_fen": 2000, "min_spend_fen": 6000, "quantity": 2}]
    program = counted.admin.create_program(per_person_limit=5, tiers=tiers)
    platform = _platform(counted, program["id"])
    path = f"/api/v1/programs/{program['id']}/claims"
    assert platform.post(path, {"tier": "T20", "holder_ref": "warm"}).status_code == 201
    raw = json.dumps({"tier": "T20", "holder_ref": "again"}).encode()
    headers = merchant_headers(platform.id, platform.secret, "POST", path, raw)

    def send() -> Any:
        return platform.client.post(path, data=raw, headers=headers)

    resp, sent = counted.count(send)
    assert resp.status_code == 201 and sent == ["EVALSHA"], sent
    resp, sent = counted.count(send)
    assert problem_code(resp) == "replayed_request" and sent == ["EVALSHA"], sent
    # The pool is empty now: the claim that finds out closes the gate (one more round trip) ...
    resp, sent = counted.count(lambda: platform.post(path, {"tier": "T20", "holder_ref": "third"}))
    assert problem_code(resp) == "tier_sold_out" and sent[:2] == ["EVALSHA", "EVALSHA"], sent
    assert sent[2:] in ([], ["SCRIPT", "EVALSHA"]), sent  # the gate's script, loaded at its first use
    # ... and the gate answers the next one inside the same script as its nonce and limits.
    counted.ctx.settings = dataclasses.replace(counted.ctx.settings, claim_rate_per_minute=4)
    resp, sent = counted.count(lambda: platform.post(path, {"tier": "T20", "holder_ref": "fourth"}))
    assert problem_code(resp) == "tier_sold_out" and sent == ["EVALSHA"], sent
    resp, sent = counted.count(lambda: platform.post(path, {"tier": "T20", "holder_ref": "fifth"}))
    assert problem_code(resp) == "rate_limited" and sent == ["EVALSHA"], sent
    assert "Retry-After" in resp.headers


def test_an_idempotent_platform_claim_makes_two(counted: Counted) -> None:
    """Its nonce is checked before the Idempotency-Key is looked up, as when authenticating."""
    program = counted.admin.create_program(per_person_limit=5)
    platform = _platform(counted, program["id"])
    path = f"/api/v1/programs/{program['id']}/claims"
    assert platform.post(path, {"tier": "T20", "holder_ref": "warm"}, headers={"Idempotency-Key": "w" * 32})
    resp, sent = counted.count(
        lambda: platform.post(path, {"tier": "T20", "holder_ref": "u"}, headers={"Idempotency-Key": "k" * 32})
    )
    assert resp.status_code == 201, resp.get_json()
    assert sent == ["EVALSHA", "EVALSHA"], sent


def test_a_consumer_claim_makes_one_round_trip(counted: Counted) -> None:
    program = counted.admin.create_program(per_person_limit=5)
    headers = consumer_headers(counted.app.test_client(), counted.ctx.settings.sms_outbox, "13800138000")
    path = f"/api/v1/programs/{program['id']}/claims"
    client = counted.app.test_client()
    assert client.post(path, json={"tier": "T20"}, headers=headers).status_code == 201
    resp, sent = counted.count(lambda: client.post(path, json={"tier": "T20"}, headers=headers))
    assert resp.status_code == 201, resp.get_json()
    assert sent == ["EVALSHA"], sent  # the session's state, the holder's limit and the gate


def test_a_redemption_makes_one_round_trip_before_its_database_work_and_one_after(counted: Counted) -> None:
    world: World = make_world(counted.admin, counted.ctx)
    _, warm = world.voucher("T50")
    assert world.redeem(warm, [item(world.catalog.rice, quantity=3, unit_price_fen=6000)]).status_code == 201
    _, token = world.voucher("T50")
    resp, sent = counted.count(
        lambda: world.redeem(token, [item(world.catalog.rice, quantity=3, unit_price_fen=6000)])
    )
    assert resp.status_code == 201, resp.get_json()
    assert sent == ["EVALSHA", "EVALSHA"], sent  # the nonce; after the commit, the status generation
