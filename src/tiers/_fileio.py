"""Positional reads that finish what a short read left: POSIX lets `pread` return fewer bytes
than asked (a signal, a FUSE or network filesystem), and only a read of nothing is the end."""

from __future__ import annotations

import os


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """`size` bytes at `offset`, or fewer only if the file ends first (the caller checks):
    a short `pread` (a signal, a FUSE or network filesystem) is finished, never taken for
    the end of the file."""
    data = os.pread(fd, size, offset)
    if len(data) < size and data:
        parts = [data]
        got = len(data)
        while got < size:
            chunk = os.pread(fd, size - got, offset + got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        data = b"".join(parts)
    return data
