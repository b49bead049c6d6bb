"""Readers and writers of one key at once, in one process: what the memory tier keeps.

A reader's copy from a slower tier is conditional on the key's epoch (read before the slower
tier): it loses to any write, delete or other copy made meanwhile. A write's copy that loses
removes the key (its value may be older than the one in place); a reader's copy that loses
leaves the winner's (`MemoryStore.copy_in`), so readers of a cold key at once leave one copy
in memory rather than none (before: none in 3 of 5 trials over disk, 5 of 5 over S3).
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._tiers import store_of
from tiers import Cache, DiskStore, MemoryStore, ObjectStore
from tiers._stores import Entry

THREADS = 8


def _entry(body: bytes) -> Entry:
    return Entry(body, b"", 1.0)


def _body(entry: Entry | None) -> bytes | None:
    return None if entry is None else bytes(entry.value)


# -- MemoryStore.copy_in -----------------------------------------------------------------------


def test_a_copy_with_the_current_epoch_is_stored() -> None:
    store = MemoryStore()
    epoch = store.epoch("k")
    assert store.copy_in("k", _entry(b"copy"), epoch) is True
    assert _body(store.get("k")) == b"copy"


def test_a_copy_that_lost_to_a_write_leaves_the_write() -> None:
    store = MemoryStore()
    epoch = store.epoch("k")
    store.set("k", _entry(b"written"))
    assert store.copy_in("k", _entry(b"older copy"), epoch) is False
    assert _body(store.get("k")) == b"written"


def test_a_copy_that_lost_to_another_copy_leaves_the_first() -> None:
    store = MemoryStore()
    epoch = store.epoch("k")
    assert store.copy_in("k", _entry(b"first"), epoch) is True
    assert store.copy_in("k", _entry(b"second"), epoch) is False
    assert _body(store.get("k")) == b"first"


def test_a_copy_that_lost_to_a_delete_stays_out() -> None:
    store = MemoryStore()
    store.set("k", _entry(b"old"))
    epoch = store.epoch("k")
    store.delete("k")
    assert store.copy_in("k", _entry(b"old"), epoch) is False
    assert store.get("k") is None


def test_a_write_that_lost_removes_the_key_as_before() -> None:
    """The contrast: `set` with an outdated epoch removes what is there (a write's value may
    be older than the one in place, so neither is kept)."""
    store = MemoryStore()
    epoch = store.epoch("k")
    assert store.copy_in("k", _entry(b"copy"), epoch) is True
    assert store.set("k", _entry(b"write"), epoch=epoch) is False
    assert store.get("k") is None


def test_a_subclass_that_overrides_set_gets_set() -> None:
    calls: list[bytes] = []

    class Recording(MemoryStore):
        def set(self, key: str, entry: Any, epoch: int | None = None) -> bool:  # type: ignore[override]
            calls.append(bytes(entry.value))
            return super().set(key, entry, epoch)

    store = Recording()
    epoch = store.epoch("k")
    assert store.copy_in("k", _entry(b"a"), epoch) is True
    assert calls == [b"a"]
    assert asyncio.run(store.copy_in_async("k", _entry(b"b"), epoch)) is False
    assert calls == [b"a", b"b"]
    assert store.get("k") is None  # set's rule: the loser removes


def test_copy_in_validates_times_like_set() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError):
        store.copy_in("k", Entry(b"v", b"", float("nan")), store.epoch("k"))
    assert store.get("k") is None


# -- readers of a cold key at once -------------------------------------------------------------


@pytest.fixture(params=["disk", "s3"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cache]:
    if request.param == "disk":
        slow: Any = DiskStore(tmp_path / "disk")
    else:
        server = request.getfixturevalue("moto_s3")
        slow = ObjectStore(f"s3://{server.new_bucket()}/c", **server.store_options())
    cache = Cache(MemoryStore(), slow, serializer="json")
    yield cache
    cache.close()


def _in_memory(cache: Cache, key: str) -> bool:
    return store_of(cache).get(cache._key(key)) is not None


def _cold(cache: Cache, key: str, value: Any) -> None:
    """`key` = `value` in the slower tier only."""
    cache.set(key, value)
    assert _in_memory(cache, key)
    store_of(cache).delete(cache._key(key))
    assert not _in_memory(cache, key)


def test_threads_reading_a_cold_key_at_once_leave_it_in_memory(stack: Cache) -> None:
    for trial in range(5):
        key = f"cold{trial}"
        _cold(stack, key, {"trial": trial})
        barrier = threading.Barrier(THREADS)
        got: list[Any] = []

        def read(key: str, barrier: threading.Barrier, got: list[Any]) -> None:
            barrier.wait()
            got.append(stack.get(key))

        threads = [threading.Thread(target=read, args=(key, barrier, got)) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert got == [{"trial": trial}] * THREADS
        assert _in_memory(stack, key), f"trial {trial}: no copy in memory"


def test_coroutines_reading_a_cold_key_at_once_leave_it_in_memory(stack: Cache) -> None:
    async def scenario() -> None:
        for trial in range(5):
            key = f"cold{trial}"
            _cold(stack, key, [trial])
            got = await asyncio.gather(*(stack.get_async(key) for _ in range(THREADS)))
            assert got == [[trial]] * THREADS
            assert _in_memory(stack, key), f"trial {trial}: no copy in memory"

    asyncio.run(scenario())


# -- readers and writers at once: memory never keeps what the slower tier no longer holds ------


@pytest.mark.parametrize("seed", range(2))
def test_memory_agrees_with_disk_after_readers_and_writers_race(seed: int, tmp_path: Path) -> None:
    """300 rounds: 4 threads start together on one key — two set it, one deletes or drops
    the memory copy, one reads — then, all stopped, the memory copy (if any) must be the
    disk's value. Without cross-process coherence: in one process, epochs alone keep the
    tiers in step. (A losing write that kept the copy in place failed it.)"""
    cache = Cache(MemoryStore(), DiskStore(tmp_path / "d"), serializer="json", coherence="none")
    disk_only = Cache(DiskStore(tmp_path / "d"), serializer="json")
    rounds, workers = 300, 4
    start, done = threading.Barrier(workers + 1), threading.Barrier(workers + 1)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        rng = random.Random(seed * 10 + n)
        for i in range(rounds):
            start.wait()
            try:
                if n < 2:
                    cache.set("k", [n, i])
                elif n == 2:
                    if rng.random() < 0.3:
                        cache.delete("k")
                    else:
                        store_of(cache).delete(cache._key("k"))  # cold again: readers copy
                else:
                    cache.get("k")
            except BaseException as exc:  # reported below
                errors.append(exc)
            done.wait()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # more interleavings inside each call
    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(workers)]
    try:
        for thread in threads:
            thread.start()
        for i in range(rounds):
            start.wait(30)
            done.wait(30)
            assert errors == []
            assert cache.get("k") == disk_only.get("k"), f"round {i}"
    except BaseException:
        start.abort()  # the workers stop at their next wait
        done.abort()
        raise
    finally:
        sys.setswitchinterval(interval)
        for thread in threads:
            thread.join(10)
        cache.close()
        disk_only.close()
