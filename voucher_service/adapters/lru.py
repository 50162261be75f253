"""A thread-safe LRU map with a maximum size: every in-process cache is bounded by one of these."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most `max_size` items; adding one more drops the least recently used."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value for key (now the most recently used), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Store value under key, evicting the least recently used item beyond max_size."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)

    def setdefault(self, key: K, factory: Callable[[], V]) -> V:
        """The value for key, created by factory when absent (under the lock)."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                value = factory()
                self._items[key] = value
                while len(self._items) > self.max_size:
                    self._items.popitem(last=False)
            self._items.move_to_end(key)
            return value

    def pop(self, key: K) -> None:
        """Forget key."""
        with self._lock:
            self._items.pop(key, None)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def items(self) -> Iterator[tuple[K, V]]:
        """A snapshot of the items, least recently used first."""
        with self._lock:
            return iter(list(self._items.items()))
