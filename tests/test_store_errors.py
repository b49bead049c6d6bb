"""What a user sees when a local store cannot be used: a `tiers.errors` error (never a raw
OSError), `StorePermissionError` for a permission or a read-only file system, with one
sentence naming the path and what to do."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import tiers
from tests._read_only import IS_ROOT, read_only_view
from tiers import DiskStore, FolderStore
from tiers._stores._protocol import Entry
from tiers.errors import StoreError, StorePermissionError

needs_root = pytest.mark.skipif(
    not (IS_ROOT and sys.platform == "linux"), reason="bind mounts need root on Linux"
)
OPENERS: list[Callable[[Path], object]] = [DiskStore, FolderStore, tiers.Cache]


def entry(value: bytes) -> Entry:
    return Entry(value, b"", time.time(), None, (), None, len(value))


def _one_sentence(message: str) -> None:
    assert "[Errno" not in message, message
    assert ". " not in message.rstrip("."), message


@pytest.mark.parametrize("opener", OPENERS, ids=lambda o: getattr(o, "__name__", "?"))
def test_a_path_under_a_regular_file_is_a_store_error(tmp_path: Path, opener: Callable) -> None:
    afile = tmp_path / "afile"
    afile.write_bytes(b"not a directory")
    with pytest.raises(StoreError) as caught:
        opener(afile / "sub")
    message = str(caught.value)
    assert f"{afile} is a file" in message and str(afile / "sub") in message
    assert "choose a path" in message
    _one_sentence(message)
    assert afile.read_bytes() == b"not a directory"


@pytest.mark.parametrize("opener", OPENERS, ids=lambda o: getattr(o, "__name__", "?"))
def test_a_path_that_is_a_file_is_refused_saying_what_to_do(
    tmp_path: Path, opener: Callable
) -> None:
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    with pytest.raises(StorePermissionError, match="choose another path") as caught:
        opener(afile)
    assert str(afile) in str(caught.value)
    _one_sentence(str(caught.value))


def test_a_folder_store_opened_as_a_disk_store_says_how_to_open_it(tmp_path: Path) -> None:
    FolderStore(tmp_path / "f").close()
    with pytest.raises(
        StorePermissionError,
        match=r"not a tiers store of this kind: it holds a FolderStore \(folder:///path\)",
    ):
        tiers.Cache(str(tmp_path / "f"))


@needs_root
def test_a_disk_store_on_a_read_only_mount_is_refused_clearly(tmp_path: Path) -> None:
    source = tmp_path / "store"
    store = DiskStore(source)
    store.set("k", entry(b"v"))
    store.close()
    with read_only_view(source, tmp_path / "ro") as view:
        for opener in (DiskStore, tiers.Cache):
            with pytest.raises(StorePermissionError) as caught:
                opener(view)
            message = str(caught.value)
            assert str(view) in message and "read-only file system" in message
            assert "make it writable" in message
            assert caught.value.__cause__ is None or not isinstance(
                caught.value.__cause__, StoreError
            )
            _one_sentence(message)


@needs_root
def test_a_new_store_on_a_read_only_mount_is_a_permission_error(tmp_path: Path) -> None:
    (tmp_path / "parent").mkdir()
    with read_only_view(tmp_path / "parent", tmp_path / "ro") as view:
        for opener in OPENERS:
            with pytest.raises(StorePermissionError, match="read-only") as caught:
                opener(view / "new")
            assert str(view / "new") in str(caught.value)
            _one_sentence(str(caught.value))


_UNPRIVILEGED = """
import os, sys
import tiers
from tiers.errors import StorePermissionError
os.setgid(65534); os.setuid(65534)  # (after the imports: the interpreter may be root's only)
for opener in (tiers.DiskStore, tiers.FolderStore, tiers.Cache):
    try:
        opener(sys.argv[1])
    except StorePermissionError as exc:
        print(type(exc).__name__, exc)
    else:
        print("opened")
"""


@pytest.mark.skipif(not IS_ROOT, reason="needs root to drop privileges")
def test_a_directory_this_user_cannot_write_in_is_a_permission_error(tmp_path: Path) -> None:
    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)  # root's: nobody may create anything in it
    target = parent / "store"
    out = subprocess.run(
        [sys.executable, "-c", _UNPRIVILEGED, str(target)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    assert len(out) == 3, out
    for line in out:
        assert line.startswith("StorePermissionError"), line
        assert str(target) in line and "permission denied" in line
        assert "give this process write access" in line
        _one_sentence(line.split(" ", 1)[1])
