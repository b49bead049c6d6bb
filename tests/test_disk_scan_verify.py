"""DiskStore `scan`, usage counters and `verify`, on real files and real processes.

scan: every entry present with its metadata (expired ones too), filters, reads recorded by the
LRU order, and no crash while another process writes. Usage: adds from several processes sum
exactly, reset zeroes everything, a damaged or planted counters file reads as zeros. verify:
each kind of damage the guarantees tests make is found, fixed, and gone on a second run, and
the untouched entries still read back; random damage never makes it raise; a store another
process is writing to is not reported as damaged.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests._disk_workers import check_value, entry, make_value, writer_forever
from tests.test_disk_guarantees import _patch_index, file_of
from tiers import DiskStore
from tiers._stores._disk import _format as fmt
from tiers._stores._disk import _store as disk_store
from tiers._stores._disk._verify_files import GRACE_SECONDS
from tiers.protocol import (
    DAMAGE_KINDS,
    Damage,
    Entry,
    SupportsScan,
    SupportsUsage,
    SupportsVerify,
    Usage,
)
from tiers.testing import FakeClock

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="uses fork")
KEYS = 12  # k0..k5: values in files of their own; k6..k11: inline
OLD = time.time() - 2 * GRACE_SECONDS  # a modification time past the grace period


def _value(n: int) -> bytes:
    return make_value(f"k{n}", n, 100_000 if n < 6 else 500)


@pytest.fixture
def filled(store_dir: Path) -> Iterator[DiskStore]:
    store = DiskStore(store_dir)
    for n in range(KEYS):
        store.set(f"k{n}", entry(_value(n)))
    yield store
    store.close()


def _reopened(store: DiskStore) -> DiskStore:
    store.close()
    return DiskStore(store.directory)


def _assert_intact(store: DiskStore, spared: set[str]) -> None:
    """Every key reads as its value or a miss; those in `spared` read as their value."""
    for n in range(KEYS):
        key = f"k{n}"
        got = store.get(key)
        if got is None:
            assert key not in spared, f"{key} was lost"
            continue
        check_value(key, got.value)
        assert got.value == _value(n)


def _verify_and_fix(store: DiskStore, expected: set[str]) -> list[Damage]:
    """verify() finds problems of the `expected` kinds (and only those); verify(fix=True)
    finds and fixes them; a second verify() finds nothing."""
    found = list(store.verify())
    assert {d.problem for d in found} == expected, found
    assert all(not d.fixed and d.problem in DAMAGE_KINDS for d in found)
    fixed = list(store.verify(fix=True))
    assert {d.problem for d in fixed} == expected, fixed
    assert all(d.fixed for d in fixed)
    assert list(store.verify()) == []
    return fixed


# -- scan -----------------------------------------------------------------------------------------


def test_the_capabilities_are_found(store_dir: Path) -> None:
    store = DiskStore(store_dir)
    assert isinstance(store, SupportsScan)
    assert isinstance(store, SupportsUsage)
    assert isinstance(store, SupportsVerify)
    store.close()


def test_scan_gives_every_entry_with_its_metadata(store_dir: Path) -> None:
    store = DiskStore(store_dir)
    store.clock = FakeClock(start=1_000_000.0)
    long_key = "λ" * 300  # longer than an index key: kept whole in the record
    planted = {
        "plain": Entry(b"v" * 10, b"H1", 10.0, None, (), None, 10),
        "tagged": Entry(b"t" * 50, b"H2", 11.0, 2_000_000.0, ("a", "b"), {"n": [1, 2]}, 50),
        "expired": Entry(b"e" * 20, b"H3", 12.0, 999_999.0, ("a",), None, 20),
        "large": Entry(os.urandom(70_000), b"H4", 13.0, None, ("big",), {"x": "y"}, 70_000),
        "": Entry(b"empty key", b"", 14.0, None, (), None, 9),
        long_key: Entry(b"long", b"H5", 15.0, None, (), None, 4),
    }
    for key, one in planted.items():
        assert store.set(key, one)
    scanned = dict(store.scan())
    assert scanned.keys() == planted.keys()  # the expired entry too: it is still present
    for key, got in scanned.items():
        want = planted[key]
        assert got.value is None
        assert (got.header, got.created_at, got.expires_at) == (
            want.header, want.created_at, want.expires_at,
        )  # fmt: skip
        assert (got.tags, got.meta) == (want.tags, want.meta)
        assert got.size == len(want.value) + len(want.header)
        assert got.accessed_at is None  # (no max_size: reads are not recorded)
        info = store.info(key)
        if key != "expired":
            assert info is not None and info.size == got.size
    assert store.get("expired") is None  # (a read removes it; scan never does)
    assert "expired" not in dict(store.scan())
    store.close()


def test_scan_filters_by_prefix_and_tag(store_dir: Path) -> None:
    store = DiskStore(store_dir)
    for n in range(200):
        tags = ("even",) if n % 2 == 0 else ()
        store.set(f"{'user' if n < 120 else 'item'}:{n}", entry(b"x" * (n % 7)))
        if tags:
            store.set(f"tagged:{n}", Entry(b"y", b"H", 0.0, None, tags, None, 1))
    assert sorted(k for k, _ in store.scan("user:")) == sorted(f"user:{n}" for n in range(120))
    assert sorted(k for k, _ in store.scan("item:")) == sorted(f"item:{n}" for n in range(120, 200))
    assert sorted(k for k, _ in store.scan(tag="even")) == sorted(
        f"tagged:{n}" for n in range(0, 200, 2)
    )
    assert list(store.scan("tagged:", tag="odd")) == []
    assert sum(1 for _ in store.scan()) == 300
    store.close()


def test_scan_async_gives_what_scan_gives(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk_store, "SCAN_BATCH", 7)  # (read in a thread 7 at a time)
    store = DiskStore(store_dir)
    for n in range(50):
        store.set(f"k{n}", entry(b"v" * n))

    async def listed() -> list[str]:
        return [key async for key, _entry in store.scan_async("k1")]

    assert sorted(asyncio.run(listed())) == sorted(k for k, _ in store.scan("k1"))
    store.close()


def test_scan_gives_the_last_read_the_lru_order_counted(store_dir: Path) -> None:
    clock = FakeClock(start=1_000_000.0)
    store = DiskStore(store_dir, max_size="100MB")
    store.clock = clock
    store.set("read", entry(b"r" * 100))
    store.set("unread", entry(b"u" * 100))
    clock.advance(30)
    assert store.get("read") is not None
    store = _reopened(store)  # (closing writes the batched LRU moves)
    scanned = dict(store.scan())
    assert scanned["read"].accessed_at == pytest.approx(1_000_030.0)
    assert scanned["unread"].accessed_at is None
    store.close()


def test_scan_streams_shard_by_shard(store_dir: Path) -> None:
    """The first entries come before the last shards are read: removing a shard's table
    after the first entry was given changes what the rest of the scan finds."""
    store = DiskStore(store_dir)
    for n in range(400):
        store.set(f"k{n}", entry(b"v"))
    scan = store.scan()
    next(scan)
    store.clear()
    rest = [key for key, _entry in scan]
    assert len(rest) < 399
    store.close()


@linux_only
def test_scan_while_another_process_writes(store_dir: Path) -> None:
    DiskStore(store_dir).close()
    ctx = multiprocessing.get_context("fork")
    read_fd, write_fd = os.pipe()
    child = ctx.Process(target=writer_forever, args=(str(store_dir), 40, write_fd))
    child.start()
    os.close(write_fd)
    store = DiskStore(store_dir)
    try:
        assert os.read(read_fd, 1) == b"1"
        scans = entries = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for key, got in store.scan():
                assert key in {f"k{n}" for n in range(40)}
                assert got.value is None and got.header == b"H" and got.tags == ("t",)
                assert got.meta is not None and got.size == got.meta["n"] + 1
                entries += 1
            scans += 1
        assert scans > 3 and entries > 0
    finally:
        os.close(read_fd)
        child.kill()
        child.join(10)
        store.close()


# -- usage counters -------------------------------------------------------------------------------


def _add_usage(path: str, times: int, done: multiprocessing.synchronize.Event) -> None:
    store = DiskStore(path)
    for _ in range(times):
        store.add_usage(Usage(hits=1, misses=2, sets=3, deletes=4, errors=5))
    store.close()
    done.set()


@linux_only
def test_usage_adds_from_four_processes_sum_exactly(store_dir: Path) -> None:
    DiskStore(store_dir).close()
    ctx = multiprocessing.get_context("fork")
    times = 300
    events = [ctx.Event() for _ in range(4)]
    children = [
        ctx.Process(target=_add_usage, args=(str(store_dir), times, done)) for done in events
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    store = DiskStore(store_dir)
    total = 4 * times
    got = store.usage()
    assert (got.hits, got.misses, got.sets, got.deletes, got.errors) == (
        total, 2 * total, 3 * total, 4 * total, 5 * total,
    )  # fmt: skip
    assert got.since is not None and abs(got.since - time.time()) < 300
    store.close()


def test_usage_since_and_reset(store_dir: Path) -> None:
    store = DiskStore(store_dir, max_size=300_000)
    clock = FakeClock(start=5_000.0)
    store.clock = clock
    assert store.usage() == Usage()
    store.add_usage(Usage())  # (nothing counted: no start either)
    assert store.usage().since is None
    store.add_usage(Usage(hits=2))
    clock.advance(10)
    store.add_usage(Usage(misses=1))
    assert store.usage() == Usage(hits=2, misses=1, since=5_000.0)
    for n in range(30):  # evictions (over max_size), expirations and rejected
        store.set(f"k{n}", entry(b"x" * 20_000))
    store.set("gone", Entry(b"g", b"H", 0.0, 5_011.0, (), None, 1))
    clock.advance(100)
    store.expire()
    assert store.set("huge", entry(b"h" * 400_000)) is False
    before = store.stats()
    assert before.evictions and before.expirations and before.rejected
    store.reset_usage()
    after = store.stats()
    assert (after.evictions, after.expirations, after.rejected) == (0, 0, 0)
    assert (after.items, after.bytes) == (before.items, before.bytes)
    assert store.usage() == Usage()
    clock.advance(5)
    store.add_usage(Usage(sets=1))
    assert store.usage() == Usage(sets=1, since=5_115.0)
    store.close()


def test_usage_async_twins(store_dir: Path) -> None:
    store = DiskStore(store_dir)

    async def run() -> Usage:
        await store.add_usage_async(Usage(hits=7))
        await store.add_usage_async(Usage(deletes=1))
        first = await store.usage_async()
        await store.reset_usage_async()
        assert await store.usage_async() == Usage()
        return first

    got = asyncio.run(run())
    assert (got.hits, got.deletes) == (7, 1)
    store.close()


@pytest.mark.parametrize("bad", [Usage(hits=-1), Usage(errors=1.5)])  # type: ignore[arg-type]
def test_add_usage_refuses_bad_counts(store_dir: Path, bad: Usage) -> None:
    store = DiskStore(store_dir)
    with pytest.raises(ValueError, match="whole number"):
        store.add_usage(bad)
    with pytest.raises(TypeError):
        store.add_usage({"hits": 1})  # type: ignore[arg-type]
    assert store.usage() == Usage()
    store.close()


def _plant_garbage(path: Path) -> None:
    path.write_bytes(os.urandom(40))


def _plant_sparse_giant(path: Path) -> None:
    with open(path, "wb") as handle:
        handle.truncate(1 << 40)  # (a forged size: never read, never allocated)


def _plant_flipped(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[12] ^= 0x04
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage", [_plant_garbage, _plant_sparse_giant, _plant_flipped], ids=lambda f: f.__name__
)
def test_a_damaged_counters_file_reads_as_zeros(
    store_dir: Path, damage: Callable[[Path], None]
) -> None:
    store = DiskStore(store_dir)
    store.add_usage(Usage(hits=5))
    damage(store_dir / "usage")
    assert store.usage() == Usage()
    [found] = store.verify()
    assert (found.problem, found.location, found.key) == ("unreadable", "usage", None)
    assert found.size == (store_dir / "usage").stat().st_size
    [fixed] = store.verify(fix=True)
    assert fixed.fixed
    assert list(store.verify()) == []
    store.add_usage(Usage(hits=1))
    assert store.usage().hits == 1
    store.close()


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_a_link_planted_as_the_counters_file_is_never_written_through(
    store_dir: Path, tmp_path: Path, kind: str
) -> None:
    store = DiskStore(store_dir)
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious data\n")
    if kind == "symlink":
        (store_dir / "usage").symlink_to(outside)
    else:
        os.link(outside, store_dir / "usage")
    assert store.usage() == Usage()
    assert [d.problem for d in store.verify()] == ["unreadable"]
    store.add_usage(Usage(hits=3))
    assert store.usage().hits == 3
    assert outside.read_bytes() == b"precious data\n"
    assert not (store_dir / "usage").is_symlink()
    assert list(store.verify()) == []
    store.close()


# -- verify: each kind of damage ------------------------------------------------------------------


def test_a_sound_store_verifies_clean(filled: DiskStore) -> None:
    filled.set("expired", Entry(b"e", b"H", 0.0, 1.0, (), None, 1))
    filled.add_usage(Usage(hits=1))
    assert list(filled.verify()) == []
    assert list(filled.verify(fix=True)) == []
    _assert_intact(filled, {f"k{n}" for n in range(KEYS)})


def test_bit_flip_in_a_record(filled: DiskStore, store_dir: Path) -> None:
    filled.close()
    _patch_index(store_dir, make_value("k7", 7, 500)[:40], 200)  # (as the guarantees test)
    store = DiskStore(store_dir)
    [damage] = _verify_and_fix(store, {"checksum"})
    assert damage.location.startswith("index/") and "/log." in damage.location
    assert damage.size > 500
    assert store.info("k7") is None
    _assert_intact(store, {f"k{n}" for n in range(KEYS)} - {"k7"})
    store.close()


def test_bit_flip_in_a_value_file(filled: DiskStore) -> None:
    path = file_of(filled, "k1")
    data = bytearray(path.read_bytes())
    data[5000] ^= 0x10
    path.write_bytes(bytes(data))
    [damage] = _verify_and_fix(filled, {"checksum"})
    assert (damage.key, damage.size) == ("k1", 100_000)
    assert damage.location == f"data/{path.name[2:4]}/{path.name}"
    assert not path.exists() and filled.info("k1") is None
    _assert_intact(filled, {f"k{n}" for n in range(KEYS)} - {"k1"})


def test_truncated_value_file(filled: DiskStore) -> None:
    path = file_of(filled, "k2")
    os.truncate(path, 1234)
    [damage] = _verify_and_fix(filled, {"truncated"})
    assert (damage.key, damage.size) == ("k2", 1234)
    assert filled.stats().rejected == 1  # (removed as a read that met it would)
    _assert_intact(filled, {f"k{n}" for n in range(KEYS)} - {"k2"})


def test_deleted_value_file(filled: DiskStore) -> None:
    file_of(filled, "k5").unlink()
    [damage] = _verify_and_fix(filled, {"missing"})
    assert damage.key == "k5"
    _assert_intact(filled, {f"k{n}" for n in range(KEYS)} - {"k5"})


def test_a_value_file_swapped_for_a_symlink(filled: DiskStore, tmp_path: Path) -> None:
    path = file_of(filled, "k3")
    outside = tmp_path / "outside"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)
    [damage] = _verify_and_fix(filled, {"unreadable"})
    assert damage.key == "k3"
    assert outside.read_bytes() == _value(3)
    _assert_intact(filled, {f"k{n}" for n in range(KEYS)} - {"k3"})


def test_a_data_directory_swapped_for_a_symlink(filled: DiskStore, tmp_path: Path) -> None:
    path = file_of(filled, "k0")
    sub = path.parent
    outside = tmp_path / "outside"
    sub.rename(outside)  # (its files, the value of k0 among them, now outside the store)
    sub.symlink_to(outside, target_is_directory=True)
    os.utime(sub, (OLD, OLD), follow_symlinks=False)
    before = sorted(p.name for p in outside.iterdir())
    fixed = _verify_and_fix(filled, {"unreadable", "orphan"})
    assert ("k0", "unreadable") in {(d.key, d.problem) for d in fixed}
    assert (f"data/{sub.name}", "orphan") in {(d.location, d.problem) for d in fixed}
    assert not sub.is_symlink() and sorted(p.name for p in outside.iterdir()) == before
    assert filled.get("k0") is None


def test_orphan_files_past_the_grace_period(filled: DiskStore, tmp_path: Path) -> None:
    sub = filled.directory / "data" / "ab"
    sub.mkdir(exist_ok=True)
    orphan = sub / ("ab" * 21)
    orphan.write_bytes(b"o" * 777)
    young = sub / ("cd" * 21)
    young.write_bytes(b"y")  # (a write in flight, maybe: not damage yet)
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious data\n")
    link = filled.directory / "data" / "zz"
    link.symlink_to(outside)
    for path in (orphan, link):
        os.utime(path, (OLD, OLD), follow_symlinks=False)
    fixed = _verify_and_fix(filled, {"orphan"})
    assert {(d.location, d.size) for d in fixed} == {
        (f"data/ab/{orphan.name}", 777), ("data/zz", 0),
    }  # fmt: skip
    assert young.exists() and not orphan.exists() and not link.is_symlink()
    assert outside.read_bytes() == b"precious data\n"
    _assert_intact(filled, {f"k{n}" for n in range(KEYS)})


def test_temp_files_past_the_grace_period(filled: DiskStore) -> None:
    root = filled.directory
    old = root / "tmp" / ("ee" * 21)
    old.write_bytes(b"half a value")
    young = root / "tmp" / ("ff" * 21)
    young.write_bytes(b"being written")
    marker_tmp = root / ".tiers-store.json.123.abcdef012345.tmp"
    marker_tmp.write_bytes(b"{")
    new_table = root / "index" / "03" / "table.new"
    new_table.write_bytes(b"\0" * 4096)
    for path in (old, marker_tmp):
        os.utime(path, (OLD, OLD))
    fixed = _verify_and_fix(filled, {"temp"})
    assert {d.location for d in fixed} == {
        f"tmp/{old.name}", marker_tmp.name, "index/03/table.new",
    }  # fmt: skip
    assert young.exists() and not old.exists() and not new_table.exists()
    _assert_intact(filled, {f"k{n}" for n in range(KEYS)})


def _rewrite_header(store_dir: Path, shard: int, change: Callable[[fmt.Header], None]) -> None:
    table = store_dir / "index" / f"{shard:02x}" / "table"
    raw = bytearray(table.read_bytes())
    header = fmt.unpack_header(bytes(raw[: fmt.HEADER_SIZE]), shard)
    change(header)
    packed = fmt.pack_header(header)
    raw[: len(packed)] = packed
    table.write_bytes(bytes(raw))


def _shard_of(key: str) -> int:
    return fmt.key_hash(fmt.index_key(key)) % 8


def test_corrupted_header_totals(filled: DiskStore, store_dir: Path) -> None:
    filled.close()
    shard = _shard_of("k4")

    def corrupt(header: fmt.Header) -> None:
        header.items -= 2  # (a plausible header: one that does not is salvaged at open)
        header.live -= 100
        header.min_expires = 1e300

    _rewrite_header(store_dir, shard, corrupt)
    store = DiskStore(store_dir)
    wrong = store.stats().items
    [damage] = _verify_and_fix(store, {"index"})
    assert damage.location == f"index/{shard:02x}/table" and "items" in damage.detail
    assert store.stats().items == wrong + 2 == KEYS
    assert store.count() == KEYS
    _assert_intact(store, {f"k{n}" for n in range(KEYS)})
    store.close()


def test_a_damaged_table_header(filled: DiskStore, store_dir: Path) -> None:
    filled.close()
    shard = _shard_of("k6")
    table = store_dir / "index" / f"{shard:02x}" / "table"
    with open(table, "r+b") as handle:
        handle.seek(40)
        handle.write(b"\xff\xfe")
    store = DiskStore(store_dir)  # (opening salvages a damaged table at once)
    assert list(store.verify()) == []
    assert store.stats().rejected >= 1
    _assert_intact(store, {f"k{n}" for n in range(KEYS)})  # (every slot verifies: kept)
    store.close()
    with open(table, "r+b") as handle:  # damaged while a store has it open
        store = DiskStore(store_dir)
        handle.seek(40)
        handle.write(b"\xff\xfe")
        handle.flush()
        found = list(store.verify())
        assert [(d.problem, d.location) for d in found] == [
            ("unreadable", f"index/{shard:02x}/table")
        ]
        fixed = list(store.verify(fix=True))
        assert fixed[0].fixed and fixed[0].problem == "unreadable"
        assert list(store.verify()) == []
        _assert_intact(store, {f"k{n}" for n in range(KEYS)})
        store.close()


def test_a_table_salvaged_at_open_keeps_its_value_files(filled: DiskStore, store_dir: Path) -> None:
    """Salvaging a shard while the store opens keeps the files of the slots it keeps (they
    were swept as orphans when the sweep ran before every shard was open)."""
    filled.close()
    table = store_dir / "index" / f"{_shard_of('k0'):02x}" / "table"
    with open(table, "r+b") as handle:
        handle.seek(40)
        handle.write(b"\xff\xfe")
    store = DiskStore(store_dir)
    assert store.stats().rejected >= 1
    assert list(store.verify()) == []
    _assert_intact(store, {f"k{n}" for n in range(KEYS)})
    store.close()


def test_a_bit_flip_in_a_slot(filled: DiskStore, store_dir: Path) -> None:
    filled.close()
    shard = _shard_of("k8")
    table = store_dir / "index" / f"{shard:02x}" / "table"
    raw = bytearray(table.read_bytes())
    header = fmt.unpack_header(bytes(raw[: fmt.HEADER_SIZE]), shard)
    for position in range(header.capacity + fmt.PROBE):
        at = fmt.HEADER_SIZE + position * fmt.SLOT_SIZE
        slot = fmt.unpack_slot(bytes(raw), at, position) if any(raw[at : at + 8]) else None
        if slot is not None and slot.live and slot.khash == fmt.key_hash(b"k8"):
            raw[at + 30] ^= 0x20  # (in its expiry)
            break
    else:
        raise AssertionError("no slot of k8")
    table.write_bytes(bytes(raw))
    store = DiskStore(store_dir)
    fixed = _verify_and_fix(store, {"unreadable", "index"})  # (its totals count it)
    assert any("slot" in d.detail for d in fixed)
    assert store.stats().items == store.count() == KEYS - 1
    assert store.get("k8") is None
    _assert_intact(store, {f"k{n}" for n in range(KEYS)} - {"k8"})
    store.close()


def test_a_cut_off_log(filled: DiskStore, store_dir: Path) -> None:
    filled.close()
    logs = sorted((store_dir / "index").glob("*/log.*"), key=lambda p: p.stat().st_size)
    log = logs[-1]
    os.truncate(log, log.stat().st_size - 100)  # (a power cut in the last record)
    store = DiskStore(store_dir)
    found = list(store.verify())
    assert {d.problem for d in found} <= {"truncated", "index"}
    assert any(d.problem == "truncated" for d in found)
    assert all(d.fixed for d in store.verify(fix=True))
    assert list(store.verify()) == []
    _assert_intact(store, set())
    assert sum(1 for n in range(KEYS) if store.get(f"k{n}") is not None) == KEYS - 1
    store.close()


def test_a_slot_past_the_end_of_its_segment(filled: DiskStore, store_dir: Path) -> None:
    """The header says the head segment ends before a record a slot points to (a crash
    between a compaction's slots and its header): the next append would overwrite it."""
    filled.close()
    shard = _shard_of("k9")

    def shorten(header: fmt.Header) -> None:
        head = header.segments[-1]
        head.end -= 10
        head.live -= 10  # (kept plausible: a header that is not is salvaged at open)

    _rewrite_header(store_dir, shard, shorten)
    store = DiskStore(store_dir)
    fixed = _verify_and_fix(store, {"index"})
    assert any("past the end" in d.detail for d in fixed)
    _assert_intact(store, {f"k{n}" for n in range(KEYS) if _shard_of(f"k{n}") != shard})
    lost = [n for n in range(KEYS) if store.get(f"k{n}") is None]
    assert len(lost) == 1 and _shard_of(f"k{lost[0]}") == shard
    store.set("after", entry(b"a" * 300))  # (appended where the header says: nothing lost)
    assert store.get("after") is not None and list(store.verify()) == []
    _assert_intact(store, {f"k{n}" for n in range(KEYS)} - {f"k{lost[0]}"})
    store.close()


def test_an_orphan_log_segment(filled: DiskStore, store_dir: Path) -> None:
    filled.close()
    stray = store_dir / "index" / "02" / "log.99"
    stray.write_bytes(b"r" * 321)
    store = DiskStore(store_dir)
    [damage] = _verify_and_fix(store, {"orphan"})
    assert (damage.location, damage.size) == ("index/02/log.99", 321)
    assert not stray.exists()
    _assert_intact(store, {f"k{n}" for n in range(KEYS)})
    store.close()


# -- verify: random damage and concurrency --------------------------------------------------------


def _store_files(root: Path) -> list[Path]:
    return sorted(
        p for part in ("index", "data") for p in (root / part).rglob("*")
        if p.is_file() and p.name != "lock" and p.stat().st_size
    )  # fmt: skip


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 40))
def test_random_damage_is_found_and_fixed(tmp_path: Path, seed: int, flips: int) -> None:
    """Random bit flips in the store's files: verify never raises; after a fix, verify finds
    nothing, and every key reads back its exact value or nothing."""
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "store"  # (a new one for each example)
    _flip_verify_and_fix(root, random.Random(seed), flips)


@pytest.mark.parametrize("seed", [147, 194, 369])
def test_damage_that_once_made_fix_write_negative_counts(tmp_path: Path, seed: int) -> None:
    """A flipped slot that looks like a tombstone, removed with its neighbours, once drove a
    shard's used-slot count below zero and `verify(fix=True)` raised writing the header."""
    rng = random.Random(seed)
    _flip_verify_and_fix(tmp_path / "store", rng, rng.randint(1, 40))


def _flip_verify_and_fix(root: Path, rng: random.Random, flips: int) -> None:
    """Flip `flips` random bits of the store's files: verify never raises; after a fix,
    verify finds nothing, and every key reads back its exact value or nothing."""
    store = DiskStore(root)
    for n in range(KEYS):
        store.set(f"k{n}", entry(_value(n)))
    store.close()
    files = _store_files(root)
    for _ in range(flips):
        path = rng.choice(files)
        raw = bytearray(path.read_bytes())
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
    store = DiskStore(root)
    try:
        found = list(store.verify())
        assert all(d.problem in DAMAGE_KINDS for d in found)
        fixed = list(store.verify(fix=True))
        assert all(d.fixed for d in fixed)
        assert list(store.verify()) == []
        _assert_intact(store, set())
        assert store.stats().items == store.count()
    finally:
        store.close()


@linux_only
def test_a_store_being_written_verifies_clean(store_dir: Path) -> None:
    """Another process writing (temp files, value files renamed in before their slot, entries
    replaced and compacted while verify reads them): nothing is reported."""
    DiskStore(store_dir).close()
    ctx = multiprocessing.get_context("fork")
    read_fd, write_fd = os.pipe()
    child = ctx.Process(target=writer_forever, args=(str(store_dir), 12, write_fd))
    child.start()
    os.close(write_fd)
    store = DiskStore(store_dir)
    try:
        assert os.read(read_fd, 1) == b"1"
        runs = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            assert list(store.verify()) == []
            runs += 1
        assert runs >= 2
    finally:
        os.close(read_fd)
        child.kill()
        child.join(10)
        store.close()
