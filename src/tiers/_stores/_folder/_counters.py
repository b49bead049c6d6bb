"""Removal counters (evictions, expirations, rejected) shared by every process of a store.

They live in ``<root>/.stats.json``, a small JSON object rewritten in place, padded to a fixed
size so a write is one `pwrite`, under an exclusive `flock`: counts from several processes add
up. Counters are advisory: a damaged file reads as zeros, and a failure to count never fails
the operation that counted.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .._fs import NOFOLLOW, flock, open_dir

FILE = ".stats.json"
NAMES = ("evictions", "expirations", "rejected")
_SIZE = 256


class Counters:
    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self) -> None:
        """Make the file now, while there is room (counting must work on a full disk)."""
        with contextlib.suppress(OSError), self._open() as fd:
            flock(fd, exclusive=True)
            if os.fstat(fd).st_size < _SIZE:
                _write(fd, _parse(os.pread(fd, _SIZE, 0)))

    def add(self, name: str, n: int = 1) -> None:
        if n <= 0:
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
            fd = os.open(FILE, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o600, dir_fd=root_fd)
        finally:
            os.close(root_fd)
        try:
            os.fchmod(fd, 0o600)
            yield fd
        finally:
            os.close(fd)


def _parse(raw: bytes) -> dict[str, int]:
    counts = dict.fromkeys(NAMES, 0)
    try:
        found = json.loads(raw.decode("utf-8").strip() or "{}")
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
    os.pwrite(fd, text, 0)
