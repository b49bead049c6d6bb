"""Django cache backends: `tiers.django.TiersCache.get` against diskcache's `DjangoCache`,
Django's `LocMemCache` and Django's `RedisCache` (informational rows: no target).

Every backend holds the same 1,000 session-like dicts (~0.7 KiB pickled) under the same Django
keys (``:1:session-N``: each ``get`` makes and validates its key, as Django's API does) and
answers the same shuffled hits. Pairs compare like with like: TiersCache over a memory tier in
front of a disk (a hit from memory) against LocMemCache; TiersCache over a disk alone and over
memory+disk against diskcache; TiersCache over Redis alone and over memory+Redis against
RedisCache, on a redis-server of the run's own (benchmarks/remote.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ._harness import Row, Settings, check_hits, get_loop, measure, scratch, shuffled, slowdown
from .remote import redis_server

KEYS = 1000
WHAT = "Django cache get hit (~0.7 KiB dict)"
TIERS_BACKEND = "tiers.django.TiersCache"


def _values() -> dict[str, dict[str, Any]]:
    """Session-like values: a user and a cart of 20 lines."""
    return {
        f"session-{i}": {
            "user": i,
            "name": f"user-{i}",
            "cart": [{"sku": f"SKU{j:05d}", "qty": j % 3 + 1, "price": 9.99} for j in range(20)],
        }
        for i in range(KEYS)
    }


def _configured() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure()


def _backend(path: str, location: object, **params: Any) -> Any:
    """A Django cache backend as Django builds one from ``CACHES``."""
    from django.utils.module_loading import import_string

    return import_string(path)(location, {"TIMEOUT": None, **params})


@contextmanager
def _local_backends(root: Path) -> Iterator[dict[str, Any]]:
    import tiers.django

    backends = {
        "tiers memory+disk": _backend(
            TIERS_BACKEND, ["memory://", str(root / "tiers-md")], OPTIONS={"namespace": "md"}
        ),
        "tiers disk": _backend(TIERS_BACKEND, str(root / "tiers-d"), OPTIONS={"namespace": "d"}),
        "LocMemCache": _backend(
            "django.core.cache.backends.locmem.LocMemCache", "bench", OPTIONS={"MAX_ENTRIES": 10**6}
        ),
        "diskcache": _backend("diskcache.DjangoCache", str(root / "diskcache")),
    }
    try:
        yield backends
    finally:
        backends["diskcache"].close()
        tiers.django._close_all()


@contextmanager
def _redis_backends(url: str) -> Iterator[dict[str, Any]]:
    import tiers.django

    backends = {
        "tiers redis": _backend(TIERS_BACKEND, url, OPTIONS={"namespace": "r"}),
        "tiers memory+redis": _backend(
            TIERS_BACKEND, ["memory://", url], OPTIONS={"namespace": "mr"}
        ),
        "RedisCache": _backend("django.core.cache.backends.redis.RedisCache", url),
    }
    try:
        yield backends
    finally:
        backends["RedisCache"].close()
        tiers.django._close_all()


def _timed(
    backends: Mapping[str, Any], values: dict[str, Any], count: int, settings: Settings
) -> dict[str, float]:
    """ops/s of `get` hits on each backend (each filled with `values` first) and spreads."""
    lookups = shuffled(list(values), count)
    cases: dict[str, Callable[[], None]] = {}
    for name, backend in backends.items():
        backend.set_many(values)
        check_hits(backend.get, values, name)
        cases[name] = get_loop(backend.get, lookups)
    measured = measure(cases, len(lookups), settings)
    return {**measured, **{f"{name} spread": s for name, s in measured.spread.items()}}


def get_hit(settings: Settings) -> list[Row]:
    """`get` hits through each backend: TiersCache against each peer on the same tiers."""
    _configured()
    values = _values()
    with ExitStack() as stack:
        root = stack.enter_context(scratch())
        local = stack.enter_context(_local_backends(root))
        ops = _timed(local, values, settings.count(20_000, 1_000), settings)
        url = stack.enter_context(redis_server())
        remote = stack.enter_context(_redis_backends(url))
        ops |= _timed(remote, values, settings.count(5_000, 500), settings)
    pairs = [
        ("tiers memory+disk", "TiersCache(memory, disk)", "LocMemCache", "LocMemCache"),
        ("tiers disk", "TiersCache(disk)", "diskcache", "diskcache DjangoCache"),
        ("tiers memory+disk", "TiersCache(memory, disk)", "diskcache", "diskcache DjangoCache"),
        ("tiers redis", "TiersCache(redis)", "RedisCache", "Django RedisCache"),
        ("tiers memory+redis", "TiersCache(memory, redis)", "RedisCache", "Django RedisCache"),
    ]
    return [
        slowdown(
            WHAT, (label, ops[mine]), (peer_label, ops[peer]),
            spread=max(ops[f"{mine} spread"], ops[f"{peer} spread"]),
        )
        for mine, label, peer, peer_label in pairs
    ]  # fmt: skip


def main() -> None:
    from ._report import text_table

    parser = argparse.ArgumentParser(prog="python -m benchmarks.django")
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    print(text_table(get_hit(Settings(quick=parser.parse_args().quick))))


if __name__ == "__main__":
    main()
