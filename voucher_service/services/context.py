"""The adapters a service function works with, handed in by create_app or the CLI."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from voucher_service.adapters.db.engine import make_engine, make_session_factory
from voucher_service.adapters.db.replica import ReplicaReads
from voucher_service.adapters.redis_store import FastStore, make_store
from voucher_service.adapters.secret_box import SecretBox
from voucher_service.adapters.signing import KeyRing
from voucher_service.adapters.sms import SmsSender, make_sms
from voucher_service.config import Settings
from voucher_service.domain.states import SigningKeyStatus


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC, to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class ServiceContext:
    """Everything a use case needs from the outside world."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: FastStore
    keys: KeyRing
    sms: SmsSender
    box: SecretBox
    clock: Callable[[], dt.datetime] = field(default=utcnow)
    # Reports, dashboards and listings may read from a streaming replica (VOUCHER_DATABASE_REPLICA_URL).
    replica_reads: ReplicaReads | None = None

    @classmethod
    def build(cls, settings: Settings) -> ServiceContext:
        """Create the engine, session factory, store and key ring for these settings."""
        from voucher_service.adapters.db.models import SigningKey

        engine = make_engine(settings.database_url, pooler=settings.database_pooler)
        sessions = make_session_factory(engine)

        # Keys may be reloaded while the same thread holds SQLite's write lock (a claim signs inside
        # its transaction), so they are read through a reader that never takes that lock.
        key_reader = (
            make_session_factory(make_engine(settings.database_url, sqlite_write_lock=False))
            if engine.dialect.name == "sqlite"
            else sessions
        )

        def load_keys() -> list[SigningKey]:
            with key_reader() as s:
                return list(
                    s.scalars(select(SigningKey).where(SigningKey.status != SigningKeyStatus.EXPIRED))
                )

        replica_reads = None
        if settings.database_replica_url:
            replica = make_engine(settings.database_replica_url, pooler=settings.database_pooler, pool_size=5)
            replica_reads = ReplicaReads(engine, sessions, replica, max_lag_s=settings.replica_max_lag_s)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            replica_reads=replica_reads,
            store=make_store(settings.redis_url, settings.redis_prefix),
            keys=KeyRing(load_keys, settings.signing_key_passphrase),
            sms=make_sms(settings.sms_outbox),
            box=SecretBox(settings.secret_key),
        )

    def close(self) -> None:
        """Close every pooled database connection: the end of a script or a test (a gunicorn worker's
        connections end with its process)."""
        self.engine.dispose()
        if self.replica_reads is not None:
            self.replica_reads.replica.dispose()

    def read_session(self) -> Session:
        """A session for a read that may lag the primary by up to the replica's bound: reports, dashboards,
        listings. Never for money: a claim, a redemption or anything deciding one uses `sessions`."""
        return (self.replica_reads or self.sessions)()

    def now(self) -> dt.datetime:
        """The service's clock (tests may replace it)."""
        return self.clock()
