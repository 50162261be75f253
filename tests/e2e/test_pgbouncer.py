"""The service behind PgBouncer in transaction mode (Debian's package, a pool of a few server
connections shared by every worker's pool): a claim storm issues exactly the tier, and a mixed load of
claims, keyed retries, redemptions and replays keeps the books, with `VOUCHER_DATABASE_POOLER=transaction`
(no server-side prepared statements; advisory locks and settings are transaction-scoped already)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from benchmarks._server import gunicorn_server, server_log, settings_env
from tests.conftest import REDIS_URL, make_settings, prepare
from tests.e2e.test_claim_storm import _check, _seed, _server_env, _storm
from tests.helpers import Admin
from tests.scale_load import MixedLoad, check_books, open_shop
from tests.scale_support import PgBouncer, pgbouncer
from voucher_service import create_app
from voucher_service.adapters.db.engine import make_engine
from voucher_service.services.credentials import create_admin_token

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# The newest migration: what a database is at after init-db.
MIGRATIONS = Path(__file__).resolve().parents[2] / "voucher_service" / "migrations" / "versions"

SERVER_CONNECTIONS = 4  # far fewer than the 2 workers x 8 threads that share them


def _bouncer_for(direct: str) -> tuple[Any, str]:
    """A pgbouncer (not yet started) for the database of `direct`, and that database's name."""
    url = make_url(direct)
    database = url.database or ""
    return pgbouncer(url.host or "127.0.0.1", url.port or 5432, [database], SERVER_CONNECTIONS), database


def _server_connections(bouncer: PgBouncer, database: str) -> int:
    pools = [p for p in bouncer.show("POOLS") if p["database"] == database]
    return sum(int(p["sv_active"]) + int(p["sv_idle"]) + int(p["sv_used"]) for p in pools)  # type: ignore[call-overload]


def test_an_engine_for_a_transaction_pooler_never_prepares_statements(
    tmp_path: Path, pg_session_url: str
) -> None:
    cm, database = _bouncer_for(pg_session_url)
    with cm as bouncer:
        engine = make_engine(bouncer.url(database), pooler="transaction", pool_size=2)
        plain = make_engine(pg_session_url, pool_size=1)
        try:
            with engine.connect() as conn:
                assert conn.connection.driver_connection.prepare_threshold is None  # type: ignore[union-attr]
                for _ in range(10):  # psycopg prepares a statement run 5 times unless told not to
                    assert conn.execute(text("SELECT count(*) FROM programs")).scalar() is not None
            with plain.connect() as conn:  # straight to PostgreSQL, prepared statements stay on
                assert conn.connection.driver_connection.prepare_threshold == 5  # type: ignore[union-attr]
        finally:
            engine.dispose()
            plain.dispose()


def test_init_db_runs_through_pgbouncer_and_again_changes_nothing(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    direct = pg_database_factory()
    cm, database = _bouncer_for(direct)
    with cm as bouncer:
        settings = make_settings(tmp_path, bouncer.url(database), database_pooler="transaction")
        for _ in range(2):  # one transaction with an advisory transaction lock: safe in transaction mode
            prepare(settings).engine.dispose()
    ctx = prepare(make_settings(tmp_path, direct))
    try:
        with ctx.engine.connect() as conn:
            head = sorted(p.name.split("_")[0] for p in MIGRATIONS.glob("[0-9]*_*.py"))[-1]
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head
            assert conn.exec_driver_sql("SELECT count(*) FROM signing_keys").scalar()
    finally:
        ctx.engine.dispose()


def test_a_claim_storm_through_pgbouncer_in_transaction_mode_issues_exactly_the_tier(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    direct = pg_database_factory()
    settings = make_settings(tmp_path, direct)
    program_id, platform = _seed(settings)  # migrations straight to PostgreSQL
    cm, database = _bouncer_for(direct)
    with cm as bouncer:
        env = _server_env(settings, REDIS_URL) | {
            "VOUCHER_DATABASE_URL": bouncer.url(database),
            "VOUCHER_DATABASE_POOLER": "transaction",
        }
        log_path = tmp_path / "gunicorn.log"
        with gunicorn_server(env, workers=2, threads=8, log_path=log_path) as base_url:
            results = _storm(base_url, program_id, platform)
            assert _server_connections(bouncer, database) <= SERVER_CONNECTIONS
        assert "prepared statement" not in server_log(log_path)
    _check(results, settings, program_id)


@pytest.mark.timeout(600)  # a loaded machine: the load waits for progress, never for a fixed time
def test_a_mixed_load_through_pgbouncer_keeps_the_books_and_every_key(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    direct = pg_database_factory()
    settings = make_settings(tmp_path, direct, REDIS_URL)
    prepare(settings).engine.dispose()
    app = create_app(settings)
    ctx: Any = app.extensions["voucher"]
    shop = open_shop(Admin(app.test_client(), create_admin_token(ctx, "bouncer")), ctx, vouchers=40)
    cm, database = _bouncer_for(direct)
    with cm as bouncer:
        env = settings_env(
            settings,
            VOUCHER_DATABASE_URL=bouncer.url(database),
            VOUCHER_DATABASE_POOLER="transaction",
            VOUCHER_ENV="development",  # the audit sealer runs too (an advisory lock per seal)
            VOUCHER_CLAIM_RATE_PER_MINUTE="1000000",
        )
        log_path = tmp_path / "gunicorn.log"
        with gunicorn_server(env, workers=2, threads=8, log_path=log_path) as base:
            load = MixedLoad(shop, [base], threads=6, pause_s=0.0)
            with load:
                _run_until(lambda: not load.vouchers_left and load.seen.count("claim:201") >= 40)
            load.replay_all()
            final = load.settle_keys()
            note = f"pgbouncer log:\n{bouncer.log()}\nserver log:\n{server_log(log_path)}"
    check_books(load, settings, ctx, final, note)
    assert load.seen.count("replay:401:replayed_request") == load.seen.replays, load.summary()
    ctx.engine.dispose()


def _run_until(check: Callable[[], bool], timeout_s: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the load made no progress"
        time.sleep(0.2)
