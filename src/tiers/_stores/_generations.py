"""Generation tables: per-key stamps in shared memory, beside a local store.

A local store (DiskStore, FolderStore) writes a fresh random stamp into its key's slot of the
table each time it changes or removes the key, while holding its write lock. A memory tier
copy remembers the stamp its value was read or written under and is served only while the slot
still holds it: one 8-byte read from shared memory per hit, so that a write or delete by
another process is never hidden by this one's memory tier (docs/coherence.md).

The table lives in POSIX shared memory (tmpfs: RAM, so no truncated copy, full disk or I/O
error can fault the mapping, which stays outside the store directory an attacker may write),
under a random name kept in the store's root: only those who can read the root can find it.
Its first page names the root (mount namespace, device, inode, path), so that tables whose
store directory is gone are removed (`sweep`, run by each process that opens a store, at most
once an hour; only tables made in its own mount namespace, where the path means the same).
Keys share slots by hash: a write to one key makes the copies of its slot-mates look changed
too, which costs them one read from the store, never a wrong value.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import logging
import mmap
import os
import random
import re
import stat
import struct
import time
from pathlib import Path

from .._fileio import pread_exact
from . import _fs

log = logging.getLogger("tiers")

SLOTS = 1 << 16  # 512 KiB of stamps; pages are only allocated once written
_MASK = SLOTS - 1
HEADER = 4096  # magic, then the root's device, inode and path
_MAGIC = b"tiers-generations-1\0"
_ROOT = struct.Struct("<QQQH")  # mount namespace, device, inode, path length
SIZE = HEADER + SLOTS * 8
SHM_DIR = Path("/dev/shm")  # noqa: S108  (where POSIX shared memory shows on Linux: sweep)
_SWEEP_EVERY = 3600.0
_swept_at: list[float] = []
_STAMP = "tiers-swept"
_RETIRED = b"retired\0"  # written over the magic of a table removed by `sweep`
_ID = re.compile(r"[0-9a-f]{22}|[0-9a-f]{32}")  # 22 now: "/tiers-<id>" fits macOS' 31 bytes
NEVER = 1 << 64  # a stamp no slot ever holds (slots hold signed 64-bit values)

try:
    import _posixshmem  # type: ignore[import-not-found]  # (what multiprocessing uses)
except ImportError:  # not POSIX: each process keeps its own table (and says so)
    _posixshmem = None


_random = random.Random(os.urandom(32))  # (a syscall per stamp costs ~1 µs a write)


def new_stamp() -> int:
    """A random stamp, never 0 (a closed table reads 0 everywhere): two writes never leave
    the same one (2**-64; each process draws from its own seed, drawn anew after a fork)."""
    return (_random.getrandbits(64) - (1 << 63)) or 1


def _reseed() -> None:
    _random.seed(os.urandom(32))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


_CLOSED = memoryview(bytearray(SLOTS * 8)).cast("q")


class Generations:
    """One store's table of stamps. `view[index(key)]` is the key's current stamp."""

    __slots__ = ("_map", "shared", "view")  # (guards read `view` afresh on each check)

    def __init__(self, buffer: mmap.mmap | bytearray, shared: bool) -> None:
        self._map = buffer
        self.view = memoryview(buffer)[HEADER:].cast("q")
        self.shared = shared  # False: this process's own table (the sharing failed)

    @classmethod
    def private(cls) -> Generations:
        return cls(bytearray(SIZE), shared=False)

    @staticmethod
    def index(khash: int) -> int:
        """The slot of a key, from its 64-bit hash."""
        return khash & _MASK

    def bump(self, slot: int, stamp: int | None = None) -> None:
        """The key of `slot` changed (call with the store's write lock held)."""
        self.view[slot] = new_stamp() if stamp is None else stamp

    def bump_all(self) -> None:
        """Every key may have changed (a clear)."""
        self.view[:] = array.array("q", os.urandom(SLOTS * 8))

    def retired(self) -> bool:
        """Whether `sweep` removed this table (its store directory was deleted or replaced):
        the store must reopen."""
        return self._map[0] == _RETIRED[0]

    def close(self) -> None:
        """Copies guarded by this table look changed from now on (the store closed, or its
        directory was replaced); the mapping goes when the last reader lets go of it."""
        self.view = _CLOSED


def open_generations(root_fd: int, root: Path, marker: str) -> Generations:
    """The shared table of the store at `root`, whose random name is kept in its file
    `marker`. Falls back to a private table, with a warning, when shared memory is refused."""
    try:
        name = _table_name(root_fd, root, marker)
        table = Generations(_map_shared(name, _mode(root_fd), _header(root_fd, root)), True)
    except OSError as exc:
        log.warning(
            "cannot share the generation table of %s (%s: %s): memory tiers of other "
            "processes may serve values this process overwrote or deleted",
            root, type(exc).__name__, exc,
        )  # fmt: skip
        return Generations.private()
    if _sweep_due():
        with contextlib.suppress(OSError):
            sweep()
    return table


def _sweep_due() -> bool:
    """Whether this process should sweep now: at most once an hour per process, and per host
    (the mtime of ``tiers-swept`` beside the tables says when the last sweep began)."""
    if _swept_at and time.monotonic() - _swept_at[0] < _SWEEP_EVERY:
        return False
    _swept_at[:] = [time.monotonic()]
    if _posixshmem is None or not SHM_DIR.is_dir():
        return False
    stamp = SHM_DIR / _STAMP
    try:
        if time.time() - os.stat(stamp, follow_symlinks=False).st_mtime < _SWEEP_EVERY:
            return False
    except FileNotFoundError:
        pass
    except OSError:
        return False
    try:
        fd = _posixshmem.shm_open("/" + _STAMP, os.O_RDWR | os.O_CREAT, mode=0o600)
    except OSError:
        return False
    try:
        os.utime(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _table_name(root_fd: int, root: Path, marker: str) -> str:
    """The table's name from the root's marker (a new random one if missing or damaged)."""
    fresh = {"table": os.urandom(11).hex()}  # 88 random bits
    try:
        found = _fs.read_or_write_marker(root_fd, root, marker, fresh).get("table")
    except _fs.DamagedMarker:
        found = None
    if found == fresh["table"]:  # a new store: copies guarded by a store here before go
        with contextlib.suppress(OSError):
            sweep(replaced=root, keep=f"tiers-{found}")
    if not (isinstance(found, str) and _ID.fullmatch(found)):
        fcntl.flock(root_fd, fcntl.LOCK_EX)  # one process replaces it; the others read that
        try:
            try:
                found = _fs.read_marker(root_fd, root, marker).get("table")
            except (FileNotFoundError, _fs.DamagedMarker):
                found = None
            if not (isinstance(found, str) and _ID.fullmatch(found)):
                found = fresh["table"]
                _fs.replace_file(root_fd, marker, json.dumps(fresh).encode() + b"\n")
        finally:
            fcntl.flock(root_fd, fcntl.LOCK_UN)
    return f"/tiers-{found}"


def _mode(root_fd: int) -> int:
    """Owner read-write; group too when the store's root is group-writable (a shared store)."""
    return 0o660 if os.fstat(root_fd).st_mode & stat.S_IWGRP else 0o600


def _mount_namespace() -> int:
    """This process's mount namespace (Linux), 0 where unknown."""
    try:
        link = os.readlink("/proc/self/ns/mnt")  # "mnt:[4026531840]"
        return int(link[link.index("[") + 1 : -1])
    except (OSError, ValueError):
        return 0


def _header(root_fd: int, root: Path) -> bytes:
    info = os.fstat(root_fd)
    path = os.fsencode(root)[: HEADER - len(_MAGIC) - _ROOT.size]
    fields = _ROOT.pack(_mount_namespace(), info.st_dev, info.st_ino, len(path))
    return _MAGIC + fields + path


def _root_of(header: bytes) -> tuple[int, int, int, bytes] | None:
    """(mount namespace, device, inode, path) of the root a table's header names; None if
    not a header."""
    if not header.startswith(_MAGIC) or len(header) < len(_MAGIC) + _ROOT.size:
        return None
    mnt, dev, ino, length = _ROOT.unpack_from(header, len(_MAGIC))
    start = len(_MAGIC) + _ROOT.size
    path = header[start : start + length]
    return (mnt, dev, ino, path) if len(path) == length and path else None


def sweep(only_under: Path | None = None, *, replaced: Path | None = None, keep: str = "") -> int:
    """Remove the tables (of this user) whose store directory is gone or was replaced; with
    `only_under`, every table of a store under that directory; with `replaced`, the tables of
    earlier stores at that path (all but `keep`: the directory may have the same inode). Each
    is scrambled first: a process still holding one (its store deleted under it) then serves
    none of the copies it guards. Returns how many."""
    if _posixshmem is None or not SHM_DIR.is_dir():
        return 0
    removed = 0
    here = _mount_namespace()
    for name in os.listdir(SHM_DIR):
        if not (name.startswith("tiers-") and _ID.fullmatch(name[6:])):
            continue
        root = _table_root(name)
        if root is None or root[0] != here:  # (another namespace's path means another thing)
            continue
        _mnt, dev, ino, path = root
        if only_under is not None:
            doomed = path.startswith(os.fsencode(only_under) + b"/")
        elif replaced is not None:
            doomed = path == os.fsencode(replaced) and name != keep
        else:
            try:
                info = os.stat(path)
                doomed = (info.st_dev, info.st_ino) != (dev, ino)
            except FileNotFoundError:
                doomed = True
            except (OSError, ValueError):  # (unreadable, or not a path: leave it)
                continue
        if doomed:
            with contextlib.suppress(OSError, ValueError):
                _scramble("/" + name)
                _posixshmem.shm_unlink("/" + name)
                removed += 1
    return removed


def _scramble(name: str) -> None:
    """Every stamp of the table `name` anew (all copies it guards look changed)."""
    fd = _posixshmem.shm_open(name, os.O_RDWR, mode=0o600)
    try:
        if os.fstat(fd).st_size >= SIZE:
            with mmap.mmap(fd, SIZE) as mapped:
                mapped[HEADER:SIZE] = os.urandom(SLOTS * 8)
                mapped[: len(_RETIRED)] = _RETIRED
    finally:
        os.close(fd)


def _table_root(name: str) -> tuple[int, int, int, bytes] | None:
    try:
        fd = os.open(SHM_DIR / name, os.O_RDONLY | _fs.NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return None
        return _root_of(pread_exact(fd, HEADER, 0))
    finally:
        os.close(fd)


def _map_shared(name: str, mode: int, header: bytes) -> mmap.mmap:
    if _posixshmem is None:
        raise OSError("no POSIX shared memory on this platform")
    fd = _posixshmem.shm_open(name, os.O_RDWR | os.O_CREAT, mode=mode)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o007:
            raise PermissionError(f"shared memory {name} is not a private table")
        if info.st_uid == os.geteuid():
            os.fchmod(fd, mode)  # (the umask may have cleared the group bits)
        if info.st_size < SIZE:
            os.ftruncate(fd, SIZE)  # only ever grown: others' mappings stay valid
            os.pwrite(fd, header, 0)  # (two creators write the same)
        return mmap.mmap(fd, SIZE)
    finally:
        os.close(fd)
