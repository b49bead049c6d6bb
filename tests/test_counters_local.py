"""Atomic counters (`Cache.incr`/`decr`) on the stores of one host: a DiskStore, a FolderStore,
and a memory tier over a DiskStore (the default stack), whose counter tier is the disk.

No increment is lost among processes times threads (each value `incr` returns is returned
once), the rules hold (decr, ``default=None``, values that are not ints, expiry), and a memory
tier never serves a counter another process has incremented since. The child processes run
tests/_counter_workers.py, started with ``spawn``; every child has a timeout and none outlives
its test.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from tests._processes import running
from tiers import Cache, FolderStore, MemoryStore
from tiers._stores import Entry
from tiers._stores._folder import _entry_dir as dirs
from tiers._stores._folder._metadata import Metadata, checksum, encode
from tiers._stores._folder._naming import data_file, entry_dir
from tiers.testing import FakeClock

from . import _counter_workers as workers
from ._tiers import install_clock

SPAWN = multiprocessing.get_context("spawn")
PROCESSES, THREADS, INCREMENTS = 4, 8, 1000
FOLDER_INCREMENTS = 250  # per thread in make test (every FolderStore write renames a file)


@pytest.fixture(params=workers.KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def shared(kind: str, tmp_path: Path) -> str:
    """The shared store's path, created up front (so no child races to create it)."""
    path = str(tmp_path / "store")
    workers.closed(workers.open_cache(kind, path))
    return path


@pytest.fixture
def cache(kind: str, shared: str) -> Iterator[Cache]:
    opened = workers.open_cache(kind, shared)
    yield opened
    workers.closed(opened)


def finished(
    procs: Sequence[BaseProcess], outs: list[Path], timeout: float
) -> list[dict[str, Any]]:
    """The reports of processes that all exited cleanly within `timeout` seconds each."""
    for p in procs:
        p.join(timeout=timeout)
        assert p.exitcode == 0, f"a worker exited with {p.exitcode}"
    return [json.loads(out.read_text()) for out in outs]


def counted_by_a_fresh_cache(kind: str, shared: str) -> Any:
    reader = workers.open_cache(kind, shared)
    try:
        return reader.get(workers.COUNTER)
    finally:
        workers.closed(reader)


# -- the rules, in one process ---------------------------------------------------------------


def test_incr_and_decr_count_from_the_default(kind: str, shared: str, cache: Cache) -> None:
    """A missing counter starts at `default`; incr and decr add and subtract `delta`; the
    count is in the store, for another cache to read."""
    assert cache.incr("n") == 1
    assert cache.incr("n", 5) == 6
    assert cache.decr("n") == 5
    assert cache.decr("n", 10) == -5
    assert cache.get("n") == -5
    assert cache.incr("other", default=100) == 101
    assert cache.decr("down", 3, default=10) == 7
    reader = workers.open_cache(kind, shared)
    try:
        assert (reader.get("n"), reader.get("other"), reader.get("down")) == (-5, 101, 7)
    finally:
        workers.closed(reader)


def test_a_missing_counter_without_a_default_is_a_key_error(cache: Cache) -> None:
    """``default=None``: KeyError for a missing counter, which stays missing; an existing
    one counts on."""
    with pytest.raises(KeyError):
        cache.incr("n", default=None)
    with pytest.raises(KeyError):
        cache.decr("n", default=None)
    assert cache.has("n") is False
    cache.set("n", 41)
    assert cache.incr("n", default=None) == 42


@pytest.mark.parametrize("value", ["text", 1.5, True, None, [1]])
def test_a_value_that_is_not_an_int_is_a_type_error_and_stays(cache: Cache, value: Any) -> None:
    """incr of a value that is not an int (bool included) is a TypeError; the value stays."""
    cache.set("v", value)
    with pytest.raises(TypeError, match="not an int"):
        cache.incr("v")
    with pytest.raises(TypeError, match="not an int"):
        cache.decr("v")
    assert cache.get("v", "missing") == value


def test_ttl_applies_when_a_counter_is_created_and_never_after(cache: Cache) -> None:
    """`ttl` sets the expiry of a counter it creates; increments keep that expiry, whatever
    their `ttl`; an expired counter starts again from the default."""
    clock = FakeClock()
    install_clock(cache, clock)
    start = clock.time()
    assert cache.incr("t", ttl=10) == 1
    assert expiry(cache, "t") == pytest.approx(start + 10)
    clock.advance(6)
    assert cache.incr("t", ttl=1000) == 2
    assert cache.decr("t", ttl=None) == 1
    assert expiry(cache, "t") == pytest.approx(start + 10)
    clock.advance(5)
    assert cache.get("t") is None
    assert cache.incr("t") == 1  # from the default, with the cache's ttl (none)
    assert expiry(cache, "t") is None


def expiry(cache: Cache, key: str) -> float | None:
    """The counter's expiry in epoch seconds (None: never)."""
    info = cache.info(key)
    assert info is not None, f"{key!r} is missing"
    return None if info.expires_at is None else info.expires_at.timestamp()


def test_folder_update_rewrites_the_entry_folder_in_place(tmp_path: Path) -> None:
    """A FolderStore update of an existing entry rewrites its folder in place (the same
    folder, left holding metadata.json and the new data file); a folder that is missing,
    or whose new data file's name is taken, is written as `set` writes it."""
    store = FolderStore(tmp_path / "store")
    try:
        store.set("k", Entry(b"1"))
        folder = store.directory / entry_dir("k")
        inode = folder.stat().st_ino
        assert store.update("k", lambda e: Entry(b"2" if e and e.value == b"1" else b"?"))
        assert folder.stat().st_ino == inode
        assert len(list(folder.iterdir())) == 2
        assert value_of(store, "k") == b"2"
        root_fd = os.open(store.directory, os.O_RDONLY)
        try:
            taken = next(p.name for p in folder.iterdir() if p.name != "metadata.json")
            dirs.rewrite(root_fd, entry_dir("k"), taken, b"3", metadata("k", taken, b"3"))
            fresh = data_file(b"")
            dirs.rewrite(root_fd, entry_dir("new"), fresh, b"4", metadata("new", fresh, b"4"))
        finally:
            os.close(root_fd)
        assert (value_of(store, "k"), value_of(store, "new")) == (b"3", b"4")
        assert sorted(p.name for p in folder.iterdir()) == sorted([taken, "metadata.json"])
    finally:
        store.close()


def value_of(store: FolderStore, key: str) -> bytes:
    got = store.get(key)
    assert got is not None, f"{key!r} is missing"
    return bytes(got.value)


def metadata(key: str, data: str, body: bytes) -> bytes:
    """metadata.json of an entry of `key` whose value `body` is in data file `data`."""
    return encode(Metadata(key, b"", 0.0, None, (), None, data, len(body), checksum(body)))


# -- processes ------------------------------------------------------------------------------


@pytest.mark.slow
def test_processes_and_threads_lose_no_increment(kind: str, shared: str, tmp_path: Path) -> None:
    """4 processes x 8 threads x 1,000 incr of one counter: every value from 1 to 32,000 is
    returned once, and a fresh cache reads 32,000. (A FolderStore, ~900 increments/s: 250
    each here, 1,000 in the soak below.)"""
    _count_everywhere(kind, shared, tmp_path, FOLDER_INCREMENTS if kind == "folder" else INCREMENTS)


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_processes_and_threads_lose_no_increment_on_a_folder_soak(tmp_path: Path) -> None:
    """The full 4 x 8 x 1,000 on a FolderStore (~35 s)."""
    shared = str(tmp_path / "store")
    workers.closed(workers.open_cache("folder", shared))
    _count_everywhere("folder", shared, tmp_path, INCREMENTS)


def _count_everywhere(kind: str, shared: str, tmp_path: Path, increments: int) -> None:
    barrier = SPAWN.Barrier(PROCESSES)
    outs = [tmp_path / f"out{i}.json" for i in range(PROCESSES)]
    procs = [
        SPAWN.Process(
            target=workers.count,
            args=(kind, shared, barrier, THREADS, increments, str(out)),
        )
        for out in outs
    ]
    with running(*procs):
        reports = finished(procs, outs, timeout=540)
    total = PROCESSES * THREADS * increments
    assert [r["errors"] for r in reports] == [[]] * PROCESSES
    returned = sorted(value for r in reports for value in r["values"])
    assert returned == list(range(1, total + 1))
    assert counted_by_a_fresh_cache(kind, shared) == total
    seconds = max(r["seconds"] for r in reports)
    print(f"\n{kind}: {total} increments in {seconds:.1f} s, {total / seconds:,.0f}/s")


def test_coroutines_and_threads_of_two_processes_lose_no_increment(
    kind: str, shared: str, tmp_path: Path
) -> None:
    """incr_async from 8 coroutines x 100 in one process, incr from 4 threads x 200 in
    another, at once: 1 to 1,600, each once."""
    barrier = SPAWN.Barrier(2)
    outs = [tmp_path / "async.json", tmp_path / "threads.json"]
    procs = [
        SPAWN.Process(
            target=workers.count_async, args=(kind, shared, barrier, 8, 100, str(outs[0]))
        ),
        SPAWN.Process(target=workers.count, args=(kind, shared, barrier, 4, 200, str(outs[1]))),
    ]
    with running(*procs):
        reports = finished(procs, outs, timeout=120)
    assert [r["errors"] for r in reports] == [[], []]
    assert [len(r["values"]) for r in reports] == [800, 800]
    assert sorted(value for r in reports for value in r["values"]) == list(range(1, 1601))
    assert counted_by_a_fresh_cache(kind, shared) == 1600


def test_a_memory_copy_never_hides_another_process_increment(tmp_path: Path) -> None:
    """Memory over disk: a process whose memory tier holds the counter (it read it) reads
    the new count at once after another process increments it, both ways round."""
    shared = str(tmp_path / "store")
    cache = workers.open_cache("memory+disk", shared)
    memory = cache._tiers[0].store
    assert isinstance(memory, MemoryStore)
    parent, child = SPAWN.Pipe()
    other = SPAWN.Process(target=workers.serve, args=("memory+disk", shared, child))
    try:
        with running(other):
            assert cache.incr(workers.COUNTER) == 1
            for expected in range(2, 12, 2):
                assert cache.get(workers.COUNTER) == expected - 1
                assert memory.count() == 1  # the read put the counter in this memory tier
                parent.send("incr")
                assert parent.poll(60), "the other process did not answer"
                assert parent.recv() == expected
                assert cache.get(workers.COUNTER) == expected  # not the memory copy
                parent.send("get")  # now the other process reads (and keeps) it...
                assert parent.poll(60)
                assert parent.recv() == expected
                assert cache.incr(workers.COUNTER) == expected + 1  # ...and this one increments
                parent.send("get")
                assert parent.poll(60)
                assert parent.recv() == expected + 1
            parent.send("stop")
            other.join(timeout=60)
            assert other.exitcode == 0
    finally:
        workers.closed(cache)
