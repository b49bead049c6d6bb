"""DiskStore guarantees, numbered as in docs/reliability.md: a crash loses nothing written (1),
damage is a counted miss (2), nothing outside the root (3: no symlink followed, directories 0700;
also files 0600 and a directory of another user or a non-empty foreign one refused), a full disk
is a `StoreFullError` and writes resume (4); and, beyond those: processes and threads writing one
store lose and garble no value and see no lock error, and `max_size` counts everything on disk
and every eviction. Real processes, real files, a real tmpfs; nothing is mocked."""

from __future__ import annotations

import errno
import multiprocessing
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tiers
from tests._disk_workers import check_value, entry, make_value, writer_forever
from tiers import DiskStore
from tiers.errors import StoreFullError, StorePermissionError, TiersError

KILLS = int(os.environ.get("TIERS_KILLS", "120"))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="uses fork, /proc and tmpfs")


def value_files(store_dir: Path) -> list[Path]:
    return [p for p in (store_dir / "data").rglob("*") if p.is_file()]


def assert_consistent(store: DiskStore, keys: int) -> int:
    """Every key reads as a right value or a miss; return how many were present."""
    present = 0
    for n in range(keys):
        key = f"k{n}"
        got = store.get(key)
        if got is not None:
            check_value(key, got.value)
            assert got.header == b"H"
            present += 1
    return present


def assert_no_leftovers(store: DiskStore) -> None:
    root = store.directory
    assert list((root / "tmp").iterdir()) == [], "temp files left behind"
    for path in value_files(root):
        assert store._owns_file(path.name), f"orphan value file {path.name}"


# -- kill -9 -------------------------------------------------------------------------------


@linux_only
@pytest.mark.slow
def test_kill_9_during_writes_never_corrupts(store_dir: Path) -> None:
    """≥100 writers killed with SIGKILL at random moments while writing 10 B-2 MB values:
    the store always opens, every read is the right value or a miss, nothing is left over."""
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(1234)
    DiskStore(store_dir).close()
    seen_present = torn_writes = 0
    for _round in range(KILLS):
        read_fd, write_fd = os.pipe()
        child = ctx.Process(target=writer_forever, args=(str(store_dir), 12, write_fd))
        child.start()
        os.close(write_fd)
        try:
            assert os.read(read_fd, 1) == b"1", "writer did not start"
            time.sleep(rng.uniform(0.0, 0.08))
        finally:
            os.close(read_fd)
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)
        assert child.exitcode == -signal.SIGKILL
        torn_writes += bool(list((store_dir / "tmp").iterdir()))
        store = DiskStore(store_dir)
        try:
            seen_present += assert_consistent(store, 12)
            assert_no_leftovers(store)
            stats = store.stats()
            assert stats.items == store.count()
        finally:
            store.close()
    assert seen_present > 0, "the writers never managed to store anything"
    assert torn_writes > 0, "no kill landed in the middle of a file write"


# -- corruption ------------------------------------------------------------------------------


@pytest.fixture
def filled(store_dir: Path) -> Iterator[DiskStore]:
    store = DiskStore(store_dir)
    for n in range(6):
        store.set(f"k{n}", entry(make_value(f"k{n}", n, 100_000)))  # in files
    for n in range(6, 12):
        store.set(f"k{n}", entry(make_value(f"k{n}", n, 500)))  # inline
    yield store
    store.close()


def file_of(store: DiskStore, key: str) -> Path:
    found = store._lookup(key)
    assert found is not None and found[3].file_name is not None
    return store._layout.data_path(found[3].file_name)


def test_bit_flip_in_value_file_is_a_counted_miss(filled: DiskStore) -> None:
    path = file_of(filled, "k1")
    data = bytearray(path.read_bytes())
    data[5000] ^= 0x10
    path.write_bytes(bytes(data))
    before = filled.stats().rejected
    assert filled.get("k1") is None
    assert filled.stats().rejected == before + 1
    assert not path.exists() and filled.info("k1") is None  # removed
    assert_consistent(filled, 12)


def test_truncated_value_file_is_a_counted_miss(filled: DiskStore) -> None:
    path = file_of(filled, "k2")
    os.truncate(path, 1234)
    assert filled.get("k2") is None
    assert filled.stats().rejected == 1
    assert filled.info("k2") is None


def test_swapped_value_files_are_misses(filled: DiskStore) -> None:
    a, b = file_of(filled, "k3"), file_of(filled, "k4")
    tmp = a.with_name("swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    assert filled.get("k3") is None
    assert filled.get("k4") is None
    assert filled.stats().rejected == 2
    assert_consistent(filled, 12)


def test_missing_value_file_is_a_counted_miss(filled: DiskStore) -> None:
    file_of(filled, "k5").unlink()
    assert filled.get("k5") is None
    assert filled.stats().rejected == 1


def _patch_index(store_dir: Path, needle: bytes, flip_at: int) -> None:
    for data in (store_dir / "index").glob("*/log.*"):
        raw = bytearray(data.read_bytes())
        at = raw.find(needle)
        if at >= 0:
            raw[at + flip_at] ^= 0x01
            data.write_bytes(bytes(raw))
            return
    raise AssertionError("record not found in any index shard")


def test_damaged_record_in_index_is_a_counted_miss(filled: DiskStore, store_dir: Path) -> None:
    needle = make_value("k7", 7, 500)[:40]
    filled.close()
    _patch_index(store_dir, needle, 200)  # inside the inline value
    store = DiskStore(store_dir)
    try:
        assert store.get("k7") is None
        assert store.stats().rejected == 1
        assert store.info("k7") is None
        assert_consistent(store, 12)
        store.set("k7", entry(make_value("k7", 70, 500)))
        check_value("k7", store.get("k7").value)  # type: ignore[union-attr]
    finally:
        store.close()


def test_damaged_index_file_is_rebuilt(filled: DiskStore, store_dir: Path) -> None:
    filled.close()
    tables = sorted((store_dir / "index").glob("*/table"))
    for table in tables:  # the header and the first slots of every table: unusable files
        with open(table, "r+b") as handle:
            handle.write(os.urandom(8192))
    store = DiskStore(store_dir)
    try:
        present = assert_consistent(store, 12)
        assert present < 12 or store.stats().rejected >= 1
        assert store.stats().rejected >= 1, "the damaged shard was not counted"
        store.set("after", entry(make_value("after", 1, 100)))
        assert store.get("after") is not None
        assert_no_leftovers(store)
    finally:
        store.close()


def test_random_index_damage_never_raises(filled: DiskStore, store_dir: Path) -> None:
    """Random byte damage anywhere in the index: reads are right or misses, writes work."""
    filled.close()
    rng = random.Random(7)
    for data in sorted(p for p in (store_dir / "index").glob("*/*") if p.is_file()):
        raw = bytearray(data.read_bytes())
        for _ in range(8 if raw else 0):
            at = rng.randrange(len(raw))
            raw[at] ^= 1 << rng.randrange(8)
        data.write_bytes(bytes(raw))
    store = DiskStore(store_dir)
    try:
        assert_consistent(store, 12)
        for n in range(12):
            store.set(f"k{n}", entry(make_value(f"k{n}", 100 + n, 300)))
        assert assert_consistent(store, 12) == 12
    finally:
        store.close()


# -- disk full ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [300_000, 2_000], ids=["files", "inline"])
def test_disk_full_raises_store_full_and_recovers(tiny_disk: Path, size: int) -> None:
    store = DiskStore(tiny_disk / "store")
    stored = []
    with pytest.raises(StoreFullError) as caught:
        for n in range(10_000):
            key = f"k{n}"
            store.set(key, entry(make_value(key, n, size)))
            stored.append(key)
    error = caught.value
    assert isinstance(error, TiersError) and isinstance(error, OSError)
    assert error.errno == errno.ENOSPC
    assert stored, "nothing fit at all"
    assert_no_leftovers(store)
    for key in stored[:: max(1, len(stored) // 20)]:
        check_value(key, store.get(key).value)  # type: ignore[union-attr]
    assert store.delete(stored[0]) is True
    assert store.clear() == len(stored) - 1
    assert store.count() == 0
    store.set("again", entry(make_value("again", 1, size)))  # writes resume
    check_value("again", store.get("again").value)  # type: ignore[union-attr]
    assert_no_leftovers(store)
    store.close()


def test_disk_full_through_cache(tiny_disk: Path) -> None:
    """Through a Cache: "raise" gives StoreFullError, "degrade" keeps the memory tier."""
    raising = tiers.Cache(tiers.DiskStore(tiny_disk / "a"), on_tier_error="raise")
    with pytest.raises(StoreFullError):
        for n in range(100):
            raising.set(f"k{n}", os.urandom(400_000))
    raising.clear()
    raising.close()
    degrading = tiers.Cache(tiers.MemoryStore(), tiers.DiskStore(tiny_disk / "b"))
    for n in range(30):
        degrading.set(f"k{n}", os.urandom(400_000))
    assert all(degrading.get(f"k{n}") is not None for n in range(30))
    assert degrading.stats().tiers[1].errors > 0
    degrading.close()


# -- directories, permissions, symlinks ------------------------------------------------------


def test_modes_are_0700_and_0600_whatever_the_umask(store_dir: Path) -> None:
    old = os.umask(0)
    try:
        store = DiskStore(store_dir)
        store.set("small", entry(b"x" * 100))
        store.set("large", entry(b"y" * 100_000))
        store.close()
    finally:
        os.umask(old)
    for path in [store_dir, *store_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {mode:o}"


@pytest.mark.skipif(not IS_ROOT, reason="needs root to give the directory to another user")
def test_directory_of_another_user_is_refused(store_dir: Path) -> None:
    store_dir.mkdir()
    os.chown(store_dir, 65534, 65534)
    with pytest.raises(StorePermissionError, match="another user"):
        DiskStore(store_dir)


def test_non_empty_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "project.txt").write_text("mine")
    with pytest.raises(StorePermissionError, match="not a tiers store"):
        DiskStore(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project.txt"]


def test_symlinked_subdirectory_is_never_written_through(store_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = DiskStore(store_dir)
    store.close()
    data = store_dir / "data"
    os.rename(data, tmp_path / "moved-data")
    os.symlink(outside, data)
    with pytest.raises(StorePermissionError):  # opening refuses a symlinked directory
        DiskStore(store_dir)
    assert list(outside.iterdir()) == []


def test_symlink_swapped_in_while_open_is_not_followed(store_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = DiskStore(store_dir)
    os.rename(store_dir / "data", tmp_path / "moved-data")
    os.symlink(outside, store_dir / "data")
    with pytest.raises(TiersError):
        store.set("big", entry(b"z" * 200_000))
    assert list(outside.rglob("*")) == [], "a write followed the symlink"
    store.close()


def test_symlinked_root_is_used_where_it_points(tmp_path: Path) -> None:
    real = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    real.mkdir()
    store = DiskStore(link)
    store.set("k", entry(b"v" * 10))
    assert store.directory == real.resolve()
    store.close()
    assert (real / "tiers-store.json").exists()


# -- many processes --------------------------------------------------------------------------


@pytest.mark.slow
def test_processes_and_threads_hammering_64_keys(store_dir: Path, tmp_path: Path) -> None:
    """4 processes x 4 threads mixing set/get/delete on 64 keys: no garbled or foreign values,
    no lock errors reaching a caller."""
    DiskStore(store_dir).close()
    worker = Path(__file__).with_name("_disk_workers.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = []
    for writer in range(4):
        errors = tmp_path / f"errors-{writer}.txt"
        cmd = [sys.executable, str(worker), "hammer", str(store_dir), str(writer), "4", "1500",
               "64", str(errors)]  # fmt: skip
        procs.append((subprocess.Popen(cmd, env=env), errors))
    for proc, errors in procs:
        try:
            assert proc.wait(timeout=240) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        assert errors.read_text() == "ok 6000", errors.read_text()[:2000]
    store = DiskStore(store_dir)
    try:
        assert_consistent(store, 64)
        assert_no_leftovers(store)
        assert store.stats().items == store.count()
    finally:
        store.close()


# -- size limit ------------------------------------------------------------------------------


def test_max_size_counts_everything_and_every_eviction(store_dir: Path) -> None:
    limit = 2_000_000
    store = DiskStore(store_dir, max_size=limit)
    written = 0
    for n in range(240):
        size = (500, 20_000, 90_000)[n % 3]
        store.set(f"k{n}", entry(make_value(f"k{n}", n, size)))
        written += size
    stats = store.stats()
    assert written > 3 * limit
    assert stats.bytes <= limit
    on_disk = sum(p.stat().st_size for p in value_files(store_dir))
    assert on_disk <= stats.bytes
    assert stats.evictions > 0
    assert stats.evictions + stats.items == 240  # nothing vanished uncounted
    assert store.get("k239") is not None  # the newest survives
    assert store.set("huge", entry(b"h" * (limit + 1))) is False
    assert store.stats().rejected == 1
    store.close()
