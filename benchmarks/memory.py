"""Memory tier: `Cache(MemoryStore).get` against cachetools and cachebox (target: faster than
`TTLCache.get`, docs/benchmarks.md#targets).

Every cache holds the same 10,000 keys with a 1 KiB bytes value and a one-hour TTL (tiers
gets ``ttl=3600`` on each `set`, so both sides check an expiry on every read).
"""

from __future__ import annotations

from collections.abc import Callable

from ._harness import (
    KIB,
    Measured,
    Row,
    Settings,
    Target,
    check_hits,
    check_misses,
    get_loop,
    measure,
    shuffled,
    speedup,
)

ITEMS = 10_000
TTL = 3600


def _caches() -> dict[str, tuple[Callable[[str], object], Callable[[str, bytes], object]]]:
    """name -> (get, set) of every memory cache in the comparison."""
    import cachebox
    import cachetools

    import tiers

    cache = tiers.Cache(tiers.MemoryStore(max_items=ITEMS))
    ttl_cache: cachetools.TTLCache[str, bytes] = cachetools.TTLCache(maxsize=ITEMS, ttl=TTL)
    lru_cache: cachetools.LRUCache[str, bytes] = cachetools.LRUCache(maxsize=ITEMS)
    box: cachebox.TTLCache[str, bytes] = cachebox.TTLCache(maxsize=ITEMS, global_ttl=TTL)
    return {
        "tiers": (cache.get, lambda k, v: cache.set(k, v, ttl=TTL)),
        "cachetools.TTLCache": (ttl_cache.get, ttl_cache.__setitem__),
        "cachebox.TTLCache": (box.get, box.__setitem__),
        "cachetools.LRUCache": (lru_cache.get, lru_cache.__setitem__),
    }


def _filled(values: dict[str, bytes]) -> dict[str, Callable[[str], object]]:
    getters = {}
    for name, (get, set_) in _caches().items():
        for key, value in values.items():
            set_(key, value)
        getters[name] = get
    return getters


def get_hit(settings: Settings) -> list[Row]:
    """`get` of present keys, in a fixed random order."""
    values = {f"user:{i}": i.to_bytes(4, "big") * (KIB // 4) for i in range(ITEMS)}
    lookups = shuffled(list(values), settings.count(200_000, 20_000))
    getters = _filled(values)
    for name, get in getters.items():
        check_hits(get, values, name)
    ops = measure({n: get_loop(g, lookups) for n, g in getters.items()}, len(lookups), settings)
    return [
        _row("memory get hit", ops, "cachetools.TTLCache", Target(">", 1)),
        _row("memory get hit", ops, "cachebox.TTLCache"),
        _row("memory get hit", ops, "cachetools.LRUCache", label="cachetools.LRUCache (no TTL)"),
    ]


def get_miss(settings: Settings) -> list[Row]:
    """`get` of absent keys (each cache holds 10,000 other keys)."""
    values = {f"user:{i}": bytes(KIB) for i in range(ITEMS)}
    absent = [f"absent:{i}" for i in range(ITEMS)]
    lookups = shuffled(absent, settings.count(200_000, 20_000))
    getters = _filled(values)
    for name, get in getters.items():
        check_misses(get, absent, name)
    ops = measure({n: get_loop(g, lookups) for n, g in getters.items()}, len(lookups), settings)
    return [
        _row("memory get miss", ops, "cachetools.TTLCache"),
        _row("memory get miss", ops, "cachebox.TTLCache"),
    ]


def _row(what: str, ops: Measured, peer: str, target: Target | None = None, label: str = "") -> Row:
    mine, theirs, spread = ops.pair("tiers", peer)
    subject = ("tiers Cache(MemoryStore)", mine)
    return speedup(what, subject, (label or peer, theirs), target, spread=spread)
