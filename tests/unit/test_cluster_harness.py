"""The Redis Cluster harness's retry (tests/scale_support.py), without starting Redis: a failed
`--cluster create` is retried once, on ports none of the failed nodes held, and reported as a warning
that does not stop the retry although the suite turns warnings into errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scale_support import RedisClusterNodes


def test_a_failed_cluster_create_is_retried_once_on_other_ports_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[list[int]] = []

    def start_once(self: RedisClusterNodes) -> None:
        attempts.append(list(self.ports))
        if len(attempts) == 1:
            raise AssertionError("[ERR] Node 127.0.0.1:7304 is not empty")

    monkeypatch.setattr(RedisClusterNodes, "_start_once", start_once)
    monkeypatch.setattr(RedisClusterNodes, "stop", lambda self: None)
    nodes = RedisClusterNodes(tmp_path / "cluster")
    with pytest.warns(UserWarning, match="retrying on fresh nodes.*7304 is not empty"):
        nodes.start()
    assert len(attempts) == 2
    assert not set(attempts[0]) & set(attempts[1])
    assert nodes.workdir.name == "cluster-retry"


def test_a_second_failure_is_the_test_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def start_once(self: RedisClusterNodes) -> None:
        raise AssertionError(f"not empty on {self.ports[0]}")

    monkeypatch.setattr(RedisClusterNodes, "_start_once", start_once)
    monkeypatch.setattr(RedisClusterNodes, "stop", lambda self: None)
    nodes = RedisClusterNodes(tmp_path / "cluster")
    with pytest.warns(UserWarning), pytest.raises(AssertionError, match="not empty"):
        nodes.start()
