"""Leased, token-checked locks shared by the processes of one host (single-flight).

A lock is a file in ``<root>/.locks/`` named by a hash of the lock's name, holding
``{"token": ..., "expires": ...}``; it is read, decided on and rewritten under an exclusive
`flock` of that file. Releasing deletes the file (still under its flock); whoever then gets
the flock of the deleted file sees that the name leads elsewhere and opens it again. Same
rules as DiskStore: a free or expired lock, or one the token already holds, can be taken;
only the holder's token renews or releases. A link planted at a lock's name is replaced, never
written through (`_owned`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..._codec._documents import load_object
from .._fs import flock, open_dir, unlock_and_close
from ._naming import lock_file
from ._owned import open_owned

LOCKS = ".locks"
_MAX = 64 * 1024


class Locks:
    def __init__(self, root: Path) -> None:
        self.root = root

    def acquire(self, name: str, token: str, expires: float, now: float) -> bool:
        with self._held(name, create=True) as (fd, _dir_fd):
            owner, until = _state(fd)
            if owner is not None and owner != token and until > now:
                return False
            _write(fd, token, expires)
            return True

    def renew(self, name: str, token: str, expires: float) -> bool:
        with self._held(name, create=False) as (fd, _dir_fd):
            if fd < 0 or _state(fd)[0] != token:
                return False
            _write(fd, token, expires)
            return True

    def holds(self, name: str, token: str, now: float) -> bool:
        """Whether `token` holds the lock with a lease that has not ended."""
        with self._held(name, create=False) as (fd, _dir_fd):
            if fd < 0:
                return False
            owner, until = _state(fd)
            return owner == token and until > now

    def release(self, name: str, token: str) -> bool:
        with self._held(name, create=False) as (fd, dir_fd):
            if fd < 0 or _state(fd)[0] != token:
                return False
            os.unlink(lock_file(name), dir_fd=dir_fd)
            return True

    @contextlib.contextmanager
    def _held(self, name: str, *, create: bool) -> Iterator[tuple[int, int]]:
        """(the lock's file flock-ed exclusively, or -1 if missing and not `create`; the
        directory)."""
        file = lock_file(name)
        dir_fd = open_dir(self.root, LOCKS)
        try:
            while True:
                fd = open_owned(dir_fd, file, create=create)
                if fd is None:
                    yield -1, dir_fd
                    return
                try:
                    flock(fd, exclusive=True)
                    if _same_file(dir_fd, file, fd):
                        break
                except BaseException:
                    unlock_and_close(fd)
                    raise
                unlock_and_close(fd)  # released (deleted) while we waited: open the new one
            try:
                yield fd, dir_fd
            finally:
                unlock_and_close(fd)
        finally:
            os.close(dir_fd)


def _same_file(dir_fd: int, file: str, fd: int) -> bool:
    try:
        at_name = os.stat(file, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (at_name.st_dev, at_name.st_ino) == (held.st_dev, held.st_ino)


def _state(fd: int) -> tuple[str | None, float]:
    """(token, lease end) of the lock; (None, 0) if free or unreadable."""
    try:
        found = load_object(os.pread(fd, _MAX, 0) or b"{}")
        token, expires = found["token"], found["expires"]
    except (ValueError, TypeError, KeyError):
        return None, 0.0
    if not isinstance(token, str) or type(expires) not in (int, float):
        return None, 0.0
    if not math.isfinite(expires):  # a planted lease of 1e999 must not hold a lock for ever
        return None, 0.0
    return token, float(expires)


def _write(fd: int, token: str, expires: float) -> None:
    data = json.dumps({"token": token, "expires": expires}).encode()
    os.ftruncate(fd, 0)
    done = 0
    while done < len(data):  # a short write is finished, not left half done
        done += os.pwrite(fd, data[done:], done)


class LocalLocks:
    """The locks of a store opened read-only: nothing can be written for other processes to
    see, so they are this process's own (single-flight among its threads). Same rules as
    `Locks`."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()

    def acquire(self, name: str, token: str, expires: float, now: float) -> bool:
        with self._mutex:
            owner, until = self._held.get(name, (None, 0.0))
            if owner is not None and owner != token and until > now:
                return False
            self._held[name] = (token, expires)
            return True

    def renew(self, name: str, token: str, expires: float) -> bool:
        with self._mutex:
            if self._held.get(name, (None, 0.0))[0] != token:
                return False
            self._held[name] = (token, expires)
            return True

    def holds(self, name: str, token: str, now: float) -> bool:
        with self._mutex:
            owner, until = self._held.get(name, (None, 0.0))
            return owner == token and until > now

    def release(self, name: str, token: str) -> bool:
        with self._mutex:
            if self._held.get(name, (None, 0.0))[0] != token:
                return False
            del self._held[name]
            return True
