"""Engine and session factory for SQLite (embedded default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import select
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, *, sqlite_write_lock: bool = True, pooler: str = "none", **kwargs: Any) -> Engine:
    """Build an engine; SQLite gets WAL, a busy timeout and (unless told not to) write-locking transactions.

    Behind a transaction-mode pooler (`pooler="transaction"`, PgBouncer) psycopg prepares nothing: a
    prepared statement lives in one server connection, and the next transaction may get another.
    """
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
    # No pre-ping (a round trip on every checkout of the hot path, removed in 95da013). Instead each
    # checkout polls the connection's socket without waiting (one syscall, no round trip): a
    # connection the server closed (pg_terminate_backend, a restart, a cut network) has its FATAL
    # notice or EOF waiting there, and is replaced before the request uses it.
    kwargs.setdefault("pool_recycle", 1800)
    if pooler == "transaction":
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "prepare_threshold": None}
    engine = create_engine(url, **kwargs)
    event.listen(engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Raise DisconnectionError (the pool then connects afresh) when the server has gone from this one."""
    if not idle_connection_alive(dbapi_connection):
        raise DisconnectionError("the server closed this pooled connection")


def idle_connection_alive(dbapi_connection: Any) -> bool:
    """An idle psycopg connection is alive when nothing waits on its socket: the server sends nothing
    unasked to an idle session (no LISTEN here) except the notice it writes before closing it."""
    conn = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    if getattr(conn, "closed", False) or getattr(conn, "broken", False):
        return False
    pgconn = getattr(conn, "pgconn", None)
    if pgconn is None:
        return True  # not psycopg 3: nothing cheap to look at
    try:
        fd = pgconn.socket
    except Exception:  # the connection has no socket any more
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return not poller.poll(0)


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
