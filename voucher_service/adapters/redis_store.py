"""Fast shared state (nonces, rate limits, sold-out gates, OTP codes, caches) in Redis.

Without a Redis URL an in-process store stands in; it is for development only, since gunicorn
workers would not share it. Nothing here is ever the only record of money.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class FastStore(Protocol):
    """What the services need from Redis."""

    # When this store began empty, if it knows (an in-process store: its creation); None for Redis,
    # whose losses are only noticed later (see services.nonces).
    born_unix: int | None

    def add_once(self, key: str, ttl_s: int) -> bool:
        """Set `key` if absent with a TTL; True when this call set it."""

    def hit(self, key: str, window_s: int) -> tuple[int, int]:
        """Count a hit in a fixed window; return (hits so far, seconds until the window resets)."""

    def get(self, key: str) -> bytes | None:
        """Read a value."""

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        """Write a value, with an optional TTL."""

    def delete(self, *keys: str) -> None:
        """Remove keys."""

    def incr(self, key: str, ttl_s: int | None = None) -> int:
        """Increment a counter, setting a TTL when it is created."""

    def add_nonce(self, key: str, ttl_s: int, marker: str) -> tuple[bool, int | None]:
        """Set `key` if absent (TTL) and read the epoch `marker`, in one round trip (both keys must share
        a cluster slot); return (whether this call set the key, the marker's epoch or None)."""

    def raise_markers(self, markers: list[str], epoch: int) -> None:
        """Set each marker (no TTL) to `epoch` unless it holds a later one."""

    def ping(self) -> bool:
        """Tell whether the store answers."""


# KEYS[1] the nonce, KEYS[2] its shard's epoch marker; ARGV[1] the nonce's TTL in seconds.
ADD_NONCE_LUA = """
local added = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1])
local epoch = redis.call('GET', KEYS[2])
return {added and 1 or 0, epoch or ''}
"""
# KEYS[1] a marker; ARGV[1] the epoch: never lowered, never expires.
RAISE_MARKER_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


class RedisStore:
    """FastStore over a redis (or Redis Cluster) client, with every key under one prefix."""

    def __init__(self, client: object, prefix: str) -> None:
        self._r = client
        self._p = prefix
        self.born_unix: int | None = None
        # EVALSHA, falling back to EVAL once after a restart flushed the script cache.
        self._add_nonce = client.register_script(ADD_NONCE_LUA)  # type: ignore[attr-defined]
        self._raise_marker = client.register_script(RAISE_MARKER_LUA)  # type: ignore[attr-defined]

    def add_nonce(self, key: str, ttl_s: int, marker: str) -> tuple[bool, int | None]:
        added, epoch = self._add_nonce(keys=[self._p + key, self._p + marker], args=[ttl_s])
        return bool(added), int(epoch) if epoch not in (b"", "", None) else None

    def raise_markers(self, markers: list[str], epoch: int) -> None:
        for marker in markers:  # one by one: each marker lives in its own cluster slot
            self._raise_marker(keys=[self._p + marker], args=[epoch])

    def add_once(self, key: str, ttl_s: int) -> bool:
        return bool(self._r.set(self._p + key, b"1", nx=True, ex=ttl_s))  # type: ignore[attr-defined]

    def hit(self, key: str, window_s: int) -> tuple[int, int]:
        bucket = int(time.time()) // window_s
        k = f"{self._p}{key}:{bucket}"
        pipe = self._r.pipeline()  # type: ignore[attr-defined]
        pipe.incr(k)
        pipe.expire(k, window_s + 1)
        count, _ = pipe.execute()
        reset = window_s - int(time.time()) % window_s
        return int(count), reset

    def get(self, key: str) -> bytes | None:
        return self._r.get(self._p + key)  # type: ignore[attr-defined,no-any-return]

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        self._r.set(self._p + key, value, ex=ttl_s)  # type: ignore[attr-defined]

    def delete(self, *keys: str) -> None:
        for key in keys:  # one by one: a cluster refuses multi-slot deletes
            self._r.delete(self._p + key)  # type: ignore[attr-defined]

    def incr(self, key: str, ttl_s: int | None = None) -> int:
        value = int(self._r.incr(self._p + key))  # type: ignore[attr-defined]
        if value == 1 and ttl_s:
            self._r.expire(self._p + key, ttl_s)  # type: ignore[attr-defined]
        return value

    def ping(self) -> bool:
        try:
            return bool(self._r.ping())  # type: ignore[attr-defined]
        except Exception:
            return False


class MemoryStore:
    """In-process FastStore for development without Redis and for unit tests.

    Bounded to `max_items`: when full, expired items go first, then the oldest written. (Evicting a
    nonce early weakens replay protection, which is one reason production requires Redis.)
    """

    def __init__(self, max_items: int = 100_000) -> None:
        self.max_items = max_items
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._lock = threading.Lock()
        self.born_unix: int | None = int(time.time())  # nothing it holds is older than this

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def _write(self, key: str, item: tuple[bytes, float | None]) -> None:
        # Called with the lock held; dicts keep insertion order, so re-inserting moves a key last.
        self._data.pop(key, None)
        if len(self._data) >= self.max_items:
            now = time.monotonic()
            for stale in [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]:
                del self._data[stale]
            if len(self._data) >= self.max_items:  # drop the oldest tenth at once: no scan per write
                for old in list(self._data)[: max(1, self.max_items // 10)]:
                    del self._data[old]
        self._data[key] = item

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            del self._data[key]
            return None
        return value

    def add_once(self, key: str, ttl_s: int) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._write(key, (b"1", time.monotonic() + ttl_s))
            return True

    def hit(self, key: str, window_s: int) -> tuple[int, int]:
        bucket = int(time.time()) // window_s
        count = self.incr(f"{key}:{bucket}", window_s + 1)
        return count, window_s - int(time.time()) % window_s

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._live(key)

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        with self._lock:
            self._write(key, (value, time.monotonic() + ttl_s if ttl_s else None))

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def incr(self, key: str, ttl_s: int | None = None) -> int:
        with self._lock:
            current = self._live(key)
            value = int(current or b"0") + 1
            expires = self._data[key][1] if current is not None else None
            if current is None and ttl_s:
                expires = time.monotonic() + ttl_s
            self._write(key, (str(value).encode(), expires))
            return value

    def add_nonce(self, key: str, ttl_s: int, marker: str) -> tuple[bool, int | None]:
        with self._lock:
            added = self._live(key) is None
            if added:
                self._data[key] = (b"1", time.monotonic() + ttl_s)
            epoch = self._live(marker)
            return added, int(epoch) if epoch is not None else None

    def raise_markers(self, markers: list[str], epoch: int) -> None:
        with self._lock:
            for marker in markers:
                if int(self._live(marker) or b"0") < epoch:
                    self._data[marker] = (str(epoch).encode(), None)

    def ping(self) -> bool:
        return True


def make_store(url: str | None, prefix: str) -> FastStore:
    """Build the store for a Redis URL (redis://, rediss://, redis+cluster://) or the in-process one."""
    if not url:
        return MemoryStore()
    import redis

    from voucher_service.adapters.redis_cluster import cluster_client, is_cluster_url

    if is_cluster_url(url):
        client: object = cluster_client(url)
    else:
        client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        )
    return RedisStore(client, prefix)
