"""Reads that may be a little stale (reports, dashboards, listings) on a streaming replica, within a bound.

The replica is used only while it is known to hold everything the primary had committed `max_lag_s`
seconds ago; otherwise (lagging, paused, unreachable, not yet measured) those reads go to the primary.
Money writes, and the reads that decide them, never come here: they use the primary's sessions.

How fresh the replica is, is measured, not guessed from timestamps (an idle primary commits nothing, so
"time since the last replayed commit" grows on a replica that is perfectly current): at most every
`check_interval_s` one thread reads the primary's WAL position (`pg_current_wal_lsn()`), remembers it
with the time, then reads the replica's replay position (`pg_last_wal_replay_lsn()`). The replica holds
at least what the primary had at the latest remembered time whose position it has replayed: that time
is its `as_of`, and it serves reads while `now - as_of <= max_lag_s`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
SAMPLES = 256  # remembered (time, primary WAL position) pairs: bounded, the oldest dropped first


def lsn_value(lsn: str) -> int:
    """A PostgreSQL LSN ('16/B374D848') as a number that orders as the WAL does."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


class ReplicaReads:
    """A session factory: the replica's sessions while it is fresh enough, else the primary's."""

    def __init__(
        self,
        primary: Engine,
        primary_sessions: sessionmaker[Session],
        replica: Engine,
        *,
        max_lag_s: float = 5.0,
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.primary_sessions = primary_sessions
        self.replica = replica
        self.replica_sessions = sessionmaker(replica, expire_on_commit=False)
        self.max_lag_s = max_lag_s
        self.check_interval_s = check_interval_s
        self.clock = clock
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=SAMPLES)
        self._as_of: float | None = None
        self._checked_at: float | None = None
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.served = {"replica": 0, "primary": 0}  # sessions handed out, for /metrics

    def __call__(self) -> Session:
        """A session for a read that may be up to `max_lag_s` behind the primary."""
        target = "replica" if self.replica_fresh() else "primary"
        with self._count_lock:
            self.served[target] += 1
        return (self.replica_sessions if target == "replica" else self.primary_sessions)()

    def replica_fresh(self) -> bool:
        """Tell whether the replica holds all the primary committed `max_lag_s` ago (measuring if due)."""
        now = self.clock()
        if self._checked_at is None or now - self._checked_at >= self.check_interval_s:
            if self._lock.acquire(blocking=False):  # one thread measures; the others use the last answer
                try:
                    self.measure()
                finally:
                    self._lock.release()
        lag = self.lag_s()
        return lag is not None and lag <= self.max_lag_s

    def lag_s(self) -> float | None:
        """Seconds the replica may be behind the primary (an upper bound), None when unknown."""
        return None if self._as_of is None else max(0.0, self.clock() - self._as_of)

    def measure(self) -> None:
        """Sample the primary's WAL position, then see how much of it the replica has replayed."""
        self._checked_at = self.clock()
        try:
            with self.primary.connect() as conn:
                position = conn.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one()
            self._samples.append((self.clock(), lsn_value(position)))
            with self.replica.connect() as conn:
                recovering, replayed = conn.execute(
                    text("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text")
                ).one()
        except Exception as exc:  # the replica (or primary) unreachable: reads stay on the primary
            log.warning("replica freshness unknown, reading from the primary: %s", str(exc).splitlines()[0])
            self._as_of = None
            return
        if not recovering:  # promoted, or pointed at the primary itself: it is the primary's data
            self._as_of = self._samples[-1][0]
            return
        done = lsn_value(replayed) if replayed else -1
        caught_up = [t for t, position in self._samples if position <= done]
        if caught_up:
            self._as_of = max(caught_up)
            while self._samples and self._samples[0][0] < self._as_of:  # older samples say nothing new
                self._samples.popleft()
        elif self._as_of is None and self._samples:
            log.info("replica has not yet replayed any sampled primary position; reading from the primary")
