"""Memory tier: `Cache(MemoryStore)` against cachetools and cachebox, and its own async and
batch calls against its sync single calls (targets: docs/benchmarks.md#targets).

Every cache holds the same 10,000 keys with a 1 KiB bytes value and a one-hour TTL (tiers
``Cache(..., ttl=3600)``, as ``TTLCache(ttl=3600)``: both sides check an expiry on every read).
"""

from __future__ import annotations

import asyncio
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
    set_loop,
    shuffled,
    slowdown,
    speedup,
)

ITEMS = 10_000
TTL = 3600


def _caches() -> dict[str, tuple[Callable[[str], object], Callable[[str, bytes], object]]]:
    """name -> (get, set) of every memory cache in the comparison."""
    import cachebox
    import cachetools

    import tiers

    cache = tiers.Cache(tiers.MemoryStore(max_items=ITEMS), ttl=TTL)  # (as TTLCache's ttl)
    ttl_cache: cachetools.TTLCache[str, bytes] = cachetools.TTLCache(maxsize=ITEMS, ttl=TTL)
    lru_cache: cachetools.LRUCache[str, bytes] = cachetools.LRUCache(maxsize=ITEMS)
    box: cachebox.TTLCache[str, bytes] = cachebox.TTLCache(maxsize=ITEMS, global_ttl=TTL)
    return {
        "tiers": (cache.get, cache.set),
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
        _row("memory get hit", ops, "cachetools.LRUCache", Target(">=", 1),
             label="cachetools.LRUCache (no TTL)"),
        _row("memory get hit", ops, "cachebox.TTLCache"),
    ]  # fmt: skip


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


def set_1k(settings: Settings) -> list[Row]:
    """`set` of 1 KiB values over 10,000 existing keys (overwrites), in a fixed random order."""
    values = {f"user:{i}": i.to_bytes(4, "big") * (KIB // 4) for i in range(ITEMS)}
    pairs = [(k, values[k]) for k in shuffled(list(values), settings.count(200_000, 20_000))]
    setters = {}
    for name, (get, set_) in _caches().items():
        for key, value in values.items():
            set_(key, value)
        setters[name] = (get, set_)
    cases = {name: set_loop(set_, pairs) for name, (_get, set_) in setters.items()}
    ops = measure(cases, len(pairs), settings)
    for name, (get, _set) in setters.items():
        check_hits(get, values, name)
    return [
        _row("memory set 1 KiB (overwrite)", ops, "cachetools.TTLCache", Target(">=", 1)),
        _row("memory set 1 KiB (overwrite)", ops, "cachetools.LRUCache",
             label="cachetools.LRUCache (no TTL)"),
        _row("memory set 1 KiB (overwrite)", ops, "cachebox.TTLCache"),
    ]  # fmt: skip


def async_and_batches(settings: Settings) -> list[Row]:
    """tiers against itself: `get_async` hits against `get` hits; `get_many`/`set_many` of
    100 keys against 100 single `get`/`set` calls (keys per second)."""
    import tiers

    values = {f"user:{i}": i.to_bytes(4, "big") * (KIB // 4) for i in range(ITEMS)}
    cache = tiers.Cache(tiers.MemoryStore(max_items=ITEMS))
    cache.set_many(values, ttl=TTL)
    lookups = shuffled(list(values), settings.count(200_000, 20_000))
    batches = [lookups[i : i + 100] for i in range(0, len(lookups) - 99, 100)]
    items = [{key: values[key] for key in batch} for batch in batches]
    loop = asyncio.new_event_loop()

    async def awaited() -> None:
        get_async = cache.get_async
        for key in lookups:
            await get_async(key)

    def get_many() -> None:
        for batch in batches:
            cache.get_many(batch)

    def set_many() -> None:
        for batch in items:
            cache.set_many(batch, ttl=TTL)

    def sets() -> None:
        set_ = cache.set
        for batch in items:
            for key, value in batch.items():
                set_(key, value, ttl=TTL)

    check_hits(cache.get, values, "tiers")
    assert loop.run_until_complete(cache.get_async(lookups[0])) == values[lookups[0]]
    assert cache.get_many(batches[0]) == {key: values[key] for key in batches[0]}
    cases: dict[str, Callable[[], object]] = {
        "get": get_loop(cache.get, lookups),
        "get_async": lambda: loop.run_until_complete(awaited()),
        "get_many": get_many,
        "set": sets,
        "set_many": set_many,
    }
    keys = 100 * len(batches)
    ops = measure(cases, {"get": len(lookups), "get_async": len(lookups), "get_many": keys,
                          "set": keys, "set_many": keys}, settings)  # fmt: skip
    check_hits(cache.get, values, "tiers")
    loop.close()
    cache.close()

    def pair(a: str, b: str) -> tuple[tuple[str, float], tuple[str, float], float]:
        mine, theirs, spread = ops.pair(a, b)
        return (f"tiers {a}", mine), (f"tiers {b}", theirs), spread

    rows = []
    subject, baseline, spread = pair("get_async", "get")
    rows.append(slowdown("memory get_async hit vs get", subject, baseline, Target("<=", 1.2),
                         spread=spread))  # fmt: skip
    for what, batch, single in (("get_many(100) vs 100 gets", "get_many", "get"),
                                ("set_many(100) vs 100 sets", "set_many", "set")):  # fmt: skip
        subject, baseline, spread = pair(batch, single)
        rows.append(speedup(f"memory {what}", subject, baseline, Target(">=", 3),
                            spread=spread, note="keys/s"))  # fmt: skip
    return rows
