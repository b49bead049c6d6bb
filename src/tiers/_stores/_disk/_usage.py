"""Usage counters of a DiskStore (`SupportsUsage`), shared by every process: ``<root>/usage``.

The file is one fixed record: a magic, hits, misses, sets, deletes and errors (u64 each),
since (f64 epoch seconds, NaN for none) and an xxh3 check of it all. `add` takes an exclusive
`flock` of the file, reads it, adds and writes it back in place, so that adds from any number
of processes sum exactly; `read` reads it under a shared `flock`. Only `SIZE` bytes are ever
read, whatever the file claims or holds.

The file is opened as every store file is (`_io.open_ours`: no symlink followed, a regular
file of this user with one name). One that is not ours, torn by a crash or damaged reads as
zeros (`problem` says why, for `verify`) and is replaced whole by the next add or reset: a
name planted there is removed, never written through.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import xxhash

from ..._fileio import pread_exact
from .. import _fs
from .._protocol import Usage
from ._io import NotOurs, open_or_replace, open_ours, pwrite_all

NAME = "usage"
_MAGIC = b"tiersUS1"
_RECORD = struct.Struct("<8sQQQQQd")
_CHECK = struct.Struct("<Q")
SIZE = _RECORD.size + _CHECK.size
_MAX = (1 << 64) - 1
_FIELDS = ("hits", "misses", "sets", "deletes", "errors")


def read(root: Path) -> Usage:
    """The counters; zeros when there is no file or it does not verify."""
    with _opened(root, create=False, exclusive=False) as fd:
        return Usage() if fd is None else _decode(pread_exact(fd, SIZE, 0)) or Usage()


def add(root: Path, usage: Usage, now: float) -> None:
    """Add `usage` to the counters (atomically across processes). `since` becomes `now` (or
    the earlier start `usage.since` gives) if the counters had none."""
    with _opened(root, create=True, exclusive=True) as opened:
        fd = _created(opened)
        old = _decode(pread_exact(fd, SIZE, 0)) or Usage()
        since = old.since
        if since is None:
            given = usage.since
            since = given if given is not None and math.isfinite(given) and given < now else now
        hits, misses, sets, deletes, errors = (
            min(_MAX, getattr(old, name) + getattr(usage, name)) for name in _FIELDS
        )
        _write(fd, Usage(hits, misses, sets, deletes, errors, since))


def reset(root: Path) -> None:
    """Zero the counters (`since` none until the next add)."""
    with _opened(root, create=True, exclusive=True) as fd:
        _write(_created(fd), Usage())


def problem(root: Path) -> tuple[str, int] | None:
    """(why, size) if the counters file is there but unreadable; None if fine or absent."""
    root_fd = _fs.open_dir(root)
    try:
        try:
            info = os.stat(NAME, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        try:
            file = open_ours(root_fd, NAME)
        except FileNotFoundError:
            return None
        except (NotOurs, PermissionError):
            return "the usage counters file is not a file of this store", info.st_size
        size = os.fstat(file.fd).st_size
        if size != SIZE or _decode(pread_exact(file.fd, SIZE, 0)) is None:
            return f"the usage counters file does not verify ({size} bytes)", size
        return None
    finally:
        os.close(root_fd)


def check(usage: object) -> Usage:
    """`usage` if it is a `Usage` of non-negative whole counts; TypeError or ValueError."""
    if not isinstance(usage, Usage):
        raise TypeError(f"add_usage takes a Usage, not {type(usage).__qualname__!r}")
    for name in _FIELDS:
        count = getattr(usage, name)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"Usage.{name} must be a whole number >= 0, not {count!r}")
    return usage


@contextlib.contextmanager
def _opened(root: Path, *, create: bool, exclusive: bool) -> Iterator[int | None]:
    """The counters file, flock-ed (None when absent, or not ours and not `create`)."""
    root_fd = _fs.open_dir(root)
    try:

        def open_it() -> int | None:
            try:
                file = open_or_replace(root_fd, NAME) if create else open_ours(root_fd, NAME)
            except (FileNotFoundError, NotOurs):
                return None
            return os.dup(file.fd)  # (`flocked` closes its own descriptor)

        with _fs.flocked(root_fd, NAME, open_it, exclusive=exclusive) as fd:
            yield fd
    finally:
        os.close(root_fd)


def _created(fd: int | None) -> int:
    if fd is None:  # (created a moment ago, and removed since: the directory went)
        raise FileNotFoundError(errno.ENOENT, "the usage counters file vanished", NAME)
    return fd


def _write(fd: int, usage: Usage) -> None:
    since = math.nan if usage.since is None else usage.since
    body = _RECORD.pack(_MAGIC, *(getattr(usage, name) for name in _FIELDS), since)
    pwrite_all(fd, body + _CHECK.pack(xxhash.xxh3_64_intdigest(body)), 0)
    os.ftruncate(fd, SIZE)


def _decode(raw: bytes) -> Usage | None:
    """The counters in `raw`; None unless it is exactly a record that verifies."""
    if len(raw) != SIZE:
        return None
    body = raw[: _RECORD.size]
    if xxhash.xxh3_64_intdigest(body) != _CHECK.unpack_from(raw, _RECORD.size)[0]:
        return None
    magic, hits, misses, sets, deletes, errors, since = _RECORD.unpack(body)
    if magic != _MAGIC or not (math.isnan(since) or math.isfinite(since)):
        return None
    return Usage(hits, misses, sets, deletes, errors, None if math.isnan(since) else since)
