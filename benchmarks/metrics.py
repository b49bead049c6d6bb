"""Metrics: what `tiers.metrics` costs a memory cache's `get` hit and `set`, and a scrape.

Three `Cache(MemoryStore)` with the same 10,000 keys (1 KiB bytes values, one-hour TTL):
one with no metrics, one collected by a `PrometheusCollector` (pull-based: nothing runs on
the cache's path, so it should match), and one with latency histograms on
(``register_prometheus(..., observe_latency=True)``: a timed wrapper per call). The scrape
row times ``generate_latest`` of a registry holding one memory-over-disk cache against that
cache's own ``stats()``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from ._harness import KIB, Row, Settings, check_hits, get_loop, measure, scratch, shuffled, speedup

ITEMS = 10_000
TTL = 3600
OFF, PULL, TIMED = (
    "tiers, metrics off",
    "tiers, Prometheus collector registered",
    "tiers, latency histograms on",
)


def overhead(settings: Settings) -> list[Row]:
    """`get` hits and `set`s with metrics off, collected, and timed; one scrape."""
    from prometheus_client import CollectorRegistry

    import tiers
    from tiers.metrics import register_prometheus

    values = {f"user:{i}": i.to_bytes(4, "big") * (KIB // 4) for i in range(ITEMS)}
    lookups = shuffled(list(values), settings.count(200_000, 20_000))
    writes = [(key, values[key]) for key in shuffled(list(values), settings.count(100_000, 10_000))]
    rows: list[Row] = []
    with ExitStack() as stack:
        caches: dict[str, Any] = {}
        for name in (OFF, PULL, TIMED):
            cache = tiers.Cache(tiers.MemoryStore(max_items=ITEMS), name=f"bench-{len(caches)}")
            stack.callback(cache.close)
            if name != OFF:
                register_prometheus(cache, CollectorRegistry(), observe_latency=name == TIMED)
            caches[name] = cache
        for key, value in values.items():  # interleaved: no cache gets the freshest memory
            for cache in caches.values():
                cache.set(key, value, ttl=TTL)
        for name, cache in caches.items():
            check_hits(cache.get, values, name)
        gets = measure({n: get_loop(c.get, lookups) for n, c in caches.items()}, len(lookups),
                       settings)  # fmt: skip
        sets = measure({n: _set_loop(c.set, writes) for n, c in caches.items()}, len(writes),
                       settings)  # fmt: skip
        # (the timed cache's `get`/`set` are its wrappers: looked up after registration)
        for what, ops in (("metrics: memory get hit", gets), ("metrics: memory set", sets)):
            rows.append(speedup(what, (PULL, ops[PULL]), (OFF, ops[OFF]),
                                spread=max(ops.spread[PULL], ops.spread[OFF]),
                                note="pull-based: nothing on the cache's path"))  # fmt: skip
            rows.append(speedup(what, (TIMED, ops[TIMED]), (OFF, ops[OFF]),
                                spread=max(ops.spread[TIMED], ops.spread[OFF]),
                                note="a timed wrapper, a histogram observe"))  # fmt: skip
        rows.append(_scrape(settings, stack))
    return rows


def _set_loop(set_: Callable[..., object], pairs: list[tuple[str, bytes]]) -> Callable[[], None]:
    def run() -> None:
        for key, value in pairs:
            set_(key, value, ttl=TTL)

    return run


def _scrape(settings: Settings, stack: ExitStack) -> Row:
    """``generate_latest`` of one memory-over-disk cache against its ``stats()``."""
    from prometheus_client import CollectorRegistry, generate_latest

    import tiers
    from tiers.metrics import register_prometheus

    path = stack.enter_context(scratch())
    cache = tiers.Cache(tiers.MemoryStore(max_items=ITEMS), tiers.DiskStore(path), name="scraped")
    stack.callback(cache.close)
    cache.set_many({f"k{i}": b"x" * KIB for i in range(1000)}, ttl=TTL)
    registry = CollectorRegistry()
    register_prometheus(cache, registry)
    rounds = settings.count(2_000, 200)

    def scrapes() -> None:
        for _ in range(rounds):
            generate_latest(registry)

    def stats() -> None:
        for _ in range(rounds):
            cache.stats()

    scrape, plain = "generate_latest (memory over disk)", "cache.stats()"
    ops = measure({scrape: scrapes, plain: stats}, rounds, settings)
    return speedup("metrics: one scrape", (scrape, ops[scrape]), (plain, ops[plain]),
                   spread=max(ops.spread[scrape], ops.spread[plain]),
                   note="a scrape reads stats() once, then formats ~40 samples")  # fmt: skip
