"""A claim's nonce, rate limits and sold-out gate are one FastStore script, answered as if each were asked
on its own and in order: nonce first (a replay counts against no limit), then the holder's limit (a claim
refused by it does not use up its platform's), then the merchant's, then the programme, then the gate."""

from __future__ import annotations

import dataclasses
import json
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from tests.conftest import REDIS_URL
from tests.helpers import Admin, MerchantCaller, consumer_headers, merchant_headers, problem_code
from voucher_service import create_app
from voucher_service.adapters.redis_store import RedisStore
from voucher_service.config import Settings
from voucher_service.services import admission
from voucher_service.services.credentials import create_admin_token

PHONE = "13800138000"


@dataclasses.dataclass
class World:
    app: Any
    ctx: Any
    admin: Admin

    def tune(self, **settings: Any) -> None:
        self.ctx.settings = dataclasses.replace(self.ctx.settings, **settings)

    def platform(self, program_id: str) -> MerchantCaller:
        return self.admin.create_merchant("扶贫电商平台", ("online",), platform=True, enrol_in=program_id)


def _world(settings: Settings) -> Iterator[World]:
    app = create_app(settings)
    ctx = app.extensions["voucher"]
    try:
        yield World(app, ctx, Admin(app.test_client(), create_admin_token(ctx, "ops")))
    finally:
        ctx.engine.dispose()


@pytest.fixture(params=["memory", "redis"])
def world(
    request: pytest.FixtureRequest, sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    """SQLite with the in-process store, then with the shared Redis.

    The rate limits count in fixed windows of the wall clock: the tests hold it one second into a day, so
    that no window ends between the claims a test counts (a loaded machine can take a minute over them).
    """
    frozen = int(time.time()) // 86400 * 86400 + 1
    monkeypatch.setattr(admission, "time", types.SimpleNamespace(time=lambda: frozen))
    redis_url = REDIS_URL if request.param == "redis" else None
    yield from _world(dataclasses.replace(sqlite_settings, redis_url=redis_url))


def _claims(program_id: str) -> str:
    return f"/api/v1/programs/{program_id}/claims"


def test_a_replayed_claim_counts_against_no_limit(world: World) -> None:
    world.tune(claim_rate_per_minute=2)
    program = world.admin.create_program(per_person_limit=5)
    platform = world.platform(program["id"])
    path = _claims(program["id"])
    raw = json.dumps({"tier": "T20", "holder_ref": "u1"}).encode()
    headers = merchant_headers(platform.id, platform.secret, "POST", path, raw)
    assert platform.client.post(path, data=raw, headers=headers).status_code == 201
    for _ in range(3):
        replay = platform.client.post(path, data=raw, headers=headers)
        assert replay.status_code == 401 and problem_code(replay) == "replayed_request"
    assert platform.post(path, {"tier": "T20", "holder_ref": "u2"}).status_code == 201
    assert problem_code(platform.post(path, {"tier": "T20", "holder_ref": "u3"})) == "rate_limited"


def test_a_claim_refused_by_its_holders_limit_does_not_use_up_the_platforms(world: World) -> None:
    world.tune(claim_rate_per_minute=2)
    program = world.admin.create_program(per_person_limit=10)
    path = _claims(program["id"])
    assert world.ctx.settings.sms_outbox
    consumer = consumer_headers(world.app.test_client(), world.ctx.settings.sms_outbox, PHONE)
    for _ in range(2):
        assert world.app.test_client().post(path, json={"tier": "T20"}, headers=consumer).status_code == 201
    platform = world.platform(program["id"])
    for _ in range(2):  # the same person, through the platform: the holder's limit refuses
        resp = platform.post(path, {"tier": "T20", "holder_ref": "p", "holder_phone": PHONE})
        assert resp.status_code == 429 and problem_code(resp) == "rate_limited", resp.get_json()
        assert "holder" in resp.get_json()["detail"]
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    codes = [platform.post(path, {"tier": "T20", "holder_ref": f"u{i}"}).status_code for i in range(3)]
    assert codes == [201, 201, 429]


def test_a_replay_of_a_refused_request_is_still_a_replay(world: World) -> None:
    """The nonce is remembered even when the request is refused before its claim is tried."""
    program = world.admin.create_program()
    platform = world.platform(program["id"])
    path = _claims(program["id"])
    for payload, code in (
        ({"tier": "T20"}, "validation_error"),  # a platform claim names its user
        ({"tier": "NOPE", "holder_ref": "u1"}, "validation_error"),
        ({"tier": "T20", "holder_ref": "u1", "holder_phone": "not a phone"}, "validation_error"),
    ):
        raw = json.dumps(payload).encode()
        headers = merchant_headers(platform.id, platform.secret, "POST", path, raw)
        first = platform.client.post(path, data=raw, headers=headers)
        assert problem_code(first) == code, first.get_json()
        again = platform.client.post(path, data=raw, headers=headers)
        assert again.status_code == 401 and problem_code(again) == "replayed_request"
    # A merchant that is no platform is refused, and its nonce is used up all the same.
    shop = world.admin.create_merchant("超市", ("online",), enrol_in=program["id"])
    raw = json.dumps({"tier": "T20", "holder_ref": "u1"}).encode()
    headers = merchant_headers(shop.id, shop.secret, "POST", path, raw)
    assert problem_code(shop.client.post(path, data=raw, headers=headers)) == "forbidden"
    assert problem_code(shop.client.post(path, data=raw, headers=headers)) == "replayed_request"


def test_an_idempotent_claim_replayed_with_its_nonce_is_a_replay_not_its_stored_answer(world: World) -> None:
    program = world.admin.create_program()
    platform = world.platform(program["id"])
    path = _claims(program["id"])
    raw = json.dumps({"tier": "T20", "holder_ref": "u1"}).encode()
    headers = {
        **merchant_headers(platform.id, platform.secret, "POST", path, raw),
        "Idempotency-Key": "k" * 32,
    }
    assert platform.client.post(path, data=raw, headers=headers).status_code == 201
    assert problem_code(platform.client.post(path, data=raw, headers=headers)) == "replayed_request"
    # The same key with a fresh signature gets the stored answer.
    fresh = {**merchant_headers(platform.id, platform.secret, "POST", path, raw), "Idempotency-Key": "k" * 32}
    assert platform.client.post(path, data=raw, headers=fresh).status_code == 201


def test_an_unknown_programme_is_answered_after_the_limits(world: World) -> None:
    world.tune(claim_rate_per_minute=1)
    program = world.admin.create_program()
    platform = world.platform(program["id"])
    assert problem_code(platform.post(_claims("nope"), {"tier": "T20", "holder_ref": "u1"})) == "not_found"
    assert problem_code(platform.post(_claims("nope"), {"tier": "T20", "holder_ref": "u2"})) == "rate_limited"


def test_a_sold_out_gate_closes_for_every_shard_and_opens_again(world: World) -> None:
    tiers = [{"code": "T20", "face_value_fen": 2000, "min_spend_fen": 6000, "quantity": 1}]
    program = world.admin.create_program(per_person_limit=5, tiers=tiers)
    pid = program["id"]
    platform = world.platform(pid)
    assert platform.post(_claims(pid), {"tier": "T20", "holder_ref": "u0"}).status_code == 201
    assert problem_code(platform.post(_claims(pid), {"tier": "T20", "holder_ref": "u1"})) == "tier_sold_out"
    # Answered from the gate now, whichever shard the claimant's keys live in.
    others = [world.platform(pid) for _ in range(3)]
    for i, other in enumerate(others):
        assert (
            problem_code(other.post(_claims(pid), {"tier": "T20", "holder_ref": f"x{i}"})) == "tier_sold_out"
        )
    metrics = world.app.test_client().get("/metrics").get_data(as_text=True)
    assert 'voucher_events_total{event="claims_sold_out_fast"} 3' in metrics
    from voucher_service.services.programs import sold_out_key, sold_out_keys

    assert world.ctx.store.get(sold_out_key(pid, "T20")) == b"1"  # the copy the public page reads
    # Suspending and activating drops every copy of the gate.
    world.admin.post(f"/api/v1/programs/{pid}/suspend")
    world.admin.post(f"/api/v1/programs/{pid}/activate")
    assert all(world.ctx.store.get(k) is None for k in sold_out_keys(pid, "T20"))


class CrossSlotRefusing(redis.Redis):
    """A standalone Redis that refuses what a cluster would: a script over keys of several slots."""

    scripts: list[int] = []

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:  # type: ignore[override]
        keys = keys_and_args[:numkeys]
        slots = {key_slot(k.encode() if isinstance(k, str) else k) for k in keys}
        assert len(slots) <= 1, f"CROSSSLOT: {keys}"
        self.scripts.append(numkeys)
        return super().evalsha(sha, numkeys, *keys_and_args)


def test_on_a_cluster_each_script_keeps_to_one_slot(sqlite_settings: Settings) -> None:
    settings = dataclasses.replace(sqlite_settings, redis_url=REDIS_URL)
    for w in _world(settings):
        store = RedisStore(CrossSlotRefusing.from_url(REDIS_URL), settings.redis_prefix)
        store._cluster = True  # run per slot, as on a Redis Cluster (the standalone server stands in)
        w.ctx.store = store
        w.tune(claim_rate_per_minute=3)
        program = w.admin.create_program(per_person_limit=5)
        platform = w.platform(program["id"])
        path = _claims(program["id"])
        raw = json.dumps({"tier": "T20", "holder_ref": "u1"}).encode()
        headers = merchant_headers(platform.id, platform.secret, "POST", path, raw)
        assert platform.client.post(path, data=raw, headers=headers).status_code == 201
        assert problem_code(platform.client.post(path, data=raw, headers=headers)) == "replayed_request"
        CrossSlotRefusing.scripts.clear()
        assert platform.post(path, {"tier": "T20", "holder_ref": "u2"}).status_code == 201
        # nonce | holder's limit | merchant's limit and gate: fewer scripts where the slots coincide
        assert 1 <= len(CrossSlotRefusing.scripts) <= 3
        assert platform.post(path, {"tier": "T20", "holder_ref": "u3"}).status_code == 201
        assert problem_code(platform.post(path, {"tier": "T20", "holder_ref": "u4"})) == "rate_limited"


def test_an_ended_session_is_refused_before_anything_and_counts_against_no_limit(world: World) -> None:
    world.tune(claim_rate_per_minute=2)
    program = world.admin.create_program(per_person_limit=10)
    path = _claims(program["id"])
    assert world.ctx.settings.sms_outbox
    client = world.app.test_client()
    ended = consumer_headers(client, world.ctx.settings.sms_outbox, PHONE)
    assert client.post(path, json={"tier": "T20"}, headers=ended).status_code == 201
    assert client.delete("/api/v1/consumer/sessions", headers=ended).status_code == 204
    for body in ({"tier": "T20"}, {"tier": "T20", "holder_ref": "stray"}, {"nope": 1}):
        resp = client.post(path, json=body, headers=ended)
        assert resp.status_code == 401 and problem_code(resp) == "unauthorized", resp.get_json()
    live = consumer_headers(client, world.ctx.settings.sms_outbox, PHONE)
    assert client.post(path, json={"tier": "T20"}, headers=live).status_code == 201  # 2 of 2
    assert problem_code(client.post(path, json={"tier": "T20"}, headers=live)) == "rate_limited"


def test_a_session_whose_state_is_not_cached_is_checked_from_the_database(world: World) -> None:
    from voucher_service.services import credentials

    program = world.admin.create_program(per_person_limit=10)
    path = _claims(program["id"])
    assert world.ctx.settings.sms_outbox
    client = world.app.test_client()
    headers = consumer_headers(client, world.ctx.settings.sms_outbox, PHONE)
    holder = world.ctx.box.keyed_hash("phone", PHONE)
    world.ctx.store.delete(credentials._state_key(holder))
    assert client.post(path, json={"tier": "T20"}, headers=headers).status_code == 201
    world.ctx.store.set(credentials._state_key(holder), b"not json", 60)  # unreadable: the database says
    assert client.post(path, json={"tier": "T20"}, headers=headers).status_code == 201
    credentials.end_holder_sessions(world.ctx, holder, "admin:test")
    assert problem_code(client.post(path, json={"tier": "T20"}, headers=headers)) == "unauthorized"
