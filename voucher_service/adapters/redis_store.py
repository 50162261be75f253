"""Fast shared state (nonces, rate limits, sold-out gates, OTP codes, caches) in Redis.

Without a Redis URL an in-process store stands in; it is for development only, since gunicorn
workers would not share it. Nothing here is ever the only record of money.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class NonceStep:
    """Set `key` if absent (TTL) and read the epoch `marker` (same cluster slot). Result: (whether this call
    set the key, the marker's epoch or None). Later steps run only when the key was set and the marker
    holds `go_on` (None: never)."""

    key: str
    marker: str
    ttl_s: int
    go_on: int | None


@dataclass(frozen=True)
class CountStep:
    """Count a hit on `key` (its TTL renewed). Result: the hits so far; later steps run only within `limit`."""

    key: str
    ttl_s: int
    limit: int


@dataclass(frozen=True)
class FlagStep:
    """Result: whether `key` exists."""

    key: str


@dataclass(frozen=True)
class SessionStep:
    """Check a consumer session against its holder's cached session state at `key` (JSON {"g": the
    holder's session epoch, "e": ended session ids}). Result: 1 the session is live, 0 it is not, -1 the
    state is not cached (or unreadable); later steps run only on 1."""

    key: str
    epoch: int
    session_id: str


Step = NonceStep | CountStep | FlagStep | SessionStep
StepResult = tuple[bool, int | None] | int | bool


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

    def admit(self, steps: Sequence[Step]) -> list[StepResult]:
        """Run the steps in order, atomically and in one round trip (on a Redis Cluster: one per run of
        consecutive steps in one slot); stop after a step that refuses. Return the results of the steps
        that ran."""

    def set_many(self, keys: Sequence[str], value: bytes, ttl_s: int) -> None:
        """Write `value` under each key, with a TTL."""

    def raise_markers(self, markers: list[str], epoch: int) -> None:
        """Set each marker (no TTL) to `epoch` unless it holds a later one."""

    def ping(self) -> bool:
        """Tell whether the store answers."""


# The steps of FastStore.admit: three ARGV per step (kind, then the TTL and the epoch to go on with or
# the limit, or a session's epoch and id); a nonce step takes two KEYS (the nonce, its epoch marker),
# the others one. A nonce step answers two values (1/0 set, the epoch or ''), the others one.
ADMIT_LUA = """
local out, k = {}, 1
for i = 1, #ARGV, 3 do
  local kind = ARGV[i]
  if kind == 'n' then
    local added = redis.call('SET', KEYS[k], '1', 'NX', 'EX', ARGV[i + 1])
    local epoch = redis.call('GET', KEYS[k + 1])
    k = k + 2
    out[#out + 1] = added and 1 or 0
    out[#out + 1] = epoch or ''
    if not added or ARGV[i + 2] == '' or epoch ~= ARGV[i + 2] then return out end
  elseif kind == 's' then
    local raw = redis.call('GET', KEYS[k])
    k = k + 1
    local verdict = -1
    if raw then
      local ok, state = pcall(cjson.decode, raw)
      if ok and type(state) == 'table' and type(state.g) == 'number' and type(state.e) == 'table' then
        verdict = 1
        if state.g ~= tonumber(ARGV[i + 1]) then verdict = 0 end
        for _, ended in ipairs(state.e) do
          if ended == ARGV[i + 2] then verdict = 0 end
        end
      end
    end
    out[#out + 1] = verdict
    if verdict ~= 1 then return out end
  elseif kind == 'c' then
    local hits = redis.call('INCR', KEYS[k])
    redis.call('EXPIRE', KEYS[k], ARGV[i + 1])
    k = k + 1
    out[#out + 1] = hits
    if hits > tonumber(ARGV[i + 2]) then return out end
  else
    out[#out + 1] = redis.call('EXISTS', KEYS[k])
    k = k + 1
  end
end
return out
"""
# KEYS[1] a counter; ARGV[1] the TTL it gets when this call creates it (0: none).
INCR_LUA = """
local value = redis.call('INCR', KEYS[1])
if value == 1 and tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return value
"""
# KEYS the keys; ARGV[1] the value, ARGV[2] the TTL.
SET_MANY_LUA = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2]) end
return #KEYS
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
        from redis.cluster import RedisCluster

        self._r = client
        self._p = prefix
        self._cluster = isinstance(client, RedisCluster)
        self.born_unix: int | None = None
        # EVALSHA, falling back to SCRIPT LOAD and EVALSHA again after a restart flushed the script cache.
        self._admit = client.register_script(ADMIT_LUA)  # type: ignore[attr-defined]
        self._incr = client.register_script(INCR_LUA)  # type: ignore[attr-defined]
        self._set_many = client.register_script(SET_MANY_LUA)  # type: ignore[attr-defined]
        self._raise_marker = client.register_script(RAISE_MARKER_LUA)  # type: ignore[attr-defined]

    def admit(self, steps: Sequence[Step]) -> list[StepResult]:
        results: list[StepResult] = []
        for run in self._runs(steps):
            keys: list[str] = []
            args: list[str | int] = []
            for step in run:
                if isinstance(step, NonceStep):
                    keys += [self._p + step.key, self._p + step.marker]
                    args += ["n", step.ttl_s, "" if step.go_on is None else str(step.go_on)]
                elif isinstance(step, CountStep):
                    keys.append(self._p + step.key)
                    args += ["c", step.ttl_s, step.limit]
                elif isinstance(step, SessionStep):
                    keys.append(self._p + step.key)
                    args += ["s", step.epoch, step.session_id]
                else:
                    keys.append(self._p + step.key)
                    args += ["f", 0, 0]
            answer = list(self._admit(keys=keys, args=args))
            for step in run[: len(answer)]:
                if not answer:
                    break
                if isinstance(step, NonceStep):
                    added, value = answer.pop(0), answer.pop(0)
                    epoch = int(value) if value not in (b"", "", None) else None
                    results.append((bool(added), epoch))
                    if not added or step.go_on is None or epoch != step.go_on:
                        return results
                elif isinstance(step, CountStep):
                    hits = int(answer.pop(0))
                    results.append(hits)
                    if hits > step.limit:
                        return results
                elif isinstance(step, SessionStep):
                    verdict = int(answer.pop(0))
                    results.append(verdict)
                    if verdict != 1:
                        return results
                else:
                    results.append(bool(answer.pop(0)))
        return results

    def _runs(self, steps: Sequence[Step]) -> list[list[Step]]:
        """One script call for all steps; on a cluster, one per run of consecutive steps in one slot."""
        if not self._cluster:
            return [list(steps)] if steps else []
        from redis.crc import key_slot

        runs: list[list[Step]] = []
        last = -1
        for step in steps:
            slot = key_slot((self._p + step.key).encode())
            if runs and slot == last:
                runs[-1].append(step)
            else:
                runs.append([step])
            last = slot
        return runs

    def set_many(self, keys: Sequence[str], value: bytes, ttl_s: int) -> None:
        if not self._cluster:
            self._set_many(keys=[self._p + k for k in keys], args=[value, ttl_s])
            return
        for key in keys:  # one by one: each key may live in its own cluster slot
            self._r.set(self._p + key, value, ex=ttl_s)  # type: ignore[attr-defined]

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
        if not keys:
            return
        if not self._cluster:
            self._r.delete(*[self._p + key for key in keys])  # type: ignore[attr-defined]
            return
        for key in keys:  # one by one: a cluster refuses multi-slot deletes
            self._r.delete(self._p + key)  # type: ignore[attr-defined]

    def incr(self, key: str, ttl_s: int | None = None) -> int:
        return int(self._incr(keys=[self._p + key], args=[ttl_s or 0]))

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

    def admit(self, steps: Sequence[Step]) -> list[StepResult]:
        results: list[StepResult] = []
        with self._lock:
            for step in steps:
                if isinstance(step, NonceStep):
                    added = self._live(step.key) is None
                    if added:
                        self._write(step.key, (b"1", time.monotonic() + step.ttl_s))
                    value = self._live(step.marker)
                    epoch = int(value) if value is not None else None
                    results.append((added, epoch))
                    if not added or step.go_on is None or epoch != step.go_on:
                        break
                elif isinstance(step, CountStep):
                    hits = int(self._live(step.key) or b"0") + 1
                    self._write(step.key, (str(hits).encode(), time.monotonic() + step.ttl_s))
                    results.append(hits)
                    if hits > step.limit:
                        break
                elif isinstance(step, SessionStep):
                    verdict = _session_verdict(self._live(step.key), step)
                    results.append(verdict)
                    if verdict != 1:
                        break
                else:
                    results.append(self._live(step.key) is not None)
        return results

    def set_many(self, keys: Sequence[str], value: bytes, ttl_s: int) -> None:
        with self._lock:
            for key in keys:
                self._write(key, (value, time.monotonic() + ttl_s))

    def raise_markers(self, markers: list[str], epoch: int) -> None:
        with self._lock:
            for marker in markers:
                if int(self._live(marker) or b"0") < epoch:
                    self._data[marker] = (str(epoch).encode(), None)

    def ping(self) -> bool:
        return True


def _session_verdict(raw: bytes | None, step: SessionStep) -> int:
    """What the script answers for a session step (SessionStep), for the in-process store."""
    if raw is None:
        return -1
    try:
        state = json.loads(raw)
    except ValueError:
        return -1
    if not isinstance(state, dict) or not isinstance(state.get("e"), list):
        return -1
    if type(state.get("g")) not in (int, float):
        return -1
    return 1 if state["g"] == step.epoch and step.session_id not in state["e"] else 0


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
