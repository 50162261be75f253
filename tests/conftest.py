"""Shared fixtures: apps on SQLite (fast) and on real PostgreSQL + Redis (for what concurrency needs).

Every database a test gets is migrated once per session and copied: SQLite tests get a file copy of a
migrated template, PostgreSQL tests that need a database of their own get `CREATE DATABASE ... TEMPLATE`
of a migrated one, and the rest share one migrated PostgreSQL database (each test makes its own
programmes). Hashing is cheap in tests only (make_settings; production refuses it, see test_config).
"""

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
from werkzeug.routing import Rule

from tests.helpers import Admin
from voucher_service import create_app
from voucher_service.adapters.db.migrate import upgrade
from voucher_service.config import TEST_HASHING, Settings
from voucher_service.services.context import ServiceContext
from voucher_service.services.credentials import create_admin_token
from voucher_service.services.keys import ensure_signing_keys

PG_ADMIN_URL = os.environ.get(
    "VOUCHER_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("VOUCHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


_WERKZEUG_BUILDERS: dict[tuple[Any, ...], Any] = {}


def _cached_compile_builder(original: Callable[..., Any]) -> Callable[..., Any]:
    """Werkzeug compiles two URL builders per rule per app (parsing and compiling Python source), and
    every test builds an app: most of create_app's time. A builder is a pure function of the rule's
    text, parts and defaults (it takes the rule as its argument), so the same rule reuses it."""

    def compile_builder(self: Any, append_unknown: bool = True) -> Any:
        if self.defaults:  # defaults are resolved through the rule's converters: not shared
            return original(self, append_unknown)
        key = (self.rule, append_unknown, tuple(self._trace))
        builder = _WERKZEUG_BUILDERS.get(key)
        if builder is None:
            builder = _WERKZEUG_BUILDERS[key] = original(self, append_unknown)
        return builder

    return compile_builder


Rule._compile_builder = _cached_compile_builder(Rule._compile_builder)  # type: ignore[method-assign]


def _pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def pg_database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """Create throw-away PostgreSQL databases, empty or (migrated=True) copies of a database migrated
    once per session, signing keys included; all are dropped at the end of the session."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    created: list[str] = []
    template: list[str] = []

    def create(name: str, like: str | None = None) -> str:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{like}"' if like else "")))
        created.append(name)
        return _pg_url(name)

    def make(migrated: bool = False) -> str:
        name = f"vtest_{os.getpid()}_{secrets.token_hex(4)}"
        if not migrated:
            return create(name)
        if not template:
            template_name = f"vtest_{os.getpid()}_template_{secrets.token_hex(4)}"
            ctx = prepare(make_settings(tmp_path_factory.mktemp("pg-template"), create(template_name)))
            ctx.engine.dispose()  # a template may have no open connection
            template.append(template_name)
        return create(name, like=template[0])

    yield make
    with admin.connect() as conn:
        for name in reversed(created):
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
        # Production uses scrypt n=2**15 and argon2id t=3, 64 MiB, 4 lanes (and refuses less); tests
        # need speed, not strength. tests/unit/test_config.py shows production's costs.
        **TEST_HASHING,
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


def copy_sqlite_template(template: Path, path: Path) -> str:
    """Copy the migrated template to `path`; return its database URL."""
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    """A private SQLite database: a copy of the migrated template, far cheaper than migrating again."""
    return make_settings(tmp_path, copy_sqlite_template(sqlite_template, tmp_path / "voucher.sqlite3"))


@pytest.fixture(scope="session")
def pg_session_url(pg_database_factory: Callable[..., str]) -> str:
    """One PostgreSQL database shared by the tests of a session (each test makes its own programmes)."""
    return pg_database_factory(migrated=True)


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The browser tests are slow tests (a `pytestmark` in a conftest.py marks nothing). Under pytest-xdist
    (`make test` runs two workers), the end-to-end tests, which start whole servers on fixed port ranges,
    all run on one worker, and the browser tests, which share one live server and Chromium, on one."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "browser" in parts:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group("browser"))
        elif "e2e" in parts:
            item.add_marker(pytest.mark.xdist_group("e2e"))
