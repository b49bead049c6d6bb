"""FolderStore guarantees, numbered as in docs/reliability.md: a crash loses nothing written (1),
damage and hand edits are counted misses (2), nothing outside the root (3: no symlink followed,
directories 0700; also files 0600 and a directory of another user, a non-empty foreign one or a
DiskStore's refused), a full disk is a `StoreFullError` and writes resume (4), a planted pickle
never runs (7); and, beyond those: processes and threads writing one store lose and garble no
value, and single-flight holds across processes. Real processes, real files, a real tmpfs;
nothing is mocked."""

from __future__ import annotations

import base64
import errno
import json
import multiprocessing
import os
import pickle
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tiers
from tests._disk_workers import check_value, entry, make_value
from tests._folder_workers import die_inside_commit, single_flight, writer_forever
from tiers import FolderStore
from tiers._stores._folder._metadata import Metadata, checksum, encode
from tiers._stores._folder._naming import DATA_FILE, ENTRY_DIR, entry_dir
from tiers.errors import StoreFullError, StorePermissionError, TiersError

KILLS = int(os.environ.get("TIERS_KILLS", "100"))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SPAWN = multiprocessing.get_context("spawn")
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="uses fork, /proc and tmpfs")


def folder(store: FolderStore, key: str) -> Path:
    return store.directory / entry_dir(key)


def data_path(store: FolderStore, key: str) -> Path:
    meta = json.loads((folder(store, key) / "metadata.json").read_text())
    return folder(store, key) / str(meta["data"])


def assert_consistent(store: FolderStore, keys: int) -> int:
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


def assert_no_leftovers(store: FolderStore) -> None:
    """No temporary or trashed folder; every entry folder holds metadata.json + its data."""
    root = store.directory
    assert list((root / ".tmp").iterdir()) == [], "temp files left behind"
    assert list((root / ".trash").iterdir()) == [], "trashed folders left behind"
    for path in root.iterdir():
        if path.name.startswith(".") or path.name == "CACHEDIR.TAG":
            continue
        assert ENTRY_DIR.match(path.name), f"stray {path.name}"
        meta = json.loads((path / "metadata.json").read_text())
        assert sorted(p.name for p in path.iterdir()) == sorted(["metadata.json", meta["data"]])


# -- kill -9 -------------------------------------------------------------------------------


@linux_only
@pytest.mark.slow
def test_kill_9_during_writes_never_corrupts(store_dir: Path) -> None:
    """≥100 writers killed with SIGKILL at random moments while writing 10 B-2 MB values:
    the store always opens, every read is the right value or a miss, nothing is left over."""
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(1234)
    FolderStore(store_dir).close()
    seen_present = torn_writes = 0
    for _round in range(KILLS):
        read_fd, write_fd = os.pipe()
        child = ctx.Process(target=writer_forever, args=(str(store_dir), 12, write_fd))
        child.start()
        os.close(write_fd)
        try:
            assert os.read(read_fd, 1) == b"1", "writer did not start"
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            os.close(read_fd)
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
            child.join(10)
        assert child.exitcode == -signal.SIGKILL
        torn_writes += bool(list((store_dir / ".tmp").iterdir()))
        store = FolderStore(store_dir)
        try:
            seen_present += assert_consistent(store, 12)
            assert_no_leftovers(store)
            assert store.stats().items == store.count()
        finally:
            store.close()
    assert seen_present > 0, "the writers never managed to store anything"
    assert torn_writes > 0, "no kill landed in the middle of a write"


@linux_only
def test_writer_killed_inside_its_commit_leaves_nothing_after_reopen(store_dir: Path) -> None:
    """Killed after switching metadata.json, before removing the old data file: the new
    value reads back, and the next opener removes the old file."""
    store = FolderStore(store_dir)
    store.set("k", entry(make_value("k", 1, 5_000)))
    child = multiprocessing.get_context("fork").Process(
        target=die_inside_commit, args=(str(store_dir), "k", make_value("k", 2, 7_000))
    )
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert len(list(folder(store, "k").iterdir())) == 3  # metadata + new + old data
    store.close()
    again = FolderStore(store_dir)
    try:
        assert check_value("k", again.get("k").value) == (2, 7_000)  # type: ignore[union-attr]
        assert_no_leftovers(again)
    finally:
        again.close()


# -- corruption ------------------------------------------------------------------------------


@pytest.fixture
def filled(store_dir: Path) -> Iterator[FolderStore]:
    store = FolderStore(store_dir)
    for n in range(12):
        store.set(f"k{n}", entry(make_value(f"k{n}", n, 100_000 if n < 6 else 500)))
    yield store
    store.close()


def assert_rejected(store: FolderStore, key: str, before: int) -> None:
    assert store.get(key) is None
    assert store.stats().rejected == before + 1
    assert not folder(store, key).exists(), "the damaged entry was not removed"
    assert store.get(key) is None and store.stats().rejected == before + 1


def test_bit_flip_in_data_file_is_a_counted_miss(filled: FolderStore) -> None:
    path = data_path(filled, "k1")
    data = bytearray(path.read_bytes())
    data[5000] ^= 0x10
    path.write_bytes(bytes(data))
    assert_rejected(filled, "k1", 0)
    assert assert_consistent(filled, 12) == 11


def test_truncated_data_file_is_a_counted_miss(filled: FolderStore) -> None:
    os.truncate(data_path(filled, "k2"), 1234)
    assert_rejected(filled, "k2", 0)


def test_missing_data_file_is_a_counted_miss(filled: FolderStore) -> None:
    data_path(filled, "k5").unlink()
    assert_rejected(filled, "k5", 0)


def test_data_files_swapped_between_entries_are_misses(filled: FolderStore) -> None:
    a, b = data_path(filled, "k3"), data_path(filled, "k4")
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    assert_rejected(filled, "k3", 0)
    assert_rejected(filled, "k4", 1)
    assert assert_consistent(filled, 12) == 10


def test_swapped_entry_folders_are_misses(filled: FolderStore) -> None:
    a, b = folder(filled, "k7"), folder(filled, "k8")
    os.rename(a, a.with_name("swap"))
    os.rename(b, a)
    os.rename(a.with_name("swap"), b)
    assert sorted(filled.keys()) == sorted(f"k{n}" for n in range(12) if n not in (7, 8))
    assert_rejected(filled, "k7", 0)
    assert_rejected(filled, "k8", 1)
    assert assert_consistent(filled, 12) == 10


@pytest.mark.parametrize(
    "damage",
    ["truncated", "not-json", "wrong-type", "digit-changed", "bit-flip", "deleted", "emptied"],
)
def test_damaged_metadata_is_a_counted_miss(filled: FolderStore, damage: str) -> None:
    path = folder(filled, "k9") / "metadata.json"
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "not-json":
        path.write_bytes(b"\x00\xff not json")
    elif damage == "wrong-type":
        doc = json.loads(raw)
        doc["size"] = "500"
        path.write_text(json.dumps(doc))
    elif damage == "digit-changed":  # still valid JSON: only metadata_checksum tells
        path.write_bytes(raw.replace(b'"size": 500', b'"size": 600'))
    elif damage == "bit-flip":
        at = raw.index(b'"key": "k9"') + 9
        path.write_bytes(raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :])
    elif damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"")
    assert path.read_bytes() != raw if path.exists() else True
    assert filled.info("k9") is None
    assert filled.stats().rejected == 1
    assert not folder(filled, "k9").exists()
    assert assert_consistent(filled, 12) == 11


def test_random_damage_to_every_file_never_raises(filled: FolderStore) -> None:
    """Random byte damage to every file of every entry: reads are right or misses, writes work."""
    rng = random.Random(7)
    for path in filled.directory.glob("k*/*"):
        raw = bytearray(path.read_bytes())
        for _ in range(3):
            at = rng.randrange(len(raw))
            raw[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
    assert assert_consistent(filled, 12) == 0
    assert filled.stats().rejected == 12
    for n in range(12):
        filled.set(f"k{n}", entry(make_value(f"k{n}", 100 + n, 300)))
    assert assert_consistent(filled, 12) == 12


def test_data_edited_by_hand_is_a_miss(tmp_path: Path) -> None:
    """A data file edited by hand fails its checksum: a miss, never the edited value."""
    cache = tiers.Cache(FolderStore(tmp_path / "store"), serializer="json")
    cache.set("report", {"total": 1})
    cache.set("other", {"total": 2})
    (entry_path,) = (tmp_path / "store").glob("report-*")
    (data,) = entry_path.glob("data.*.json")
    data.write_text('{"total":9}')
    assert cache.get("report") is None
    assert cache.stats().rejected >= 1
    assert cache.get("other") == {"total": 2}


def _forge(store: FolderStore, key: str, body: bytes, header: bytes) -> None:
    """An entry folder written by hand: valid checksums, forged codec header."""
    name = entry_dir(key)
    meta = Metadata(key, header, time.time(), None, (), None, "data.0badc0de.pkl", len(body),
                    checksum(body))  # fmt: skip
    where = store.directory / name
    where.mkdir(mode=0o700)
    (where / "data.0badc0de.pkl").write_bytes(body)
    (where / "metadata.json").write_bytes(encode(meta))


class _Plant:
    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.canary, "w"))


@pytest.mark.parametrize("signed", [True, False], ids=["fake-mac", "claims-unsigned"])
def test_planted_malicious_pickle_never_runs(tmp_path: Path, signed: bool) -> None:
    canary = tmp_path / "canary"
    payload = pickle.dumps(_Plant(str(canary)))
    header = bytes((1, 1 if signed else 0, 0, 6)) + b"pickle" + (b"\0" * 32 if signed else b"")
    store = FolderStore(tmp_path / "store")
    _forge(store, ":evil", payload, header)
    assert store.get(":evil") is not None  # the store serves what it holds, checksums intact
    cache = tiers.Cache(FolderStore(tmp_path / "store"))
    assert cache.get("evil", "miss") == "miss"
    assert not canary.exists(), "the planted pickle ran"
    assert cache.stats().rejected >= 1


# -- disk full ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [300_000, 2_000], ids=["large", "small"])
def test_disk_full_raises_store_full_and_recovers(tiny_disk: Path, size: int) -> None:
    store = FolderStore(tiny_disk / "store")
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
    assert store.count() == len(stored)
    for key in stored[:: max(1, len(stored) // 20)]:
        check_value(key, store.get(key).value)  # type: ignore[union-attr]
    with pytest.raises(StoreFullError):  # an overwrite that does not fit keeps the old value
        store.set(stored[1], entry(make_value(stored[1], 0, 6_000_000)))
    check_value(stored[1], store.get(stored[1]).value)  # type: ignore[union-attr]
    assert store.delete(stored[0]) is True
    assert store.clear() == len(stored) - 1
    assert store.count() == 0
    store.set("again", entry(make_value("again", 1, size)))  # writes resume
    check_value("again", store.get("again").value)  # type: ignore[union-attr]
    assert_no_leftovers(store)
    store.close()


# -- directories, permissions, symlinks ------------------------------------------------------


def test_modes_are_0700_and_0600_whatever_the_umask(store_dir: Path) -> None:
    old = os.umask(0)
    try:
        store = FolderStore(store_dir)
        store.set("small", entry(b"x" * 100))
        store.set("large", entry(b"y" * 100_000))
        store.set("large", entry(b"z" * 100_000))
        store.touch("small", None)
        assert store.acquire_lock("L", "me", 60)
        store.get("missing")
        store.pop("large")
        store.close()
    finally:
        os.umask(old)
    paths = [store_dir, *store_dir.rglob("*")]
    assert any(p.name == "metadata.json" for p in paths)
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {mode:o}"


@pytest.mark.skipif(not IS_ROOT, reason="needs root to give the directory to another user")
def test_directory_of_another_user_is_refused(store_dir: Path) -> None:
    store_dir.mkdir()
    os.chown(store_dir, 65534, 65534)
    with pytest.raises(StorePermissionError, match="another user"):
        FolderStore(store_dir)


def test_non_empty_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "project.txt").write_text("mine")
    with pytest.raises(StorePermissionError, match="not a tiers store"):
        FolderStore(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project.txt"]


def test_a_disk_store_directory_is_not_taken_for_a_folder_store(tmp_path: Path) -> None:
    tiers.DiskStore(tmp_path / "disk").close()
    with pytest.raises(StorePermissionError, match="not a tiers store"):
        FolderStore(tmp_path / "disk")
    FolderStore(tmp_path / "folder").close()
    with pytest.raises(StorePermissionError, match="not a tiers store"):
        tiers.DiskStore(tmp_path / "folder")


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metadata.json").write_text("{}")
    return outside


def _untouched(outside: Path) -> None:
    assert [p.name for p in outside.rglob("*")] == ["metadata.json"], "a write followed a link"
    assert (outside / "metadata.json").read_text() == "{}"


@pytest.mark.parametrize("swapped", [".tmp", ".trash", ".locks", "entry", "root"])
def test_symlink_swapped_in_while_open_is_never_written_through(
    store_dir: Path, tmp_path: Path, swapped: str
) -> None:
    outside = _outside(tmp_path)
    store = FolderStore(store_dir)
    store.set("k", entry(b"v" * 50_000))
    target = {"entry": folder(store, "k"), "root": store_dir}.get(swapped, store_dir / swapped)
    os.rename(target, tmp_path / "moved")
    os.symlink(outside, target)
    calls: list[Callable[[], object]] = [
        lambda: store.set("k", entry(b"w" * 50_000)),
        lambda: store.set("new", entry(b"n" * 10)),
        lambda: store.delete("k"),
        lambda: store.touch("k", None),
        lambda: store.pop("k"),
        lambda: store.acquire_lock("L", "me", 10),
        store.clear,
    ]
    failures = 0
    for call in calls:
        try:
            call()
        except TiersError:
            failures += 1
    assert failures >= (swapped != ".trash")  # deletes work without .trash (in place)
    _untouched(outside)
    store.close()
    if swapped != "entry":
        with pytest.raises(StorePermissionError):  # opening refuses a symlinked directory
            FolderStore(store_dir)
    _untouched(outside)


def test_symlinked_root_is_used_where_it_points(tmp_path: Path) -> None:
    real = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    real.mkdir()
    store = FolderStore(link)
    store.set("k", entry(b"v" * 10))
    assert store.directory == real.resolve()
    store.close()
    assert (real / ".tiers-folder.json").exists()
    assert [p.name for p in real.glob("k-*")] == [entry_dir("k")]


# -- many processes --------------------------------------------------------------------------


@pytest.mark.slow
def test_processes_and_threads_hammering_64_keys(store_dir: Path, tmp_path: Path) -> None:
    """4 processes x 4 threads mixing set/get/delete on 64 keys: no garbled or foreign values,
    no errors reaching a caller."""
    FolderStore(store_dir).close()
    worker = Path(__file__).with_name("_folder_workers.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = []
    for writer in range(4):
        errors = tmp_path / f"errors-{writer}.txt"
        cmd = [sys.executable, str(worker), "hammer", str(store_dir), str(writer), "4", "400",
               "64", str(errors)]  # fmt: skip
        procs.append((subprocess.Popen(cmd, env=env), errors))
    for proc, errors in procs:
        try:
            assert proc.wait(timeout=240) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        assert errors.read_text() == "ok 1600", errors.read_text()[:2000]
    store = FolderStore(store_dir)
    try:
        assert_consistent(store, 64)
        assert_no_leftovers(store)
        assert store.stats().items == store.count()
        assert store.stats().rejected == 0
    finally:
        store.close()


@pytest.mark.slow
def test_single_flight_holds_across_processes(tmp_path: Path) -> None:
    """4 processes x 4 threads calling get_or_set on one cold key: one computation, through
    the FolderStore's locks."""
    store_dir, counter = tmp_path / "store", tmp_path / "counter"
    FolderStore(store_dir).close()
    barrier = SPAWN.Barrier(4)
    outs = [tmp_path / f"out{i}.json" for i in range(4)]
    procs = [
        SPAWN.Process(
            target=single_flight, args=(str(store_dir), str(counter), str(out), barrier, 4)
        )
        for out in outs
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=90)
            assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
    lines = counter.read_text().splitlines()
    assert len(lines) == 1, f"the factory ran {len(lines)} times"
    for out in outs:
        assert json.loads(out.read_text()) == [{"by": int(lines[0])}] * 4
    assert list((store_dir / ".locks").iterdir()) == [], "a released lock left its file"


def test_data_file_names_follow_the_pattern(filled: FolderStore) -> None:
    for path in filled.directory.glob("k*/data.*"):
        assert DATA_FILE.match(path.name), path.name
        assert base64.b64decode(json.loads((path.parent / "metadata.json").read_text())["header"])
