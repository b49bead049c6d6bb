"""The DiskStore's read path (`Shard.lookup`): a hit among the first slots of its chain is
read inline, anything else by the general path; both give the same answers, and a forged
record length in a slot is never read (nor allocated)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from tests._disk_workers import check_value, entry, make_value
from tiers import DiskStore
from tiers._stores import Entry
from tiers._stores._disk import _format as fmt


def _plain(value: bytes) -> Entry:
    """An entry without tags or meta (its record is a plain one, decoded by the fast path)."""
    return Entry(value, b"H", 1_700_000_000.0, None, (), None, len(value))


def _colliding_keys(count: int, capacity: int = 64) -> list[str]:
    """`count` keys of one shard whose slots share one home in a table of `capacity`."""
    found: list[str] = []
    target = None
    n = 0
    while len(found) < count:
        key = f"c{n}"
        n += 1
        khash = fmt.key_hash(fmt.index_key(key))
        where = (khash % 8, (khash >> 8) & (capacity - 1))
        if target is None:
            target = where
        if where == target:
            found.append(key)
    return found


def test_keys_far_along_one_chain_are_found_and_absent_ones_missed(tmp_path: Path) -> None:
    """12 keys with one home: the last ones sit past the slots a read looks at first. Each
    reads back as its value, before and after its chain-mates are deleted (tombstones), and
    a key of the same home that was never written is a miss."""
    keys = _colliding_keys(14)
    stored, deleted, absent = keys[:12], keys[2:5], keys[12:]
    store = DiskStore(tmp_path / "s")
    try:
        for i, key in enumerate(stored):  # plain records, and records with tags and meta
            value = make_value(key, i, 100 + 50 * i)
            store.set(key, _plain(value) if i % 2 else entry(value))
        for key in stored:
            check_value(key, store.get(key).value)  # type: ignore[union-attr]
        for key in deleted:
            assert store.delete(key)
        for key in stored:
            got = store.get(key)
            if key in deleted:
                assert got is None
            else:
                check_value(key, got.value)  # type: ignore[union-attr]
        for key in absent:
            assert store.get(key) is None
        assert store.stats().rejected == 0
    finally:
        store.close()


def test_a_forged_record_length_in_a_slot_is_a_miss_without_allocating(tmp_path: Path) -> None:
    """A slot (with a valid checksum: xxh3 is unkeyed) claiming a 4 GiB record: a miss,
    counted as rejected, and nothing near that size is allocated."""
    path = tmp_path / "s"
    store = DiskStore(path)
    for n in range(8):
        store.set(f"k{n}", _plain(make_value(f"k{n}", n, 300)))
    store.close()
    lkey = fmt.index_key("k2")
    khash = fmt.key_hash(lkey)
    table = path / "index" / f"{khash % 8:02x}" / "table"
    raw = bytearray(table.read_bytes())
    header = fmt.unpack_header(bytes(raw[: fmt.HEADER_SIZE]), khash % 8)
    home = (khash >> 8) & (header.capacity - 1)
    for position in range(home, home + fmt.PROBE):
        at = fmt.HEADER_SIZE + position * fmt.SLOT_SIZE
        if fmt.slot_khash(bytes(raw), at) == khash:
            break
    else:
        raise AssertionError("slot not found")
    slot = fmt.Slot(*fmt.SLOT.unpack_from(raw, at))
    slot.rlen = 2**32 - 1
    raw[at : at + fmt.SLOT_SIZE] = fmt.pack_slot(slot, position)
    table.write_bytes(bytes(raw))

    store = DiskStore(path)
    try:
        tracemalloc.start()
        try:
            assert store.get("k2") is None
            _size, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 << 20, f"{peak:,} bytes allocated for a forged length"
        assert store.stats().rejected >= 1
        for n in (0, 1, 3, 4):
            check_value(f"k{n}", store.get(f"k{n}").value)  # type: ignore[union-attr]
    finally:
        store.close()
