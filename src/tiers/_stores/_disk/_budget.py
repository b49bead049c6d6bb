"""LRU order and the size limit of a DiskStore.

Every record carries a stamp: microseconds of wall time, strictly increasing within a process,
also serving as the record's version. Reads move an entry up the LRU order only when a limit is
set and its stamp is over `TOUCH_GRANULARITY_US` old; those moves are batched and flushed before
any eviction. After a write, the store's total (re-read from the shards at most every
`REFRESH_SECONDS`) is brought back under `max_size` by evicting the globally oldest entries.
"""

from __future__ import annotations

import contextlib
import threading
import time

from ...errors import StoreError
from ._shards import Damaged, ShardSet

TOUCH_GRANULARITY_US = 1_000_000
TOUCH_BATCH = 1024
TOUCH_MAX_AGE = 2.0
REFRESH_SECONDS = 0.1  # how stale this process's view of the total size may get
_CANDIDATES = 64  # oldest entries looked at per shard and eviction round


class Budget:
    """Stamps, batched LRU moves and eviction down to `max_size` (None: no limit)."""

    def __init__(self, index: ShardSet, max_size: int | None) -> None:
        self._index = index
        self.max_size = max_size
        self._lock = threading.Lock()
        self._last_stamp = 0
        self._pending: list[dict[bytes, int]] = [{} for _ in index.shards]
        self._pending_count = 0
        self._pending_since = 0.0
        self._total = 0
        self._total_at = -1.0

    def stamp(self, now: float) -> int:
        """A stamp for a write or a read at wall time `now`, unique within this process."""
        with self._lock:
            stamp = max(int(now * 1_000_000), self._last_stamp + 1)
            self._last_stamp = stamp
            return stamp

    def accessed(self, i: int, lkey: bytes, stamp: int, now: float) -> None:
        """A read of an entry whose stamp is `stamp`: move it up if the order is kept."""
        if self.max_size is None or now * 1_000_000 - stamp <= TOUCH_GRANULARITY_US:
            return
        fresh = self.stamp(now)
        with self._lock:
            if not self._pending_count:
                self._pending_since = time.monotonic()
            self._pending[i][lkey] = fresh
            self._pending_count += 1
            due = (
                self._pending_count >= TOUCH_BATCH
                or time.monotonic() - self._pending_since > TOUCH_MAX_AGE
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the pending LRU moves."""
        with self._lock:
            pending, self._pending = self._pending, [{} for _ in self._index.shards]
            self._pending_count = 0
        for i, stamps in enumerate(pending):
            if stamps:
                with contextlib.suppress(Damaged, StoreError):
                    self._index.guard(i, self._index.shards[i].restamp, stamps)

    def wrote(self, delta: int) -> None:
        """A write changed the store's size by `delta` bytes: evict what no longer fits."""
        limit = self.max_size
        if limit is None:
            return
        self._total += delta
        if time.monotonic() - self._total_at <= REFRESH_SECONDS and self._total <= limit:
            return
        if self._measure() <= limit:
            return
        self.flush()
        for _round in range(10_000):
            excess = self._measure() - limit
            if excess <= 0 or not self._evict_oldest(excess):
                return

    def forget_total(self) -> None:
        """The total changed behind our back (a clear): measure it at the next write."""
        self._total_at = -1.0

    def _measure(self) -> int:
        self._total = self._index.totals()[1]
        self._total_at = time.monotonic()
        return self._total

    def _evict_oldest(self, excess: int) -> bool:
        """Evict the globally least recently used entries worth `excess` bytes (one round)."""
        index = self._index
        candidates = []
        for i, shard in enumerate(index.shards):
            with contextlib.suppress(Damaged):
                oldest = index.guard(i, shard.oldest_costs, _CANDIDATES)
                candidates += [(stamp, i, lkey, cost) for stamp, lkey, cost in oldest]
        if not candidates:
            return False
        candidates.sort()
        victims: list[list[tuple[int, bytes]]] = [[] for _ in index.shards]
        for stamp, i, lkey, cost in candidates:
            victims[i].append((stamp, lkey))
            excess -= cost
            if excess <= 0:
                break
        for i, chosen in enumerate(victims):
            if chosen:
                with contextlib.suppress(Damaged):
                    index.removing(i, index.shards[i].evict, chosen)
        return True
