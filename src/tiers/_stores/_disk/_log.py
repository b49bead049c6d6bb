"""The record log of a shard: append-only segment files ``log.<n>``.

Records are appended at the end of the head segment under the shard lock; a record is never
rewritten in place, so a power cut can only lose records that were still being written. A
segment number is never reused: a slot read just before its segment was compacted away finds
the file gone (and reads the slot again), never another record in a new file of that name.
"""

from __future__ import annotations

import contextlib
import os

from ..._fileio import pread_exact
from ._io import Fd, NotOurs, open_ours, pwrite_all, remove_name

PREFIX = "log."


def segment_name(number: int) -> str:
    return f"{PREFIX}{number}"


def segment_number(name: str) -> int | None:
    """The number of a segment file name; None for any other name."""
    if not name.startswith(PREFIX) or not name[len(PREFIX) :].isdigit():
        return None
    return int(name[len(PREFIX) :])


class Log:
    """The segments of one shard, opened on first use and kept open."""

    __slots__ = ("_dir", "_named", "files")

    def __init__(self, directory: Fd) -> None:
        self._dir = directory
        self.files: dict[int, Fd] = {}
        self._named: set[int] = set()  # segments whose name this process made durable

    def _fd(self, number: int, *, create: bool = False) -> int | None:
        file = self.files.get(number)
        if file is None:
            try:
                file = open_ours(self._dir.fd, segment_name(number))
            except FileNotFoundError:
                if not create:
                    return None
                file = open_ours(self._dir.fd, segment_name(number), create=True)
            except NotOurs:
                if not create:
                    return None
                remove_name(self._dir.fd, segment_name(number))
                file = open_ours(self._dir.fd, segment_name(number), create=True, exclusive=True)
            file = self.files.setdefault(number, file)
        return file.fd

    def read(self, number: int, offset: int, length: int) -> bytes | None:
        """The bytes of a record; None if its segment is gone (compacted, or damage)."""
        fd = self._fd(number)
        if fd is None:
            return None
        return pread_exact(fd, length, offset)

    def read_by_name(self, number: int, offset: int, length: int) -> bytes | None:
        """`read` from the file named for the segment now (not a descriptor kept open, which
        may be of a file since removed), never past its end; None if there is none, or it is
        not ours."""
        try:
            file = open_ours(self._dir.fd, segment_name(number))
        except (FileNotFoundError, NotOurs):
            return None
        size = os.fstat(file.fd).st_size  # (a forged length reads what is there, no more)
        return pread_exact(file.fd, max(0, min(length, size - offset)), offset)

    def read_segment(self, number: int, end: int) -> bytes | None:
        fd = self._fd(number)
        return None if fd is None else pread_exact(fd, end, 0)

    def append(self, number: int, offset: int, data: bytes) -> None:
        fd = self._fd(number, create=True)
        if fd is None:  # created a moment ago, removed already: only a racing clear does that
            raise FileNotFoundError(f"segment {number} vanished")
        pwrite_all(fd, data, offset)

    def sync(self, number: int) -> None:
        """Make a segment's records durable, and its name the first time this process syncs
        it (whoever created it: a new segment is not synced until a record in it must be)."""
        fd = self._fd(number)
        if fd is not None:
            os.fsync(fd)
            if number not in self._named:
                os.fsync(self._dir.fd)
                self._named.add(number)

    def remove(self, number: int) -> None:
        """Delete a segment (readers that have it open still read it until they close it)."""
        self.files.pop(number, None)
        self._named.discard(number)
        with contextlib.suppress(OSError):
            remove_name(self._dir.fd, segment_name(number))

    def forget(self, keep: set[int]) -> None:
        """Close the segments another process removed (all but `keep`)."""
        for number in [n for n in self.files if n not in keep]:
            self.files.pop(number, None)
            self._named.discard(number)

    def names(self) -> list[int]:
        """Numbers of the segment files present."""
        out = []
        for name in os.listdir(self._dir.fd):
            number = segment_number(name)
            if number is not None:
                out.append(number)
        return sorted(out)
