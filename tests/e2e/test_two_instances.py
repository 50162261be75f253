"""Two app instances (two gunicorn masters on their own ports, 2 workers each) sharing one PostgreSQL
and one Redis: a claim storm spread over both issues exactly the tier, and a mixed load whose retries
and replays go to the other instance gets each Idempotency-Key's one answer, never a second effect."""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from benchmarks._server import gunicorn_server, server_log, settings_env
from tests.conftest import REDIS_URL, make_settings, prepare
from tests.e2e.test_claim_storm import ATTEMPTS, THREADS, _check, _seed, _server_env
from tests.helpers import Admin, merchant_headers
from tests.scale_load import MixedLoad, check_books, open_shop
from tests.scale_support import APP_PORTS, ports_from
from voucher_service import create_app
from voucher_service.services.credentials import create_admin_token

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@contextlib.contextmanager
def two_instances(env: dict[str, str], tmp_path: Path) -> Any:
    """Two gunicorn masters on APP_PORTS with the same environment; yield their base URLs."""
    first, second = ports_from(APP_PORTS, 2)
    with (
        gunicorn_server(env, workers=2, threads=8, port=first, log_path=tmp_path / "a.log") as a,
        gunicorn_server(env, workers=2, threads=8, port=second, log_path=tmp_path / "b.log") as b,
    ):
        yield [a, b]


def _storm_over(
    bases: list[str], program_id: str, platform: dict[str, Any]
) -> list[tuple[int, str, str | None]]:
    """The claim storm of test_claim_storm, every other claim to the other instance."""
    path = f"/api/v1/programs/{program_id}/claims"
    local = threading.local()
    start = threading.Barrier(THREADS)
    run_id = secrets.token_hex(4)

    def claim(i: int) -> tuple[int, str, str | None]:
        if not hasattr(local, "http"):
            local.http = requests.Session()
            start.wait()
        body = json.dumps({"tier": "T50", "holder_ref": f"two-{run_id}-{i}"}).encode()
        headers = merchant_headers(platform["id"], platform["api_secret"], "POST", path, body)
        resp = local.http.post(bases[i % 2] + path, data=body, headers=headers, timeout=60)
        payload = resp.json()
        return resp.status_code, payload.get("code", ""), payload.get("voucher_id")

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(claim, range(ATTEMPTS)))


def test_a_claim_storm_over_two_instances_issues_exactly_the_tier(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    settings = make_settings(tmp_path, pg_database_factory(), REDIS_URL)
    program_id, platform = _seed(settings)
    with two_instances(_server_env(settings, REDIS_URL), tmp_path) as bases:
        results = _storm_over(bases, program_id, platform)
    _check(results, settings, program_id)


@pytest.mark.timeout(600)  # a loaded machine: the load waits for progress, never for a fixed time
def test_keys_retried_and_requests_replayed_on_the_other_instance_take_effect_once(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    settings = make_settings(tmp_path, pg_database_factory(), REDIS_URL)
    prepare(settings).engine.dispose()
    app = create_app(settings)
    ctx: Any = app.extensions["voucher"]
    shop = open_shop(Admin(app.test_client(), create_admin_token(ctx, "two")), ctx, vouchers=40)
    env = settings_env(settings, VOUCHER_ENV="development", VOUCHER_CLAIM_RATE_PER_MINUTE="1000000")
    with two_instances(env, tmp_path) as bases:
        load = MixedLoad(shop, bases, threads=6, pause_s=0.0)
        with load:
            deadline = threading.Event()
            timer = threading.Timer(120, deadline.set)
            timer.start()
            while (
                not (not load.vouchers_left and load.seen.count("claim:201") >= 40) and not deadline.is_set()
            ):
                deadline.wait(0.2)
            timer.cancel()
        load.replay_all()
        final = load.settle_keys()
        note = f"instance logs:\n{server_log(tmp_path / 'a.log')}\n{server_log(tmp_path / 'b.log')}"
    assert not load.vouchers_left, f"the load did not get through its vouchers\n{load.summary()}"
    check_books(load, settings, ctx, final, note)
    # Retries went to the other instance and got the first answer there.
    assert load.seen.count("keyed-claim-retry:201") and load.seen.count("redeem-retry:201"), load.summary()
    assert load.seen.count("replay:401:replayed_request") == load.seen.replays, load.summary()
    ctx.engine.dispose()
