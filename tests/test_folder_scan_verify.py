"""FolderStore's `scan`, usage counters and `verify` (what ``tiers ls``, ``stats`` and
``verify`` run), on real files and real processes.

Damage is made as tests/test_folder_guarantees.py and test_folder_links.py make it: bit flips,
truncation, deleted and swapped files, hand edits, writers killed mid-write, links planted at
every name the store uses, files of another user. For each, `verify` reports it and changes
nothing, ``verify(fix=True)`` removes or repairs it (never what a link leads to), a second
`verify` finds nothing, and every entry left reads back exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import os
import random
import signal
import stat
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path

import pytest

from tests._disk_workers import check_value, entry, make_value
from tests._folder_workers import die_inside_commit, hammer, writer_forever
from tests.test_folder_links import HOWS, Outside, plant, works
from tiers import FolderStore
from tiers._stores._folder._metadata import Metadata, checksum, encode
from tiers._stores._folder._naming import entry_dir, lock_file
from tiers._stores._protocol import (
    DAMAGE_KINDS,
    Damage,
    Entry,
    SupportsScan,
    SupportsUsage,
    SupportsVerify,
    Usage,
)
from tiers.errors import StoreError, StorePermissionError
from tiers.testing import FakeClock

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SPAWN = multiprocessing.get_context("spawn")
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="uses fork and /proc")
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root to give files to another user")
DAY = 24 * 3600

Found = set[tuple[str, str | None, str]]  # (problem, key, location)


# -- helpers ---------------------------------------------------------------------------------


def folder(store: FolderStore, key: str) -> Path:
    return store.directory / entry_dir(key)


def data_name(store: FolderStore, key: str) -> str:
    return str(json.loads((folder(store, key) / "metadata.json").read_text())["data"])


def data_path(store: FolderStore, key: str) -> Path:
    return folder(store, key) / data_name(store, key)


def at(store: FolderStore, key: str, name: str = "metadata.json") -> str:
    """A location as `verify` gives it: relative to the root."""
    return f"{entry_dir(key)}/{name}"


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """What is under `root` (kind, content digest or link target), links never followed."""
    out = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            out[str(path.relative_to(root))] = ("link", os.readlink(path))
        elif stat.S_ISREG(info.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(root))] = (f"file {info.st_uid} {info.st_nlink}", digest)
        else:
            out[str(path.relative_to(root))] = (f"{stat.S_IFMT(info.st_mode):o}", "")
    return out


def summary(damages: list[Damage]) -> Found:
    return {(d.problem, d.key, d.location) for d in damages}


def verify_and_fix(
    store: FolderStore, expected: AbstractSet[tuple[str, str | None, str]]
) -> list[Damage]:
    """`verify` reports `expected` and changes nothing; ``fix=True`` fixes exactly that; a
    second `verify` is clean. Returns the fixed damages."""
    before = snapshot(store.directory)
    found = list(store.verify())
    assert summary(found) == expected
    assert all(d.problem in DAMAGE_KINDS and d.detail and not d.fixed for d in found)
    assert snapshot(store.directory) == before, "verify without fix changed the store"
    fixed = list(store.verify(fix=True))
    assert summary(fixed) == expected
    assert all(d.fixed for d in fixed), [d for d in fixed if not d.fixed]
    assert list(store.verify()) == [], "a second verify still finds damage"
    return fixed


def assert_read_back(store: FolderStore, gone: set[str], keys: int = 12) -> None:
    """Every key but those in `gone` reads back exactly; those in `gone` are misses."""
    for n in range(keys):
        key = f"k{n}"
        got = store.get(key)
        if key in gone:
            assert got is None, f"{key} should be gone"
        else:
            assert got is not None, f"{key} was lost"
            check_value(key, got.value)


def dead_pid() -> int:
    """The pid of a process that ran and was reaped (not running any more)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


@pytest.fixture
def filled(store_dir: Path) -> Iterator[FolderStore]:
    """12 entries, k0..k5 of 100 kB, k6..k11 of 500 B (as in test_folder_guarantees)."""
    store = FolderStore(store_dir)
    for n in range(12):
        store.set(f"k{n}", entry(make_value(f"k{n}", n, 100_000 if n < 6 else 500)))
    yield store
    store.close()


def test_the_folder_store_has_the_capabilities(filled: FolderStore) -> None:
    for protocol in (SupportsScan, SupportsUsage, SupportsVerify):
        assert isinstance(filled, protocol)


# -- scan ------------------------------------------------------------------------------------


def test_scan_gives_every_entry_present_with_its_metadata_and_no_value(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    now = time.time()
    store.set("a/1", Entry(b"x" * 10, b"HDR", now - 5, None, ("t",), {"n": 1}, 10))
    store.set("a/2", Entry(b"y" * 20, b"H", now - 5, now + 60, ("u",), None, 20))
    store.set("b/1", Entry(b"z" * 30, b"", now - 5, now - 1, ("t", "u"), None, 30))  # expired
    store.set("bad", entry(b"v"))
    (folder(store, "bad") / "metadata.json").write_bytes(b"damaged")  # not an entry: skipped
    found = dict(store.scan())
    assert sorted(found) == ["a/1", "a/2", "b/1"]
    one = found["a/1"]
    assert one == Entry(None, b"HDR", now - 5, None, ("t",), {"n": 1}, 13)
    assert found["a/2"].expires_at == now + 60 and found["a/2"].size == 21
    assert found["b/1"].expires_at == now - 1, "an expired entry still present is listed"
    assert all(e.value is None and e.accessed_at is None for e in found.values())
    for key in ("a/1", "a/2"):
        assert found[key] == store.info(key)
    assert sorted(k for k, _ in store.scan("a/")) == ["a/1", "a/2"]
    assert sorted(k for k, _ in store.scan(tag="t")) == ["a/1", "b/1"]
    assert sorted(k for k, _ in store.scan("b", "u")) == ["b/1"]
    assert list(store.scan("zzz")) == []

    async def scanned() -> list[tuple[str, Entry]]:
        return [item async for item in store.scan_async("a/", "u")]

    assert asyncio.run(scanned()) == [("a/2", found["a/2"])]
    assert store.info("bad") is None  # (the damaged folder is a counted miss, as ever)
    store.close()
    with pytest.raises(StoreError):
        next(iter(store.scan()))


def _scan_peak(store: FolderStore) -> tuple[int, int]:
    """(entries scanned, peak bytes allocated while scanning)."""
    tracemalloc.start()
    try:
        count = sum(1 for _ in store.scan())
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_scan_streams_in_bounded_memory(tmp_path: Path) -> None:
    """The peak memory of a scan does not grow with the number of entries (it reads the
    root as it goes): 4,000 entries cost what 400 do."""
    store = FolderStore(tmp_path / "store")
    body = entry(b"v" * 10)
    for n in range(400):
        store.set(f"key-{n:06d}-" + "x" * 40, body)
    small = _scan_peak(store)
    for n in range(400, 4_000):
        store.set(f"key-{n:06d}-" + "x" * 40, body)
    large = _scan_peak(store)
    assert (small[0], large[0]) == (400, 4_000)
    # a listing of 4,000 names alone takes ~500 kB; the scan stays near its 400-entry peak
    assert large[1] < small[1] * 1.5 + 64_000, (small, large)
    store.close()


# -- usage -----------------------------------------------------------------------------------


def test_usage_adds_persists_and_resets_with_the_removal_counters(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    store.clock = FakeClock(5_000.0)
    assert store.usage() == Usage()
    store.add_usage(Usage())  # nothing to count: since stays unset
    assert store.usage().since is None
    store.add_usage(Usage(hits=3, misses=1))
    assert store.usage() == Usage(hits=3, misses=1, since=5_000.0)
    store.add_usage(Usage(sets=2, deletes=1, errors=4, since=4_000.0))
    assert store.usage() == Usage(3, 1, 2, 1, 4, since=4_000.0)
    store.set("k", entry(b"v"))
    (folder(store, "k") / "metadata.json").write_bytes(b"damaged")
    assert store.get("k") is None and store.stats().rejected == 1
    store.close()
    again = FolderStore(tmp_path / "store")  # persistent
    assert again.usage() == Usage(3, 1, 2, 1, 4, since=4_000.0)
    assert asyncio.run(again.usage_async()) == again.usage()
    asyncio.run(again.add_usage_async(Usage(hits=1)))
    assert again.usage().hits == 4
    asyncio.run(again.reset_usage_async())
    assert again.usage() == Usage() and again.usage().since is None
    assert again.stats().rejected == 0, "reset_usage left the removal counters"
    with pytest.raises(ValueError, match="hits"):
        again.add_usage(Usage(hits=-1))
    with pytest.raises(ValueError, match="since"):
        again.add_usage(Usage(hits=1, since=float("nan")))
    assert again.usage() == Usage()
    again.close()


def _add_usage(path: str, barrier: object, rounds: int, since: float) -> None:
    store = FolderStore(path)
    barrier.wait()  # type: ignore[attr-defined]
    for _ in range(rounds):
        store.add_usage(Usage(hits=1, misses=2, sets=3, deletes=4, errors=5, since=since))
    store.close()


def test_usage_added_by_four_processes_sums_exactly(tmp_path: Path) -> None:
    """4 processes adding at once, 250 times each: not one addition is lost."""
    root = tmp_path / "store"
    FolderStore(root).close()
    barrier = SPAWN.Barrier(4)
    procs = [
        SPAWN.Process(target=_add_usage, args=(str(root), barrier, 250, 1_000.0 + n))
        for n in range(4)
    ]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
            assert proc.exitcode == 0, f"a worker exited with {proc.exitcode}"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    store = FolderStore(root)
    assert store.usage() == Usage(1_000, 2_000, 3_000, 4_000, 5_000, since=1_000.0)
    assert list(store.verify()) == []
    store.close()


USAGE_DAMAGE = {
    "not-json": b"\x00\xff not json",
    "truncated": b'{"hits": 3, "mis',
    "negative": b'{"hits": -5, "misses": 0, "sets": 0, "deletes": 0, "errors": 0, "since": null}',
    "wrong-type": b'{"hits": "7", "misses": 0, "sets": 0, "deletes": 0, "errors": 0, "since": []}',
    "huge": b'{"hits": 100000000000000000000000000000, "misses": 0, "sets": 0, "deletes": 0, '
    b'"errors": 0, "since": null}',
    "extra-field": b'{"hits": 0, "misses": 0, "sets": 0, "deletes": 0, "errors": 0, '
    b'"since": null, "evil": [1]}',
    "too-long": b'{"hits": 0}' + b" " * 600,
    "deep": b"[" * 100_000,
}


@pytest.mark.parametrize("damage", sorted(USAGE_DAMAGE))
def test_damaged_usage_file_reads_zeros_and_verify_rewrites_it(
    filled: FolderStore, damage: str
) -> None:
    path = filled.directory / ".usage.json"
    path.write_bytes(USAGE_DAMAGE[damage])
    assert filled.usage() == Usage(), "a damaged count was read"
    verify_and_fix(filled, {("unreadable", None, ".usage.json")})
    assert filled.usage() == Usage()
    filled.add_usage(Usage(hits=2))
    assert filled.usage().hits == 2
    assert_read_back(filled, set())


@pytest.mark.parametrize("name", [".usage.json", ".stats.json"])
@pytest.mark.parametrize("how", [*HOWS, "fifo", "directory"])
def test_counter_file_planted_link_is_replaced_never_followed(
    tmp_path: Path, name: str, how: str
) -> None:
    outside = Outside(tmp_path)
    store = FolderStore(tmp_path / "store")
    store.add_usage(Usage(hits=1))
    at_name = store.directory / name
    if how == "fifo":
        at_name.unlink()
        os.mkfifo(at_name, 0o600)
    elif how == "directory":
        at_name.unlink()
        (at_name / "inner").mkdir(parents=True)
    else:
        plant(at_name, outside, how)
    verify_and_fix(store, {("unreadable", None, name)})
    outside.assert_untouched()
    assert outside.victim.stat().st_nlink == 1
    assert at_name.is_file() and not at_name.is_symlink()
    store.add_usage(Usage(hits=5))
    assert store.usage().hits == (5 if name == ".usage.json" else 6)
    works(store)
    outside.assert_untouched()


@needs_root
def test_counter_file_of_another_user_is_reported_and_replaced(filled: FolderStore) -> None:
    filled.add_usage(Usage(hits=1))
    os.chown(filled.directory / ".usage.json", 65534, 65534)
    (damage,) = verify_and_fix(filled, {("unreadable", None, ".usage.json")})
    assert "uid 65534" in damage.detail
    assert (filled.directory / ".usage.json").stat().st_uid == os.geteuid()
    filled.add_usage(Usage(hits=1))
    assert filled.usage().hits == 1


# -- verify: entries ---------------------------------------------------------------------------


def test_a_sound_store_has_nothing_to_verify(filled: FolderStore) -> None:
    filled.set("old", Entry(b"o", b"H", 1.0, time.time() - 1, (), None, 1))  # expired: sound
    assert filled.acquire_lock("L", "me", 60)
    filled.add_usage(Usage(hits=1))
    before = snapshot(filled.directory)
    assert list(filled.verify()) == []
    assert list(filled.verify(fix=True)) == []
    assert snapshot(filled.directory) == before
    assert_read_back(filled, set())


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def _swap(a: Path, b: Path) -> None:
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)


def _swap_folders(a: Path, b: Path) -> None:
    os.rename(a, a.with_name("swap"))
    os.rename(b, a)
    os.rename(a.with_name("swap"), b)


def _metadata_damage(kind: str) -> Callable[[FolderStore], Found]:
    """The metadata damages of test_folder_guarantees.test_damaged_metadata_is_a_counted_miss."""

    def damage(store: FolderStore) -> Found:
        path = folder(store, "k9") / "metadata.json"
        raw = path.read_bytes()
        if kind == "truncated":
            path.write_bytes(raw[: len(raw) // 2])
        elif kind == "not-json":
            path.write_bytes(b"\x00\xff not json")
        elif kind == "wrong-type":
            doc = json.loads(raw)
            doc["size"] = "500"
            path.write_text(json.dumps(doc))
        elif kind == "digit-changed":
            path.write_bytes(raw.replace(b'"size": 500', b'"size": 600'))
        elif kind == "bit-flip":
            spot = raw.index(b'"key": "k9"') + 9
            path.write_bytes(raw[:spot] + bytes([raw[spot] ^ 0x01]) + raw[spot + 1 :])
        elif kind == "emptied":
            path.write_bytes(b"")
        else:  # deleted: the folder's data file belongs to no entry
            path.unlink()
            return {("orphan", None, entry_dir("k9"))}
        return {("unreadable", None, at(store, "k9"))}

    return damage


def _damage_data(kind: str) -> Callable[[FolderStore], Found]:
    def damage(store: FolderStore) -> Found:
        path = data_path(store, "k1")
        where = at(store, "k1", path.name)
        if kind == "bit-flip":
            _flip(path, 5_000)
            return {("checksum", "k1", where)}
        if kind == "truncated":
            os.truncate(path, 1_234)
            return {("truncated", "k1", where)}
        if kind == "longer":
            with path.open("ab") as handle:
                handle.write(b"more")
            return {("checksum", "k1", where)}
        path.unlink()
        return {("missing", "k1", where)}

    return damage


def _swapped_data(store: FolderStore) -> Found:
    a, b = data_path(store, "k3"), data_path(store, "k4")
    _swap(a, b)
    return {
        ("checksum", "k3", at(store, "k3", a.name)),
        ("checksum", "k4", at(store, "k4", b.name)),
    }


def _swapped_folders(store: FolderStore) -> Found:
    _swap_folders(folder(store, "k7"), folder(store, "k8"))
    return {("unreadable", None, at(store, "k7")), ("unreadable", None, at(store, "k8"))}


def _leftover_beside(store: FolderStore) -> Found:
    """What a writer killed inside its commit leaves: an old data file beside the entry's."""
    (folder(store, "k6") / "data.0badc0de.bin").write_bytes(b"old value")
    return {("orphan", None, at(store, "k6", "data.0badc0de.bin"))}


DATA_DAMAGE = ["bit-flip", "truncated", "longer", "gone"]
METADATA_DAMAGE = [
    "truncated", "not-json", "wrong-type", "digit-changed", "bit-flip", "emptied", "deleted",
]  # fmt: skip
ENTRY_DAMAGE: dict[str, tuple[Callable[[FolderStore], Found], set[str]]] = {
    **{f"data-{kind}": (_damage_data(kind), {"k1"}) for kind in DATA_DAMAGE},
    **{f"metadata-{kind}": (_metadata_damage(kind), {"k9"}) for kind in METADATA_DAMAGE},
    "data-swapped": (_swapped_data, {"k3", "k4"}),
    "folders-swapped": (_swapped_folders, {"k7", "k8"}),
    "leftover-beside-an-entry": (_leftover_beside, set()),
}


@pytest.mark.parametrize("damage", sorted(ENTRY_DAMAGE))
def test_entry_damage_is_found_fixed_and_the_rest_reads_back(
    filled: FolderStore, damage: str
) -> None:
    make, gone = ENTRY_DAMAGE[damage]
    expected = make(filled)
    fixed = verify_and_fix(filled, expected)
    for d in fixed:
        assert d.size >= 0 and not any(f"k{n}" in d.detail for n in range(12))  # (no keys)
    for key in gone:
        assert not folder(filled, key).exists(), f"{key}'s damaged folder was left"
    assert_read_back(filled, gone)
    assert filled.stats().items == 12 - len(gone)
    filled.set("k1", entry(make_value("k1", 99, 700)))  # writes work after the repair
    assert check_value("k1", filled.get("k1").value) == (99, 700)  # type: ignore[union-attr]


def test_fixing_an_entry_invalidates_memory_copies(filled: FolderStore) -> None:
    """A removal by verify stamps the key's generation, as any change does."""
    before = filled.epoch("k1")
    _flip(data_path(filled, "k1"), 10)
    untouched = filled.epoch("k2")
    list(filled.verify(fix=True))
    assert filled.epoch("k1") != before
    assert filled.epoch("k2") == untouched


@linux_only
def test_writer_killed_inside_its_commit_leaves_an_orphan_verify_removes(
    store_dir: Path,
) -> None:
    store = FolderStore(store_dir)
    store.set("k", entry(make_value("k", 1, 5_000)))
    old = data_name(store, "k")
    child = multiprocessing.get_context("fork").Process(
        target=die_inside_commit, args=(str(store_dir), "k", make_value("k", 2, 7_000))
    )
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    expected = {("orphan", None, at(store, "k", old)), ("index", None, f".procs/{child.pid}")}
    expected |= {("temp", None, f".tmp/{p.name}") for p in (store_dir / ".tmp").iterdir()}
    verify_and_fix(store, expected)
    assert check_value("k", store.get("k").value) == (2, 7_000)  # type: ignore[union-attr]
    assert sorted(p.name for p in folder(store, "k").iterdir()) == sorted(
        ["metadata.json", data_name(store, "k")]
    )
    store.close()


def test_verify_while_processes_write_finds_nothing(tmp_path: Path) -> None:
    """2 processes x 3 threads writing, reading and deleting while `verify(fix=True)` runs
    again and again: a write in flight is never taken for damage, nothing is removed that
    the writers then miss, and their reads stay right."""
    root = tmp_path / "store"
    store = FolderStore(root)
    errors = [tmp_path / f"errors{n}" for n in range(2)]
    procs = [
        SPAWN.Process(target=hammer, args=(str(root), n, 3, 300, 16, str(errors[n])))
        for n in range(2)
    ]
    passes = 0  # made while the writers had entries in the store
    deadline = time.monotonic() + 120
    try:
        for proc in procs:
            proc.start()
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            busy = next(iter(store.scan()), None) is not None
            assert list(store.verify(fix=True)) == [], "verify took a write for damage"
            passes += busy
        for proc in procs:
            proc.join(120)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    for path in errors:
        assert path.read_text() == "ok 900", path.read_text()[:2000]
    assert passes >= 3, "the writers finished before verify ran"
    assert list(store.verify()) == []
    assert sorted(store.keys()) == sorted(k for k, _ in store.scan())
    store.close()


# -- verify: links, special files and other users' files -----------------------------------


def _entry_name_link(store: FolderStore, outside: Outside, how: str) -> Found:
    name = entry_dir("planted")
    if how == "symlink":
        (store.directory / name).symlink_to(outside.dir, target_is_directory=True)
    else:
        plant(store.directory / name, outside, how)
    return {("unreadable", None, name)}


def _metadata_link(store: FolderStore, outside: Outside, how: str) -> Found:
    plant(folder(store, "k2") / "metadata.json", outside, how)
    return {("unreadable", None, at(store, "k2"))}


def _data_link(store: FolderStore, outside: Outside, how: str) -> Found:
    path = data_path(store, "k2")
    plant(path, outside, how)
    return {("unreadable", "k2", at(store, "k2", path.name))}


def _planted_beside(store: FolderStore, outside: Outside, how: str) -> Found:
    plant(folder(store, "k2") / "data.0badc0de.bin", outside, how)
    return {("orphan", None, at(store, "k2", "data.0badc0de.bin"))}


def _in_tmp(store: FolderStore, outside: Outside, how: str) -> Found:
    plant(store.directory / ".tmp" / "planted", outside, how)
    return {("orphan", None, ".tmp/planted")}


def _tmp_swapped(store: FolderStore, outside: Outside, how: str) -> Found:
    tmp = store.directory / ".tmp"
    tmp.rmdir()
    if how == "symlink":
        tmp.symlink_to(outside.dir, target_is_directory=True)
    else:
        plant(tmp, outside, how)
    return {("unreadable", None, ".tmp")}


def _lock_link(store: FolderStore, outside: Outside, how: str) -> Found:
    plant(store.directory / ".locks" / lock_file("L"), outside, how)
    return {("unreadable", None, f".locks/{lock_file('L')}")}


def _swept_link(store: FolderStore, outside: Outside, how: str) -> Found:
    plant(store.directory / ".procs" / ".swept", outside, how)
    return {("unreadable", None, ".procs/.swept")}


def _cosmetic_link(store: FolderStore, outside: Outside, how: str) -> Found:
    plant(store.directory / "CACHEDIR.TAG", outside, how)
    return {("unreadable", None, "CACHEDIR.TAG")}


def _top_link(store: FolderStore, outside: Outside, how: str) -> Found:
    plant(store.directory / "planted", outside, how)
    return {("orphan", None, "planted")}


LINKS: dict[str, Callable[[FolderStore, Outside, str], Found]] = {
    "entry-name": _entry_name_link,
    "metadata": _metadata_link,
    "data": _data_link,
    "beside-an-entry": _planted_beside,
    "in-tmp": _in_tmp,
    "tmp-itself": _tmp_swapped,
    "lock": _lock_link,
    "swept-marker": _swept_link,
    "cosmetic": _cosmetic_link,
    "top": _top_link,
}


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("where", sorted(LINKS))
def test_planted_link_is_reported_and_removed_never_followed(
    filled: FolderStore, tmp_path: Path, where: str, how: str
) -> None:
    outside = Outside(tmp_path)
    expected = LINKS[where](filled, outside, how)
    damaged = {key for _problem, key, _where in expected if key} | (
        {"k2"} if where in ("metadata", "data") else set()
    )
    verify_and_fix(filled, expected)
    outside.assert_untouched()
    assert outside.victim.stat().st_nlink == 1, "the victim kept a name in the store"
    assert_read_back(filled, damaged)
    works(filled)
    assert list(filled.verify()) == []
    outside.assert_untouched()


@pytest.mark.parametrize("name", ["metadata.json", "data"])
def test_fifo_planted_as_an_entry_file_is_reported_without_hanging(
    filled: FolderStore, name: str
) -> None:
    target = folder(filled, "k3") / "metadata.json"
    if name == "data":
        target = data_path(filled, "k3")
    target.unlink()
    os.mkfifo(target, 0o600)
    problem = ("unreadable", None, at(filled, "k3")) if name == "metadata.json" else (
        "unreadable", "k3", at(filled, "k3", target.name)
    )  # fmt: skip
    verify_and_fix(filled, {problem})
    assert_read_back(filled, {"k3"})


@needs_root
def test_files_of_another_user_are_reported_and_removed(filled: FolderStore) -> None:
    data = data_path(filled, "k1")
    os.chown(data, 65534, 65534)
    os.chown(folder(filled, "k2"), 65534, 65534)
    beside = folder(filled, "k6") / "data.0badc0de.bin"
    beside.write_bytes(b"theirs")
    os.chown(beside, 65534, 65534)
    os.chown(filled.directory / ".trash", 65534, 65534)
    expected = {
        ("unreadable", "k1", at(filled, "k1", data.name)),
        ("unreadable", None, entry_dir("k2")),
        ("orphan", None, at(filled, "k6", "data.0badc0de.bin")),
        ("unreadable", None, ".trash"),
    }
    fixed = verify_and_fix(filled, expected)
    assert all("uid 65534" in d.detail for d in fixed)
    assert (filled.directory / ".trash").stat().st_uid == os.geteuid()
    assert_read_back(filled, {"k1", "k2"})


# -- verify: temporary files, locks, the store's own folders -----------------------------------


def test_leftovers_of_unfinished_writes_are_temp_once_the_sweep_would_remove_them(
    filled: FolderStore,
) -> None:
    root = filled.directory
    gone = dead_pid()
    (root / ".tmp" / f"{gone}.0123456789ab").mkdir()
    (root / ".tmp" / f"{gone}.0123456789ab" / "data.01234567.bin").write_bytes(b"x" * 300)
    (root / ".trash" / f"{gone}.ba9876543210").mkdir()
    (root / f"..tiers-folder.json.{gone}.00aa00aa00aa.tmp").write_bytes(b"{}")
    ours = root / ".tmp" / f"{os.getpid()}.aaaaaaaaaaaa"  # a write in flight: left alone
    ours.mkdir()
    old = root / ".tmp" / f"{os.getpid()}.bbbbbbbbbbbb"  # ours, but two days old: left over
    old.mkdir()
    os.utime(old, (time.time() - 2 * DAY, time.time() - 2 * DAY))
    expected = {
        ("temp", None, f".tmp/{gone}.0123456789ab"),
        ("temp", None, f".trash/{gone}.ba9876543210"),
        ("temp", None, f"..tiers-folder.json.{gone}.00aa00aa00aa.tmp"),
        ("temp", None, f".tmp/{os.getpid()}.bbbbbbbbbbbb"),
    }
    sizes = {d.location: d.size for d in verify_and_fix(filled, expected)}
    assert sizes[f".tmp/{gone}.0123456789ab"] == 300
    assert [p.name for p in (root / ".tmp").iterdir()] == [ours.name]
    assert_read_back(filled, set())


@linux_only
def test_writes_killed_by_sigkill_leave_temp_files_verify_finds(store_dir: Path) -> None:
    """Writers of 10 B-2 MB values killed with SIGKILL until one dies mid-write (at most 60
    tries): what it left in .tmp is reported as temp and removed; all else reads right."""
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(99)
    store = FolderStore(store_dir)
    for _ in range(60):
        read_fd, write_fd = os.pipe()
        child = ctx.Process(target=writer_forever, args=(str(store_dir), 6, write_fd))
        child.start()
        os.close(write_fd)
        try:
            assert os.read(read_fd, 1) == b"1", "writer did not start"
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            os.close(read_fd)
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
            child.join(10)
        if list((store_dir / ".tmp").iterdir()):
            break
    torn = {f".tmp/{p.name}" for p in (store_dir / ".tmp").iterdir()}
    assert torn, "no kill landed in the middle of a write"
    found = list(store.verify(fix=True))
    temp = {d.location for d in found if d.problem == "temp"}
    assert torn <= temp and all(t.startswith((".tmp/", ".trash/")) for t in temp)
    assert {d.problem for d in found} <= {"temp", "index", "orphan"}  # (+ registrations)
    assert all(d.fixed for d in found)
    assert list(store.verify()) == []
    for n in range(6):
        got = store.get(f"k{n}")
        if got is not None:
            check_value(f"k{n}", got.value)
    store.close()


def test_locks_left_behind_or_unreadable_are_found(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    store.clock = clock = FakeClock(time.time())
    assert store.acquire_lock("held", "me", 60)
    assert store.acquire_lock("left", "crashed", 60)
    clock.advance(3_600 + 61)  # "left" ended more than an hour ago; "held" is renewed
    assert store.renew_lock("held", "me", 60)
    locks = tmp_path / "store" / ".locks"
    (locks / lock_file("garbled")).write_bytes(b'{"token": "x", "expi')
    (locks / lock_file("forever")).write_bytes(b'{"token": "x", "expires": 1e999}')
    (locks / "note.txt").write_text("not a lock")
    expected = {
        ("temp", None, f".locks/{lock_file('left')}"),
        ("unreadable", None, f".locks/{lock_file('garbled')}"),
        ("unreadable", None, f".locks/{lock_file('forever')}"),
        ("orphan", None, ".locks/note.txt"),
    }
    verify_and_fix(store, expected)
    assert not store.acquire_lock("held", "you", 60), "verify removed a lock still held"
    for name in ("left", "garbled", "forever"):
        assert store.acquire_lock(name, "new", 60)
    store.close()


def test_missing_folders_counter_files_and_dead_registrations_are_index_damage(
    filled: FolderStore,
) -> None:
    root = filled.directory
    (root / ".trash").rmdir()
    (root / ".usage.json").unlink()
    gone = dead_pid()
    (root / ".procs" / str(gone)).write_bytes(b"")
    (root / "notes.txt").write_text("stray")
    (root / "stray-dir" / "inner").mkdir(parents=True)
    expected = {
        ("index", None, ".trash"),
        ("index", None, ".usage.json"),
        ("index", None, f".procs/{gone}"),
        ("orphan", None, "notes.txt"),
        ("orphan", None, "stray-dir"),
    }
    verify_and_fix(filled, expected)
    assert stat.S_IMODE((root / ".trash").stat().st_mode) == 0o700
    filled.add_usage(Usage(misses=3))
    assert filled.usage().misses == 3
    assert filled.delete("k0")  # (removal goes through .trash again)
    assert_read_back(filled, {"k0"})


def test_verify_of_a_read_only_store_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = FolderStore(root)
    for n in range(3):
        store.set(f"k{n}", entry(make_value(f"k{n}", n, 500)))
    store.add_usage(Usage(hits=4))
    store.close()
    _flip(next((root / entry_dir("k1")).glob("data.*")), 10)
    for path in sorted(root.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    root.chmod(0o555)
    try:
        before = snapshot(root)
        ro = FolderStore(root)
        assert ro.read_only
        found = list(ro.verify())
        assert summary(found) == {
            ("checksum", "k1", f"{entry_dir('k1')}/{data_name_in(root, 'k1')}")
        }
        with pytest.raises(StorePermissionError):
            ro.verify(fix=True)
        with pytest.raises(StorePermissionError):
            ro.reset_usage()
        ro.add_usage(Usage(hits=1))  # a read-only store cannot count: dropped
        assert ro.usage() == Usage(hits=4, since=ro.usage().since)
        assert [k for k, _ in ro.scan()] != []
        assert snapshot(root) == before, "a read-only store was changed"
        ro.close()
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o700 if path.is_dir() else 0o600)


def data_name_in(root: Path, key: str) -> str:
    return str(json.loads((root / entry_dir(key) / "metadata.json").read_text())["data"])


def test_verify_of_a_closed_store_raises_at_once(filled: FolderStore) -> None:
    filled.close()
    with pytest.raises(StoreError):
        filled.verify()


# -- random damage ---------------------------------------------------------------------------


def _forged(store: FolderStore, key: str, body: bytes) -> None:
    """An entry written by hand (as test_folder_guarantees._forge), sound checksums and all."""
    meta = Metadata(key, b"H", time.time(), None, (), None, "data.0badc0de.bin", len(body),
                    checksum(body))  # fmt: skip
    where = folder(store, key)
    where.mkdir(mode=0o700)
    (where / "data.0badc0de.bin").write_bytes(body)
    (where / "metadata.json").write_bytes(encode(meta))


ROUNDS = 30
COUNTER_FILES = (".stats.json", ".usage.json")


def test_random_bit_flips_never_break_verify_and_reads_stay_exact(tmp_path: Path) -> None:
    """30 seeded rounds: flip 1-6 bits at distinct places of random files of a store (entry
    files, counter files, a forged entry's); `verify(fix=True)` never raises, a second
    `verify` is clean, every entry whose files changed was reported and is a miss, and every
    other reads back its exact value."""
    rng = random.Random(20240613)
    for round_ in range(ROUNDS):
        store = FolderStore(tmp_path / f"store{round_}")
        keys = [f"k{n}" for n in range(10)]
        for n, key in enumerate(keys):
            store.set(key, entry(make_value(key, n, rng.choice((64, 500, 5_000, 70_000)))))
        _forged(store, "k10", make_value("k10", 10, 900))
        keys.append("k10")
        store.add_usage(Usage(hits=7))
        files = sorted(p for p in store.directory.rglob("*") if p.is_file())
        files = [p for p in files if p.parent.name.startswith("k") or p.name in COUNTER_FILES]
        changed: set[str] = set()
        for path in rng.sample(files, rng.randint(1, 4)):
            raw = bytearray(path.read_bytes())
            if not raw:
                continue
            for spot in rng.sample(range(len(raw)), min(len(raw), rng.randint(1, 6))):
                raw[spot] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(raw))
            if path.parent != store.directory:
                changed.add(path.parent.name)
        found = list(store.verify(fix=True))
        assert all(d.fixed and d.problem in DAMAGE_KINDS for d in found), found
        reported = {d.location.split("/")[0] for d in found}
        assert changed <= reported, f"round {round_}: damage in {changed - reported} missed"
        assert list(store.verify()) == [], f"round {round_}: verify is not clean after a fix"
        for key in keys:
            got = store.get(key)
            if entry_dir(key) in changed:
                assert got is None, f"round {round_}: damaged {key} still served"
            else:
                assert got is not None, f"round {round_}: untouched {key} lost"
                check_value(key, got.value)
        store.close()
