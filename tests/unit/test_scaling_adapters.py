"""Settings and adapters for running past one machine: the pooler and replica settings, the Redis Cluster
URL, and the replica's freshness bound (on fake engines and a fake clock)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from voucher_service.adapters import redis_cluster
from voucher_service.adapters.db.replica import ReplicaReads, lsn_value
from voucher_service.config import ConfigurationError, Settings

PG = "postgresql+psycopg://u@h/db"


def test_the_pooler_setting_is_read_from_the_environment_and_checked(tmp_path: Path) -> None:
    base = {"VOUCHER_VAR_DIR": str(tmp_path)}
    assert Settings.from_env(base).database_pooler == "none"
    chosen = Settings.from_env({**base, "VOUCHER_DATABASE_POOLER": "transaction"})
    assert chosen.database_pooler == "transaction"
    with pytest.raises(ConfigurationError):
        Settings.from_env({**base, "VOUCHER_DATABASE_POOLER": "statement"})


def test_the_replica_settings_are_read_from_the_environment_and_checked(tmp_path: Path) -> None:
    base = {"VOUCHER_VAR_DIR": str(tmp_path), "VOUCHER_DATABASE_URL": PG}
    plain = Settings.from_env(base)
    assert plain.database_replica_url is None and plain.replica_max_lag_s == 5.0
    read = Settings.from_env(
        {**base, "VOUCHER_DATABASE_REPLICA_URL": PG + "r", "VOUCHER_DATABASE_REPLICA_MAX_LAG_S": "2.5"}
    )
    assert read.database_replica_url == PG + "r" and read.replica_max_lag_s == 2.5
    for bad in ("soon", "-1", "nan", "1e9", "２"):
        with pytest.raises(ConfigurationError):
            Settings.from_env({**base, "VOUCHER_DATABASE_REPLICA_MAX_LAG_S": bad})
    with pytest.raises(ConfigurationError):  # SQLite has no streaming replica
        Settings.from_env({"VOUCHER_VAR_DIR": str(tmp_path), "VOUCHER_DATABASE_REPLICA_URL": PG})


@pytest.mark.parametrize(
    ("url", "first", "others"),
    [
        ("redis+cluster://10.0.0.1:7000", "redis://10.0.0.1:7000", []),
        ("redis+cluster://a:7000,b:7001, c:7002/0", "redis://a:7000/0", [("b", 7001), ("c", 7002)]),
        ("rediss+cluster://u:p%40ss@a:7000,b", "rediss://u:p%40ss@a:7000", [("b", 6379)]),
    ],
)
def test_a_cluster_url_names_its_startup_nodes(
    monkeypatch: pytest.MonkeyPatch, url: str, first: str, others: list[tuple[str, int]]
) -> None:
    from redis.cluster import RedisCluster

    seen: dict[str, Any] = {}

    def from_url(cls: Any, base: str, **kw: Any) -> str:
        seen.update(base=base, **kw)
        return "client"

    monkeypatch.setattr(RedisCluster, "from_url", classmethod(from_url))
    assert redis_cluster.is_cluster_url(url)
    assert redis_cluster.cluster_client(url) == "client"
    assert seen["base"] == first
    assert [(n.host, n.port) for n in seen["startup_nodes"] or []] == others
    assert seen["socket_timeout"] == 5 and seen["socket_connect_timeout"] == 5


def test_plain_redis_urls_are_not_cluster_urls() -> None:
    assert not redis_cluster.is_cluster_url("redis://127.0.0.1:6379/0")
    assert not redis_cluster.is_cluster_url("rediss://h:6380")
    with pytest.raises(ValueError):
        redis_cluster.cluster_client("redis://h:1")


class _Result:
    def __init__(self, row: tuple[Any, ...]) -> None:
        self.row = row

    def scalar_one(self) -> Any:
        return self.row[0]

    def one(self) -> tuple[Any, ...]:
        return self.row


class _Engine:
    """Answers the two freshness queries: the primary's WAL position, the replica's replay position."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    @contextmanager
    def connect(self) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        outer = self

        class Conn:
            def execute(self, _stmt: Any) -> _Result:
                return _Result(outer.answer)

        yield Conn()


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _reads(primary: _Engine, replica: _Engine, clock: _Clock, max_lag_s: float = 5.0) -> ReplicaReads:
    reads = ReplicaReads(
        primary,  # type: ignore[arg-type]
        lambda: "primary-session",  # type: ignore[arg-type]
        replica,  # type: ignore[arg-type]
        max_lag_s=max_lag_s,
        check_interval_s=1.0,
        clock=clock,
    )
    reads.replica_sessions = lambda: "replica-session"  # type: ignore[assignment,misc,return-value]
    return reads


def test_lsns_order_as_the_wal_does() -> None:
    assert lsn_value("0/16B3748") < lsn_value("0/FFFFFFFF") < lsn_value("1/0") < lsn_value("16/B374D848")


def test_a_replica_that_keeps_up_serves_the_reads_and_one_that_stops_falls_back_after_the_bound() -> None:
    clock = _Clock()
    primary, replica = _Engine(("0/100",)), _Engine((True, "0/100"))
    reads = _reads(primary, replica, clock)
    assert reads() == "replica-session" and reads.lag_s() == 0.0
    # An idle primary (its position unchanged) does not make a current replica look stale.
    clock.t += 60
    assert reads() == "replica-session" and reads.lag_s() == 0.0
    # Replay stops at 0/100 while the primary moves on: served within the bound, then not.
    primary.answer = ("0/200",)
    for _ in range(5):
        clock.t += 1
        assert reads() == "replica-session"
    clock.t += 1.5
    assert reads() == "primary-session" and (reads.lag_s() or 0) > 5
    # Replay catches up: back on the replica.
    replica.answer = (True, "0/200")
    clock.t += 1
    assert reads() == "replica-session" and reads.lag_s() == 0.0


def test_reads_stay_on_the_primary_until_measured_and_while_the_replica_is_unreachable() -> None:
    clock = _Clock()
    primary, replica = _Engine(("0/100",)), _Engine((True, "0/50"))
    reads = _reads(primary, replica, clock)
    assert reads() == "primary-session" and reads.lag_s() is None  # never caught up with a sample
    replica.answer = OSError("connection refused")
    clock.t += 1
    assert reads() == "primary-session"
    replica.answer = (False, None)  # promoted (or the primary itself): its data is the primary's
    clock.t += 1
    assert reads() == "replica-session"


def test_the_freshness_is_measured_at_most_once_per_interval() -> None:
    clock = _Clock()
    calls: list[int] = []
    primary, replica = _Engine(("0/100",)), _Engine((True, "0/100"))
    reads = _reads(primary, replica, clock)
    measure = reads.measure

    def counted() -> None:
        calls.append(1)
        measure()

    reads.measure = counted  # type: ignore[method-assign]
    for _ in range(10):
        reads()
    clock.t += 1
    reads()
    assert len(calls) == 2
