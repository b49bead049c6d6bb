"""Leased, token-checked locks shared by the processes of one host (single-flight).

A lock is a file in ``<root>/.locks/`` named by a hash of the lock's name, holding
``{"token": ..., "expires": ...}``; it is read, decided on and rewritten under an exclusive
`flock` of that file. Releasing deletes the file (still under its flock); whoever then gets
the flock of the deleted file sees that the name leads elsewhere and opens it again. Who may
take a lock is `_rules.may_take`; only the holder's token renews or releases. A link planted
at a lock's name is replaced, never written through (`_owned`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ... import _rules
from ..._codec._documents import load_object
from ..._fileio import pread_exact
from .._fs import flocked, open_dir
from ._naming import lock_file
from ._owned import open_owned

LOCKS = ".locks"
_MAX = 64 * 1024


class Locks:
    def __init__(self, root: Path) -> None:
        self.root = root

    def acquire(self, name: str, token: str, expires: float, now: float) -> bool:
        with self._held(name, create=True) as (fd, _dir_fd):
            if not _rules.may_take(*_state(fd), token, now):
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
            return fd >= 0 and _rules.holds(*_state(fd), token, now)

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
            opened = flocked(
                dir_fd, file, lambda: open_owned(dir_fd, file, create=create), exclusive=True
            )
            with opened as fd:
                yield (-1 if fd is None else fd), dir_fd
        finally:
            os.close(dir_fd)


def _state(fd: int) -> tuple[str | None, float]:
    """(token, lease end) of the lock; (None, 0) if free or unreadable."""
    try:
        found = load_object(pread_exact(fd, _MAX, 0) or b"{}")
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
            if not _rules.may_take(*self._state(name), token, now):
                return False
            self._held[name] = (token, expires)
            return True

    def renew(self, name: str, token: str, expires: float) -> bool:
        with self._mutex:
            if self._state(name)[0] != token:
                return False
            self._held[name] = (token, expires)
            return True

    def holds(self, name: str, token: str, now: float) -> bool:
        with self._mutex:
            return _rules.holds(*self._state(name), token, now)

    def release(self, name: str, token: str) -> bool:
        with self._mutex:
            if self._state(name)[0] != token:
                return False
            del self._held[name]
            return True

    def _state(self, name: str) -> tuple[str | None, float]:
        """(token, lease end) of the lock; (None, 0) if free."""
        return self._held.get(name, (None, 0.0))
