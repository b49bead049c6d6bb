"""What metrics read of a cache: its name, its tiers' kinds, and its stats once per collection.

A `Source` holds its cache weakly (metrics never keep a cache alive) and reads
``cache.stats()`` at most once per collection: every instrument of one collection gets the
same reading, so N instruments cost one ``stats()``. Counters never go backwards: a tier
whose ``stats()`` fails reports zeros for that reading (``Cache.stats`` degrades), which a
monitoring system would take for a counter reset and then count the whole value again when
it comes back; the last value is reported instead.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import weakref
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from .._stores import DiskStore, FolderStore, MemoryStore, NullStore, ObjectStore, RedisStore
from .._types import TierStats

if TYPE_CHECKING:
    from .._cache import Cache
    from .._types import Stats

log = logging.getLogger("tiers")

_DESCRIBED = {
    "hits": "Gets this tier answered (this process)",
    "misses": "Gets this tier did not answer (this process)",
    "sets": "Writes to this tier (this process)",
    "deletes": "Entries this process's calls removed from this tier",
    "evictions": "Entries the store evicted to stay within its limits",
    "expirations": "Expired entries the store removed",
    "errors": "Failed calls to this tier; the cache went on without it (this process)",
    "rejected": "Entries the tier refused or dropped: corrupted, unauthenticated or oversized",
    "lock_fallbacks": "Computations done without this tier's lock, which failed for a lease",
    "lost_leases": "Results not stored because their lock's lease had ended first",
    "foreign": "Entries read that were signed with another secret: misses, left in place",
}
_CONTENTS = ("store", "items", "bytes")  # a label and two gauges
COUNTERS = {
    f.name: _DESCRIBED.get(f.name, f"TierStats.{f.name} (see its docstring)")
    for f in fields(TierStats)
    if f.name not in _CONTENTS
}
"""Every other `TierStats` field is exported as a counter (per tier), with its description."""

CACHE_COUNTERS = {
    "hits": "Gets any tier of the cache answered",
    "misses": "Gets no tier of the cache answered",
    "stale_served": "Stale values served without waiting for a recompute (stale=; this process)",
    "refreshes": "Background recomputations run, failed ones too (stale=, early=; this process)",
    "refresh_errors": "Background recomputations that raised; the stale value was kept",
}
"""The `Stats` counters exported per cache (not per tier), with their descriptions."""

_KINDS = (
    (MemoryStore, "memory"), (DiskStore, "disk"), (FolderStore, "folder"),
    (RedisStore, "redis"), (NullStore, "null"),
)  # fmt: skip
_OBJECT_KINDS = {
    "s3": "s3", "s3a": "s3", "gs": "gcs", "az": "azure", "azure": "azure", "abfs": "azure",
    "abfss": "azure", "adl": "azure", "S3Store": "s3", "GCSStore": "gcs", "AzureStore": "azure",
}  # fmt: skip


def store_kind(store: object) -> str:
    """A short, secret-free name of a store's kind: memory, disk, folder, redis, null, s3,
    gcs, azure, object (another object store), or a custom store's class name in lower case
    without its "Store" suffix. Never a URL, a host or a path."""
    for cls, kind in _KINDS:
        if isinstance(store, cls):
            return kind
    if isinstance(store, ObjectStore):
        url = getattr(store, "_url", None)
        scheme = url.partition(":")[0].lower() if isinstance(url, str) else None
        inner = type(getattr(store, "_store", None)).__name__
        return _OBJECT_KINDS.get(scheme or inner, "object")
    name = type(store).__name__.lower().removesuffix("store")
    return re.sub(r"[^a-z0-9_]", "", name) or "store"


def cache_name(cache: object) -> str:
    """The cache's name in metrics: ``Cache(name=...)``, else its namespace, else "default"."""
    name = getattr(cache, "name", None)
    return name if isinstance(name, str) and name else "default"


def check_interval(min_interval: object) -> float:
    if (
        isinstance(min_interval, bool)
        or not isinstance(min_interval, (int, float))
        or not 0 <= min_interval < math.inf
    ):
        raise ValueError(f"min_interval must be a number of seconds >= 0, not {min_interval!r}")
    return float(min_interval)


@dataclass(frozen=True, slots=True)
class TierReading:
    """One tier in a reading: its labels, its counters (`COUNTERS`) and its contents."""

    tier: str  # its index, as a label value
    store: str  # `store_kind`
    counters: dict[str, int]
    items: int
    bytes: int
    max_bytes: int | None  # the store's max_size, when it has one


@dataclass(frozen=True, slots=True)
class Reading:
    """One cache's stats as metrics export them."""

    counters: dict[str, int]  # `CACHE_COUNTERS`: hits (gets any tier answered), misses, ...
    tiers: tuple[TierReading, ...]


class Source:
    """One cache, held weakly, as the metrics of one collector or meter read it."""

    def __init__(self, cache: Cache, min_interval: float = 0.0) -> None:
        self._ref = weakref.ref(cache)
        self.name = cache_name(cache)
        self.kinds = tuple(store_kind(tier.store) for tier in cache._tiers)
        self.scrape_errors = 0  # readings whose cache.stats() raised
        self._min_interval = check_interval(min_interval)
        self._lock = threading.Lock()
        self._read = False
        self._read_at = 0.0
        self._last: Reading | None = None
        self._taken: set[str] = set()  # who had the last reading (a new collection repeats)
        self._floor: dict[tuple[int, str], int] = {}

    @property
    def cache(self) -> Cache | None:
        """The cache, or None once it is garbage-collected."""
        return self._ref()

    def live(self) -> bool:
        """Whether the cache still exists and is open (a closed cache has no metrics)."""
        cache = self._ref()
        return cache is not None and not cache._closed

    def read(self, who: str = "") -> Reading | None:
        """The reading for `who` (one instrument): the last one if `who` has not had it yet
        (the same collection) or it is younger than `min_interval`, else a new one. None for
        a gone or closed cache, or when ``cache.stats()`` raised (counted in
        `scrape_errors`, once per reading)."""
        cache = self._ref()
        if cache is None or cache._closed:
            return None
        with self._lock:
            if self._read and (
                who not in self._taken or time.monotonic() - self._read_at < self._min_interval
            ):
                self._taken.add(who)
                return self._last
            self._read, self._read_at, self._taken = True, time.monotonic(), {who}
            self._last = self._reading(cache)
            return self._last

    def _reading(self, cache: Cache) -> Reading | None:
        try:
            return self._convert(cache, cache.stats())
        except Exception as exc:  # a scrape never fails because of one cache
            if cache._closed:
                return None
            self.scrape_errors += 1
            log.warning("tiers: metrics could not read the stats of cache %r: %r", self.name, exc)
            return None

    def _convert(self, cache: Cache, stats: Stats) -> Reading:
        stores = [tier.store for tier in cache._tiers]
        tiers = []
        for index, (tier, kind, store) in enumerate(
            zip(stats.tiers, self.kinds, stores, strict=True)
        ):
            counters = {
                name: self._monotonic(index, name, getattr(tier, name)) for name in COUNTERS
            }
            limit = getattr(store, "max_size", None)
            max_bytes = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
            tiers.append(TierReading(str(index), kind, counters, tier.items, tier.bytes, max_bytes))
        totals = {name: self._monotonic(-1, name, getattr(stats, name)) for name in CACHE_COUNTERS}
        return Reading(totals, tuple(tiers))

    def _monotonic(self, tier: int, name: str, value: int) -> int:
        value = max(value, self._floor.get((tier, name), 0))
        self._floor[tier, name] = value
        return value


def admit(sources: list[Source], cache: Cache) -> list[Source] | None:
    """`sources` without those of gone or closed caches, for `cache` to join; None if it is
    already there. ValueError if another cache has its name (their series would clash)."""
    kept = [source for source in sources if source.live()]
    name = cache_name(cache)
    for source in kept:
        if source.cache is cache:
            return None
        if source.name == name:
            raise ValueError(
                f"another cache is already registered as {name!r}; give each cache its own "
                "name: Cache(..., name=...)"
            )
    return kept
