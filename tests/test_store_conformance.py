"""Every built-in store against `tiers.testing.StoreTests`, plus store-specific behaviour."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from pathlib import Path

from tiers import DiskStore, MemoryStore, NullStore
from tiers._stores import Entry, Store
from tiers.testing import FakeClock, StoreTests

from ._store_media import DiskMedium, MemoryMedium

MiB = 1024 * 1024


class TestMemoryStore(MemoryMedium, StoreTests):
    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore()


class TestBoundedMemoryStore(MemoryMedium, StoreTests):
    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore(max_items=1000, max_size=16 * MiB)


class TestDiskStore(DiskMedium, StoreTests):
    def make_store(self, tmp_path: Path) -> Store:
        return DiskStore(tmp_path / "store")


class TestBoundedDiskStore(DiskMedium, StoreTests):
    def make_store(self, tmp_path: Path) -> Store:
        return DiskStore(tmp_path / "store", max_size=8 * MiB)


class TestDurableDiskStore(DiskMedium, StoreTests):
    def make_store(self, tmp_path: Path) -> Store:
        return DiskStore(tmp_path / "store", durable=True)


class TestNullStore(StoreTests):
    null = True

    def make_store(self, tmp_path: Path) -> Store:
        return NullStore()


# -- MemoryStore: LRU ------------------------------------------------------------------------


def _entry(body: bytes, size: int | None = None) -> Entry:
    return Entry(body, size=len(body) if size is None else size)


def test_memory_store_evicts_least_recently_used_by_items() -> None:
    """Over max_items, the entry read or written longest ago goes first, and is counted."""
    store = MemoryStore(max_items=3)
    for key in "abc":
        store.set(key, _entry(key.encode()))
    assert store.get("a") is not None  # a is now more recent than b and c
    store.set("d", _entry(b"d"))
    assert store.get("b") is None
    store.set("c", _entry(b"c2"))  # a write is a use too
    store.set("e", _entry(b"e"))
    assert sorted(store.keys()) == ["c", "d", "e"]
    stats = store.stats()
    assert (stats.items, stats.evictions) == (3, 2)


def test_memory_store_evicts_least_recently_used_by_bytes() -> None:
    """Over max_size, least recently used entries go until the rest fits."""
    store = MemoryStore(max_size=100)
    store.set("a", _entry(b"a", size=40))
    store.set("b", _entry(b"b", size=40))
    assert store.get("a") is not None
    store.set("c", _entry(b"c", size=40))
    assert sorted(store.keys()) == ["a", "c"]
    store.set("big", _entry(b"big", size=90))  # a and c must both go
    assert list(store.keys()) == ["big"]
    stats = store.stats()
    assert (stats.items, stats.bytes, stats.evictions) == (1, 90, 3)


# -- DiskStore: LRU under max_size, persistence, processes ---------------------------------


def _disk(path: Path, clock: FakeClock, max_size: int | None = None) -> DiskStore:
    store = DiskStore(path, max_size=max_size)
    store.clock = clock
    return store


def test_disk_store_evicts_least_recently_used_under_max_size(tmp_path: Path) -> None:
    """Past max_size the entry used longest ago goes first (a read counts as a use)."""
    clock = FakeClock()
    body = bytes(40_000)  # a value file of 40 KB: about 41 KB on disk with its record
    store = _disk(tmp_path / "store", clock, max_size=5 * 45_000)
    try:
        for i in range(5):
            assert store.set(f"k{i}", Entry(body)) is True
            clock.advance(2)
        assert store.stats().evictions == 0
        assert store.get("k0") is not None  # k0 is now the most recently used
        clock.advance(2)
        store.set("k5", Entry(body))
        assert store.get("k1") is None
        assert all(store.get(f"k{i}") is not None for i in (0, 2, 3, 4, 5))
        stats = store.stats()
        assert (stats.items, stats.evictions) == (5, 1)
        assert stats.bytes <= 5 * 45_000
    finally:
        store.close()


def test_disk_store_stays_within_max_size_keeping_the_newest(tmp_path: Path) -> None:
    """Many writes over the limit: every eviction counted, the newest entries kept."""
    clock = FakeClock()
    limit = 300_000
    store = _disk(tmp_path / "store", clock, max_size=limit)
    try:
        for i in range(40):
            store.set(f"k{i:02d}", Entry(bytes(20_000 + i)))  # inline values
            clock.advance(1.5)
            assert store.stats().bytes <= limit
        kept = sorted(store.keys())
        stats = store.stats()
        assert 5 < len(kept) < 40
        assert kept == [f"k{i:02d}" for i in range(40 - len(kept), 40)]
        assert (stats.items, stats.evictions) == (len(kept), 40 - len(kept))
    finally:
        store.close()


def test_disk_store_data_survives_close_and_reopen(tmp_path: Path) -> None:
    """Inline and file values, expiry, tags and meta are all there after a reopen."""
    clock = FakeClock()
    store = _disk(tmp_path / "store", clock)
    big = bytes(range(256)) * 1000
    expires = clock.time() + 100
    store.set("small", Entry(b"s", b"h1", 5.0, expires, ("t",), {"m": 1}))
    store.set("big", Entry(big, b"h2", tags=("t",)))
    store.set("", Entry(b"empty key"))
    store.close()
    again = _disk(tmp_path / "store", clock)
    try:
        small = again.get("small")
        assert small is not None
        assert (small.value, small.header, small.created_at) == (b"s", b"h1", 5.0)
        assert (small.expires_at, small.tags, small.meta) == (expires, ("t",), {"m": 1})
        got = again.get("big")
        assert got is not None
        assert (got.value, got.header) == (big, b"h2")
        assert again.get("") is not None
        assert sorted(again.keys(tag="t")) == ["big", "small"]
        clock.advance(200)
        assert again.get("small") is None
    finally:
        again.close()


def _write_in_child(path: str) -> None:
    """Run in a spawned process: read the parent's entry, write some, take a lock."""
    store = DiskStore(path)
    found = store.get("from-parent")
    assert found is not None
    assert found.value == b"parent"
    store.set("from-child", Entry(b"child", tags=("c",)))
    store.set("big-from-child", Entry(b"c" * 100_000))
    assert store.acquire_lock("L", "child", 3600)
    store.close()


def test_disk_store_entries_are_shared_between_processes(tmp_path: Path) -> None:
    """A spawned process sees the parent's entries; the open parent store sees the child's."""
    store = DiskStore(tmp_path / "store")
    try:
        store.set("from-parent", Entry(b"parent"))
        child = multiprocessing.get_context("spawn").Process(
            target=_write_in_child, args=(str(tmp_path / "store"),)
        )
        child.start()
        child.join(timeout=120)
        assert child.exitcode == 0
        got = store.get("from-child")
        assert got is not None
        assert got.value == b"child"
        big = store.get("big-from-child")
        assert big is not None
        assert big.value == b"c" * 100_000
        assert list(store.keys(tag="c")) == ["from-child"]
        assert store.acquire_lock("L", "parent", 10) is False  # the child's lease holds
    finally:
        store.close()


def test_disk_store_stamps_are_unique_across_threads(tmp_path: Path) -> None:
    """LRU stamps double as record versions (a read removes an expired entry only if its
    stamp is unchanged), so threads on a frozen clock must still never share one."""
    store = _disk(tmp_path / "store", FakeClock())
    stamps: list[list[int]] = [[] for _ in range(4)]

    def work(n: int) -> None:
        for _ in range(20_000):
            stamps[n].append(store._budget.stamp(store.clock.time()))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        store.close()
    every = [stamp for part in stamps for stamp in part]
    assert len(set(every)) == len(every)


def _write_big(path: str, body: bytes, die_before_unlink: bool) -> None:
    """Run in a spawned process: write a value file for "k"; optionally be killed -9 right
    after the write commits, before the file it replaced is unlinked."""
    from tiers._stores._disk import _files

    if die_before_unlink:
        _files.unlink = lambda _layout, _names: os.kill(os.getpid(), signal.SIGKILL)
    store = DiskStore(path)
    store.set("k", Entry(body))
    store.close()


def test_disk_store_sweeps_a_file_replaced_by_a_process_that_died(tmp_path: Path) -> None:
    """A value file whose record a crashed process replaced (its writer long gone) is removed
    at the next open: no orphan grows the store."""
    path = str(tmp_path / "store")
    DiskStore(path).close()
    spawn = multiprocessing.get_context("spawn")
    for body, dies in ((b"a" * 100_000, False), (b"b" * 100_000, True)):
        child = spawn.Process(target=_write_big, args=(path, body, dies))
        child.start()
        child.join(timeout=120)
        assert child.exitcode == (-signal.SIGKILL if dies else 0)
    store = DiskStore(path)
    try:
        got = store.get("k")
        assert got is not None
        assert got.value == b"b" * 100_000
        files = [p for p in (tmp_path / "store" / "data").rglob("*") if p.is_file()]
        assert len(files) == 1
        assert store._owns_file(files[0].name)
    finally:
        store.close()
