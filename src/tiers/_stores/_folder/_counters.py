"""Removal counters (evictions, expirations, rejected) shared by every process of a store.

They live in ``<root>/.stats.json``, a small JSON object rewritten in place, padded to a fixed
size so a write is one `pwrite`, under an exclusive `flock`: counts from several processes add
up. Counters are advisory: a damaged file reads as zeros, and a failure to count never fails
the operation that counted. A link planted at the name is replaced, never written through
(`_owned`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..._codec._documents import load_object
from .._fs import flock, open_dir, unlock_and_close
from ._owned import open_owned, open_owned_to_read

FILE = ".stats.json"
NAMES = ("evictions", "expirations", "rejected")
_SIZE = 256


class Counters:
    def __init__(self, root: Path, *, read_only: bool = False) -> None:
        self.root = root
        self.read_only = read_only  # read, never created, written or chmodded

    def create(self) -> None:
        """Make the file now, while there is room (counting must work on a full disk)."""
        if self.read_only:
            return
        with contextlib.suppress(OSError), self._open() as fd:
            flock(fd, exclusive=True)
            if os.fstat(fd).st_size < _SIZE:
                _write(fd, _parse(os.pread(fd, _SIZE, 0)))

    def add(self, name: str, n: int = 1) -> None:
        if n <= 0 or self.read_only:
            return
        with contextlib.suppress(OSError), self._open() as fd:
            flock(fd, exclusive=True)
            counts = _parse(os.pread(fd, _SIZE, 0))
            counts[name] += n
            _write(fd, counts)

    def read(self) -> dict[str, int]:
        try:
            with self._open() as fd:
                flock(fd, exclusive=False)
                return _parse(os.pread(fd, _SIZE, 0))
        except OSError:
            return dict.fromkeys(NAMES, 0)

    @contextlib.contextmanager
    def _open(self) -> Iterator[int]:
        root_fd = open_dir(self.root)
        try:
            if self.read_only:
                fd = open_owned_to_read(root_fd, FILE)
            else:
                fd = open_owned(root_fd, FILE, create=True)
        finally:
            os.close(root_fd)
        if fd is None:  # (not with create=True)
            raise FileNotFoundError(errno.ENOENT, FILE)
        try:
            yield fd
        finally:
            unlock_and_close(fd)  # (a lock, if taken, is released even if close fails)


def _parse(raw: bytes) -> dict[str, int]:
    counts = dict.fromkeys(NAMES, 0)
    try:
        found = load_object(raw.strip() or b"{}")
    except ValueError:
        return counts
    if isinstance(found, dict):
        for name in NAMES:
            value = found.get(name)
            if type(value) is int and value >= 0:
                counts[name] = value
    return counts


def _write(fd: int, counts: dict[str, int]) -> None:
    text = json.dumps(counts).encode().ljust(_SIZE - 1) + b"\n"
    done = 0
    while done < len(text):  # a short write is finished, not left half done
        done += os.pwrite(fd, text[done:], done)
