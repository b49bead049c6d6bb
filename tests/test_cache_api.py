"""The `Cache` API (README.md, docs/architecture.md), sync and async, over memory, disk and
memory-over-disk.

Every test that takes `api` runs twice: once through the blocking methods and once through
their ``_async`` twins (each call in its own ``asyncio.run``), so both generated halves of the
orchestration are held to the same behaviour.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import tiers
from tests._tiers import install_clock, store_of, stores_of, tiers_of
from tiers import MISSING, Cache, DiskStore, EntryInfo, MemoryStore, NullStore, hash_key
from tiers._cache import _breaker
from tiers.errors import ConfigError, StoreFullError, TierUnavailableError
from tiers.testing import FakeClock

START = 1_700_000_000.0  # integer steps from here keep every expiry exact


class Api:
    """Calls a cache's blocking methods, or their ``_async`` twins each in ``asyncio.run``."""

    def __init__(self, cache: Cache, mode: str) -> None:
        self.cache = cache
        self.mode = mode

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if self.mode == "sync":
            attr: Callable[..., Any] = getattr(self.cache, name)
            return attr
        method = getattr(self.cache, name + "_async")

        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run(method(*args, **kwargs))

        return call

    def keys(self, **kwargs: Any) -> list[str]:
        if self.mode == "sync":
            return sorted(self.cache.keys(**kwargs))

        async def collect() -> list[str]:
            return sorted([k async for k in self.cache.keys_async(**kwargs)])

        return asyncio.run(collect())


STACKS = ["memory", "disk", "memory+disk"]


def build(stack: str, path: Path, **options: Any) -> Cache:
    if stack == "memory":
        return Cache(MemoryStore(), **options)
    if stack == "disk":
        return Cache(DiskStore(path), **options)
    return Cache(MemoryStore(), DiskStore(path), **options)


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def cache(stack: str, store_dir: Path, clock: FakeClock) -> Iterator[Cache]:
    c = build(stack, store_dir)
    install_clock(c, clock)
    yield c
    c.close()
    for store in stores_of(c):
        store.close()


@pytest.fixture
def api(cache: Cache, mode: str) -> Api:
    return Api(cache, mode)


def stored(cache: Cache, key: str) -> list[bool]:
    """For each tier: does its store hold a live entry for user key `key`?"""
    return [store.get(cache._key(key)) is not None for store in stores_of(cache)]


# -- get / set / add -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [42, "text", b"\x00bytes", None, 1.5, [1, {"a": (2, 3)}], {"x": None}]
)
def test_set_then_get_returns_an_equal_value(api: Api, value: Any) -> None:
    api.set("k", value)
    assert api.get("k", MISSING) == value
    assert api.get("k") == value


def test_get_of_a_missing_key_returns_the_default(api: Api) -> None:
    assert api.get("nope") is None
    assert api.get("nope", "dflt") == "dflt"
    assert api.get("nope", MISSING) is MISSING


def test_none_is_cacheable_and_told_apart_with_missing(api: Api) -> None:
    api.set("n", None)
    assert api.get("n", MISSING) is None
    assert api.has("n")
    assert api.get("other", MISSING) is MISSING


def test_set_replaces_the_value_in_every_tier(api: Api, cache: Cache) -> None:
    api.set("k", 1)
    api.set("k", 2)
    assert api.get("k") == 2
    for store in stores_of(cache):
        assert store.get(cache._key("k")) is not None
    store_of(cache).clear()
    assert api.get("k") == (2 if len(tiers_of(cache)) > 1 else None)


def test_str_keys_are_stored_under_namespace_colon_key(stack: str, store_dir: Path) -> None:
    cache = build(stack, store_dir, namespace="ns")
    cache.set("a/b c", 1)
    assert all(store.get("ns:a/b c") is not None for store in stores_of(cache))
    default_ns = build("memory", store_dir)
    default_ns.set("k", 1)
    assert store_of(default_ns).get(":k") is not None


def test_non_str_keys_are_stored_under_their_content_hash(api: Api, cache: Cache) -> None:
    api.set((1, "two", 3.0), "tuple")
    api.set(7, "int")
    assert api.get((1, "two", 3.0)) == "tuple"
    assert api.get(7) == "int"
    assert api.get("7", MISSING) is MISSING  # 7 and "7" are different keys
    assert store_of(cache, -1).get(":" + hash_key((1, "two", 3.0))) is not None


def test_long_and_odd_str_keys_work(api: Api) -> None:
    keys = ["", "x" * 5000, "🙂 ünïcode", "a:b:c", "../../etc/passwd", "nul\0in"]
    for i, key in enumerate(keys):
        api.set(key, i)
    assert [api.get(k) for k in keys] == list(range(len(keys)))


def test_add_uses_the_content_hash_as_key_and_returns_it(api: Api) -> None:
    value = {"payload": [1, 2, 3]}
    key = api.add(value)
    assert key == hash_key(value)
    assert api.get(key) == value
    assert api.add(value) == key  # same content, same key
    assert api.add("other", key="mine") == "mine"
    assert api.get("mine") == "other"
    assert api.add("v", key=(1, 2)) == hash_key((1, 2))
    assert api.get((1, 2)) == "v"


# -- ttl and expiry --------------------------------------------------------------------------


def test_an_entry_expires_after_its_ttl(api: Api, clock: FakeClock) -> None:
    api.set("k", "v", ttl=10)
    api.set("forever", "v", ttl=None)
    clock.advance(9)
    assert api.get("k") == "v"
    clock.advance(1)
    assert api.get("k", MISSING) is MISSING
    assert not api.has("k")
    clock.advance(10**6)
    assert api.get("forever") == "v"


def test_ttl_accepts_a_timedelta(api: Api, clock: FakeClock) -> None:
    api.set("k", "v", ttl=timedelta(minutes=1))
    info = api.info("k")
    assert info is not None and info.expires_at is not None
    assert info.expires_at.timestamp() == START + 60
    clock.advance(61)
    assert api.get("k", MISSING) is MISSING


def test_the_cache_default_ttl_applies_unless_overridden(
    stack: str, store_dir: Path, clock: FakeClock, mode: str
) -> None:
    cache = build(stack, store_dir, ttl=5)
    install_clock(cache, clock)
    api = Api(cache, mode)
    api.set("default", 1)
    api.set("longer", 2, ttl=100)
    api.set("never", 3, ttl=None)
    clock.advance(5)
    assert api.get("default", MISSING) is MISSING
    assert api.get("longer") == 2
    assert api.get("never") == 3
    info = api.info("never")
    assert info is not None and info.expires_at is None and info.ttl is None


def test_touch_gives_a_new_expiry(api: Api, clock: FakeClock) -> None:
    api.set("k", "v", ttl=10)
    clock.advance(8)
    assert api.touch("k", ttl=10) is True
    clock.advance(8)
    assert api.get("k") == "v"  # 16 s after set, 8 s after touch
    assert api.touch("k", ttl=None) is True
    clock.advance(10**6)
    assert api.get("k") == "v"
    assert api.touch("absent", ttl=5) is False
    api.set("short", 1, ttl=1)
    clock.advance(1)
    assert api.touch("short", ttl=100) is False  # expired entries are not revived
    assert api.get("short", MISSING) is MISSING


def test_expire_removes_expired_entries_and_counts_them(api: Api, clock: FakeClock) -> None:
    for i in range(3):
        api.set(f"short{i}", i, ttl=5)
    api.set("long", 1, ttl=100)
    assert api.expire() == 0
    clock.advance(6)
    assert api.expire() == 3
    assert api.expire() == 0
    assert api.get("long") == 1
    assert api.keys() == ["long"]


# -- delete / pop / has / evict / clear --------------------------------------------------------


def test_delete_removes_from_every_tier(api: Api, cache: Cache) -> None:
    api.set("k", 1)
    assert all(stored(cache, "k"))
    assert api.delete("k") is True
    assert stored(cache, "k") == [False] * len(tiers_of(cache))
    assert api.delete("k") is False
    assert api.get("k", MISSING) is MISSING


def test_pop_returns_the_value_and_removes_it(api: Api, cache: Cache) -> None:
    api.set("k", [1, 2])
    assert api.pop("k") == [1, 2]
    assert stored(cache, "k") == [False] * len(tiers_of(cache))
    with pytest.raises(KeyError):
        api.pop("k")
    assert api.pop("k", "dflt") == "dflt"
    assert api.pop("k", None) is None
    api.set("none", None)
    assert api.pop("none") is None
    assert not api.has("none")


def test_pop_of_an_expired_entry_is_absent(api: Api, clock: FakeClock) -> None:
    api.set("k", 1, ttl=3)
    clock.advance(3)
    with pytest.raises(KeyError):
        api.pop("k")


def test_has_reports_live_entries(api: Api) -> None:
    assert api.has("k") is False
    api.set("k", 0)
    assert api.has("k") is True
    api.delete("k")
    assert api.has("k") is False


def test_evict_removes_tagged_entries_in_every_tier(api: Api, cache: Cache) -> None:
    api.set("a", 1, tags=("red", "big"))
    api.set("b", 2, tags=["red"])
    api.set("c", 3, tags="blue")  # one tag may be given as a str
    api.set("d", 4)
    assert api.evict("red") == 2
    for key in ("a", "b"):
        assert stored(cache, key) == [False] * len(tiers_of(cache))
    assert api.get("c") == 3 and api.get("d") == 4
    assert api.evict("red") == 0
    assert api.evict("big") == 0  # gone with "a"
    assert api.evict("blue") == 1
    assert api.keys() == ["d"]


def test_clear_removes_everything_of_this_cache(api: Api, cache: Cache) -> None:
    for i in range(5):
        api.set(f"k{i}", i)
    assert api.clear() == 5
    for i in range(5):
        assert stored(cache, f"k{i}") == [False] * len(tiers_of(cache))
    assert api.keys() == []
    assert api.clear() == 0


def test_clear_also_removes_expired_entries(stack: str, store_dir: Path, clock: FakeClock) -> None:
    cache = build(stack, store_dir, namespace="ns")
    install_clock(cache, clock)
    cache.set("old", 1, ttl=1)
    cache.set("live", 2)
    clock.advance(2)
    assert cache.clear() == 1  # one live entry
    leftovers = [(t.name, t.store.stats().items) for t in tiers_of(cache) if t.store.stats().items]
    assert not leftovers, (
        "STORE BUG (DiskStore.clear(prefix) in tiers/_stores/_disk/_store.py): clearing a "
        "namespace removes only its live entries; expired ones stay on disk and in stats "
        f"until expire() runs: {leftovers}"
    )
    assert cache.expire() == 0


# -- info / keys / mapping ---------------------------------------------------------------------


def test_info_reports_metadata_and_the_answering_tier(
    api: Api, cache: Cache, clock: FakeClock
) -> None:
    api.set("k", b"x" * 100, ttl=30, tags=("t1", "t2"), meta={"source": "unit", "n": [1, 2]})
    info = api.info("k")
    assert isinstance(info, EntryInfo)
    assert info.key == "k"
    assert info.tier == 0
    assert info.store == repr(store_of(cache))
    assert info.tags == ("t1", "t2")
    assert info.meta == {"source": "unit", "n": [1, 2]}
    assert info.created_at.timestamp() == START
    assert info.expires_at is not None and info.expires_at.timestamp() == START + 30
    assert info.created_at.tzinfo is not None
    if len(tiers_of(cache)) > 1:
        store_of(cache).clear()
        lower = api.info("k")
        assert lower is not None
        assert lower.tier == 1
        assert lower.meta == {"source": "unit", "n": [1, 2]}
        assert lower.size >= 100
    assert api.info("absent") is None
    clock.advance(30)
    assert api.info("k") is None


def test_meta_is_copied_at_set(api: Api) -> None:
    meta: dict[str, Any] = {"a": [1]}
    api.set("k", 1, meta=meta)
    meta["a"].append(2)
    info = api.info("k")
    assert info is not None and info.meta == {"a": [1]}


def test_keys_filters_by_tag_and_prefix(api: Api) -> None:
    api.set("user/1", 1, tags=("users",))
    api.set("user/2", 2, tags=("users", "admins"))
    api.set("group/1", 3, tags=("admins",))
    api.set((1, 2), 4)
    assert api.keys() == sorted(["user/1", "user/2", "group/1", hash_key((1, 2))])
    assert api.keys(prefix="user/") == ["user/1", "user/2"]
    assert api.keys(tag="admins") == ["group/1", "user/2"]
    assert api.keys(tag="admins", prefix="user/") == ["user/2"]
    assert api.keys(tag="nobody") == []


def test_mapping_protocol(cache: Cache) -> None:
    cache["a"] = 1
    cache["b"] = None
    assert cache["a"] == 1
    assert cache["b"] is None
    assert "a" in cache and "b" in cache and "zz" not in cache
    assert len(cache) == 2
    assert sorted(cache) == ["a", "b"]
    with pytest.raises(KeyError):
        cache["zz"]
    del cache["a"]
    assert "a" not in cache
    with pytest.raises(KeyError):
        del cache["a"]
    assert len(cache) == 1


# -- tiering: write-through, promotion ---------------------------------------------------------


def test_set_writes_through_and_slowest_first(store_dir: Path) -> None:
    order: list[str] = []

    class Recording(MemoryStore):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def set(self, key: str, entry: Any, epoch: int | None = None) -> bool:
            order.append(self.name)
            return super().set(key, entry, epoch)

    cache = Cache(Recording("fast"), Recording("middle"), Recording("slow"))
    cache.set("k", 1)
    assert order == ["slow", "middle", "fast"]


def test_a_value_found_below_is_promoted_with_its_remaining_ttl(
    mode: str, store_dir: Path, clock: FakeClock
) -> None:
    cache = build("memory+disk", store_dir)
    install_clock(cache, clock)
    api = Api(cache, mode)
    memory = store_of(cache)
    api.set("k", {"v": 1}, ttl=100)
    memory.clear()
    clock.advance(40)
    assert api.get("k") == {"v": 1}  # answered by disk, copied up
    promoted = memory.get(":k")
    assert promoted is not None
    assert promoted.expires_at == START + 100  # the remaining 60 s, not a fresh 100
    hits = cache.stats().tiers[0].hits
    clock.advance(59)
    assert api.get("k") == {"v": 1}
    assert cache.stats().tiers[0].hits == hits + 1  # served by memory now
    clock.advance(1)
    assert api.get("k", MISSING) is MISSING
    assert memory.get(":k") is None


def test_promotion_without_expiry_stays_without_expiry(store_dir: Path, clock: FakeClock) -> None:
    cache = build("memory+disk", store_dir)
    install_clock(cache, clock)
    cache.set("k", 1, ttl=None, tags=("t",), meta={"m": 1})
    store_of(cache).clear()
    assert cache.get("k") == 1
    promoted = store_of(cache).get(":k")
    assert promoted is not None
    assert promoted.expires_at is None
    assert promoted.tags == ("t",)
    assert promoted.meta == {"m": 1}
    assert cache.evict("t") == 1  # promoted entries keep their tags
    assert cache.get("k", MISSING) is MISSING


def test_a_promotion_racing_a_delete_does_not_resurrect_the_value(store_dir: Path) -> None:
    """The disk read and the copy into memory are not atomic; a delete in between must win."""
    disk = DiskStore(store_dir)
    hook: list[Callable[[], None]] = []

    class RacingDisk:
        holds_objects = False

        def __getattr__(self, name: str) -> Any:
            return getattr(disk, name)

        def get(self, key: str) -> Any:
            entry = disk.get(key)
            while hook:
                hook.pop()()
            return entry

    cache = Cache(MemoryStore(), RacingDisk())
    cache.set("k", "old")
    store_of(cache).clear()
    deleted = threading.Thread(target=lambda: cache.delete("k"))

    def delete_meanwhile() -> None:
        deleted.start()
        deleted.join()

    hook.append(delete_meanwhile)
    cache.get("k")  # reads "old" from disk while the delete runs
    assert store_of(cache).get(":k") is None
    assert cache.get("k", MISSING) is MISSING


# -- namespaces --------------------------------------------------------------------------------


def test_namespaces_isolate_caches_sharing_a_disk_store(store_dir: Path, mode: str) -> None:
    disk = DiskStore(store_dir)
    a = Api(Cache(MemoryStore(), disk, namespace="a"), mode)
    b = Api(Cache(disk, namespace="b"), mode)
    plain = Api(Cache(disk), mode)
    a.set("k", "from a", tags=("t",))
    b.set("k", "from b", tags=("t",))
    plain.set("k", "from plain", tags=("t",))
    assert (a.get("k"), b.get("k"), plain.get("k")) == ("from a", "from b", "from plain")
    assert a.keys() == ["k"] and b.keys() == ["k"] and plain.keys() == ["k"]
    assert b.evict("t") == 1
    assert a.get("k") == "from a" and b.get("k", MISSING) is MISSING
    assert a.clear() == 1
    assert plain.get("k") == "from plain"
    assert len(plain.cache) == 1
    assert b.delete("k") is False
    assert plain.get("k") == "from plain"


# -- bind --------------------------------------------------------------------------------------


class Owner:
    """A weak-referenceable object to bind entries to."""


def test_a_bound_entry_is_deleted_when_its_object_is_collected(cache: Cache, mode: str) -> None:
    api = Api(cache, mode)
    owner: Owner | None = Owner()
    api.set("k", "v", bind=owner)
    api.set("other", "w")
    gc.collect()
    assert api.get("k") == "v"
    owner = None
    gc.collect()
    assert api.get("k", MISSING) is MISSING
    assert stored(cache, "k") == [False] * len(tiers_of(cache))
    assert api.get("other") == "w"


def test_rebinding_moves_the_binding_to_the_new_object(cache: Cache) -> None:
    first: Owner | None = Owner()
    second: Owner | None = Owner()
    cache.set("k", 1, bind=first)
    cache.set("k", 2, bind=second)
    first = None
    gc.collect()
    assert cache.get("k") == 2
    second = None
    gc.collect()
    assert cache.get("k", MISSING) is MISSING


def test_a_set_without_bind_removes_the_binding(cache: Cache) -> None:
    owner: Owner | None = Owner()
    cache.set("k", 1, bind=owner)
    cache.set("k", 2)
    owner = None
    gc.collect()
    assert cache.get("k") == 2


def test_a_binding_does_not_keep_the_object_or_the_cache_alive(store_dir: Path) -> None:
    import weakref

    owner = Owner()
    cache = Cache(MemoryStore())
    cache.set("k", 1, bind=owner)
    cache_ref = weakref.ref(cache)
    del cache
    gc.collect()
    assert cache_ref() is None
    del owner  # the finalizer finds the cache gone and does nothing
    gc.collect()


# -- getfile -----------------------------------------------------------------------------------


def test_getfile_yields_a_private_file_removed_on_exit(cache: Cache, tmp_path: Path) -> None:
    cache.set("blob", b"\x00\x01 data")
    with cache.getfile("blob") as path:
        assert isinstance(path, Path)
        assert path.read_bytes() == b"\x00\x01 data"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.exists()


def test_getfile_options(cache: Cache, tmp_path: Path) -> None:
    cache.set("text", "héllo ✓")
    with cache.getfile("text", delete=False, suffix=".txt", directory=tmp_path) as path:
        assert path.parent == tmp_path
        assert path.name.endswith(".txt")
        assert path.read_text("utf-8") == "héllo ✓"
    assert path.exists()  # delete=False keeps it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with cache.getfile("text", directory=str(tmp_path / ".")) as other:
        assert other != path
    assert not other.exists()


def test_getfile_refuses_missing_keys_and_non_bytes_values(cache: Cache, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    cache.set("n", 12)
    with pytest.raises(KeyError), cache.getfile("absent", directory=out):
        pass
    with pytest.raises(TypeError, match="bytes or str"), cache.getfile("n", directory=out):
        pass
    assert list(out.iterdir()) == []  # no file was left behind


def test_getfile_async(cache: Cache, tmp_path: Path) -> None:
    cache.set("blob", b"async bytes")

    async def main() -> Path:
        async with cache.getfile_async("blob", suffix=".bin") as path:
            assert path.read_bytes() == b"async bytes"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            return path

    assert not asyncio.run(main()).exists()

    async def missing() -> None:
        async with cache.getfile_async("absent"):
            pass

    with pytest.raises(KeyError):
        asyncio.run(missing())


def test_getfile_removes_the_file_when_the_body_raises(cache: Cache) -> None:
    cache.set("blob", b"x")
    seen: list[Path] = []
    with pytest.raises(RuntimeError), cache.getfile("blob") as path:
        seen.append(path)
        raise RuntimeError("boom")
    assert not seen[0].exists()


# -- stats -------------------------------------------------------------------------------------


def test_stats_count_per_tier_and_in_total(mode: str, store_dir: Path) -> None:
    cache = build("memory+disk", store_dir)
    api = Api(cache, mode)
    api.set("k", "v")
    assert api.get("k") == "v"  # memory hit
    store_of(cache).clear()
    assert api.get("k") == "v"  # memory miss, disk hit (promoted)
    assert api.get("k") == "v"  # memory hit again
    assert api.get("absent") is None  # missed everywhere
    api.set("j", "w")
    assert api.delete("j") is True
    stats = api.stats()
    mem, disk = stats.tiers
    assert (mem.hits, mem.misses, mem.sets, mem.deletes) == (2, 2, 2, 1)
    assert (disk.hits, disk.misses, disk.sets, disk.deletes) == (1, 1, 2, 1)
    assert stats.hits == 3 and stats.misses == 1
    assert stats.sets == 4 and stats.deletes == 2
    assert stats.errors == 0 and stats.rejected == 0
    assert stats.items == disk.items == 1
    assert mem.items == 1 and disk.bytes > 0 and stats.bytes == disk.bytes
    assert stats.hit_rate == pytest.approx(3 / 4)
    assert stats.as_dict()["tiers"][1]["hits"] == 1


def test_stats_count_expirations(stack: str, store_dir: Path, clock: FakeClock) -> None:
    cache = build(stack, store_dir)
    install_clock(cache, clock)
    cache.set("k", 1, ttl=1)
    clock.advance(2)
    assert cache.get("k", MISSING) is MISSING
    assert cache.stats().expirations >= 1


def test_deleting_a_missing_key_is_not_counted(cache: Cache) -> None:
    assert cache.delete("absent") is False
    assert cache.stats().deletes == 0


# -- construction: URLs, paths, the default stack ----------------------------------------------


def test_memory_url_options(tmp_path: Path) -> None:
    cache = Cache("memory://?max_items=10&max_size=64MB")
    (store,) = stores_of(cache)
    assert isinstance(store, MemoryStore)
    assert store.max_items == 10
    assert store.max_size == 64_000_000
    for i in range(20):
        cache.set(f"k{i}", i)
    assert len(cache) == 10  # bounded by max_items
    assert isinstance(store_of(Cache("memory://")), MemoryStore)


def test_disk_url_options(tmp_path: Path) -> None:
    path = tmp_path / "d"
    cache = Cache(f"disk://{path}?max_size=10GB&durable=true")
    (store,) = stores_of(cache)
    assert isinstance(store, DiskStore)
    assert store.max_size == 10_000_000_000
    assert store.durable is True
    assert store.directory == path.resolve()
    cache.set("k", "v")
    cache.close()
    assert Cache(f"disk://{path}?durable=0").get("k") == "v"


def test_plain_paths_make_disk_stores(tmp_path: Path) -> None:
    for spec in (str(tmp_path / "a"), tmp_path / "b"):
        cache = Cache(spec)
        assert isinstance(store_of(cache), DiskStore)
        cache.set("k", 1)
        cache.close()
    assert Cache(tmp_path / "a").get("k") == 1


def test_null_url_stores_nothing() -> None:
    cache = Cache("null://")
    assert isinstance(store_of(cache), NullStore)
    cache.set("k", 1)
    assert cache.get("k", MISSING) is MISSING
    assert not cache.has("k")
    assert cache.get_or_set("k", lambda: 5) == 5


def test_mixed_tiers_from_urls_and_objects(tmp_path: Path) -> None:
    memory = MemoryStore()
    cache = Cache(memory, f"disk://{tmp_path / 'd'}")
    cache.set("k", 1)
    assert memory.get(":k") is not None
    assert [t.owned for t in tiers_of(cache)] == [False, True]


def test_no_tiers_means_memory_over_disk_in_the_user_cache_dir() -> None:
    cache = Cache()
    memory, disk = stores_of(cache)
    assert isinstance(memory, MemoryStore) and memory.max_size == 64_000_000
    assert isinstance(disk, DiskStore)
    root = Path(os.environ["TIERS_CACHE_DIR"]).resolve()
    assert disk.directory.is_relative_to(root)
    cache.set("k", "v")
    cache.close()
    assert disk._closed  # the cache opened the default stack, so it closes it
    assert Cache().get("k") == "v"  # persisted on disk


def test_default_cache_is_built_once_over_the_default_stack() -> None:
    from tiers import _defaults

    _defaults._default = None
    try:
        first = tiers.default_cache()
        assert tiers.default_cache() is first
        assert isinstance(store_of(first, -1), DiskStore)
    finally:
        if _defaults._default is not None:
            _defaults._default.close()
        _defaults._default = None


def test_close_closes_only_the_stores_it_opened(tmp_path: Path) -> None:
    given = DiskStore(tmp_path / "given")
    cache = Cache(given, tmp_path / "owned")
    owned = store_of(cache, 1)
    cache.close()
    cache.close()  # idempotent
    assert owned._closed is True
    assert given._closed is False
    given.set("x", tiers._stores.Entry(b"1"))


def test_context_managers_close_the_cache(tmp_path: Path) -> None:
    with Cache(tmp_path / "s") as cache:
        cache.set("k", 1)
        store = store_of(cache)
    assert store._closed

    async def main() -> Any:
        async with Cache(tmp_path / "s") as cache:
            value = await cache.get_async("k")
            inner = store_of(cache)
        assert inner._closed
        return value

    assert asyncio.run(main()) == 1


def test_repr_names_the_tiers_and_namespace(tmp_path: Path) -> None:
    text = repr(Cache(MemoryStore(max_items=3), tmp_path / "d", namespace="ns"))
    assert "MemoryStore(max_items=3)" in text and "DiskStore(" in text and "'ns'" in text


# -- pickling ----------------------------------------------------------------------------------


def test_pickling_carries_configuration_not_contents(tmp_path: Path, clock: FakeClock) -> None:
    cache = Cache(
        MemoryStore(max_items=50), tmp_path / "d", namespace="ns", ttl=60,
        serializer="json", compress="zlib",
    )  # fmt: skip
    cache.set("k", {"a": 1})
    clone: Cache = pickle.loads(pickle.dumps(cache))
    assert clone._namespace == "ns"
    assert clone._ttl == 60
    assert clone._codec.name == "json"
    memory, disk = stores_of(clone)
    assert isinstance(memory, MemoryStore) and memory.max_items == 50
    assert memory.get("ns:k") is None  # memory comes back empty
    assert disk.get("ns:k") is not None  # the disk tier is the same directory
    assert clone.get("k") == {"a": 1}
    assert [t.owned for t in tiers_of(clone)] == [False, True]
    info = clone.info("k")
    assert info is not None and info.expires_at is not None


def test_pickling_carries_an_explicit_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = Cache(tmp_path / "d", secret="s" * 32)
    cache.set("k", ["signed"])  # (a value that needs pickle: signed)
    blob = pickle.dumps(cache)
    cache.close()
    monkeypatch.setenv("TIERS_SECRET", "another secret of some length")
    clone: Cache = pickle.loads(blob)
    assert clone.get("k") == ["signed"]
    assert Cache(tmp_path / "d").get("k", MISSING) is MISSING  # TIERS_SECRET would not verify


def test_a_pickled_memory_only_cache_comes_back_empty() -> None:
    cache = Cache(MemoryStore())
    cache.set("k", 1)
    clone: Cache = pickle.loads(pickle.dumps(cache))
    assert clone.get("k", MISSING) is MISSING
    assert cache.get("k") == 1


# -- get_or_set basics (single-flight has its own file) ----------------------------------------


def test_get_or_set_computes_once_then_hits(api: Api, clock: FakeClock) -> None:
    calls: list[int] = []

    def factory() -> str:
        calls.append(1)
        return "computed"

    assert api.get_or_set("k", factory, ttl=10, tags=("t",), meta={"m": 1}) == "computed"
    assert api.get_or_set("k", factory) == "computed"
    assert len(calls) == 1
    info = api.info("k")
    assert info is not None and info.tags == ("t",) and info.meta == {"m": 1}
    clock.advance(10)
    assert api.get_or_set("k", factory) == "computed"
    assert len(calls) == 2


def test_get_or_set_caches_none_and_awaits_async_factories(cache: Cache) -> None:
    assert cache.get_or_set("n", lambda: None) is None
    assert cache.get_or_set("n", lambda: 1) is None

    async def factory() -> int:
        await asyncio.sleep(0)
        return 7

    assert asyncio.run(cache.get_or_set_async("a", factory)) == 7
    with pytest.raises(TypeError, match="get_or_set_async"):
        cache.get_or_set("b", factory)
    assert cache.get("b", MISSING) is MISSING


# -- on_tier_error -----------------------------------------------------------------------------


class FlakyStore:
    """A real MemoryStore that raises `error` from its I/O methods while `failing` is set.

    Only for failures no real local component produces on demand (a tier going away).
    """

    _SPARED = frozenset({"epoch", "stats", "stats_async", "close", "close_async"})

    def __init__(self, inner: Any, error: Callable[[], Exception] | None = None) -> None:
        self.inner = inner
        self.failing: set[str] | bool = False
        self.error = error or (lambda: OSError(111, "connection refused"))
        self.calls = 0

    def __repr__(self) -> str:
        return f"Flaky({self.inner!r})"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name.startswith("_") or not callable(attr) or name in self._SPARED:
            return attr

        def check() -> None:
            self.calls += 1
            base = name.removesuffix("_async")
            if self.failing is True or (isinstance(self.failing, set) and base in self.failing):
                raise self.error()

        if asyncio.iscoroutinefunction(attr):

            async def call_async(*args: Any, **kwargs: Any) -> Any:
                check()
                return await attr(*args, **kwargs)

            return call_async

        def call(*args: Any, **kwargs: Any) -> Any:
            check()
            return attr(*args, **kwargs)

        return call


def test_degrade_serves_from_the_other_tier_and_counts_errors(store_dir: Path, mode: str) -> None:
    flaky = FlakyStore(MemoryStore())
    cache = Cache(flaky, DiskStore(store_dir))
    api = Api(cache, mode)
    api.set("k", "v")
    flaky.failing = True
    assert api.get("k") == "v"
    assert api.has("k") is True
    info = api.info("k")
    assert info is not None and info.tier == 1
    stats = api.stats()
    assert stats.tiers[0].errors == 3 and stats.tiers[1].errors == 0
    assert stats.errors == 3
    assert stats.hits == 1 and stats.tiers[1].hits == 1


def test_degrade_keeps_writing_to_healthy_tiers(store_dir: Path, mode: str) -> None:
    flaky = FlakyStore(MemoryStore())
    cache = Cache(flaky, DiskStore(store_dir))
    api = Api(cache, mode)
    api.set("k", "old")
    flaky.failing = {"set"}
    api.set("k", "new")  # no exception under "degrade"
    flaky.failing = False
    assert api.get("k") == "new"  # the failed tier dropped its stale copy
    assert api.stats().tiers[0].errors == 1


def test_the_breaker_skips_a_failing_tier_then_probes_it(store_dir: Path, clock: FakeClock) -> None:
    flaky = FlakyStore(MemoryStore())
    cache = Cache(flaky, DiskStore(store_dir))
    install_clock(cache, clock, stores=False)  # the breakers' cool-down passes when told
    cache.set("k", "v")
    flaky.failing = True
    for _ in range(3):
        assert cache.get("k") == "v"
    assert flaky.calls == 1 + 3  # the set, then three failed gets
    for _ in range(5):
        assert cache.get("k") == "v"
        cache.set("j", 1)
    assert flaky.calls == 4  # open: the tier is not called at all
    assert cache.stats().tiers[0].errors == 3
    clock.advance(_breaker.COOLDOWN)
    assert cache.get("k") == "v"
    assert flaky.calls == 5  # one probe after the cool-down; it failed, so open again
    assert cache.get("k") == "v"
    assert flaky.calls == 5
    flaky.failing = False
    clock.advance(_breaker.COOLDOWN)
    assert cache.get("k") == "v"  # probe succeeds (a miss: the tier lost the key)
    calls = flaky.calls
    assert cache.get("k") == "v"  # now served by the healed tier again
    assert flaky.calls == calls + 1
    assert cache.stats().tiers[0].hits >= 1


def test_a_successful_call_resets_the_failure_count(store_dir: Path) -> None:
    flaky = FlakyStore(MemoryStore())
    cache = Cache(flaky, DiskStore(store_dir))
    for _ in range(5):  # two failures, then a healthy miss, repeatedly: never three in a row
        flaky.failing = True
        cache.get("a")
        cache.get("b")
        flaky.failing = False
        cache.get("c")
    calls = flaky.calls
    cache.get("d")
    assert flaky.calls == calls + 1  # the breaker never opened


def test_raise_reports_tier_unavailable_with_the_cause(store_dir: Path, mode: str) -> None:
    flaky = FlakyStore(MemoryStore())
    cache = Cache(flaky, DiskStore(store_dir), on_tier_error="raise")
    api = Api(cache, mode)
    api.set("k", "v")
    flaky.failing = True
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("get", ("k",), {}), ("set", ("k", 1), {}), ("delete", ("k",), {}), ("has", ("k",), {}),
        ("info", ("k",), {}), ("pop", ("k",), {}), ("touch", ("k",), {"ttl": 5}),
        ("clear", (), {}), ("evict", ("t",), {}), ("expire", (), {}),
    ]  # fmt: skip
    for name, args, kwargs in calls:
        with pytest.raises(TierUnavailableError) as caught:
            getattr(api, name)(*args, **kwargs)
        assert isinstance(caught.value.__cause__, OSError)
        assert caught.value.tier == 0
        assert "tier 0" in str(caught.value) and "\n" not in str(caught.value)
    flaky.failing = False
    # The disk took the set and the delete before tier 0 failed; tier 0's copy (which no
    # call could remove) predates them, so it is not served.
    assert api.get("k") is None


def test_raise_passes_store_full_through(store_dir: Path) -> None:
    flaky = FlakyStore(MemoryStore(), error=lambda: StoreFullError(28, "no space left"))
    cache = Cache(MemoryStore(), flaky, on_tier_error="raise")
    flaky.failing = {"set"}
    with pytest.raises(StoreFullError, match="no space left"):
        cache.set("k", 1)
    assert cache.get("k", MISSING) is MISSING


def test_a_failed_set_under_raise_leaves_the_previous_value_everywhere(mode: str) -> None:
    fast = MemoryStore()
    slow = FlakyStore(MemoryStore())
    cache = Cache(fast, slow, on_tier_error="raise")
    api = Api(cache, mode)
    api.set("k", "old")
    slow.failing = {"set"}
    with pytest.raises(TierUnavailableError):
        api.set("k", "new")
    slow.failing = False
    assert [store.get(":k").value for store in stores_of(cache)] == ["old", "old"]
    assert api.get("k") == "old"


def test_a_set_failing_in_a_faster_tier_never_leaves_a_stale_value_there(
    store_dir: Path, mode: str
) -> None:
    fast = FlakyStore(MemoryStore())
    cache = Cache(fast, DiskStore(store_dir), on_tier_error="raise")
    api = Api(cache, mode)
    api.set("k", "old")
    fast.failing = {"set"}
    with pytest.raises(TierUnavailableError):
        api.set("k", "new")
    fast.failing = False
    # The slower tier already took the new value; the faster one must not answer with "old".
    assert api.get("k") == "new"


def test_a_set_failing_in_a_middle_tier_never_leaves_a_stale_value_above(mode: str) -> None:
    top, middle, bottom = MemoryStore(), FlakyStore(MemoryStore()), MemoryStore()
    cache = Cache(top, middle, bottom, on_tier_error="raise")
    api = Api(cache, mode)
    api.set("k", "old")
    middle.failing = {"set"}
    with pytest.raises(TierUnavailableError) as caught:
        api.set("k", "new")
    assert caught.value.tier == 1
    middle.failing = False
    assert top.get(":k") is None and middle.get(":k") is None
    assert bottom.get(":k").value == "new"
    assert api.get("k") == "new"


def test_bad_on_tier_error_is_refused() -> None:
    with pytest.raises(ConfigError, match="on_tier_error"):
        Cache(MemoryStore(), on_tier_error="ignore")


# -- closed caches, miss counting, sizes -------------------------------------------------------


def test_a_closed_cache_raises_instead_of_failing_quietly(store_dir: Path) -> None:
    cache = Cache(MemoryStore(), DiskStore(store_dir))
    cache.set("k", 1)
    cache.close()
    for call in (
        lambda: cache.get("k"),
        lambda: cache.set("k", 2),
        lambda: cache.delete("k"),
        cache.clear,
        cache.stats,
        lambda: asyncio.run(cache.get_async("k")),
    ):
        with pytest.raises(tiers.errors.StoreError, match="is closed"):
            call()


def test_one_cold_get_or_set_is_one_miss_in_each_tier(store_dir: Path) -> None:
    with Cache(MemoryStore(), DiskStore(store_dir)) as cache:
        assert cache.get_or_set("k", lambda: 1) == 1
        stats = cache.stats()
        assert stats.misses == 1
        assert [t.misses for t in stats.tiers] == [1, 1]


def test_memory_only_caches_report_sizes() -> None:
    cache = Cache(MemoryStore())
    cache.set("k", b"x" * 10_000)
    info = cache.info("k")
    assert info is not None
    assert info.size >= 10_000
    assert cache.stats().bytes >= 10_000
