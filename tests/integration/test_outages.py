"""Dependency outages answer 503 service_unavailable with Retry-After (never 500), and a pooled
connection the database killed does not fail the next request.

PostgreSQL outages go through a TCP proxy between the app and the shared server; Redis outages use a
private redis-server. The shared PostgreSQL and Redis are never stopped or flushed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_URL, REDIS_URL, make_settings
from tests.faults import PrivateRedis, TcpProxy, private_redis, tcp_proxy
from tests.helpers import Admin, MerchantCaller, problem_code
from tests.redemption_support import checkout, item, make_world
from voucher_service import create_app
from voucher_service.adapters.db.models import Redemption
from voucher_service.services.credentials import create_admin_token

pytestmark = pytest.mark.postgres


def assert_503(resp: Any) -> None:
    assert resp.status_code == 503, (resp.status_code, resp.data[:300])
    assert problem_code(resp) == "service_unavailable"
    assert int(resp.headers["Retry-After"]) >= 1


@pytest.fixture
def proxied(tmp_path: Path, pg_database_factory: Callable[..., str]) -> Iterator[tuple[Any, TcpProxy, str]]:
    """The app on its own PostgreSQL database reached through a proxy, with Redis of its own."""
    direct = pg_database_factory(migrated=True)
    url = make_url(direct)
    with (
        tcp_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy,
        private_redis(tmp_path / "redis") as r,
    ):
        via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        app = create_app(make_settings(tmp_path, via_proxy, r.url))
        try:
            yield app, proxy, direct
        finally:
            app.extensions["voucher"].engine.dispose()


def test_postgresql_down_answers_503_with_retry_after_on_every_kind_of_route(proxied) -> None:
    app, proxy, _ = proxied
    ctx = app.extensions["voucher"]
    admin = Admin(app.test_client(), create_admin_token(ctx, "ops"))
    world = make_world(admin, ctx)
    _, token = world.voucher()
    proxy.refuse()
    proxy.cut()
    assert_503(admin.get("/api/v1/programs"))
    assert_503(app.test_client().get("/api/v1/keys"))
    assert_503(world.redeem(token, [item(world.catalog.rice, 3, 5000)]))
    assert_503(world.merchant.get("/api/v1/merchant/programs"))
    proxy.refuse(False)
    resp = world.redeem(token, [item(world.catalog.rice, 3, 5000)])
    assert resp.status_code == 201, resp.get_json()


def test_a_connection_killed_by_the_database_does_not_fail_the_next_request(proxied) -> None:
    app, proxy, direct = proxied
    ctx = app.extensions["voucher"]
    admin = Admin(app.test_client(), create_admin_token(ctx, "ops"))
    world = make_world(admin, ctx)
    assert admin.get("/api/v1/programs").status_code == 200  # the pool holds live connections now
    db = make_url(direct).database
    killer = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with killer.connect() as conn:  # only this test's own database
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": db},
            ).scalar()
            assert killed and killed >= 1
            deadline = time.monotonic() + 10
            while (
                conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db"), {"db": db}
                ).scalar()
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
    finally:
        killer.dispose()
    time.sleep(0.2)
    for _ in range(3):
        assert admin.get("/api/v1/programs").status_code == 200
    _, token = world.voucher()
    assert world.redeem(token, [item(world.catalog.rice, 3, 5000)]).status_code == 201
    # And a restart seen through the proxy: every pooled connection reset at once.
    proxy.cut()
    time.sleep(0.2)
    for _ in range(3):
        assert admin.get("/api/v1/programs").status_code == 200


@pytest.fixture
def with_private_redis(tmp_path: Path, pg_session_url: str) -> Iterator[tuple[Any, PrivateRedis]]:
    with private_redis(tmp_path / "redis") as r:
        app = create_app(make_settings(tmp_path, pg_session_url, r.url))
        try:
            yield app, r
        finally:
            app.extensions["voucher"].engine.dispose()


def test_redis_down_refuses_what_needs_it_with_503_and_serves_the_rest(with_private_redis) -> None:
    app, r = with_private_redis
    ctx = app.extensions["voucher"]
    admin = Admin(app.test_client(), create_admin_token(ctx, "ops"))
    world = make_world(admin, ctx)
    _, token = world.voucher()
    platform = admin.create_merchant("平台", channels=("online",), platform=True, enrol_in=world.program_id)
    r.stop()
    public = app.test_client()
    # What does not need Redis keeps working.
    assert public.get("/api/v1/keys").status_code == 200
    assert admin.get("/api/v1/programs").status_code == 200
    assert admin.get(f"/api/v1/products/{world.catalog.rice_cert}").status_code == 200
    # An admin change commits in the database; clearing the sold-out gates after it is best effort
    # (they expire within a minute), so the change is not answered 503 once it is made.
    assert admin.post(f"/api/v1/programs/{world.program_id}/suspend").status_code == 200
    reactivated = admin.post(f"/api/v1/programs/{world.program_id}/activate")
    assert reactivated.status_code == 200, reactivated.get_json()
    # Merchant requests need their nonce remembered: never accepted without it.
    assert_503(world.redeem(token, [item(world.catalog.rice, 3, 5000)]))
    assert_503(world.merchant.get("/api/v1/merchant/programs"))
    claim = platform.post(
        f"/api/v1/programs/{world.program_id}/claims",
        {"tier": "T20", "holder_ref": "u1"},
        headers={"Idempotency-Key": "k-1"},
    )
    assert_503(claim)
    # Consumers need one-time codes and rate limits.
    assert_503(public.post("/api/v1/consumer/otp", json={"phone": "13900000001"}))
    r.start()
    resp = world.merchant.post(
        "/api/v1/redemptions",
        checkout(token, [item(world.catalog.rice, 3, 5000)]),
        headers={"Idempotency-Key": "after"},
    )
    assert resp.status_code == 201, json.dumps(resp.get_json())


def _after_the_lease(engine: Any, do: Callable[[], None]) -> None:
    """Run `do` once, just before the first statement that follows a lease INSERT (the effect starts)."""
    state = {"lease": False, "done": False}

    @event.listens_for(engine, "before_cursor_execute")
    def _hook(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if state["done"]:
            return
        if "INSERT INTO idempotency_records" in statement:
            state["lease"] = True
        elif state["lease"]:
            state["done"] = True
            do()


def test_a_request_cut_off_by_the_database_going_away_leaves_no_stuck_key(proxied) -> None:
    app, proxy, _ = proxied
    ctx = app.extensions["voucher"]
    admin = Admin(app.test_client(), create_admin_token(ctx, "ops"))
    world = make_world(admin, ctx)
    voucher_id, token = world.voucher()
    body = checkout(token, [item(world.catalog.rice, 3, 5000)])

    def database_goes_away() -> None:
        proxy.refuse()
        proxy.cut()

    _after_the_lease(ctx.engine, database_goes_away)
    headers = {"Idempotency-Key": "cut-off-1"}
    assert_503(world.merchant.post("/api/v1/redemptions", body, headers=headers))
    proxy.refuse(False)  # the database is back; the lease row of the cut-off request is still there
    seen = []
    for _ in range(6):
        resp = world.merchant.post("/api/v1/redemptions", body, headers=headers)
        seen.append(resp.status_code)
        if resp.status_code != 409:
            break
        assert problem_code(resp) == "idempotency_in_progress"
        wait = int(resp.headers["Retry-After"])
        assert 1 <= wait <= 10, wait  # the lease of a dead request lapses within seconds, not 30
        time.sleep(wait)
    assert resp.status_code == 201, (seen, resp.get_json())
    again = world.merchant.post("/api/v1/redemptions", body, headers=headers)
    assert again.data == resp.data
    with ctx.sessions() as s:
        assert (
            s.scalar(select(func.count()).select_from(Redemption).where(Redemption.voucher_id == voucher_id))
            == 1
        )


def test_a_slow_request_keeps_its_lease_while_it_runs(tmp_path: Path, pg_session_url: str) -> None:
    app = create_app(make_settings(tmp_path, pg_session_url, REDIS_URL, idempotency_lease_s=2))
    ctx = app.extensions["voucher"]
    try:
        admin = Admin(app.test_client(), create_admin_token(ctx, "ops"))
        world = make_world(admin, ctx)
        voucher_id, token = world.voucher()
        body = checkout(token, [item(world.catalog.rice, 3, 5000)])
        _after_the_lease(ctx.engine, lambda: time.sleep(5))  # 2.5 leases
        headers = {"Idempotency-Key": "slow-1"}
        first: list[Any] = []
        slow = threading.Thread(
            target=lambda: first.append(
                MerchantCaller(app.test_client(), world.merchant.id, world.merchant.secret).post(
                    "/api/v1/redemptions", body, headers=headers
                )
            )
        )
        slow.start()
        time.sleep(3.5)  # the first lease would have run out by now
        retry = world.merchant.post("/api/v1/redemptions", body, headers=headers)
        slow.join()
        assert first[0].status_code == 201, first[0].get_json()
        assert retry.status_code == 409 and problem_code(retry) == "idempotency_in_progress", retry.get_json()
        assert int(retry.headers["Retry-After"]) >= 1
        again = world.merchant.post("/api/v1/redemptions", body, headers=headers)
        assert again.data == first[0].data
        with ctx.sessions() as s:
            assert (
                s.scalar(
                    select(func.count()).select_from(Redemption).where(Redemption.voucher_id == voucher_id)
                )
                == 1
            )
    finally:
        ctx.engine.dispose()
