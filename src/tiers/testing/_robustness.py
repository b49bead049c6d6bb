"""Conformance tests of robustness: hostile keys, sizes, async, threads, pickling, null."""

from __future__ import annotations

import asyncio
import os
import pickle
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from .._stores._protocol import (
    Store,
    SupportsExpire,
    SupportsInfo,
    SupportsKeys,
    SupportsLocks,
    SupportsPop,
    SupportsTags,
    SupportsTouch,
)
from ._base import HOSTILE_KEYS, MiB, StoreTestBase
from ._clock import FakeClock

_SIZES = (0, 1, 32 * 1024, 32 * 1024 + 1, MiB, 5 * MiB)


def _listing(tmp_path: Path, root: Path) -> set[str]:
    """Everything under `tmp_path` but inside `root`, and what is beside `tmp_path`."""
    seen = {os.path.join(tmp_path.parent, name) for name in os.listdir(tmp_path.parent)}
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        if Path(dirpath) == root:
            dirnames.clear()
            continue
        seen.update(os.path.join(dirpath, name) for name in dirnames + filenames)
    return seen


class RobustnessTests(StoreTestBase):
    # -- keys -----------------------------------------------------------------------------

    def test_hostile_keys_round_trip_and_stay_distinct(self, store: Store) -> None:
        """Empty, path-like, NUL, huge, unnormalised, surrogate and emoji keys are plain keys."""
        self.need_storage()
        assert len(set(HOSTILE_KEYS)) == len(HOSTILE_KEYS)
        for i, key in enumerate(HOSTILE_KEYS):
            assert store.set(key, self.entry(store, b"#%d" % i)) is True, repr(key[:20])
        for i, key in enumerate(HOSTILE_KEYS):
            self.assert_stored(store, key, b"#%d" % i)
            self.assert_holds(store, key, b"#%d" % i)
        if isinstance(store, SupportsKeys):
            assert self.live_keys(store) == sorted(HOSTILE_KEYS)
            assert self.live_keys(store, "x" * 10_000) == ["x" * 10_000, "x" * 10_000 + "y"]
            assert self.live_keys(store, "\u00e9") == ["\u00e9"]
            assert store.count() == len(HOSTILE_KEYS)
        for key in HOSTILE_KEYS:
            assert store.delete(key) is True, repr(key[:20])
        for key in HOSTILE_KEYS:
            self.assert_not_stored(store, key)
            self.assert_absent(store, key)
        assert store.stats().items == 0

    def test_hostile_keys_stay_inside_the_store_directory(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Writing, reading and deleting any key creates nothing outside the store's root."""
        where = self.store_directory(store)
        if where is None:
            pytest.skip("the store is not rooted in a directory")
        root = Path(os.path.realpath(where))
        tmp = Path(os.path.realpath(tmp_path))
        before = _listing(tmp, root)
        for i, key in enumerate(HOSTILE_KEYS):
            body = b"%d|" % i * (20_000 if i % 3 else 2_000)  # inline and in files
            store.set(key, self.entry(store, body, tags=("t",)))
            store.get(key)
        if isinstance(store, SupportsTags):
            store.evict("t")
        for key in HOSTILE_KEYS:
            store.delete(key)
        assert _listing(tmp, root) == before

    # -- values ---------------------------------------------------------------------------

    @pytest.mark.parametrize("size", _SIZES, ids=[f"{n}B" for n in _SIZES])
    def test_values_of_every_size_round_trip(self, store: Store, size: int) -> None:
        """Empty, tiny, around the inline limit, and multi-MiB values come back intact."""
        if size > MiB and not self.supports_large_values:
            pytest.skip("the store does not take large values (supports_large_values = False)")
        self.need_storage()
        body = random.Random(size).randbytes(size)
        assert store.set("k", self.entry(store, body)) is True
        self.assert_stored(store, "k", body)
        self.assert_holds(store, "k", body)
        store.set("k", self.entry(store, body[::-1]))
        self.assert_stored(store, "k", body[::-1])
        self.assert_holds(store, "k", body[::-1])
        assert store.delete("k") is True
        self.assert_not_stored(store, "k")
        self.assert_absent(store, "k")
        self.plant(store, "p", self.entry(store, body))
        self.assert_holds(store, "p", body)

    def test_byte_store_takes_any_bytes_like_body(self, store: Store) -> None:
        """A byte store accepts bytearray and memoryview bodies and returns their bytes."""
        if store.holds_objects:
            pytest.skip("an object store keeps the object itself")
        self.need_storage()
        for kind in (bytearray, memoryview):
            body = bytes(range(256)) * 200
            entry = self.entry(store, body)
            entry.value = kind(body)
            store.set(kind.__name__, entry)
            self.assert_holds(store, kind.__name__, body)

    def test_object_store_keeps_any_object(self, store: Store) -> None:
        """An object store keeps live objects, not just bytes."""
        if not store.holds_objects:
            pytest.skip("a byte store keeps encoded bodies")
        self.need_storage()
        value = {"list": [1, 2], "none": None}
        entry = self.entry(store)
        entry.value = value
        store.set("k", entry)
        got = store.get("k")
        assert got is not None
        assert got.value == value

    # -- async, threads, pickling ---------------------------------------------------------

    def test_async_twins_behave_like_the_sync_methods(self, store: Store, clock: FakeClock) -> None:
        """get/set/delete/clear/stats (and present capabilities) work through their _async twins."""
        kept = not self.null

        async def scenario() -> None:
            assert await store.set_async("a", self.entry(store, b"A", tags=("t",))) is True
            assert await store.set_async("b", self.entry(store, b"B" * 40_000)) is True
            got = await store.get_async("a")
            assert (got is not None and self.body_of(store, got) == b"A") is kept
            got = await store.get_async("b")
            assert (got is not None and self.body_of(store, got) == b"B" * 40_000) is kept
            assert await store.get_async("missing") is None
            assert (await store.stats_async()).items == (2 if kept else 0)
            assert await store.delete_async("a") is kept
            assert await store.delete_async("a") is False
            await self._async_capabilities(store, clock, kept)
            assert await store.clear_async() == (1 if kept else 0)
            assert await store.get_async("b") is None

        asyncio.run(scenario())

    async def _async_capabilities(self, store: Store, clock: FakeClock, kept: bool) -> None:
        await store.set_async("c", self.entry(store, b"C", tags=("t",)))
        if isinstance(store, SupportsInfo):
            info = await store.info_async("c")
            assert (info is not None and info.value is None) is kept
        if isinstance(store, SupportsTouch):
            assert await store.touch_async("c", clock.time() + 5) is kept
        if isinstance(store, SupportsKeys):
            assert await store.count_async() == (2 if kept else 0)
        if isinstance(store, SupportsTags):
            assert await store.evict_async("t") == (1 if kept else 0)
        await store.set_async("d", self.entry(store, b"D", expires_at=clock.time() + 1))
        clock.advance(2)
        if isinstance(store, SupportsExpire):
            assert await store.expire_async() == (1 if kept else 0)
        await store.set_async("e", self.entry(store, b"E"))
        if isinstance(store, SupportsPop):
            popped = await store.pop_async("e")
            assert (popped is not None and self.body_of(store, popped) == b"E") is kept
        else:
            await store.delete_async("e")
        if isinstance(store, SupportsLocks):
            assert await store.acquire_lock_async("L", "a", 10) is True
            assert await store.acquire_lock_async("L", "b", 10) is False
            assert await store.renew_lock_async("L", "a", 10) is True
            assert await store.release_lock_async("L", "a") is True

    def test_threads_only_ever_read_values_written_for_the_key(self, store: Store) -> None:
        """8 threads x 200 mixed operations on 16 keys: no error, no torn or foreign value."""
        keys = [f"key{i}" for i in range(16)]
        written: dict[str, set[bytes]] = {key: set() for key in keys}
        reads: list[tuple[str, Any]] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def work(n: int) -> None:
            rng = random.Random(n)
            try:
                barrier.wait()
                for i in range(200):
                    key, roll = rng.choice(keys), rng.random()
                    if roll < 0.4:
                        body = f"{key}|{n}|{i}|".encode() * rng.randint(1, 50)
                        written[key].add(body)
                        store.set(key, self.entry(store, body))
                    elif roll < 0.85:
                        got = store.get(key)
                        if got is not None:
                            reads.append((key, self.body_of(store, got)))
                    else:
                        store.delete(key)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == [], f"{len(errors)} calls raised, the first: {errors[0]!r}"
        assert all(body in written[key] for key, body in reads)
        if self.null:
            assert reads == []
            return
        assert reads, "no read found a value"
        present = 0
        for key in keys:
            got = store.get(key)
            if got is not None:
                present += 1
                assert self.body_of(store, got) in written[key]
        assert store.stats().items == present

    def test_pickled_store_works(self, store: Store, clock: FakeClock) -> None:
        """An unpickled store works; a persistent one sees the same data, others start empty."""
        store.set("before", self.entry(store, b"1"))
        copy: Store = pickle.loads(pickle.dumps(store))
        try:
            copy.clock = clock
            assert type(copy) is type(store)
            assert copy.set("after", self.entry(copy, b"2")) is True
            persistent = self.persistent
            if persistent is None:
                persistent = not store.holds_objects
            if self.null:
                assert (copy.get("before"), copy.get("after")) == (None, None)
            elif persistent:
                self.assert_holds(copy, "before", b"1")
                self.assert_holds(store, "after", b"2")
            else:
                self.assert_absent(copy, "before")
                self.assert_holds(copy, "after", b"2")
                self.assert_absent(store, "after")
        finally:
            copy.close()
        if not self.null:
            self.assert_holds(store, "before", b"1")

    # -- null -----------------------------------------------------------------------------

    def test_null_store_accepts_writes_and_stays_empty(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A store that keeps nothing: writes succeed, reads miss, counts stay zero."""
        if not self.null:
            pytest.skip("only for stores that keep nothing (null = True)")
        entry = self.entry(store, b"v", tags=("t",), expires_at=clock.time() + 100)
        assert store.set("k", entry) is True
        assert store.get("k") is None
        assert store.delete("k") is False
        assert store.clear() == 0
        stats = store.stats()
        assert (stats.items, stats.bytes, stats.rejected) == (0, 0, 0)
        if isinstance(store, SupportsInfo):
            assert store.info("k") is None
        if isinstance(store, SupportsPop):
            assert store.pop("k") is None
        if isinstance(store, SupportsTouch):
            assert store.touch("k", None) is False
        if isinstance(store, SupportsExpire):
            assert store.expire() == 0
        if isinstance(store, SupportsTags):
            assert store.evict("t") == 0
        if isinstance(store, SupportsKeys):
            assert store.count() == 0
            assert self.live_keys(store) == []
