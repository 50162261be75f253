"""The service on a real Redis Cluster (3 masters, 3 replicas on loopback, `VOUCHER_REDIS_URL=
redis+cluster://...`): one-time codes, rate limits, sold-out gates, request nonces and caches work, a
claim storm issues exactly the tier, and a master failover and a killed master under load keep the
books, the per-person limit, replay protection and every Idempotency-Key's answer."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks._server import gunicorn_server, server_log, settings_env
from tests.conftest import make_settings, prepare
from tests.e2e.test_claim_storm import _check, _seed, _server_env, _storm
from tests.helpers import Admin, consumer_headers, merchant_headers, problem_code, sms_code
from tests.scale_load import MixedLoad, check_books, open_shop
from tests.scale_support import RedisClusterNodes, redis_cluster
from voucher_service import create_app
from voucher_service.services.credentials import create_admin_token
from voucher_service.services.issuance import sold_out_key

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
PHONE = "13912340001"


def _keys_per_master(cluster: RedisClusterNodes, prefix: str) -> dict[int, int]:
    return {
        port: sum(1 for _ in cluster.node(port).scan_iter(match=prefix + "*", count=1000))  # type: ignore[attr-defined]
        for port in cluster.masters()
    }


def test_codes_limits_gates_nonces_and_caches_work_on_a_redis_cluster(
    tmp_path: Path, pg_session_url: str
) -> None:
    with redis_cluster(tmp_path / "cluster") as cluster:
        settings = make_settings(tmp_path, pg_session_url, cluster.url)
        app = create_app(settings)
        ctx = app.extensions["voucher"]
        try:
            admin = Admin(app.test_client(), create_admin_token(ctx, "cluster"))
            tiers = [{"code": "T50", "face_value_fen": 5000, "min_spend_fen": 15000, "quantity": 2}]
            program = admin.create_program(tiers=tiers, per_person_limit=3)
            claims = f"/api/v1/programs/{program['id']}/claims"
            client = app.test_client()

            # One-time codes: sent, used once, never again.
            me = consumer_headers(client, settings.sms_outbox or "", PHONE)
            again = client.post(
                "/api/v1/consumer/sessions",
                json={"phone": PHONE, "code": sms_code(settings.sms_outbox or "", PHONE)},
            )
            assert again.status_code == 401, again.get_json()

            # Claims by the consumer; the QR image is cached and served the same twice.
            first = client.post(claims, json={"tier": "T50"}, headers=me)
            assert first.status_code == 201, first.get_json()
            png = first.get_json()["qr_png_url"]
            assert client.get(png, headers=me).data == client.get(png, headers=me).data
            assert client.post(claims, json={"tier": "T50"}, headers=me).status_code == 201

            # Sold out: the gate is set in the cluster and answers the next claim.
            sold = client.post(claims, json={"tier": "T50"}, headers=me)
            assert problem_code(sold) == "tier_sold_out"
            assert ctx.store.get(sold_out_key(program["id"], "T50")) is not None

            # Merchant request nonces: an exact replay is refused.
            platform = admin.create_merchant(
                "平台", channels=("online",), platform=True, enrol_in=program["id"]
            )
            raw = json.dumps({"tier": "T50", "holder_ref": "cluster-1"}).encode()
            headers = merchant_headers(platform.id, platform.secret, "POST", claims, raw)
            assert problem_code(client.post(claims, data=raw, headers=headers)) == "tier_sold_out"
            assert problem_code(client.post(claims, data=raw, headers=headers)) == "replayed_request"

            # Rate limits count in the cluster: of three claims in a row (a minute's window may turn
            # between two of them, but not twice), one is refused.
            ctx.settings = dataclasses.replace(ctx.settings, claim_rate_per_minute=1)
            other = consumer_headers(client, settings.sms_outbox or "", "13912340002")
            answers = [client.post(claims, json={"tier": "T50"}, headers=other) for _ in range(3)]
            limited = [r for r in answers if r.status_code == 429]
            assert limited and problem_code(limited[0]) == "rate_limited", [r.get_json() for r in answers]
            assert limited[0].headers.get("Retry-After")

            # The keys really are spread over the cluster's masters.
            spread = _keys_per_master(cluster, settings.redis_prefix)
            assert sum(1 for n in spread.values() if n) >= 2, spread
        finally:
            ctx.engine.dispose()


def test_a_claim_storm_on_a_redis_cluster_issues_exactly_the_tier(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    with redis_cluster(tmp_path / "cluster") as cluster:
        settings = make_settings(tmp_path, pg_database_factory(), cluster.url)
        program_id, platform = _seed(settings)
        with gunicorn_server(
            _server_env(settings, cluster.url), workers=2, threads=8, log_path=tmp_path / "gunicorn.log"
        ) as base_url:
            results = _storm(base_url, program_id, platform)
        _check(results, settings, program_id)


@pytest.mark.timeout(600)  # a loaded machine: the load waits for progress, never for a fixed time
def test_a_failover_and_a_killed_master_under_load_keep_the_books_and_replay_protection(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    with redis_cluster(tmp_path / "cluster") as cluster:
        settings = make_settings(tmp_path, pg_database_factory(), cluster.url)
        prepare(settings).engine.dispose()
        app = create_app(settings)
        ctx: Any = app.extensions["voucher"]
        shop = open_shop(Admin(app.test_client(), create_admin_token(ctx, "cluster")), ctx, vouchers=60)
        env = settings_env(settings, VOUCHER_ENV="development", VOUCHER_CLAIM_RATE_PER_MINUTE="1000000")
        log_path = tmp_path / "gunicorn.log"
        events: list[str] = []
        with gunicorn_server(env, workers=2, threads=4, log_path=log_path) as base:
            load = MixedLoad(shop, [base], threads=4)
            with load:
                _wait_for(lambda: load.seen.count("claim:201") >= 20, "claims before the failover")
                before = cluster.masters()
                new = cluster.failover(before[0])
                events.append(f"CLUSTER FAILOVER: {before[0]} -> {new}")
                load.replay_all()
                _wait_for(lambda: load.seen.count("claim:201") >= 60, "claims after the failover")
                victim = cluster.masters()[1]
                new = cluster.kill(victim)
                events.append(f"SIGKILL master {victim}: {new} elected")
                mark = load.seen.count("claim:201")
                _wait_for(lambda: load.seen.count("claim:201") >= mark + 20, "claims after the killed master")
            load.replay_all()
            final = load.settle_keys()
            note = f"events: {events}\nserver log:\n{server_log(log_path)}"
        check_books(load, settings, ctx, final, note)
        assert load.seen.replays > 50, load.summary()
        ctx.engine.dispose()
        print(events, load.summary())


def _wait_for(check: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"no progress: {what}"
        time.sleep(0.1)
