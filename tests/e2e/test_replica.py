"""Reads on a streaming replica (VOUCHER_DATABASE_REPLICA_URL): reports, dashboards and listings come
from the replica while it is within its lag bound, and from the primary once it falls behind or goes
away; claims, redemptions and their reads never touch it. The replica is made with `pg_basebackup -R`
from a primary of our own (see tests/scale_support.StreamingPair for why not from the shared server)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REDIS_URL, make_settings, prepare
from tests.helpers import Admin
from tests.redemption_support import World, item, make_world
from tests.scale_support import StreamingPair, streaming_pair, wait_until
from voucher_service import create_app
from voucher_service.services.credentials import create_admin_token

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
DATABASE = "voucher_replica_e2e"


@pytest.fixture(scope="module")
def pair() -> Iterator[StreamingPair]:
    with streaming_pair() as servers:
        servers.create_database(DATABASE)
        yield servers


@pytest.fixture
def service(pair: StreamingPair, tmp_path: Path) -> Iterator[tuple[Any, Any, World]]:
    settings = make_settings(
        tmp_path,
        pair.url(pair.primary_port, DATABASE),
        REDIS_URL,
        database_replica_url=pair.url(pair.replica_port, DATABASE),
        replica_max_lag_s=3600.0,
    )
    prepare(settings).engine.dispose()
    app = create_app(settings)
    ctx = app.extensions["voucher"]
    ctx.replica_reads.check_interval_s = 0.0  # measure at every read: the test moves the replica about
    world = make_world(Admin(app.test_client(), create_admin_token(ctx, "replica")), ctx)
    try:
        yield app, ctx, world
    finally:
        pair.sql(pair.replica_port, "SELECT pg_wal_replay_resume()")
        ctx.close()


def _redeem(world: World) -> str:
    _, token = world.voucher()
    resp = world.redeem(token, [item(world.catalog.rice, 3, 5000)])
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["redemption_id"])


def _reported(world: World) -> int:
    """Redemptions in the counties report, the dashboard and the merchant's listing (all must agree)."""
    report = world.admin.get(f"/api/v1/programs/{world.program_id}/reports/counties")
    assert report.status_code == 200, report.get_json()
    in_report = sum(row["redemptions"] for row in report.get_json()["counties"])
    listing = world.merchant.get("/api/v1/redemptions?limit=100")
    assert listing.status_code == 200, listing.get_json()
    in_listing = len(listing.get_json()["redemptions"])
    assert in_report == in_listing, (in_report, in_listing)
    return in_report


def _caught_up(ctx: Any, since: float) -> bool:
    """The replica is fresh and known to hold what the primary had at `since` (the freshness clock's time
    after the writes the test waits for). A small lag alone is not enough: a primary position sampled just
    before those writes may be the one the replica has replayed."""
    reads = ctx.replica_reads
    lag = reads.lag_s()
    return bool(reads.replica_fresh() and lag is not None and lag < 1 and reads.clock() - lag >= since)


def _now(ctx: Any) -> float:
    return float(ctx.replica_reads.clock())


def test_reports_and_listings_read_the_replica_within_its_bound_and_the_primary_beyond_it(
    pair: StreamingPair, service: tuple[Any, Any, World]
) -> None:
    app, ctx, world = service
    _redeem(world)
    since = _now(ctx)
    wait_until(
        lambda: _caught_up(ctx, since) and _reported(world) == 1, "the replica replaying the redemption"
    )

    pair.sql(pair.replica_port, "SELECT pg_wal_replay_pause()")
    wait_until(
        lambda: pair.sql(pair.replica_port, "SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused",
        "replay paused",
    )
    # Money never reads the replica: a redemption, its own read and a second try all see the primary.
    _, token = world.voucher()
    first = world.redeem(token, [item(world.catalog.rice, 3, 5000)])
    assert first.status_code == 201, first.get_json()
    rid = first.get_json()["redemption_id"]
    assert world.merchant.get(f"/api/v1/redemptions/{rid}").status_code == 200
    again = world.redeem(token, [item(world.catalog.rice, 3, 5000)])
    assert again.status_code == 409 and again.get_json()["code"] == "voucher_already_redeemed"

    # Within the bound (an hour here) the reports come from the paused replica: without the new one.
    assert ctx.replica_reads.replica_fresh()
    assert _reported(world) == 1

    # Beyond it they come from the primary.
    ctx.replica_reads.max_lag_s = 0.5
    time.sleep(0.6)
    assert not ctx.replica_reads.replica_fresh()
    assert _reported(world) == 2

    pair.sql(pair.replica_port, "SELECT pg_wal_replay_resume()")
    since = _now(ctx)
    wait_until(lambda: _caught_up(ctx, since), "the replica catching up after replay resumed")
    assert _reported(world) == 2

    # /metrics says where those reads went and how far behind the replica may be.
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    served = {t: ctx.replica_reads.served[t] for t in ("replica", "primary")}
    assert served["replica"] > 0 and served["primary"] > 0, served
    assert 'voucher_replica_reads_total{target="replica"}' in metrics
    lag = next(line for line in metrics.splitlines() if line.startswith("voucher_replica_lag_seconds "))
    assert 0 <= float(lag.split()[1]) < 1, lag


def test_reads_go_to_the_primary_while_the_replica_is_down(
    pair: StreamingPair, service: tuple[Any, Any, World]
) -> None:
    _app, ctx, world = service
    _redeem(world)
    since = _now(ctx)
    wait_until(lambda: _caught_up(ctx, since), "the replica catching up")
    pair.stop_replica()
    try:
        assert not ctx.replica_reads.replica_fresh()
        _redeem(world)
        assert _reported(world) == 2
    finally:
        pair.start_replica()
    since = _now(ctx)
    wait_until(lambda: _caught_up(ctx, since), "the replica back and caught up", timeout_s=60)
    assert _reported(world) == 2
