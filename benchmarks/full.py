"""Full bounded stores: `set` once a store is at its size limit, the steady state of every
bounded cache (targets: docs/benchmarks.md#targets).

Every timed `set` writes a key never written before, so once a store is full each one makes
room for itself. The tiers side is `Cache(DiskStore(max_size=...), serializer="raw")` (bytes
stored as given, as diskcache stores bytes), filled past its limit before timing; it is
compared with the same store before it filled (a `max_size` it never reaches, holding as many
entries) and with ``diskcache.Cache(size_limit=...)`` filled past its limit (LRU eviction
policy, as tiers evicts; its default culls at most 10 entries per `set`). The memory rows do
the same for `Cache(MemoryStore(max_items=...))` against cachetools' `LRUCache`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ._harness import (
    KIB,
    Row,
    Settings,
    Target,
    measure,
    progress,
    scratch,
    slowdown,
    speedup,
)

LIMIT = 5_000_000  # the disk stores' size limit ("5MB")
FULL = "tiers full"
NOT_FULL = "tiers not full"
PEER = "diskcache full"
ITEMS = 10_000  # the memory caches' max_items / maxsize


class NewKeys:
    """`set` of a fresh key each call: ``ops`` of them per run of the case."""

    def __init__(self, prefix: str, value: bytes) -> None:
        self._numbers = itertools.count()
        self._prefix = prefix
        self._value = value

    def fill(self, set_: Callable[[str, bytes], object], count: int) -> None:
        for n in itertools.islice(self._numbers, count):
            set_(f"{self._prefix}{n}", self._value)

    def case(self, set_: Callable[[str, bytes], object], ops: int) -> Callable[[], None]:
        numbers, prefix, value = self._numbers, self._prefix, self._value

        def run() -> None:
            for n in itertools.islice(numbers, ops):
                set_(f"{prefix}{n}", value)

        return run


def _tiers(path: Path, max_size: int, stack: ExitStack) -> tuple[Any, Any]:
    """(`Cache` over a DiskStore, the store)."""
    import tiers

    store = tiers.DiskStore(path, max_size=max_size)
    stack.callback(store.close)
    return tiers.Cache(store, serializer="raw"), store


def _diskcache(path: Path, stack: ExitStack) -> Any:
    import diskcache  # type: ignore[import-untyped]

    cache = diskcache.Cache(str(path), size_limit=LIMIT, eviction_policy="least-recently-used")
    stack.callback(cache.close)
    return cache


@contextmanager
def _disk_caches(root: Path, size: int) -> Iterator[tuple[dict[str, Any], dict[str, NewKeys], Any]]:
    """The three disk caches (the full ones past their limit, the other holding as many
    entries as the full tiers store), their fresh keys, and the full DiskStore."""
    value = os.urandom(size)
    with ExitStack() as stack:
        full, store = _tiers(root / "full", LIMIT, stack)
        not_full, _store = _tiers(root / "not-full", 1 << 40, stack)
        peer = _diskcache(root / "diskcache", stack)
        keys = {name: NewKeys(f"{name}:", value) for name in (FULL, NOT_FULL, PEER)}
        progress(f"filling the {size} B stores past {LIMIT:,} bytes")
        count = 3 * LIMIT // size  # three times what the limit holds: the steady state
        keys[FULL].fill(full.set, count)
        keys[PEER].fill(peer.set, count)
        if store.stats().evictions == 0 or len(peer) >= count:
            raise AssertionError("a store meant to be full is not")
        keys[NOT_FULL].fill(not_full.set, store.stats().items)
        yield {FULL: full, NOT_FULL: not_full, PEER: peer}, keys, store


def _disk_rows(settings: Settings, size: int) -> list[Row]:
    ops = settings.count(5_000, 500)
    what = f"full disk set {size} B" if size < KIB else f"full disk set {size // KIB} KiB"
    with scratch() as root, _disk_caches(root, size) as (caches, keys, store):
        cases = {name: keys[name].case(cache.set, ops) for name, cache in caches.items()}
        evicted = store.stats().evictions
        measured = measure(cases, ops, settings)
        if store.stats().evictions < evicted + ops:  # every timed set made room for itself
            raise AssertionError("the full store did not stay full")
    mine, before, spread = measured.pair(FULL, NOT_FULL)
    _mine, peer, peer_spread = measured.pair(FULL, PEER)
    label = "tiers DiskStore at max_size 5 MB"
    return [
        slowdown(
            what, (label, mine), ("same, before full", before), Target("<=", 2), spread=spread
        ),
        speedup(
            what,
            (label, mine),
            ("diskcache at size_limit 5 MB", peer),
            Target(">=", 2),
            spread=peer_spread,
        ),
    ]


def disk_set_100(settings: Settings) -> list[Row]:
    """`set` of new 100 B values into a DiskStore at max_size 5 MB (vs before full, diskcache)."""
    return _disk_rows(settings, 100)


def disk_set_1k(settings: Settings) -> list[Row]:
    """`set` of new 1 KiB values into a DiskStore at max_size 5 MB (vs before full, diskcache)."""
    return _disk_rows(settings, KIB)


def items_kept(settings: Settings) -> list[Row]:
    """Entries each store keeps under a 5 MB limit after 3 times that much in new values, per
    MB of the limit and per MB of what its files take on disk."""
    rows = []
    for size in (100, KIB):
        count = 3 * LIMIT // size
        with scratch() as root, ExitStack() as stack:
            mine, store = _tiers(root / "tiers", LIMIT, stack)
            peer = _diskcache(root / "diskcache", stack)
            for cache in (mine, peer):
                NewKeys("k", os.urandom(size)).fill(cache.set, count)
            kept = {"tiers": store.stats().items, "diskcache": len(peer)}
            used = {name: _bytes_under(root / name) for name in kept}
        progress(f"{size} B: kept {kept}, on disk {used}")
        what = f"items kept, {size} B values" if size < KIB else "items kept, 1 KiB values"
        note = (
            f"after {count:,} new values: tiers keeps {kept['tiers']:,} in {used['tiers']:,} B "
            f"of files, diskcache {kept['diskcache']:,} in {used['diskcache']:,} B"
        )
        for per, mine_mb, peer_mb in (
            ("per MB of limit", LIMIT / 1e6, LIMIT / 1e6),
            ("per MB on disk", used["tiers"] / 1e6, used["diskcache"] / 1e6),
        ):
            row = speedup(
                what,
                (f"tiers DiskStore max_size 5 MB, {per}", kept["tiers"] / mine_mb),
                (f"diskcache size_limit 5 MB, {per}", kept["diskcache"] / peer_mb),
                note=note,
            )
            rows.append(dataclasses.replace(row, meaning="items/MB"))
    return rows


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def memory_set(settings: Settings) -> list[Row]:
    """`set` of new 1 KiB values into a MemoryStore at max_items (vs not full, cachetools)."""
    import cachetools

    import tiers

    ops = settings.count(50_000, 5_000)
    value = bytes(KIB)
    counted = tiers.MemoryStore(max_items=ITEMS)
    sized_store = tiers.MemoryStore(max_size=ITEMS * (KIB + 200))
    full, sized = tiers.Cache(counted), tiers.Cache(sized_store)
    not_full = tiers.Cache(tiers.MemoryStore())
    lru: cachetools.LRUCache[str, bytes] = cachetools.LRUCache(maxsize=ITEMS)
    sets = {
        "tiers max_items": full.set,
        "tiers max_size": sized.set,
        "tiers not full": not_full.set,
        "cachetools.LRUCache": lru.__setitem__,
    }
    keys = {name: NewKeys(f"{name}:", value) for name in sets}
    for name, set_ in sets.items():  # past the limit; the unbounded one holds as many
        keys[name].fill(set_, ITEMS if name == "tiers not full" else 2 * ITEMS)
    cases = {name: keys[name].case(set_, ops) for name, set_ in sets.items()}
    measured = measure(cases, ops, settings)
    if counted.stats().evictions == 0 or sized_store.stats().evictions == 0:
        raise AssertionError("a memory store meant to be full is not")
    rows = []
    for name, label in (("tiers max_items", "max_items"), ("tiers max_size", "max_size")):
        mine, before, spread = measured.pair(name, "tiers not full")
        rows.append(
            slowdown(
                "full memory set 1 KiB",
                (f"tiers MemoryStore at {label}", mine),
                ("MemoryStore not full", before),
                Target("<=", 2),
                spread=spread,
            )
        )
    mine, peer, spread = measured.pair("tiers max_items", "cachetools.LRUCache")
    rows.append(
        speedup(
            "full memory set 1 KiB",
            ("tiers MemoryStore at max_items", mine),
            ("cachetools.LRUCache at maxsize", peer),
            spread=spread,
        )
    )
    return rows
