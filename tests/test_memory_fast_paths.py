"""The fast paths of a cache over a memory first tier (`tiers._cache._direct`): reads without
the store's lock through its per-namespace view, and plain writes to a memory-only cache that
build no `Entry`; and the `get` of a cache whose only tier is a DiskStore. Each must answer
exactly what the full path answers: these tests hold them to it — expiry, every removal,
eviction order, namespaces sharing a store, closing, bad input — and check the store's books
after threads have raced on it.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import replace
from typing import Any

import pytest

from tests._tiers import install_clock, store_of
from tiers import Cache, DiskStore, MemoryStore
from tiers._cache import _direct
from tiers.errors import StoreError
from tiers.testing import FakeClock

START = 1_700_000_000.0


def on_clock(cache: Cache) -> FakeClock:
    clock = FakeClock(START)
    install_clock(cache, clock)
    return clock


def fast(cache: Cache, name: str) -> bool:
    """`name` is one of the fast functions on the instance (not the class's method)."""
    return name in vars(cache)


def books_balance(store: MemoryStore) -> None:
    """The store's accounting and every view agree with its table of slots."""
    with store._lock:
        assert store._bytes == sum(slot.size for slot in store._data.values())
        for prefix, view in store._views.items():
            under = {k[len(prefix) :]: s for k, s in store._data.items() if k.startswith(prefix)}
            assert set(view) <= set(under), "a view serves a key the store no longer holds"
            for name, slot in view.items():
                assert under[name] is slot, f"the view holds an old slot of {name!r}"


def test_the_fast_paths_are_installed_where_they_apply(tmp_path: Any) -> None:
    names = ("get", "get_async", "get_many", "get_many_async")
    with Cache(MemoryStore()) as alone:
        assert all(fast(alone, n) for n in (*names, "set", "set_async", "set_many"))
    with Cache(MemoryStore(), DiskStore(tmp_path / "d")) as stacked:  # reads only
        assert all(fast(stacked, n) for n in names)
        assert not fast(stacked, "set")
    with Cache(MemoryStore(), serializer="json") as normalizing:  # writes normalise values
        assert fast(normalizing, "get") and not fast(normalizing, "set")
    with Cache(DiskStore(tmp_path / "e")) as disk:  # (its own `get` only: the last tests)
        assert [n for n in names if fast(disk, n)] == ["get"]

    class Mine(Cache):
        def get(self, key: object, default: Any = None) -> Any:
            return "mine"

    with Mine(MemoryStore()) as mine:  # a subclass's own method is never shadowed
        assert mine.get("k") == "mine"
        assert fast(mine, "set")


def test_expiry_is_checked_on_every_hit() -> None:
    with Cache(MemoryStore()) as cache:
        clock = on_clock(cache)
        cache.set("k", b"v", ttl=10)
        cache.set("forever", b"f")
        clock.advance(9)
        assert cache.get("k") == b"v"
        assert cache.get_many(["k", "forever"]) == {"k": b"v", "forever": b"f"}
        clock.advance(1)
        assert cache.get("k") is None
        assert asyncio.run(cache.get_async("k", "gone")) == "gone"
        assert cache.get_many(["k", "forever"], default=0) == {"k": 0, "forever": b"f"}
        clock.advance(10**9)
        assert cache.get("forever") == b"f"


def test_every_removal_is_seen_by_the_fast_reads() -> None:
    with Cache(MemoryStore()) as cache:
        clock = on_clock(cache)
        for key in "abcdef":
            cache.set(key, key.encode(), ttl=100)
        cache.set("t", b"tagged", tags=("red",))
        assert cache.delete("a")
        assert cache.pop("b") == b"b"
        assert cache.evict("red") == 1
        cache.touch("c", ttl=1)
        clock.advance(2)
        assert cache.expire() == 1
        assert cache.get_many([*"abcdef", "t"]) == {
            "a": None, "b": None, "c": None, "d": b"d", "e": b"e", "f": b"f", "t": None,
        }  # fmt: skip
        cache.clear()
        assert cache.get("d") is None
        assert cache.get_many(["e", "f"], default=1) == {"e": 1, "f": 1}
        books_balance(store_of(cache))


def test_overwrites_through_either_path_are_served_at_once() -> None:
    with Cache(MemoryStore()) as cache:
        cache.set("k", 1)
        assert cache.get("k") == 1
        cache.set("k", 2, meta={"why": "full path"})  # (meta: not the fast write)
        assert cache.get("k") == 2
        cache.set("k", 3)
        assert cache.get("k") == 3
        assert cache.info("k").meta is None  # type: ignore[union-attr]
        cache.set_many({"k": 4, "j": 5})
        assert cache.get_many(["k", "j"]) == {"k": 4, "j": 5}
        books_balance(store_of(cache))


def test_namespaces_sharing_one_store_see_only_their_keys() -> None:
    store = MemoryStore()
    plain, named, twin = Cache(store), Cache(store, namespace="a"), Cache(store, namespace="a")
    plain.set("k", "plain's")
    named.set("k", "named's")
    assert (plain.get("k"), named.get("k"), twin.get("k")) == ("plain's", "named's", "named's")
    twin.set("k", "twin's")
    assert named.get_many(["k"]) == {"k": "twin's"}
    twin.delete("k")
    assert named.get("k") is None and plain.get("k") == "plain's"
    # a view made after the keys were written starts with them
    late = MemoryStore()
    late.putter("b:")("x", 1, START, None, 28)
    assert late.view("b:") == {"x": late._data["b:x"]}
    books_balance(store)


def test_eviction_keeps_the_views_and_gives_hits_a_second_chance() -> None:
    with Cache(MemoryStore(max_items=100)) as cache:
        for i in range(100):
            cache.set(f"k{i}", i)
        for i in range(10):  # hit the ten oldest through the fast path
            assert cache.get(f"k{i}") == i
        for i in range(100, 150):
            cache.set(f"k{i}", i)
        kept = cache.get_many([f"k{i}" for i in range(150)], default=None)
        assert all(kept[f"k{i}"] == i for i in range(10)), "recently read keys were evicted"
        assert sum(value is not None for value in kept.values()) == 100
        assert all(kept[f"k{i}"] is None for i in range(10, 60))
        books_balance(store_of(cache))


def test_a_closed_cache_refuses_even_through_held_functions() -> None:
    cache = Cache(MemoryStore())
    cache.set("k", 1)
    get, set_, get_many = cache.get, cache.set, cache.get_many
    cache.close()
    assert not fast(cache, "get")
    for call in (lambda: get("k"), lambda: set_("k", 2), lambda: get_many(["k"])):
        with pytest.raises(StoreError, match="closed"):
            call()


def test_keys_that_are_not_str_and_bad_arguments_take_the_full_path() -> None:
    with Cache(MemoryStore()) as cache:
        cache.set(("tuple", 1), "t")
        assert cache.get(("tuple", 1)) == "t"
        assert cache.get_many([("tuple", 1), "absent"]) == {("tuple", 1): "t", "absent": None}
        with pytest.raises(TypeError, match="use ttl="):
            cache.set("k", 1, expire=3)  # type: ignore[call-arg]
        for ttl, error in ((True, TypeError), (0, ValueError), (-1, ValueError),
                           (math.nan, ValueError), (math.inf, ValueError),
                           ("3", TypeError), (10**400, ValueError)):  # fmt: skip
            with pytest.raises(error):
                cache.set("k", 1, ttl=ttl)
            with pytest.raises(error):
                cache.set_many({"k": 1}, ttl=ttl)
        with pytest.raises(ValueError, match="tag"):
            cache.set("k", 1, tags="")
        assert cache.get("k") is None  # nothing was written by a refused call
        with pytest.raises(TypeError):
            cache.get_many([["unhashable"]])


def test_fast_writes_keep_what_info_and_stats_report() -> None:
    with Cache(MemoryStore(), ttl=60) as cache:
        on_clock(cache)
        cache.set("default", b"x" * 100)
        cache.set("forever", "s", ttl=None)
        cache.set_many({"a": 1, "b": 2}, ttl=5)
        info = cache.info("default")
        assert info is not None and info.size >= 100
        assert info.created_at.timestamp() == START
        assert info.expires_at is not None and info.expires_at.timestamp() == START + 60
        assert cache.info("forever").expires_at is None  # type: ignore[union-attr]
        assert cache.info("a").expires_at.timestamp() == START + 5  # type: ignore[union-attr]
        assert cache.get_many(["a", "b", "a", "zzz"]) == {"a": 1, "b": 2, "zzz": None}
        assert cache.get("default") == b"x" * 100
        stats = cache.stats()
        assert (stats.sets, stats.hits, stats.misses) == (4, 3, 1)


def test_binding_still_deletes_with_the_object() -> None:
    class Owner:
        pass

    with Cache(MemoryStore()) as cache:
        owner = Owner()
        cache.set("k", 1, bind=owner)
        cache.set("other", 2)
        del owner
        import gc

        gc.collect()
        assert cache.get("k") is None and cache.get("other") == 2


def test_async_twins_answer_as_the_sync_ones() -> None:
    async def run() -> None:
        with Cache(MemoryStore()) as cache:
            await cache.set_async("k", 1)
            await cache.set_many_async({"j": 2})
            assert await cache.get_async("k") == 1
            assert await cache.get_many_async(["k", "j", "x"]) == {"k": 1, "j": 2, "x": None}
            assert await cache.get_async(("not", "str"), "d") == "d"

    asyncio.run(run())


def test_threads_racing_leave_the_books_balanced() -> None:
    store = MemoryStore(max_items=300, max_size="200KB")
    cache = Cache(store)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(3000):
                key = f"k{(i * 7 + seed) % 500}"
                step = (i + seed) % 6
                if step == 0:
                    cache.set(key, b"x" * (i % 700))
                elif step == 1:
                    cache.set_many({key: i, f"{key}-b": b"y" * 300})
                elif step == 2:
                    cache.delete(key)
                elif step == 3:
                    cache.set(key, i, tags=("t",))
                elif step == 4:
                    value = cache.get(key)
                    assert value is None or isinstance(value, (bytes, int))
                else:
                    cache.get_many([key, f"{key}-b"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    books_balance(store)
    assert len(store._data) <= 300 and store._bytes <= 200_000
    cache.close()


def test_a_plain_memory_store_put_is_a_set() -> None:
    store = MemoryStore(max_size=1000)
    put = store.putter("")
    assert put("k", b"v", START, None, 40)
    assert store.get("k").value == b"v"  # type: ignore[union-attr]
    assert not put("big", b"x", START, 5.0, 2000)  # larger than max_size: refused
    assert store.get("big") is None
    assert store.stats().rejected == 1
    assert _direct.sizeof(b"abc") == len(b"abc") + _direct._BYTES


# -- a cache whose only tier is a DiskStore --------------------------------------------------


def test_a_disk_only_cache_reads_through_its_fast_get(tmp_path: Any) -> None:
    with Cache(DiskStore(tmp_path / "d")) as cache, Cache(DiskStore(tmp_path / "e"),
                                                          MemoryStore()) as stacked:  # fmt: skip
        assert fast(cache, "get") and not fast(cache, "set")
        assert not fast(stacked, "get")  # (a memory tier below a disk one: the full path)
        cache.set("k", b"v")
        cache.set("obj", {"needs": "pickle"})
        assert cache.get("k") == b"v" and cache.get("obj") == {"needs": "pickle"}
        assert cache.get("absent", 7) == 7
        assert cache.get(("not", "str"), 8) == 8
        stats = cache.stats()
        assert (stats.hits, stats.misses) == (2, 2)


def test_what_the_disk_fast_get_refuses_the_full_path_removes(tmp_path: Any) -> None:
    store = DiskStore(tmp_path / "d")
    with Cache(store, secret=b"s" * 32) as cache:
        cache.set("obj", {"a": 1})
        entry = store.get(":obj")
        assert entry is not None
        forged = bytes(entry.value[:-1]) + bytes([entry.value[-1] ^ 1])
        store.set(":obj", replace(entry, value=forged))  # a bad MAC: refused, removed
        assert cache.get("obj", "miss") == "miss"
        assert store.get(":obj") is None
        assert cache.stats().rejected == 1
    with pytest.raises(StoreError, match="closed"):
        cache.get("obj")
