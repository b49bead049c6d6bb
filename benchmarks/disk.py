"""Disk tier: `Cache(DiskStore)` against `diskcache.Cache` (targets: docs/benchmarks.md#targets).

Both sides store the same bytes values with their default durability: tiers
``DiskStore(durable=False)`` (crash-safe, visible to other processes when `set` returns) and
diskcache's defaults (SQLite WAL, ``synchronous=NORMAL``). Two tiers rows per case, each with
its target: ``serializer="raw"`` (bytes stored as given, as diskcache stores bytes), and the
defaults, ``Cache(DiskStore(dir))`` with the signed pickle serializer, which on a private store
keeps bytes plain, checked by the store's checksum (decision 0013).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ._harness import (
    KIB,
    MIB,
    Measured,
    Row,
    Settings,
    Target,
    check_hits,
    check_misses,
    get_loop,
    measure,
    scratch,
    set_loop,
    shuffled,
    speedup,
)

RAW = "tiers raw"
SIGNED = "tiers signed pickle"  # the default serializer
PEER = "diskcache"


def open_one(lib: str, path: Path, **options: Any) -> tuple[Any, Callable[[], None]]:
    """A ``tiers`` (raw serializer) or ``diskcache`` cache in `path`, and what closes it.

    `options` go to ``diskcache.Cache`` (tiers' DiskStore runs with its defaults).
    """
    if lib == "tiers":
        import tiers

        store = tiers.DiskStore(path)
        return tiers.Cache(store, serializer="raw"), store.close
    import diskcache  # type: ignore[import-untyped]

    cache = diskcache.Cache(str(path), **options)
    return cache, cache.close


@contextmanager
def opened(root: Path, *, signed: bool = True) -> Iterator[dict[str, Any]]:
    """name -> cache (tiers raw, tiers signed pickle, diskcache), each in its own directory."""
    import diskcache

    import tiers

    with ExitStack() as stack:
        caches: dict[str, Any] = {}
        raw_store = tiers.DiskStore(root / "tiers-raw")
        stack.callback(raw_store.close)
        caches[RAW] = tiers.Cache(raw_store, serializer="raw")
        if signed:
            signed_store = tiers.DiskStore(root / "tiers-signed")
            stack.callback(signed_store.close)
            caches[SIGNED] = tiers.Cache(signed_store)
        peer = diskcache.Cache(str(root / "diskcache"))
        stack.callback(peer.close)
        caches[PEER] = peer
        yield caches


def fill(caches: dict[str, Any], values: dict[str, bytes]) -> None:
    for cache in caches.values():
        for key, value in values.items():
            cache.set(key, value)


def _rows(what: str, ops: Measured, target: float, default_target: float) -> list[Row]:
    rows = []
    for name, label, goal in (
        (RAW, "tiers Cache(DiskStore, raw)", Target(">=", target)),
        (SIGNED, "tiers Cache(DiskStore) default (signed pickle)", Target(">=", default_target)),
    ):
        if name in ops:
            mine, peer, spread = ops.pair(name, PEER)
            baseline = ("diskcache.Cache", peer)
            rows.append(speedup(what, (label, mine), baseline, goal, spread=spread))
    return rows


def _values(count: int, size: int) -> dict[str, bytes]:
    return {f"key-{i}": os.urandom(size) for i in range(count)}


def _gets(settings: Settings, values: dict[str, bytes], lookups: list[str]) -> Measured:
    with scratch() as root, opened(root) as caches:
        fill(caches, values)
        for name, cache in caches.items():
            check_hits(cache.get, values, name)
        cases = {name: get_loop(cache.get, lookups) for name, cache in caches.items()}
        return measure(cases, len(lookups), settings)


def _sets(settings: Settings, values: dict[str, bytes], pairs: list[tuple[str, bytes]]) -> Measured:
    with scratch() as root, opened(root) as caches:
        fill(caches, values)  # every timed set overwrites an existing key
        cases: dict[str, Callable[[], None]] = {
            name: set_loop(cache.set, pairs) for name, cache in caches.items()
        }
        ops = measure(cases, len(pairs), settings)
        for name, cache in caches.items():
            check_hits(cache.get, dict(pairs), name)
        return ops


def get_1k(settings: Settings) -> list[Row]:
    """`get` hit of 1 KiB values: 1,000 keys, looked up in a fixed random order."""
    values = _values(1000, KIB)
    lookups = shuffled(list(values), settings.count(50_000, 2_000))
    return _rows("disk get 1 KiB hit", _gets(settings, values, lookups), 2, 1.5)


def set_1k(settings: Settings) -> list[Row]:
    """`set` of 1 KiB values over 1,000 existing keys, in a fixed random order."""
    values = _values(1000, KIB)
    pairs = [(k, values[k]) for k in shuffled(list(values), settings.count(10_000, 500))]
    return _rows("disk set 1 KiB (overwrite)", _sets(settings, values, pairs), 2, 2)


def get_10m(settings: Settings) -> list[Row]:
    """`get` hit of 10 MiB values: 3 keys, round robin."""
    values = _values(3, 10 * MIB)
    lookups = list(values) * settings.count(30, 2)
    return _rows("disk get 10 MiB hit", _gets(settings, values, lookups), 2, 1)


def set_10m(settings: Settings) -> list[Row]:
    """`set` of 10 MiB values, overwriting 3 keys round robin."""
    values = _values(3, 10 * MIB)
    pairs = list(values.items()) * settings.count(10, 1)
    return _rows("disk set 10 MiB (overwrite)", _sets(settings, values, pairs), 4, 2)


def get_miss(settings: Settings) -> list[Row]:
    """`get` of absent keys; each store holds 1,000 other 1 KiB entries."""
    values = _values(1000, KIB)
    absent = [f"absent-{i}" for i in range(1000)]
    lookups = shuffled(absent, settings.count(50_000, 2_000))
    with scratch() as root, opened(root, signed=False) as caches:
        fill(caches, values)
        for name, cache in caches.items():
            check_misses(cache.get, absent, name)
        cases = {name: get_loop(cache.get, lookups) for name, cache in caches.items()}
        ops = measure(cases, len(lookups), settings)
    mine, peer, spread = ops.pair(RAW, PEER)
    subject, baseline = ("tiers Cache(DiskStore)", mine), ("diskcache.Cache", peer)
    return [speedup("disk get miss", subject, baseline, spread=spread)]
