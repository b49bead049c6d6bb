"""Changes to a FolderStore's entries, serialised per key and stamped in its generation table.

A memory tier's copy of a FolderStore entry is served only while the store's generation table
(see `_generations`) holds the stamp the copy was written or read under. For a writer's own
copy to be right, the change and its stamp must not interleave with another change of the same
key: ``<root>/.generations.lock`` is locked by byte range (one byte per stripe of keys) with
open-file-description locks where the OS has them (Linux: no false "deadlock" between the
threads of two processes, as POSIX record locks report), and a thread lock beside each stripe
since threads share the descriptor. A stripe's changes and their stamps happen one at a time
across the host's processes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

from .._fs import open_dir, read_marker
from .._generations import Generations, open_generations
from ._owned import open_owned

TABLE_NAME = ".generations.json"
LOCK_NAME = ".generations.lock"
_STRIPES = 256
_TABLE_ID = re.compile(r"[0-9a-f]{22}|[0-9a-f]{32}")  # what `open_generations` takes as sound
_OFD_SETLKW = getattr(fcntl, "F_OFD_SETLKW", None)
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux (l_type, l_whence, l_start, l_len, l_pid)


def slot_of(name: str) -> int:
    """The generation slot of an entry folder (named ``<slug>-<32 hex of its key's hash>``)."""
    return Generations.index(int(name[-16:], 16))


_LIVE: weakref.WeakSet[Changes] = weakref.WeakSet()


class Changes:
    """The generation table of one FolderStore and the locks that order its changes."""

    def __init__(self, root: Path, root_fd: int, *, read_only: bool = False) -> None:
        self._root = root
        if read_only:  # no change is ever made here: nothing to lock, nothing written
            self.generations = _read_only_generations(root_fd, root)
            self._fd = -1
        else:
            self.generations = open_generations(root_fd, root, TABLE_NAME)
            self._fd = self._open_lock_file(root_fd)
        self._pid = os.getpid()
        self._threads = [threading.Lock() for _ in range(_STRIPES)]
        _LIVE.add(self)

    def _open_lock_file(self, root_fd: int) -> int:
        fd = open_owned(root_fd, LOCK_NAME, create=True)
        if fd is None:  # (never: a missing file is created)
            raise OSError(f"cannot create {self._root / LOCK_NAME}")
        return fd

    def after_fork(self) -> None:
        """In a forked child: another thread may have held a stripe at the fork, and the
        descriptor's locks are shared with the parent until it is opened anew."""
        self._threads = [threading.Lock() for _ in range(_STRIPES)]

    def close(self) -> None:
        self.generations.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _descriptor(self) -> int:
        if self._pid != os.getpid():  # (a forked child: a lock description of its own)
            root_fd = open_dir(self._root)
            try:
                fd = self._open_lock_file(root_fd)
            finally:
                os.close(root_fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd, self._pid = fd, os.getpid()
        return self._fd

    def epoch(self, name: str) -> int:
        return int(self.generations.view[slot_of(name)])

    def change_all(self) -> None:
        """Every key may change (a clear, an evict): new stamps everywhere, then wait for the
        changes in progress, so that the caller's scan sees every write that checked an older
        stamp."""
        self.generations.bump_all()
        fd = self._descriptor()
        for stripe in range(_STRIPES):
            with self._threads[stripe]:
                _lock(fd, stripe, exclusive=True)
                _lock(fd, stripe, exclusive=False)

    @contextlib.contextmanager
    def changing(
        self, name: str, epoch: int | None = None, stamp: int | None = None
    ) -> Iterator[bool]:
        """Hold the key's stripe while the caller changes entry folder `name`; then stamp it.
        Yields False (and stamps nothing) if `epoch` is given and the key changed since."""
        slot = slot_of(name)
        stripe = slot % _STRIPES
        with self._threads[stripe]:
            fd = self._descriptor()
            _lock(fd, stripe, exclusive=True)
            try:
                if epoch is not None and self.generations.view[slot] != epoch:
                    yield False
                    return
                try:
                    yield True
                finally:
                    self.generations.bump(slot, stamp)
            finally:
                _lock(fd, stripe, exclusive=False)


def _read_only_generations(root_fd: int, root: Path) -> Generations:
    """The shared table named in the store's marker, if it has a sound one (a table is made
    outside the store); else a private one: the store itself writes nothing."""
    try:
        found = read_marker(root_fd, root, TABLE_NAME).get("table")
    except (OSError, ValueError):
        found = None
    if isinstance(found, str) and _TABLE_ID.fullmatch(found):
        return open_generations(root_fd, root, TABLE_NAME)  # (only reads the marker)
    return Generations.private()


def _lock(fd: int, byte: int, *, exclusive: bool) -> None:
    """Lock (or unlock) one byte of `fd` for this open file description."""
    if _OFD_SETLKW is None:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_UN, 1, byte)
                return
            except OSError as exc:  # a false deadlock between two processes' threads
                if exc.errno != errno.EDEADLK:
                    raise
                time.sleep(0.001)
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_UNLCK
    fcntl.fcntl(fd, _OFD_SETLKW, _FLOCK.pack(kind, os.SEEK_SET, byte, 1, 0))


def _after_fork_in_child() -> None:
    for changes in list(_LIVE):
        changes.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
