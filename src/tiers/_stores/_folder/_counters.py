"""Counter files shared by every process of a store: the removal counters (evictions,
expirations, rejected) in ``<root>/.stats.json``, the usage counters in ``.usage.json``
(`_usage`).

Each is a small JSON object rewritten in place, padded to a fixed size so a write is one
`pwrite`, under an exclusive `flock`: counts from several processes add up. A damaged or
forged file reads as zeros (each field that is not a count, or a time, reads as zero, or
None); `damage` says what is wrong with it, for `verify`. Removal counters are advisory: a
failure to count never fails the operation that counted. A link planted at the name is
replaced, never written through (`_owned`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..._codec._documents import load_object
from ..._fileio import pread_exact
from .._fs import NOFOLLOW, flock, open_dir, unlock_and_close
from ._owned import describe, is_owned, open_owned, open_owned_to_read

FILE = ".stats.json"
NAMES = ("evictions", "expirations", "rejected")
SIZE = 256
MAX_COUNT = 2**63 - 1  # (so the padded file never outgrows `SIZE`)

_READ = os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0)  # (a planted fifo never blocks)

Values = dict[str, Any]


class CounterFile:
    """The counters `counts` (ints from 0 to `MAX_COUNT`) and `times` (epoch seconds or
    None) kept in the file `file` at the top of `root`."""

    def __init__(
        self,
        root: Path,
        file: str = FILE,
        counts: tuple[str, ...] = NAMES,
        times: tuple[str, ...] = (),
        *,
        read_only: bool = False,
    ) -> None:
        self.root = root
        self.file = file
        self.counts = counts
        self.times = times
        self.read_only = read_only  # read, never created, written or chmodded

    def zeros(self) -> Values:
        return {**dict.fromkeys(self.counts, 0), **dict.fromkeys(self.times)}

    def create(self) -> None:
        """Make the file now, while there is room (counting must work on a full disk)."""
        if self.read_only:
            return
        with contextlib.suppress(OSError), self._open() as fd:
            flock(fd, exclusive=True)
            if os.fstat(fd).st_size < SIZE:
                _write(fd, self.parse(pread_exact(fd, SIZE, 0))[0])

    def add(self, name: str, n: int = 1) -> None:
        """Count `n` more under `name`; never fails (a count that cannot be written is lost)."""
        if n <= 0 or self.read_only:
            return
        with contextlib.suppress(OSError):
            self.change(lambda values: {**values, name: min(MAX_COUNT, values[name] + n)})

    def change(self, how: Callable[[Values], Values]) -> None:
        """Replace the values with `how` (the values now) under the file's exclusive lock:
        atomic across processes. `OSError` if the file cannot be written."""
        if self.read_only:
            raise PermissionError(errno.EROFS, f"{self.file} of a read-only store")
        with self._open() as fd:
            flock(fd, exclusive=True)
            _write(fd, how(self.parse(pread_exact(fd, SIZE, 0))[0]))

    def reset(self) -> None:
        """Zero every counter (and time) at once, under the exclusive lock."""
        self.change(lambda _values: self.zeros())

    def read(self) -> Values:
        try:
            with self._open() as fd:
                flock(fd, exclusive=False)
                return self.parse(pread_exact(fd, SIZE, 0))[0]
        except OSError:
            return self.zeros()

    def parse(self, raw: bytes) -> tuple[Values, bool]:
        """(the values `raw` holds, zero or None where it holds none; whether all was sound)."""
        values = self.zeros()
        try:
            found = load_object(raw.strip() or b"{}")
        except ValueError:
            return values, False
        sound = not raw.strip() or set(found) == set(values)
        for name in self.counts:
            value = found.get(name, 0)
            if type(value) is int and 0 <= value <= MAX_COUNT:
                values[name] = value
            else:
                sound = False
        for name in self.times:
            value = found.get(name)
            if value is None or (type(value) in (int, float) and math.isfinite(value)):
                values[name] = None if value is None else float(value)
            else:
                sound = False
        return values, sound and len(raw) <= SIZE

    def damage(self, root_fd: int) -> tuple[str, str] | None:
        """What is wrong with the file, as (`Damage.problem`, detail), None if nothing.
        Reads only: a link is never followed, a file not the store's never opened."""
        try:
            info = os.stat(self.file, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None if self.read_only else ("index", "the counters file is missing")
        if not is_owned(info):
            return "unreadable", f"not a file of the store: {describe(info)}"
        try:
            fd = os.open(self.file, _READ, dir_fd=root_fd)
        except FileNotFoundError:
            return None  # (replaced meanwhile by a process that just made it again)
        try:
            if not is_owned(os.fstat(fd)):
                return "unreadable", "not a file of the store"
            flock(fd, exclusive=False)
            raw = pread_exact(fd, SIZE + 1, 0)
        finally:
            unlock_and_close(fd)
        if not self.parse(raw)[1]:
            return "unreadable", "the counters are not a sound JSON object of counts"
        return None

    def repair(self) -> None:
        """Rewrite the file with what can be read of it (a link or a file not the store's
        is replaced by a new file: `_owned`). `OSError` if it cannot be written."""
        self.change(lambda values: values)

    @contextlib.contextmanager
    def _open(self) -> Iterator[int]:
        root_fd = open_dir(self.root)
        try:
            if self.read_only:
                fd = open_owned_to_read(root_fd, self.file)
            else:
                fd = open_owned(root_fd, self.file, create=True)
        finally:
            os.close(root_fd)
        if fd is None:  # (not with create=True)
            raise FileNotFoundError(errno.ENOENT, self.file)
        try:
            yield fd
        finally:
            unlock_and_close(fd)  # (a lock, if taken, is released even if close fails)


def _write(fd: int, values: Values) -> None:
    text = json.dumps(values).encode().ljust(SIZE - 1) + b"\n"
    done = 0
    while done < len(text):  # a short write is finished, not left half done
        done += os.pwrite(fd, text[done:], done)
    if os.fstat(fd).st_size > SIZE:  # (a damaged file, longer: its tail goes)
        os.ftruncate(fd, SIZE)
