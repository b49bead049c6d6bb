"""RedisStore when its server dies, freezes (SIGSTOP) or comes back empty: calls fail fast as
StoreError, a Cache degrades to its other tiers or raises TierUnavailableError."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests._tiers import store_of, tier_of
from tiers import Cache, MemoryStore
from tiers._stores import Entry
from tiers._stores._redis import RedisStore
from tiers.errors import StoreError, TierUnavailableError

TIMEOUT = 0.3
BOUND = TIMEOUT * 1.1 + 0.25  # the timeout, 10 %, and scheduling on a loaded 2-core machine


@pytest.fixture
def store(redis_process: Any) -> Iterator[RedisStore]:
    store = RedisStore(redis_process.url, timeout=TIMEOUT)
    yield store
    store.close()


@pytest.fixture
def frozen(redis_process: Any) -> Iterator[Any]:
    """The server, to freeze in the test: always thawed afterwards."""
    try:
        yield redis_process
    finally:
        if redis_process.proc is not None:  # not killed
            redis_process.thaw()


def _fails_fast(call: Callable[[], object]) -> StoreError:
    start = time.monotonic()
    with pytest.raises(StoreError) as caught:
        call()
    elapsed = time.monotonic() - start
    assert elapsed <= BOUND, f"took {elapsed:.3f} s"
    return caught.value


def test_a_frozen_server_fails_each_call_within_the_timeout(store: RedisStore, frozen: Any) -> None:
    """Pooled and new connections, sync and async: StoreError within timeout + 10 %."""
    store.set("k", Entry(b"v"))
    frozen.freeze()
    error = _fails_fast(lambda: store.get("k"))
    assert f"127.0.0.1:{frozen.port}" in str(error)
    assert error.__cause__ is not None
    _fails_fast(lambda: store.set("k", Entry(b"w")))
    _fails_fast(lambda: store.delete("k"))
    fresh = RedisStore(frozen.url, timeout=TIMEOUT)
    try:
        _fails_fast(lambda: fresh.get("k"))
        _fails_fast(lambda: asyncio.run(fresh.get_async("k")))
    finally:
        fresh.close()


def test_a_killed_server_fails_fast_and_names_itself(store: RedisStore, redis_process: Any) -> None:
    store.set("k", Entry(b"v"))
    redis_process.kill()
    error = _fails_fast(lambda: store.get("k"))
    assert f"127.0.0.1:{redis_process.port}" in str(error)
    _fails_fast(lambda: store.acquire_lock("L", "t", 5))


def test_a_server_restarted_empty_is_used_again(store: RedisStore, redis_process: Any) -> None:
    """After a restart the store reconnects (at most one failed call) and sees it empty."""
    store.set("k", Entry(b"v"))
    redis_process.restart_empty()
    failures = 0
    for _ in range(3):
        try:
            assert store.get("k") is None
        except StoreError:
            failures += 1
    assert failures <= 1
    assert store.set("k", Entry(b"again")) is True
    got = store.get("k")
    assert got is not None
    assert got.value == b"again"


def _cache(store: RedisStore, mode: str, coherence: str = "auto") -> Cache:
    return Cache(MemoryStore(), store, on_tier_error=mode, secret="s" * 32, coherence=coherence)


def _listening(cache: Cache) -> None:
    """Wait until the cache's invalidation channel is subscribed (its memory tier serves)."""
    deadline = time.monotonic() + 5
    while tier_of(cache).suspect:
        assert time.monotonic() < deadline, "the invalidation channel never subscribed"
        time.sleep(0.01)


@pytest.mark.parametrize("outage", ["kill", "freeze"])
def test_coherent_memory_copies_are_not_served_while_redis_is_down(
    store: RedisStore, frozen: Any, outage: str
) -> None:
    """The default (coherence="auto"): once the invalidation channel is lost, the memory
    tier's copies are dropped and not served (another machine's writes would not reach
    them): gets are misses, never errors, never waiting past the timeout. When Redis is
    back, the memory tier serves again."""
    cache = _cache(store, "degrade")
    try:
        _listening(cache)
        for i in range(20):
            cache.set(f"k{i}", i)
        assert cache.get("k1") == 1
        getattr(frozen, outage)()
        deadline = time.monotonic() + 5  # a kill is seen at once, a freeze by a ping in ~1.5 s
        while not tier_of(cache).suspect:
            assert time.monotonic() < deadline, "the lost channel went unnoticed"
            time.sleep(0.01)
        start = time.monotonic()
        assert [cache.get(f"k{i}") for i in range(20)] == [None] * 20
        assert time.monotonic() - start <= 20 * (TIMEOUT + 0.5)
        assert store_of(cache).stats().items == 0  # the copies were dropped
        if outage == "kill":
            frozen.restart_empty()
        else:
            frozen.thaw()
        _listening(cache)
        time.sleep(0.05)
        cache.set("after", "v")
        assert cache.get("after") == "v"
        assert cache.stats().tiers[0].items >= 1  # the memory tier takes copies again
    finally:
        cache.close()


@pytest.mark.parametrize("outage", ["kill", "freeze"])
def test_degrade_keeps_the_memory_tier_serving(store: RedisStore, frozen: Any, outage: str) -> None:
    """With coherence="none" (copies kept until they expire), every memory hit is still
    served while Redis is down; misses are None, never errors."""
    cache = _cache(store, "degrade", coherence="none")
    try:
        for i in range(20):
            cache.set(f"k{i}", i)
        getattr(frozen, outage)()
        start = time.monotonic()
        assert [cache.get(f"k{i}") for i in range(20)] == list(range(20))
        assert time.monotonic() - start < 0.1  # hits never wait for Redis
        assert [cache.get(f"missing{i}") for i in range(5)] == [None] * 5
        cache.set("new", "value")  # the memory tier takes it
        assert cache.get("new") == "value"
        assert cache.stats().tiers[1].errors >= 1
    finally:
        cache.close()


def test_raise_mode_reports_the_store_error(store: RedisStore, redis_process: Any) -> None:
    """on_tier_error="raise": a call that reaches Redis raises TierUnavailableError (with
    coherence="none", so that the memory tier keeps its copy while Redis is down)."""
    cache = _cache(store, "raise", coherence="none")
    try:
        cache.set("k", 1)
        redis_process.kill()
        assert cache.get("k") == 1  # answered by memory, Redis not asked
        with pytest.raises(TierUnavailableError) as caught:
            cache.get("missing")
        assert isinstance(caught.value.__cause__, StoreError)
        with pytest.raises(TierUnavailableError):
            cache.set("k", 2)
    finally:
        cache.close()


def test_a_frozen_cluster_primary_fails_calls_within_the_timeout(tmp_path: Any) -> None:
    """On a cluster of our own: keys on a frozen primary fail fast; the others still work."""
    from tests._servers import RedisCluster, ServerMissing

    try:
        cluster = RedisCluster(tmp_path / "cluster").start()
    except ServerMissing as exc:
        pytest.skip(str(exc))
    store = RedisStore(cluster.url.replace("redis:", "redis+cluster:"), timeout=TIMEOUT)
    try:
        keys = [f"k{i}" for i in range(30)]
        for key in keys:
            store.set(key, Entry(key.encode()))
        frozen = cluster.nodes[0]
        frozen.freeze()
        try:
            answered = failed = 0
            for key in keys[:12]:
                start = time.monotonic()
                try:
                    store.get(key)
                    answered += 1
                except StoreError:
                    failed += 1
                elapsed = time.monotonic() - start
                assert elapsed <= BOUND, f"{key}: took {elapsed:.3f} s"
            assert answered and failed  # keys of the other primaries still answer
        finally:
            frozen.thaw()
    finally:
        store.close()
        cluster.stop()
