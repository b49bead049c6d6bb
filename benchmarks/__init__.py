"""Benchmarks: tiers against its peers, in one run, as ratios (docs/benchmarks.md#targets).

``python -m benchmarks`` (or ``make bench``) runs every comparison, each in a fresh
subprocess; see docs/benchmarks.md for the options, the method and the latest results.
"""

from __future__ import annotations

# Comparison name -> "module:function". Each function takes a `Settings` and returns rows;
# `python -m benchmarks._one NAME` runs one of them in its own process.
COMPARISONS: dict[str, str] = {
    "memory-hit": "benchmarks.memory:get_hit",
    "memory-miss": "benchmarks.memory:get_miss",
    "memory-set": "benchmarks.memory:set_1k",
    "memory-async-batches": "benchmarks.memory:async_and_batches",
    "coherence-memory-hit": "benchmarks.coherence:memory_hit",
    "coherence-memoize-hit": "benchmarks.coherence:memoize_hit",
    "metrics-overhead": "benchmarks.metrics:overhead",
    "disk-get-1k": "benchmarks.disk:get_1k",
    "disk-set-1k": "benchmarks.disk:set_1k",
    "disk-get-10m": "benchmarks.disk:get_10m",
    "disk-set-10m": "benchmarks.disk:set_10m",
    "disk-miss": "benchmarks.disk:get_miss",
    "disk-scale": "benchmarks.scale:get_at_scale",
    "disk-processes": "benchmarks.processes:two_writers",
    "full-disk-set": "benchmarks.full:disk_set_100",
    "full-disk-set-1k": "benchmarks.full:disk_set_1k",
    "full-disk-items": "benchmarks.full:items_kept",
    "full-memory-set": "benchmarks.full:memory_set",
    "memoize-memory": "benchmarks.memoize:memory_hit",
    "memoize-disk": "benchmarks.memoize:disk_hit",
    "memoize-numpy": "benchmarks.memoize:numpy_argument",
    "hash-key": "benchmarks.memoize:hash_keys",
    "freshness-expiry": "benchmarks.freshness:expiry",
    "freshness-hit": "benchmarks.freshness:hit_path",
    "redis-get-1k": "benchmarks.remote:redis_get_1k",
    "redis-get-many": "benchmarks.remote:redis_get_many",
    "redis-set-announced": "benchmarks.invalidation:set_cost",
    "redis-invalidation-latency": "benchmarks.invalidation:latency",
    "object-get-1k": "benchmarks.remote:object_get_1k",
    "readthrough-distinct-misses": "benchmarks.readthrough:distinct_misses",
    "readthrough-single-flight": "benchmarks.readthrough:one_path_coroutines",
    "readthrough-blocks": "benchmarks.readthrough:block_range",
    "readthrough-xarray": "benchmarks.readthrough_xarray:xarray_netcdf",
    "django-get": "benchmarks.django:get_hit",
}


def select(only: str | None) -> list[str]:
    """The comparisons named by `only`: an exact name, or a group prefix such as ``disk``."""
    if only is None:
        return list(COMPARISONS)
    chosen = [name for name in COMPARISONS if name == only or name.startswith(only + "-")]
    if not chosen:
        raise SystemExit(f"unknown comparison {only!r}; choose from: {', '.join(COMPARISONS)}")
    return chosen
