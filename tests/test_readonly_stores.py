"""A local store this process cannot write opens read-only and changes nothing of the user's.

A FolderStore on a read-only mount, made read-only with ``chmod -R a-w`` (honoured even by
root, who could write anyway), or not writable by this user: reads work, every change raises
`StorePermissionError` (a `Cache` degrades as for any failing tier), and no file's mode, owner
or content changes, on open or after. An existing store is never chmodded on open. A DiskStore
(which must write even to read) is refused with `StorePermissionError` instead, before
anything in it is touched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import tiers
from tests._read_only import IS_ROOT, read_only_view
from tiers import DiskStore, FolderStore, MemoryStore
from tiers._stores._protocol import Entry
from tiers.errors import StorePermissionError

needs_root = pytest.mark.skipif(
    not (IS_ROOT and sys.platform == "linux"), reason="needs root on Linux (mounts, chown)"
)


def entry(value: bytes) -> Entry:
    return Entry(value, b"", time.time(), None, ("t",), None, len(value))


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """(mode, uid, gid, sha256 of content) of everything under `root`, `root` included."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(root))] = (
            stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, digest
        )  # fmt: skip
    return out


def make_results(root: Path) -> None:
    """A folder store holding entries "a" (live), "old" (expired: never removed here) and a
    cache's "cached" ({"x": 1}, JSON)."""
    store = FolderStore(root)
    store.set("a", entry(b"v"))
    store.set("old", Entry(b"o", b"", time.time() - 10, time.time() - 1, (), None, 1))
    store.close()
    cache = tiers.Cache(f"folder://{root}", serializer="json")
    cache.set("cached", {"x": 1})
    cache.close()


def archive(root: Path) -> None:
    """``chmod -R a-w``: files 0444, folders 0555."""
    for path in sorted(root.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    root.chmod(0o555)


def check_read_only(root: Path) -> None:
    """Open `root` as a FolderStore: reads work, changes raise, nothing changes."""
    before = snapshot(root)
    store = FolderStore(root)
    try:
        assert store.read_only
        assert snapshot(root) == before, "opening changed the store"
        got = store.get("a")
        assert got is not None
        assert store.info("a") is not None and store.get("old") is None
        assert "a" in list(store.keys()) and store.count() == 2
        assert store.stats().items == 3
        changes = [
            lambda: store.set("b", entry(b"new")),
            lambda: store.delete("a"),
            store.clear,
            lambda: store.pop("a"),
            lambda: store.touch("a", None),
            store.expire,
            lambda: store.evict("t"),
            lambda: store.set_if_held("a", entry(b"x"), "L", "me"),
        ]
        for change in changes:
            with pytest.raises(StorePermissionError, match="is read-only") as caught:
                change()
            assert str(store.directory) in str(caught.value)
            assert "writable" in str(caught.value)
        # single-flight locks of a read-only store are this process's own
        assert store.acquire_lock("L", "me", 30) and not store.acquire_lock("L", "you", 30)
        assert store.renew_lock("L", "me", 30) and store.release_lock("L", "me")
        assert store.get("a") is not None and store.get("old") is None
        assert snapshot(root) == before, "using the read-only store changed it"
    finally:
        store.close()
    cache = tiers.Cache(MemoryStore(), FolderStore(root), serializer="json")  # degrades
    try:
        assert cache.get("cached") == {"x": 1}
        cache.set("c", 3)  # the folder tier fails, like any failing tier; no exception
        assert cache.stats().tiers[1].errors >= 1
        started = time.monotonic()
        assert cache.get_or_set("d", lambda: 4) == 4
        assert time.monotonic() - started < 5, "a read-only tier's lock was waited for"
    finally:
        cache.close()
    assert snapshot(root) == before, "a Cache over the read-only store changed it"


@needs_root
def test_a_folder_store_on_a_read_only_mount_opens_read_only(tmp_path: Path) -> None:
    make_results(tmp_path / "results")
    with read_only_view(tmp_path / "results", tmp_path / "ro") as view:
        check_read_only(view)


def test_a_folder_store_made_read_only_by_its_user_is_never_made_writable(
    tmp_path: Path,
) -> None:
    root = tmp_path / "results"
    make_results(root)
    archive(root)
    try:
        check_read_only(root)  # as root too: the modes say read-only, and stay so
        assert stat.S_IMODE(root.stat().st_mode) == 0o555
        assert all(
            stat.S_IMODE(p.lstat().st_mode) == (0o555 if p.is_dir() else 0o444)
            for p in root.rglob("*")
        )
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o700 if path.is_dir() else 0o600)


def test_opening_a_writable_store_changes_no_mode(tmp_path: Path) -> None:
    """A store the user made group-readable keeps its modes (only what tiers creates is
    0700/0600): opening never chmods."""
    for kind in (FolderStore, DiskStore):
        root = tmp_path / kind.__name__
        store = kind(root)
        store.set("a", entry(b"v"))
        store.close()
        root.chmod(0o750)
        for path in root.rglob("*"):
            if path.is_dir():
                path.chmod(0o750)
        before = snapshot(root)
        store = kind(root)
        assert not getattr(store, "read_only", False)
        assert snapshot(root) == before, f"opening a {kind.__name__} changed modes"
        assert store.get("a") is not None
        store.close()


_AS_NOBODY = """
import os, sys
import tiers
from tiers import FolderStore
from tiers._stores._protocol import Entry
from tiers.errors import StorePermissionError
os.setgid(65534); os.setuid(65534)  # (after the imports: the interpreter may be root's only)
store = FolderStore(sys.argv[1])
print("read_only", store.read_only)
print("get", store.get("a") is not None)
try:
    store.set("b", Entry(b"v", b"", 0.0, None, (), None, 1))
except StorePermissionError as exc:
    print("set", type(exc).__name__)
try:
    tiers.DiskStore(sys.argv[2])
except StorePermissionError as exc:
    print("disk", type(exc).__name__, "make it writable" in str(exc))
"""


@needs_root
def test_a_store_of_another_users_making_read_only_opens_read_only_for_it() -> None:
    """As the store's owner without root's override: a FolderStore whose folders it may not
    write (0555) opens read-only, a DiskStore is refused; nothing changes."""
    top = Path(tempfile.mkdtemp())
    try:
        top.chmod(0o755)  # (reachable by nobody)
        folder, disk = top / "folder", top / "disk"
        make_results(folder)
        store = DiskStore(disk)
        store.set("a", entry(b"v"))
        store.close()
        for root in (folder, disk):
            for path in [root, *root.rglob("*")]:
                os.chown(path, 65534, 65534, follow_symlinks=False)
            archive(root)
        before = {root: snapshot(root) for root in (folder, disk)}
        out = subprocess.run(
            [sys.executable, "-c", _AS_NOBODY, str(folder), str(disk)],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.splitlines()  # fmt: skip
        assert out == [
            "read_only True", "get True", "set StorePermissionError",
            "disk StorePermissionError True",
        ]  # fmt: skip
        assert {root: snapshot(root) for root in (folder, disk)} == before
    finally:
        for path in [top, *top.rglob("*")]:
            path.chmod(0o700)
        shutil.rmtree(top)


@needs_root
def test_a_disk_store_on_a_read_only_mount_is_refused_untouched(tmp_path: Path) -> None:
    source = tmp_path / "store"
    store = DiskStore(source)
    store.set("a", entry(b"v"))
    store.close()
    archive(source)  # and marked read-only too: even root is refused
    try:
        before = snapshot(source)
        with pytest.raises(StorePermissionError, match="marked read-only"):
            DiskStore(source)
        with (
            read_only_view(source, tmp_path / "ro") as view,
            pytest.raises(StorePermissionError, match="read-only file system"),
        ):
            tiers.Cache(view)
        assert snapshot(source) == before
    finally:
        for path in [source, *source.rglob("*")]:
            path.chmod(0o700 if path.is_dir() else 0o600)


def test_a_read_only_folder_without_a_store_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o555)
    try:
        with pytest.raises(StorePermissionError, match="cannot make a FolderStore") as caught:
            FolderStore(empty)
        assert str(empty) in str(caught.value)
        assert list(empty.iterdir()) == [] and stat.S_IMODE(empty.stat().st_mode) == 0o555
    finally:
        empty.chmod(0o700)
