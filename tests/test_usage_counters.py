"""Caches add their calls to the persistent usage counters of their stores (`SupportsUsage`)
when they close, when they are collected and when their process exits; never twice."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import tiers
from tiers._cache._usage import uncounted


def use(cache: tiers.Cache) -> None:
    cache.set("a", b"1")
    cache.set("b", b"2")
    assert cache.get("a") == b"1"
    assert cache.get("missing") is None
    cache.delete("b")


def test_close_adds_this_caches_calls_once(tmp_path: Path) -> None:
    store = tiers.DiskStore(tmp_path / "d")
    cache = tiers.Cache(store)
    use(cache)
    cache.close()
    cache.close()
    usage = store.usage()
    assert (usage.hits, usage.misses, usage.sets, usage.deletes, usage.errors) == (1, 1, 2, 1, 0)
    assert usage.since is not None
    second = tiers.Cache(store)
    use(second)
    second.close()
    assert store.usage().hits == 2 and store.usage().sets == 4


def test_a_cache_never_closed_is_counted_when_collected(tmp_path: Path) -> None:
    store = tiers.DiskStore(tmp_path / "d")
    cache = tiers.Cache(store)
    use(cache)
    del cache
    gc.collect()
    assert store.usage().sets == 2


def test_a_process_that_exits_without_closing_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "d"
    child = textwrap.dedent(f"""
        import tiers
        cache = tiers.Cache(tiers.DiskStore({str(path)!r}))
        for i in range(5):
            cache.set(str(i), b"x")
            cache.get(str(i))
        """)
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
    usage = tiers.DiskStore(path).usage()
    assert (usage.hits, usage.sets) == (5, 5)


def test_memory_tiers_count_nothing_and_a_failing_store_fails_no_close(tmp_path: Path) -> None:
    store = tiers.DiskStore(tmp_path / "d")
    cache = tiers.Cache(tiers.MemoryStore(), store)
    use(cache)
    store.close()  # the counters cannot be written: lost, and close still works
    cache.close()
    assert tiers.DiskStore(tmp_path / "d").usage().sets == 0


def test_close_async_adds_the_calls(tmp_path: Path) -> None:
    store = tiers.DiskStore(tmp_path / "d")

    async def main() -> None:
        cache = tiers.Cache(store)
        await cache.set_async("k", b"v")
        assert await cache.get_async("k") == b"v"
        await cache.close_async()

    asyncio.run(main())
    assert (store.usage().hits, store.usage().sets) == (1, 1)


def test_an_uncounted_cache_adds_nothing(tmp_path: Path) -> None:
    store = tiers.DiskStore(tmp_path / "d")
    cache = uncounted(tiers.Cache(store))
    use(cache)
    cache.close()
    assert not store.usage()
