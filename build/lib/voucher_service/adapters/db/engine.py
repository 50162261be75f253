"""Engine and session factory for SQLite (embedded default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, *, sqlite_write_lock: bool = True, **kwargs: Any) -> Engine:
    """Build an engine; SQLite gets WAL, a busy timeout and (unless told not to) write-locking transactions."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, **kwargs)
        _make_sqlite_transactional(engine, sqlite_write_lock)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    # No pre-ping: it costs a round trip on every checkout of the hot path. A connection found dead
    # makes SQLAlchemy invalidate the whole pool, so a database restart costs one failed request.
    kwargs.setdefault("pool_recycle", 1800)
    return create_engine(url, **kwargs)


def _make_sqlite_transactional(engine: Engine, write_lock: bool) -> None:
    # pysqlite's own transaction handling defers BEGIN and deadlocks read-then-write transactions
    # under concurrency; take the write lock up front instead (BEGIN IMMEDIATE) and let the busy
    # timeout queue writers. SQLite is the embedded default, not the rush configuration.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A read-only engine (write_lock=False) must not queue behind a writer: in WAL mode plain
        # BEGIN reads a snapshot while another connection holds the write lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write_lock else "BEGIN")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, so services can return them."""
    return sessionmaker(engine, expire_on_commit=False)


def is_postgres(engine_or_session: Engine | Session) -> bool:
    """Tell whether the database is PostgreSQL (for SKIP LOCKED and COPY)."""
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "postgresql"
