"""LRU order and the size limit of a DiskStore.

Every slot carries a stamp: microseconds of wall time, strictly increasing within a process.
Reads move an entry up the LRU order only when a limit is set and its stamp is over
`TOUCH_GRANULARITY_US` old; those moves are batched and flushed before any eviction.

What a store uses is what its entries cost (records, value files in 4 KiB blocks), its slot
tables beyond their initial size and the log's garbage (records no slot points to, until
their segment is reclaimed): `Header.usage`. When a write takes that over `max_size`, the
store is brought down to `max_size` less 1/32 of it, so the work is amortised over many
writes, and never by a scan of the store:

1. A sample of slots gives a *cutoff*: the stamp below which the least recently used entries
   that must go lie (every slot of a small store, so there the order is exact; random runs of
   slots of a big one). Sampled entries under it whose value is in a file of its own are
   evicted at once (that frees their file); in a small store, every sampled entry under it.
2. The log gives the space back a segment at a time (`Shard.reclaim`): a shard's segment that
   is mostly garbage, or else its oldest, is walked; its live records under the cutoff are
   evicted, the others copied to the head (a second chance), and the segment is deleted. The
   log is in write order, so a shard's oldest segment holds its least recently written
   entries: an inline entry there is evicted unless it was used more recently than the oldest
   quarter of the store (`_SWEEP`), which saves copying what would soon be evicted anyway.
"""

from __future__ import annotations

import bisect
import contextlib
import random
import struct
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

from ...errors import StoreError
from ._format import IN_FILE, LIVE, PROBE, SLOT, SLOT_SIZE

if TYPE_CHECKING:
    from ._shards import ShardSet
    from ._table import Table

TOUCH_GRANULARITY_US = 1_000_000
TOUCH_BATCH = 1024
TOUCH_MAX_AGE = 2.0
REFRESH_SECONDS = 0.1  # how stale this process's view of the total size may get...
REFRESH_PART = 32  # ...or how much of max_size it may have written since it last looked
_WINDOW = 64  # slots per sampled run (one 4 KiB read)
_SLACK = 32  # evict down to max_size - max_size / _SLACK
_EXACT_SLOTS = 2048  # a store with at most this many slots is sampled whole: exact LRU
_SAMPLE_SLOTS = 512  # slots sampled per round of a bigger store
_SWEEP = 0.25  # inline entries of a reclaimed segment in the oldest quarter go with it
_ROUNDS = 64
_ENTRY_SLOTS = 2 * SLOT_SIZE  # about what an entry's slots take (tables run about half full)
_SLOT_ALL = struct.Struct(SLOT.format + "Q")  # a slot with its check
_MAX_COST = 1 << 48  # (a cost beyond any real entry's: a damaged slot, not sampled)


class Sampled(NamedTuple):
    stamp: int
    usage: int  # what the entry counts for in the store's usage
    shard: int
    position: int
    version: int
    in_file: bool


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
        self._written = 0
        self._random = random.Random()
        self._evicting = threading.Lock()

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
        """A write grew what the store uses by at most `delta` bytes: enforce the limit. The
        totals are read again when this process's estimate goes over the limit, and at least
        every `REFRESH_SECONDS` or every `max_size / REFRESH_PART` bytes it writes (so other
        processes' writes are seen within that)."""
        limit = self.max_size
        if limit is None:
            return
        self._total += delta
        self._written += delta
        if (
            self._total <= limit
            and self._written * REFRESH_PART <= limit
            and time.monotonic() - self._total_at <= REFRESH_SECONDS
        ):
            return
        if self._measure() <= limit:
            return
        self.flush()
        # one eviction at a time in the store: the others wait, then find the room made
        with self._evicting, self._index.evicting():
            self._shrink(limit)

    def forget_total(self) -> None:
        """The total changed behind our back (a clear): measure it at the next write."""
        self._total_at = -1.0

    def _measure(self) -> int:
        self._total = sum(usage[0] for usage in self._usages())
        self._total_at = time.monotonic()
        self._written = 0
        return self._total

    def _usages(self) -> list[tuple[int, int, int]]:
        """(bytes used, garbage bytes, bytes of live entries) of each shard."""
        out = []
        for shard in self._index.shards:
            header = shard.header()
            out.append((0, 0, 0) if header is None else (header.usage, header.garbage, header.live))
        return out

    # -- eviction -----------------------------------------------------------------------------

    def _shrink(self, limit: int) -> None:
        target = limit - limit // _SLACK
        usages = self._usages()
        total = sum(usage[0] for usage in usages)
        if total <= limit:  # (another process made room meanwhile)
            self._total, self._total_at, self._written = total, time.monotonic(), 0
            return
        for _round in range(_ROUNDS):
            if total <= target:
                break
            sample, exact = self._sample(total - target, total)
            if not sample:
                break
            cutoff = _cutoff(sample, (total - target) / total)
            sweep = cutoff if exact else max(cutoff, _cutoff(sample, _SWEEP))
            # 1. entries with files of their own (all of them in a small store): at once
            freed = self._evict([s for s in sample if s.stamp < cutoff and (exact or s.in_file)])
            # 2. the log, a segment at a time: garbage first, then the shards with the most
            # entries and garbage (their oldest segment is the oldest: keys spread evenly)
            order = sorted(range(len(usages)), key=lambda i: usages[i][1:], reverse=True)
            for i in order:
                if total - freed <= target:
                    break
                removed = self._index.shards[i].reclaim(cutoff, sweep, oldest=not exact)
                self._index.unlink(removed.files)
                freed += removed.freed
            if not freed:  # nothing came free: the oldest sampled entries go
                self._evict(sorted(sample)[: max(1, len(sample) // 4)])
            usages = self._usages()  # (other processes may have written meanwhile)
            total = sum(usage[0] for usage in usages)
        self._total, self._total_at, self._written = total, time.monotonic(), 0

    def _evict(self, victims: list[Sampled]) -> int:
        """Evict the victims still as sampled; the usage given back."""
        chosen: list[list[tuple[int, int]]] = [[] for _ in self._index.shards]
        for victim in victims:
            chosen[victim.shard].append((victim.position, victim.version))
        freed = 0
        for i, some in enumerate(chosen):
            if some:
                removed = self._index.shards[i].evict(some)
                self._index.unlink(removed.files)
                freed += sum(s.cost - s.rlen for s in removed.slots)  # (records: garbage)
        return freed

    def _sample(self, need: int, total: int) -> tuple[list[Sampled], bool]:
        """Live entries of the store: every one when it has few slots (True: exact), else
        random runs of slots of each shard; more of them when the entries are mostly in files
        of their own (those are evicted from the sample) and many must go."""
        shards = self._index.shards
        tables = [shard.table for shard in shards]
        exact = sum(table.capacity + PROBE for table in tables) <= _EXACT_SLOTS
        if exact:
            return self._runs(tables, 0), True
        sample = self._runs(tables, _SAMPLE_SLOTS)
        in_files = sum(s.usage for s in sample if s.in_file)
        if sample and in_files * 2 > sum(s.usage for s in sample):
            victims = need * len(sample) // max(1, sum(s.usage for s in sample))
            more = min(4 * victims, 8 * _SAMPLE_SLOTS) - _SAMPLE_SLOTS
            if more > 0:
                sample += self._runs(tables, more)
        return sample, False

    def _runs(self, tables: list[Table], slots: int) -> list[Sampled]:
        """The live slots of random runs of about `slots` slots in all (0: every slot)."""
        runs = max(1, -(-slots // (_WINDOW * len(tables))))
        out: list[Sampled] = []
        for i, table in enumerate(tables):
            count = table.capacity + PROBE
            if not slots or count <= runs * _WINDOW:
                starts, run = [0], count
            else:
                starts = sorted(self._random.sample(range(0, count - _WINDOW, _WINDOW), runs))
                run = _WINDOW
            for start in starts:
                with contextlib.suppress(OSError):
                    out += _live(i, table.read(start, run), start)
        return out


def _live(shard: int, buf: bytes, first: int) -> list[Sampled]:
    """The live slots in `buf` (slots from table position `first` on). Not verified: a
    damaged slot may skew the cutoff a little; eviction verifies each slot it removes."""
    return [
        Sampled(f[6], f[8] + _ENTRY_SLOTS, shard, first + j, f[9], bool(f[4] & IN_FILE))
        for j, f in enumerate(_SLOT_ALL.iter_unpack(buf[: len(buf) - len(buf) % SLOT_SIZE]))
        if f[0] and f[4] & LIVE and f[8] < _MAX_COST
    ]


def _cutoff(sample: list[Sampled], fraction: float) -> int:
    """The stamp under which the oldest `fraction` of the sample's usage lies (everything
    under it goes); one past the oldest entry when that alone is more than `fraction`."""
    ordered = sorted(sample)
    running = []
    acc = 0
    for s in ordered:
        acc += s.usage
        running.append(acc)
    at = min(bisect.bisect_left(running, fraction * acc), len(ordered) - 1)
    return ordered[at].stamp + 1
