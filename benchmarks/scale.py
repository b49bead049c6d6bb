"""Disk scale: `get` time at 1k entries against a big store (target: at most 1.3 times,
docs/benchmarks.md#targets).

The big store holds 100,000 entries by default, 1,000,000 with ``--scale-1m``. Both sizes are
populated with 1 KiB values by a plain `set` loop (its time is printed), then read at random
keys across the whole store. diskcache gets the same treatment, for context (with its size
limit lifted so that it keeps every entry, as DiskStore does without `max_size`).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

from ._harness import (
    KIB,
    Row,
    Settings,
    Target,
    check_hits,
    get_loop,
    measure,
    progress,
    scratch,
    slowdown,
)
from .disk import open_one

SMALL = 1_000
VALUE_POOL = 256  # distinct 1 KiB values, cycled while populating


def _key(i: int) -> str:
    return f"key-{i:07d}"


def _populate(cache: Any, count: int, pool: list[bytes], label: str) -> None:
    start = time.perf_counter()
    set_ = cache.set
    for i in range(count):
        set_(_key(i), pool[i % VALUE_POOL])
    seconds = time.perf_counter() - start
    rate = count / seconds
    progress(f"populate {label}: {count:,} x 1 KiB in {seconds:.1f} s ({rate:,.0f} sets/s)")


def get_at_scale(settings: Settings) -> list[Row]:
    """Time per `get` hit at `SMALL` entries and at the big size, for tiers and diskcache."""
    big = 1_000_000 if settings.scale_1m else settings.count(100_000, 10_000)
    if not settings.scale_1m:
        progress(f"disk scale: big store = {big:,} entries (use --scale-1m for 1,000,000)")
    pool = [os.urandom(KIB) for _ in range(VALUE_POOL)]
    gets = settings.count(50_000, 2_000)
    rng = random.Random(2)
    lookups = {n: [_key(rng.randrange(n)) for _ in range(gets)] for n in (SMALL, big)}
    with scratch() as root:
        caches: dict[str, Any] = {}
        closers: list[Callable[[], None]] = []
        try:
            for lib in ("tiers", "diskcache"):
                for n in (SMALL, big):
                    cache, close = open_one(lib, root / f"{lib}-{n}", size_limit=2**50)
                    caches[f"{lib}@{n}"] = cache
                    closers.append(close)
                    _populate(cache, n, pool, f"{lib} @ {n:,}")
                    expected = {_key(i): pool[i % VALUE_POOL] for i in range(0, n, n // 20)}
                    check_hits(cache.get, expected, f"{lib}@{n}")
            cases = {
                name: get_loop(cache.get, lookups[int(name.split("@")[1])])
                for name, cache in caches.items()
            }
            ops = measure(cases, gets, settings)
        finally:
            for close in closers:
                close()
    label = f"{big // 1000:,}k" if big < 1_000_000 else "1M"
    what = f"disk scale: get @ {label} vs @ 1k"
    note = "" if settings.scale_1m else f"big = {big:,} entries, not 1M (use --scale-1m)"
    rows = []
    for lib, target in (("tiers", Target("<=", 1.3)), ("diskcache", None)):
        at_big, at_small, spread = ops.pair(f"{lib}@{big}", f"{lib}@{SMALL}")
        subject, baseline = (f"{lib} get @ {label}", at_big), (f"{lib} get @ 1k", at_small)
        rows.append(slowdown(what, subject, baseline, target, spread=spread, note=note))
    return rows
