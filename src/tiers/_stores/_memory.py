"""MemoryStore: an in-process LRU of live objects, bounded by bytes and/or items."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar

from .._clock import SYSTEM_CLOCK, Clock
from .._units import parse_count, parse_size
from ._protocol import Entry, StoreCounters

_STRIPES = 256


class MemoryStore:
    """In-process LRU cache of live objects (no serialisation), thread-safe.

    `max_size` bounds the estimated bytes held (int or a string like ``"64MB"``), `max_items`
    the number of entries; either or both may be None. Expiry runs on a monotonic clock.
    Values are returned as stored: mutating a returned object mutates the cached one.
    """

    holds_objects: ClassVar[bool] = True

    def __init__(self, *, max_size: int | str | None = None, max_items: int | None = None) -> None:
        self.max_size = parse_size(max_size, "max_size")
        self.max_items = parse_count(max_items, "max_items")
        self.clock: Clock = SYSTEM_CLOCK
        self._lock = threading.Lock()
        # key -> (entry, monotonic deadline or None)
        self._data: OrderedDict[str, tuple[Entry, float | None]] = OrderedDict()
        self._tags: dict[str, set[str]] = {}
        self._bytes = 0
        self._epochs = [0] * _STRIPES
        self._evictions = self._expirations = self._rejected = 0

    def __repr__(self) -> str:
        limits = [
            f"{name}={value}"
            for name, value in (("max_size", self.max_size), ("max_items", self.max_items))
            if value
        ]
        return f"MemoryStore({', '.join(limits)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.max_size, self.max_items))

    # -- core ------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        with self._lock:
            found = self._data.get(key)
            if found is None:
                return None
            entry, deadline = found
            if deadline is not None and deadline <= self.clock.monotonic():
                self._drop(key, entry)
                self._expirations += 1
                return None
            self._data.move_to_end(key)
            return entry

    def set(self, key: str, entry: Entry, epoch: int | None = None) -> bool:
        deadline = self._deadline(entry.expires_at)
        with self._lock:
            stripe = hash(key) % _STRIPES
            old = self._data.get(key)
            if old is not None:
                self._drop(key, old[0])
            self._epochs[stripe] += 1
            if epoch is not None and self._epochs[stripe] != epoch + 1:
                return False  # written or deleted meanwhile: leave the key absent
            if self.max_size is not None and entry.size > self.max_size:
                self._rejected += 1
                return False
            self._data[key] = (entry, deadline)
            self._bytes += entry.size
            for tag in entry.tags:
                self._tags.setdefault(tag, set()).add(key)
            self._shrink()
            return True

    def delete(self, key: str) -> bool:
        with self._lock:
            self._epochs[hash(key) % _STRIPES] += 1
            found = self._data.get(key)
            if found is None:
                return False
            self._drop(key, found[0])
            return found[1] is None or found[1] > self.clock.monotonic()

    def clear(self, prefix: str = "") -> int:
        with self._lock:
            self._epochs = [e + 1 for e in self._epochs]
            if not prefix:
                count = self._live_count()
                self._data.clear()
                self._tags.clear()
                self._bytes = 0
                return count
            removed = self._remove_where(lambda key, _item: key.startswith(prefix))
            now = self.clock.monotonic()
            return sum(1 for deadline in removed if deadline is None or deadline > now)

    def stats(self) -> StoreCounters:
        with self._lock:
            return StoreCounters(
                evictions=self._evictions,
                expirations=self._expirations,
                rejected=self._rejected,
                items=len(self._data),
                bytes=self._bytes,
            )

    def close(self) -> None:
        """Nothing to release; the contents stay until the store is garbage-collected."""

    # -- capabilities ----------------------------------------------------------------------

    def epoch(self, key: str) -> int:
        with self._lock:
            return self._epochs[hash(key) % _STRIPES]

    def info(self, key: str) -> Entry | None:
        entry = self.get(key)
        return None if entry is None else entry.without_value()

    def pop(self, key: str) -> Entry | None:
        with self._lock:
            self._epochs[hash(key) % _STRIPES] += 1
            found = self._data.get(key)
            if found is None:
                return None
            self._drop(key, found[0])
            if found[1] is not None and found[1] <= self.clock.monotonic():
                self._expirations += 1
                return None
            return found[0]

    def touch(self, key: str, expires_at: float | None) -> bool:
        deadline = self._deadline(expires_at)
        with self._lock:
            found = self._data.get(key)
            if found is None or (found[1] is not None and found[1] <= self.clock.monotonic()):
                return False
            # a new Entry: the one stored may be held by the writer or an earlier reader
            self._data[key] = (replace(found[0], expires_at=expires_at), deadline)
            self._data.move_to_end(key)
            return True

    def expire(self) -> int:
        now = self.clock.monotonic()
        with self._lock:
            expired = self._remove_where(lambda _k, item: item[1] is not None and item[1] <= now)
            removed = len(expired)
            self._expirations += removed
            return removed

    def evict(self, tag: str, prefix: str = "") -> int:
        with self._lock:
            keys = [k for k in self._tags.get(tag, ()) if k.startswith(prefix)]
            now = self.clock.monotonic()
            removed = 0
            for key in keys:
                entry, deadline = self._data[key]
                self._drop(key, entry)
                self._epochs[hash(key) % _STRIPES] += 1
                removed += deadline is None or deadline > now
            return removed

    def keys(self, prefix: str = "", tag: str | None = None) -> Iterator[str]:
        now = self.clock.monotonic()
        with self._lock:
            source = list(self._tags.get(tag, ())) if tag is not None else list(self._data)
            snapshot = [(k, self._data[k][1]) for k in source]
        for key, deadline in snapshot:
            if key.startswith(prefix) and (deadline is None or deadline > now):
                yield key

    def count(self, prefix: str = "") -> int:
        return sum(1 for _ in self.keys(prefix))

    # -- async twins: nothing here blocks, so they call the sync methods directly -------------

    async def get_async(self, key: str) -> Entry | None:
        return self.get(key)

    async def set_async(self, key: str, entry: Entry, epoch: int | None = None) -> bool:
        return self.set(key, entry, epoch)

    async def delete_async(self, key: str) -> bool:
        return self.delete(key)

    async def clear_async(self, prefix: str = "") -> int:
        return self.clear(prefix)

    async def stats_async(self) -> StoreCounters:
        return self.stats()

    async def close_async(self) -> None:
        self.close()

    async def info_async(self, key: str) -> Entry | None:
        return self.info(key)

    async def pop_async(self, key: str) -> Entry | None:
        return self.pop(key)

    async def touch_async(self, key: str, expires_at: float | None) -> bool:
        return self.touch(key, expires_at)

    async def expire_async(self) -> int:
        return self.expire()

    async def evict_async(self, tag: str, prefix: str = "") -> int:
        return self.evict(tag, prefix)

    async def count_async(self, prefix: str = "") -> int:
        return self.count(prefix)

    # -- internals (lock held) ---------------------------------------------------------------

    def _deadline(self, expires_at: float | None) -> float | None:
        if expires_at is None:
            return None
        return self.clock.monotonic() + (expires_at - self.clock.time())

    def _drop(self, key: str, entry: Entry) -> None:
        del self._data[key]
        self._bytes -= entry.size
        for tag in entry.tags:
            members = self._tags.get(tag)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._tags[tag]

    def _shrink(self) -> None:
        while (self.max_items is not None and len(self._data) > self.max_items) or (
            self.max_size is not None and self._bytes > self.max_size
        ):
            key, (entry, _deadline) = next(iter(self._data.items()))
            self._drop(key, entry)
            self._evictions += 1

    def _live_count(self) -> int:
        now = self.clock.monotonic()
        return sum(1 for _e, d in self._data.values() if d is None or d > now)

    def _remove_where(self, predicate: Any) -> list[float | None]:
        """Remove matching entries; return their deadlines (callers count live or expired)."""
        doomed = [(k, item) for k, item in self._data.items() if predicate(k, item)]
        for key, (entry, _deadline) in doomed:
            self._drop(key, entry)
            self._epochs[hash(key) % _STRIPES] += 1
        return [deadline for _k, (_e, deadline) in doomed]


def _rebuild(max_size: int | None, max_items: int | None) -> MemoryStore:
    return MemoryStore(max_size=max_size, max_items=max_items)
