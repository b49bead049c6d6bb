"""FolderStore and links planted inside its root (hole G): whatever symlink or hard link sits at
a name the store opens, writes, creates, chmods, touches or deletes, nothing outside the root
is ever read, written, created, chmodded or deleted — and the store keeps working.

Outside the root there is a victim file (fixed content, mode and times) and a directory; each
test plants a link at one of the store's fixed names, drives the store through what uses that
name, and checks that the victim and the directory are exactly as they were.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests._disk_workers import check_value, entry, make_value
from tiers import FolderStore
from tiers._stores._folder._metadata import Metadata, checksum, encode
from tiers._stores._folder._naming import entry_dir, lock_file
from tiers.errors import TiersError

ROOT = Path(__file__).resolve().parent.parent
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="uses fork")
OLD = 1_000_000_000  # a fixed mtime (2001) that any touch would change


class Outside:
    """A victim file and a directory outside the store, and a check that neither changed."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "outside"
        self.dir.mkdir()
        self.victim = self.dir / "victim"
        self.victim.write_bytes(b"precious, not the store's")
        os.chmod(self.victim, 0o644)
        os.utime(self.victim, (OLD, OLD))
        self.absent = self.dir / "absent"  # a symlink may point here: must not be created

    def assert_untouched(self) -> None:
        names = sorted(p.name for p in self.dir.iterdir())
        assert names == ["victim"], f"files appeared or went outside the root: {names}"
        info = self.victim.stat()
        assert self.victim.read_bytes() == b"precious, not the store's", "victim written"
        assert info.st_mode & 0o7777 == 0o644, f"victim chmodded to {info.st_mode & 0o7777:o}"
        assert info.st_mtime == OLD, "victim touched"


def plant(at: Path, outside: Outside, how: str) -> None:
    """A link at `at`: ``hard`` to the victim, ``symlink`` to it, ``dangling`` to a path outside
    that does not exist."""
    if at.exists() or at.is_symlink():
        at.unlink()
    if how == "hard":
        os.link(outside.victim, at)
        os.utime(outside.victim, (OLD, OLD))  # (linking changes ctime only; keep it exact)
    elif how == "symlink":
        at.symlink_to(outside.victim)
    else:
        at.symlink_to(outside.absent)


def works(store: FolderStore) -> None:
    """The store still reads and writes after meeting the planted link."""
    store.set("after", entry(make_value("after", 1, 5_000)))
    check_value("after", store.get("after").value)  # type: ignore[union-attr]


HOWS = ["hard", "symlink", "dangling"]


@pytest.mark.parametrize("how", HOWS)
def test_stats_file_link(tmp_path: Path, how: str) -> None:
    """`.stats.json` is rewritten in place under a flock: a link there must be replaced."""
    outside = Outside(tmp_path)
    root = tmp_path / "store"
    FolderStore(root).close()
    plant(root / ".stats.json", outside, how)
    store = FolderStore(root)  # creates the counters file when it is short
    store.set("k", entry(b"v" * 100))
    (root / entry_dir("k") / "metadata.json").write_bytes(b"damaged")
    assert store.get("k") is None  # a rejected read counts
    assert store.stats().rejected == 1
    assert store.expire() == 0
    works(store)
    outside.assert_untouched()
    assert not (root / ".stats.json").is_symlink()


@pytest.mark.parametrize("how", HOWS)
def test_lock_file_link(tmp_path: Path, how: str) -> None:
    """A lock file is truncated and rewritten when taken: a link there must be replaced."""
    outside = Outside(tmp_path)
    root = tmp_path / "store"
    store = FolderStore(root)
    plant(root / ".locks" / lock_file("L"), outside, how)
    assert store.acquire_lock("L", "me", 30)
    assert store.renew_lock("L", "me", 30)
    assert not store.acquire_lock("L", "you", 30)
    assert store.release_lock("L", "me")
    outside.assert_untouched()
    plant(root / ".locks" / lock_file("M"), outside, how)  # renew and release only: no change
    assert not store.renew_lock("M", "me", 30)
    assert not store.release_lock("M", "me")
    works(store)
    outside.assert_untouched()


@pytest.mark.parametrize("how", HOWS)
def test_sweep_marker_link(tmp_path: Path, how: str) -> None:
    """`.procs/.swept` is touched once a day: never through a link."""
    outside = Outside(tmp_path)
    root = tmp_path / "store"
    FolderStore(root).close()
    plant(root / ".procs" / ".swept", outside, how)
    if how == "hard":
        os.utime(root / ".procs" / ".swept", (OLD, OLD))  # old: the daily sweep is due
    works(FolderStore(root))
    outside.assert_untouched()


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", [".gitignore", "CACHEDIR.TAG"])
def test_cosmetic_file_link(tmp_path: Path, how: str, name: str) -> None:
    outside = Outside(tmp_path)
    root = tmp_path / "store"
    FolderStore(root).close()
    plant(root / name, outside, how)
    works(FolderStore(root))
    outside.assert_untouched()


@pytest.mark.parametrize("how", HOWS)
def test_marker_link_is_refused_without_reading_through(tmp_path: Path, how: str) -> None:
    """A link in place of `.tiers-folder.json`: the store refuses to open (it cannot tell what
    the directory is), and touches nothing outside."""
    outside = Outside(tmp_path)
    root = tmp_path / "store"
    FolderStore(root).close()
    plant(root / ".tiers-folder.json", outside, how)
    outside.victim.write_bytes(b'{"format": "tiers-folder", "version": 1}\n')
    os.chmod(outside.victim, 0o644)
    os.utime(outside.victim, (OLD, OLD))
    with pytest.raises(TiersError):
        FolderStore(root)
    names = sorted(p.name for p in outside.dir.iterdir())
    assert names == ["victim"]
    assert outside.victim.stat().st_mtime == OLD


def test_marker_left_linked_by_a_failed_unlink_still_opens(tmp_path: Path) -> None:
    """The marker is written under a temporary name and linked into place; if removing the
    temporary name fails (EIO), the marker has two links. Found by tests/test_io_faults.py:
    the store then refused to open ever again. Both names are the store's own: it opens."""
    root = tmp_path / "store"
    FolderStore(root).close()
    os.link(root / ".tiers-folder.json", root / f"..tiers-folder.json.{os.getpid()}.tmp")
    store = FolderStore(root)
    works(store)
    assert [p.name for p in root.iterdir() if p.name.startswith("..")] == []


def test_data_file_hard_linked_to_an_outside_file_is_never_served(tmp_path: Path) -> None:
    """A planted entry whose metadata is sound and whose data file is a hard link to a file
    outside the root (checksum and all): its content is never read and returned."""
    outside = Outside(tmp_path)
    store = FolderStore(tmp_path / "store")
    body = outside.victim.read_bytes()
    folder = store.directory / entry_dir(":k")
    folder.mkdir(mode=0o700)
    os.link(outside.victim, folder / "data.0badc0de.bin")
    header = bytes((1, 0, 0, 3)) + b"raw"
    meta = Metadata(":k", header, 1.0, None, (), None, "data.0badc0de.bin", len(body),
                    checksum(body))  # fmt: skip
    (folder / "metadata.json").write_bytes(encode(meta))
    os.utime(outside.victim, (OLD, OLD))
    assert store.get(":k") is None, "a file outside the root was read and served"
    outside.assert_untouched()


@pytest.mark.parametrize("name", ["metadata.json", "data"])
def test_entry_file_hard_link_is_a_miss_and_the_victim_stays(tmp_path: Path, name: str) -> None:
    """A hard link planted as an entry's metadata.json or data file is not the store's file:
    the entry is a miss and goes (its names only); the victim keeps its content and link."""
    outside = Outside(tmp_path)
    store = FolderStore(tmp_path / "store")
    store.set("k", entry(make_value("k", 1, 5_000)))
    folder = store.directory / entry_dir("k")
    target = folder / "metadata.json"
    if name == "data":
        target = next(p for p in folder.iterdir() if p.name.startswith("data."))
    plant(target, outside, "hard")
    assert store.get("k") is None
    store.set("k", entry(make_value("k", 2, 5_000)))
    assert check_value("k", store.get("k").value) == (2, 5_000)  # type: ignore[union-attr]
    outside.assert_untouched()
    assert outside.victim.stat().st_nlink == 1


def _read_entry_with_a_fifo(root: str, name: str) -> None:
    store = FolderStore(root)
    folder = store.directory / entry_dir("k")
    target = folder / "metadata.json"
    if name == "data":
        target = next(p for p in folder.iterdir() if p.name.startswith("data."))
    target.unlink()
    os.mkfifo(target, 0o600)
    assert store.get("k") is None
    store.set("k", entry(make_value("k", 2, 500)))
    assert check_value("k", store.get("k").value) == (2, 500)  # type: ignore[union-attr]


@linux_only
@pytest.mark.parametrize("name", ["metadata.json", "data"])
def test_fifo_planted_as_an_entry_file_is_a_miss_not_a_hang(tmp_path: Path, name: str) -> None:
    """Opening a fifo for reading waits for a writer: a fifo planted as metadata.json or a
    data file must be a miss, not a read that never returns."""
    store = FolderStore(tmp_path / "store")
    store.set("k", entry(make_value("k", 1, 500)))
    child = multiprocessing.get_context("fork").Process(
        target=_read_entry_with_a_fifo, args=(str(tmp_path / "store"), name)
    )
    child.start()
    child.join(20)
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(10)
        pytest.fail("reading an entry whose file is a fifo hung")
    assert child.exitcode == 0


_SWAP_PROCS = """
import os, sys
sys.path.insert(0, {root!r})
from tests._disk_workers import entry
from tiers import FolderStore
from tiers.errors import TiersError
root, outside, moved = sys.argv[1:4]
store = FolderStore(root)
store.set("k", entry(b"v" * 100))
os.rename(os.path.join(root, ".procs"), moved)
os.symlink(outside, os.path.join(root, ".procs"))
open(os.path.join(outside, str(os.getpid())), "w").write("precious")
pid = os.fork()
if pid == 0:
    try:
        store.set("child", entry(b"c" * 100))  # registers the child in .procs
    except TiersError:
        pass
    os._exit(0)
os.waitpid(pid, 0)
print(pid)
"""  # then the process exits: it unregisters itself from .procs


@linux_only
def test_procs_swapped_for_a_symlink_while_open(tmp_path: Path) -> None:
    """`.procs/<pid>` is created when a (forked) process first writes and deleted at exit:
    with `.procs` swapped for a symlink, neither may happen outside the root."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "store"
    script = _SWAP_PROCS.format(root=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", script, str(root), str(outside), str(tmp_path / "moved")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    child = done.stdout.strip()
    names = sorted(p.name for p in outside.iterdir())
    assert child not in names, "a registration was created outside the root"
    assert len(names) == 1, f"the parent's file outside the root was deleted: {names}"
    assert (outside / names[0]).read_text() == "precious"


def _drive_everything(store: FolderStore) -> None:
    """Every operation, to meet whatever link is planted."""
    calls: list[Callable[[], Any]] = [
        lambda: store.set("k", entry(b"v" * 50_000)),
        lambda: store.get("k"),
        lambda: store.touch("k", None),
        lambda: store.pop("k"),
        lambda: store.set("k", entry(b"w" * 10)),
        lambda: store.acquire_lock("L", "me", 10),
        lambda: store.release_lock("L", "me"),
        store.stats,
        store.expire,
        lambda: store.evict("t"),
        lambda: list(store.keys()),
        store.clear,
    ]
    for call in calls:
        with contextlib.suppress(TiersError):
            call()


@pytest.mark.parametrize("how", HOWS)
def test_every_fixed_name_linked_at_once(tmp_path: Path, how: str) -> None:
    """Links at every fixed name the store opens (not the marker): the store works and the
    outside is untouched."""
    outside = Outside(tmp_path)
    root = tmp_path / "store"
    FolderStore(root).close()
    for at in (".stats.json", ".gitignore", "CACHEDIR.TAG", ".procs/.swept",
               f".locks/{lock_file('L')}", f".procs/{os.getpid() + 1}"):  # fmt: skip
        plant(root / at, outside, how)
    store = FolderStore(root)
    _drive_everything(store)
    works(store)
    store.close()
    outside.assert_untouched()
