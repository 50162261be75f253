"""Replay protection survives the loss of Redis: after Redis comes back empty (flushed, restarted without
persistence, or an in-process store that died with its process), a merchant request signed before the
loss was noticed is refused, on every worker, while fresh requests go through."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot
from sqlalchemy import func, select

from tests.conftest import make_settings
from tests.faults import PrivateRedis, private_redis
from tests.helpers import Admin, MerchantCaller, merchant_headers, problem_code
from voucher_service import create_app
from voucher_service.adapters.db.models import Voucher
from voucher_service.config import Settings
from voucher_service.services import nonces
from voucher_service.services.credentials import create_admin_token


class Platform:
    """A platform merchant claiming vouchers for its users without an Idempotency-Key."""

    def __init__(self, admin: Admin, program_id: str) -> None:
        self.caller = admin.create_merchant(
            "电商平台", channels=("online",), platform=True, enrol_in=program_id
        )
        self.path = f"/api/v1/programs/{program_id}/claims"

    def signed(self, holder_ref: str, *, age_s: int = 5) -> tuple[bytes, dict[str, str]]:
        """A claim signed `age_s` seconds ago (well inside the signature window)."""
        raw = json.dumps({"tier": "T20", "holder_ref": holder_ref}).encode()
        headers = merchant_headers(
            self.caller.id, self.caller.secret, "POST", self.path, raw, timestamp=int(time.time()) - age_s
        )
        return raw, headers

    def send(self, app: Any, raw: bytes, headers: dict[str, str]) -> Any:
        return app.test_client().post(self.path, data=raw, headers=headers)

    def fresh(self, app: Any, holder_ref: str) -> Any:
        """A new request, retried as the SDK does while the answer is 503 with Retry-After."""
        for _ in range(5):
            raw, headers = self.signed(holder_ref, age_s=0)
            resp = self.send(app, raw, headers)
            if resp.status_code != 503:
                return resp
            assert problem_code(resp) == "service_unavailable"
            time.sleep(int(resp.headers["Retry-After"]))
        return resp


def vouchers_of_platform(ctx: Any) -> int:
    with ctx.sessions() as s:
        return int(
            s.scalar(select(func.count()).select_from(Voucher).where(Voucher.holder_hash.is_not(None)))
        )


def assert_replay_refused(resp: Any) -> None:
    assert resp.status_code == 401, (resp.status_code, resp.get_json())
    assert problem_code(resp) == "replayed_request"


@pytest.fixture
def world(tmp_path: Path, pg_database_factory: Any) -> Iterator[tuple[Settings, PrivateRedis, Any, Platform]]:
    url = pg_database_factory(migrated=True)  # its own database: the voucher count below is this test's alone
    with private_redis(tmp_path / "redis") as r:
        settings = make_settings(tmp_path, url, r.url)
        app = create_app(settings)
        ctx = app.extensions["voucher"]
        admin = Admin(app.test_client(), create_admin_token(ctx, "ops"))
        program = admin.create_program()
        try:
            yield settings, r, app, Platform(admin, program["id"])
        finally:
            ctx.engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("loss", ["flush", "restart"])
def test_a_replayed_claim_is_refused_after_redis_loses_its_data(world, loss: str) -> None:
    settings, r, app, platform = world
    ctx = app.extensions["voucher"]
    other_worker = create_app(settings)  # another gunicorn worker: its own caches, the same Redis
    try:
        raw, headers = platform.signed("user-1")
        assert platform.send(app, raw, headers).status_code == 201
        assert_replay_refused(platform.send(app, raw, headers))
        assert platform.fresh(other_worker, "user-2").status_code == 201  # the other worker is warm too
        assert vouchers_of_platform(ctx) == 2
        if loss == "flush":
            r.flush()
        else:
            r.stop()
            r.start()  # the same port, no persistence: empty
        assert_replay_refused(platform.send(app, raw, headers))
        assert_replay_refused(platform.send(other_worker, raw, headers))
        assert vouchers_of_platform(ctx) == 2, "a replay after the loss gave a second voucher"
        # Fresh requests go through (after at most a brief 503 while the new epoch settles).
        assert platform.fresh(app, "user-3").status_code == 201
        assert platform.fresh(other_worker, "user-4").status_code == 201
        assert_replay_refused(platform.send(other_worker, raw, headers))
        assert vouchers_of_platform(ctx) == 4
    finally:
        other_worker.extensions["voucher"].engine.dispose()


@pytest.mark.postgres
def test_a_worker_started_after_the_loss_refuses_the_replay_too(world) -> None:
    settings, r, app, platform = world
    raw, headers = platform.signed("user-1")
    assert platform.send(app, raw, headers).status_code == 201
    r.flush()
    assert_replay_refused(platform.send(app, raw, headers))
    later = create_app(settings)
    try:
        assert_replay_refused(platform.send(later, raw, headers))
    finally:
        later.extensions["voucher"].engine.dispose()
    assert vouchers_of_platform(app.extensions["voucher"]) == 1


def test_an_in_process_store_lost_with_its_process_does_not_let_a_replay_in(
    sqlite_settings: Settings,
) -> None:
    first = create_app(sqlite_settings)
    ctx = first.extensions["voucher"]
    admin = Admin(first.test_client(), create_admin_token(ctx, "ops"))
    platform = Platform(admin, admin.create_program()["id"])
    raw, headers = platform.signed("user-1")
    assert platform.send(first, raw, headers).status_code == 201
    restarted = create_app(sqlite_settings)  # a new process: its in-process store starts empty
    assert_replay_refused(platform.send(restarted, raw, headers))
    assert vouchers_of_platform(ctx) == 1
    caller = MerchantCaller(restarted.test_client(), platform.caller.id, platform.caller.secret)
    assert platform.fresh(restarted, "user-2").status_code == 201
    assert caller.get("/api/v1/merchant/programs").status_code == 200


def test_nonce_and_epoch_marker_share_a_cluster_slot() -> None:
    prefix = "voucher:"
    slots = set()
    for i in range(200):
        nonce_key, marker_key = nonces.keys_for(f"mch_{i}", f"nonce-{i:016d}")
        assert key_slot((prefix + nonce_key).encode()) == key_slot((prefix + marker_key).encode())
        slots.add(key_slot((prefix + marker_key).encode()))
    assert len(slots) > 16  # merchants spread over the cluster, not one hot slot
    assert {m for m in nonces.all_markers()} >= {nonces.keys_for("mch_0", "nonce-0000000000000000")[1]}
