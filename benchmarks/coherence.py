"""Coherence: what keeping memory copies true to a shared tier costs on a memory hit.

The default stack, `Cache(MemoryStore, DiskStore)`, checks each memory hit against the disk
store's generation table (one 8-byte read from shared memory): with ``coherence="auto"``
against ``coherence="none"`` (no check), and against cachetools' `TTLCache.get`, which the
memory tier must stay ahead of, and `LRUCache.get` (no TTL). Every cache holds the same
10,000 keys, 1 KiB bytes values, one-hour TTL; the memoize row calls a memoized ``x + 1``
over 1,000 int arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from ._harness import (
    KIB,
    Row,
    Settings,
    Target,
    check_hits,
    get_loop,
    measure,
    scratch,
    shuffled,
    speedup,
)

ITEMS = 10_000
TTL = 3600
ON, OFF = "tiers memory over disk, coherent", 'tiers memory over disk, coherence="none"'


def memory_hit(settings: Settings) -> list[Row]:
    """`get` of keys the memory tier holds, over a DiskStore, coherence on and off."""
    import cachetools

    import tiers

    values = {f"user:{i}": i.to_bytes(4, "big") * (KIB // 4) for i in range(ITEMS)}
    lookups = shuffled(list(values), settings.count(200_000, 20_000))
    with ExitStack() as stack:
        getters: dict[str, Callable[[str], Any]] = {}
        for name, mode in ((ON, "auto"), (OFF, "none")):
            path = stack.enter_context(scratch())
            cache = tiers.Cache(
                tiers.MemoryStore(max_items=ITEMS), tiers.DiskStore(path), coherence=mode,
                serializer="raw",
            )  # fmt: skip
            stack.callback(cache.close)
            cache.set_many(values, ttl=TTL)
            getters[name] = cache.get
        ttl_cache: cachetools.TTLCache[str, bytes] = cachetools.TTLCache(maxsize=ITEMS, ttl=TTL)
        ttl_cache.update(values)
        getters["cachetools.TTLCache"] = ttl_cache.get
        lru_cache: cachetools.LRUCache[str, bytes] = cachetools.LRUCache(maxsize=ITEMS)
        lru_cache.update(values)
        getters["cachetools.LRUCache"] = lru_cache.get
        for name, get in getters.items():
            check_hits(get, values, name)
        ops = measure({n: get_loop(g, lookups) for n, g in getters.items()}, len(lookups),
                      settings)  # fmt: skip
    what = "memory get hit over disk"
    return [
        speedup(what, (ON, ops[ON]), ("cachetools.TTLCache", ops["cachetools.TTLCache"]),
                Target(">", 1), spread=max(ops.spread[ON], ops.spread["cachetools.TTLCache"])),
        speedup(what, (ON, ops[ON]), ("cachetools.LRUCache (no TTL)", ops["cachetools.LRUCache"]),
                Target(">=", 1), spread=max(ops.spread[ON], ops.spread["cachetools.LRUCache"])),
        speedup(what, (ON, ops[ON]), (OFF, ops[OFF]), spread=max(ops.spread[ON], ops.spread[OFF]),
                note="the cost of the generation check on each hit"),
    ]  # fmt: skip


def memoize_hit(settings: Settings) -> list[Row]:
    """A memoized function's fast-path hit over a DiskStore, coherence on and off."""
    import tiers

    args = shuffled(list(range(1000)), settings.count(200_000, 20_000))
    with ExitStack() as stack:
        loops: dict[str, Callable[[], None]] = {}
        for name, mode in ((ON, "auto"), (OFF, "none")):
            path = stack.enter_context(scratch())
            cache = tiers.Cache(tiers.MemoryStore(max_items=ITEMS), tiers.DiskStore(path),
                                coherence=mode)  # fmt: skip
            stack.callback(cache.close)
            memoized = cache.memoize(_plus_one)
            for x in range(1000):
                memoized(x)
            loops[name] = _calls(memoized, args)
        ops = measure(loops, len(args), settings)
    return [
        speedup("memoize hit over disk", (ON, ops[ON]), (OFF, ops[OFF]),
                spread=max(ops.spread[ON], ops.spread[OFF]),
                note="the cost of the generation check on each fast-path hit"),
    ]  # fmt: skip


def _plus_one(x: int) -> int:
    return x + 1


def _calls(func: Callable[[int], int], args: list[int]) -> Callable[[], None]:
    def run() -> None:
        for x in args:
            func(x)

    return run
