"""`Cache.setdefault` (diskcache's and Django's `add`) and which tier counters live in:
one default wins a race of threads on a missing key, a present value is never replaced, and
on a memory-over-disk cache the disk tier decides (the memory tier drops its copy)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tiers import Cache, DiskStore, MemoryStore

from ._tiers import tier_of


@pytest.fixture(params=["memory", "memory+disk", "disk"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Cache:
    tiers = {
        "memory": [MemoryStore()],
        "memory+disk": [MemoryStore(), DiskStore(tmp_path / "d")],
        "disk": [DiskStore(tmp_path / "d")],
    }[request.param]
    return Cache(*tiers)


def test_setdefault_stores_only_when_the_key_holds_nothing(cache: Cache) -> None:
    with cache:
        assert cache.setdefault("k", {"a": 1}) == {"a": 1}
        assert cache.setdefault("k", {"b": 2}) == {"a": 1}
        assert cache.get("k") == {"a": 1}
        assert cache._setdefault("k", 3) == (False, {"a": 1})
        cache.delete("k")
        assert cache._setdefault("k", 3) == (True, 3)


def test_setdefault_sees_an_expired_value_as_nothing(cache: Cache) -> None:
    with cache:
        cache.set("k", "old", ttl=0.05)
        import time

        time.sleep(0.1)
        assert cache.setdefault("k", "new", ttl=60) == "new"
        info = cache.info("k")
        assert info is not None and info.ttl is not None and info.ttl > 50


def test_one_default_wins_a_race_of_threads(cache: Cache) -> None:
    with cache:
        for round_ in range(20):
            key = f"race-{round_}"
            barrier = threading.Barrier(8)
            won: list[tuple[bool, int]] = []

            def race(
                n: int, key: str = key, barrier: threading.Barrier = barrier,
                won: list[tuple[bool, int]] = won,
            ) -> None:  # fmt: skip
                barrier.wait()
                won.append(cache._setdefault(key, n))

            threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            winners = [value for stored, value in won if stored]
            assert len(winners) == 1  # one stored its default...
            assert {value for _, value in won} == {winners[0]}  # ...and every caller got it
            assert cache.get(key) == winners[0]


def test_setdefault_async(cache: Cache) -> None:
    async def main() -> None:
        results = await asyncio.gather(*(cache.setdefault_async("a", n) for n in range(8)))
        assert len(set(results)) == 1 and await cache.get_async("a") == results[0]

    with cache:
        asyncio.run(main())


def test_on_memory_over_disk_the_disk_tier_decides_and_memory_drops_its_copy(
    tmp_path: Path,
) -> None:
    with Cache(MemoryStore(), DiskStore(tmp_path / "d")) as cache:
        cache.set("n", 5)
        assert tier_of(cache, 0).store.get(cache._key("n")) is not None  # a memory copy
        assert cache.incr("n") == 6
        assert tier_of(cache, 0).store.get(cache._key("n")) is None  # dropped, not stale
        assert tier_of(cache, 1).store.get(cache._key("n")) is not None  # the authority
        assert cache.get("n") == 6
        cache.delete("s")
        assert cache.setdefault("s", "x") == "x"
        assert tier_of(cache, 0).store.get(cache._key("s")) is None
        assert cache.get("s") == "x"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.incr("k", 1.5), TypeError, "delta must be an int"),
        (lambda c: c.incr("k", True), TypeError, "delta must be an int"),
        (lambda c: c.incr("k", default="0"), TypeError, "default must be an int or None"),
        (lambda c: c.incr("missing", default=None), KeyError, "missing"),
        (lambda c: c.decr("k", "1"), TypeError, "delta must be an int"),
    ],
)
def test_bad_counter_arguments_are_one_clear_error(
    cache: Cache, call: object, error: type[Exception], message: str
) -> None:
    with cache:
        cache.set("k", 1)
        with pytest.raises(error, match=message):
            call(cache)  # type: ignore[operator]
        assert cache.get("k") == 1


def test_a_cache_whose_slowest_tier_cannot_update_keeps_no_counters(tmp_path: Path) -> None:
    """A faster tier never stands in: its counts would be one process's alone."""
    from tiers import ObjectStore

    (tmp_path / "objects").mkdir()
    with Cache(MemoryStore(), ObjectStore((tmp_path / "objects").as_uri())) as cache:
        with pytest.raises(TypeError, match="cannot update a key in one atomic step"):
            cache.incr("n")
        with pytest.raises(TypeError, match="so this cache cannot keep them"):
            cache.setdefault("k", 1)
        assert cache.get("n") is None and cache.get("k") is None
