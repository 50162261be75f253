"""Shared fixtures: apps on SQLite (fast) and on real PostgreSQL + Redis (for what concurrency needs)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.helpers import Admin
from voucher_service import create_app
from voucher_service.adapters.db.migrate import upgrade
from voucher_service.config import Settings
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import create_admin_token
from voucher_service.services.keys import ensure_signing_keys

PG_ADMIN_URL = os.environ.get(
    "VOUCHER_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("VOUCHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def pg_database_factory() -> Iterator[Callable[[], str]]:
    """Create throw-away PostgreSQL databases; all are dropped at the end of the session."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make() -> str:
        name = f"vtest_{os.getpid()}_{secrets.token_hex(4)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_settings(tmp: Path, database_url: str, redis_url: str | None = None, **overrides: Any) -> Settings:
    """Test settings: a private var dir, an SMS outbox file, a unique Redis prefix."""
    values: dict[str, Any] = dict(
        database_url=database_url,
        redis_url=redis_url,
        env="test",
        secret_key="test-secret-" + "x" * 40,
        signing_key_passphrase="test-passphrase",
        signing_key_scrypt_n=2**10,  # production uses 2**15; tests need speed, not key strength
        sms_outbox=str(tmp / "sms.jsonl"),
        var_dir=tmp,
        redis_prefix=f"vt:{secrets.token_hex(4)}:",
    )
    values.update(overrides)
    return Settings(**values)


def prepare(settings: Settings) -> ServiceContext:
    """Migrate the database and create signing keys, as `voucher-admin init-db` does."""
    ctx = ServiceContext.build(settings)
    upgrade(ctx.engine)
    ensure_signing_keys(ctx)
    return ctx


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite database migrated once per session (with its signing keys); tests get copies."""
    tmp = tmp_path_factory.mktemp("sqlite-template")
    path = tmp / "template.sqlite3"
    prepare(make_settings(tmp, f"sqlite:///{path}")).engine.dispose()
    with contextlib.closing(sqlite3.connect(path)) as conn:  # fold the WAL in: one file is then whole
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    """A private SQLite database: a copy of the migrated template, far cheaper than migrating again."""
    path = tmp_path / "voucher.sqlite3"
    shutil.copyfile(sqlite_template, path)
    return make_settings(tmp_path, f"sqlite:///{path}")


@pytest.fixture(scope="session")
def pg_session_url(pg_database_factory: Callable[[], str]) -> str:
    """One PostgreSQL database shared by the tests of a session (each test makes its own programmes)."""
    url = pg_database_factory()
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    prepare(make_settings(tmp, url)).engine.dispose()
    return url


@pytest.fixture
def pg_settings(tmp_path: Path, pg_session_url: str) -> Settings:
    return make_settings(tmp_path, pg_session_url, REDIS_URL)


@pytest.fixture
def app(sqlite_settings: Settings) -> Any:
    """The app on SQLite with the in-process store."""
    application = create_app(sqlite_settings)
    yield application
    application.extensions["voucher"].engine.dispose()


@pytest.fixture
def pg_app(pg_settings: Settings) -> Any:
    """The app on real PostgreSQL and Redis."""
    application = create_app(pg_settings)
    yield application
    application.extensions["voucher"].engine.dispose()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def ctx(app: Any) -> ServiceContext:
    return app.extensions["voucher"]  # type: ignore[no-any-return]


@pytest.fixture
def admin(app: Any) -> Admin:
    token = create_admin_token(app.extensions["voucher"], "tester")
    return Admin(app.test_client(), token)


@pytest.fixture
def pg_admin(pg_app: Any) -> Admin:
    token = create_admin_token(pg_app.extensions["voucher"], "tester")
    return Admin(pg_app.test_client(), token)
