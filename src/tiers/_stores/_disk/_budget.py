"""LRU order and the size limit of a DiskStore.

Every slot carries a stamp: microseconds of wall time, strictly increasing within a process.
Reads move an entry up the LRU order only when a limit is set and its stamp is over
`TOUCH_GRANULARITY_US` old; those moves are batched and flushed before any eviction.

What a store uses is what its entries cost (records, their share of the table, value files in
4 KiB blocks) plus the log's garbage (records no slot points to, until their segment is
compacted). When a write takes that over `max_size`, garbage is compacted away first, then the
least recently used entries are evicted in a batch (down to `max_size` less 1/32 of it, so the
work is amortised over many writes). Least recently used is judged on a sample: every slot of
a small table, random runs of slots of a big one (four times as many candidates as victims).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import TYPE_CHECKING

from ...errors import StoreError
from ._format import PROBE, live_slots

if TYPE_CHECKING:
    from ._shards import ShardSet

TOUCH_GRANULARITY_US = 1_000_000
TOUCH_BATCH = 1024
TOUCH_MAX_AGE = 2.0
REFRESH_SECONDS = 0.1  # how stale this process's view of the total size may get
_WINDOW = 64  # slots per sampled run (one 4 KiB read)
_SLACK = 32  # evict down to max_size - max_size / _SLACK


class Budget:
    """Stamps, batched LRU moves and the size limit (`max_size` None: no limit)."""

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
        self._random = random.Random()

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
                with contextlib.suppress(StoreError, OSError):
                    self._index.shards[i].restamp(stamps)

    def wrote(self, delta: int) -> None:
        """A write changed what the store uses by about `delta` bytes: enforce the limit."""
        limit = self.max_size
        if limit is None:
            return
        self._total += delta
        if time.monotonic() - self._total_at <= REFRESH_SECONDS and self._total <= limit:
            return
        if self._measure() <= limit:
            return
        self.flush()
        self._shrink(limit)

    def forget_total(self) -> None:
        """The total changed behind our back (a clear): measure it at the next write."""
        self._total_at = -1.0

    def _measure(self) -> int:
        self._total = sum(usage for usage, _garbage in self._usages())
        self._total_at = time.monotonic()
        return self._total

    def _usages(self) -> list[tuple[int, int]]:
        """(bytes used, garbage bytes) of each shard."""
        out = []
        for shard in self._index.shards:
            header = shard.header()
            out.append((0, 0) if header is None else (header.usage, header.garbage))
        return out

    def _shrink(self, limit: int) -> None:
        target = limit - limit // _SLACK
        for _round in range(1000):
            usages = self._usages()
            total = sum(u for u, _g in usages)
            self._total, self._total_at = total, time.monotonic()
            if total <= limit:
                return
            # garbage first: compacting the worst segment frees it without losing entries
            worst = max(range(len(usages)), key=lambda i: usages[i][1])
            if usages[worst][1] >= (total - target) // 2 and self._index.shards[worst].compact(
                (total - target) // 4
            ):
                continue
            if not self._evict_oldest(total - target):
                return

    def _evict_oldest(self, need: int) -> bool:
        """Evict about `need` bytes of the least recently used entries; False if none."""
        index = self._index
        candidates = []
        for i, shard in enumerate(index.shards):
            header = shard.header()
            if header is None or not header.items:
                continue
            share = need * header.live // max(1, self._total)
            wanted = 4 * max(8, share * header.items // max(1, header.live))
            for position, stamp, version, cost in self._sample(i, wanted):
                candidates.append((stamp, i, position, version, cost))
        if not candidates:
            return False
        candidates.sort()
        victims: list[list[tuple[int, int]]] = [[] for _ in index.shards]
        for _stamp, i, position, version, cost in candidates:
            victims[i].append((position, version))
            need -= cost
            if need <= 0:
                break
        for i, chosen in enumerate(victims):
            if chosen:
                removed = index.shards[i].evict(chosen)
                index.unlink(removed.files)
        return True

    def _sample(self, i: int, wanted: int) -> list[tuple[int, int, int, int]]:
        """(position, stamp, version, cost) of about `wanted` live slots of shard `i`: all of
        them for a small table, random runs of a big one."""
        table = self._index.shards[i].table
        slots = table.capacity + PROBE
        if slots <= 4 * wanted or slots <= 4096:
            starts = [0]
            run = slots
        else:
            runs = max(1, wanted // (_WINDOW // 2))
            starts = [self._random.randrange(0, slots - _WINDOW) for _ in range(runs)]
            run = _WINDOW
        out = []
        for start in starts:
            for position, slot in live_slots(table.read_all(start, run), start):
                out.append((position, slot.stamp, slot.version, slot.cost))
        return out
