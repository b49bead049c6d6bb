"""The files of a DiskStore outside its index, for `verify`: value files (each checked against
its record), files in ``data/`` no record names (orphans), leftovers of unfinished writes in
``tmp/`` and in the root (temporaries), and the usage counters file.

Nothing is followed: directories are opened by descriptor with ``O_NOFOLLOW`` at every step,
files are looked at with ``lstat`` and read only if they are regular files of ours, and a
name that is removed is removed itself (a link, never what it points to).

Orphans and temporaries are judged only when older than `GRACE_SECONDS`: a younger one may be
a write in progress in another process (a value file is renamed into ``data/`` just before
its slot is published; a temporary lives while its file is written).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections.abc import Callable, Iterator

import xxhash

from ...errors import StorePermissionError
from .. import _fs
from .._protocol import Damage
from . import _usage as usage_file
from ._format import Record
from ._io import is_ours, remove_name
from ._layout import Layout

GRACE_SECONDS = 3600.0
"""How old (by modification time) a file with no owner must be to be damage: one hour."""

_HASH_CHUNK = 1 << 20
_DATA_DIR = re.compile(r"[0-9a-f]{2}\Z")
_VALUE_FILE = re.compile(r"[0-9a-f]{42}\Z")
_ROOT_TEMPORARY = re.compile(r"\..+\.[0-9]+\.[0-9a-f]+\.tmp\Z")  # (`_fs._put_whole`)

Problem = tuple[str, str, int]
"""(problem, detail, bytes it takes) of a damaged file."""


class ValueFiles:
    """The value files of a store being verified: each checked against its record, and the
    names of those the records refer to (the others are orphans)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.referenced: set[str] = set()
        self._dirs: dict[str, int | None] = {}

    def close(self) -> None:
        for fd in self._dirs.values():
            if fd is not None:
                os.close(fd)
        self._dirs.clear()

    def check(self, rec: Record) -> Problem | None:
        """What is wrong with the record's value file (None: it holds the body the record
        describes). The file is read whole, a megabyte at a time."""
        name = str(rec.file_name)
        try:
            directory = self._dir(name[2:4])
        except StorePermissionError:
            return "unreadable", "its data directory is not a directory of this store", 0
        if directory is None:
            return "missing", "its value file is gone", 0
        try:
            fd = os.open(name, os.O_RDONLY | _fs.NOFOLLOW, dir_fd=directory)
        except FileNotFoundError:
            return "missing", "its value file is gone", 0
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                return "unreadable", "its value file is not a file", 0
            raise
        try:
            return _judge(fd, rec)
        finally:
            os.close(fd)

    def _dir(self, sub: str) -> int | None:
        if sub not in self._dirs:
            try:
                self._dirs[sub] = _fs.open_dir(self.layout.root, "data", sub)
            except FileNotFoundError:
                self._dirs[sub] = None
        return self._dirs[sub]

    def orphans(self, owned: Callable[[str], bool], fix: bool) -> Iterator[Damage]:
        """Files in ``data/`` no record refers to (and that `owned` does not claim: a slot
        written since its shard was checked), and names there that are not ours at all."""
        now = time.time()
        try:
            data = _fs.open_dir(self.layout.root, "data")
        except (FileNotFoundError, StorePermissionError):
            return
        try:
            for sub in sorted(os.listdir(data)):
                info = _lstat(data, sub)
                if info is None:
                    continue
                if _DATA_DIR.match(sub) and stat.S_ISDIR(info.st_mode):
                    yield from self._orphans_in(data, sub, owned, fix, now)
                elif now - info.st_mtime > GRACE_SECONDS:
                    detail = "not a data directory of this store"
                    yield _removed(data, sub, f"data/{sub}", info, "orphan", detail, fix)
        finally:
            os.close(data)

    def _orphans_in(
        self, data: int, sub: str, owned: Callable[[str], bool], fix: bool, now: float
    ) -> Iterator[Damage]:
        try:
            directory = _fs.open_subdir(data, sub, f"data/{sub}")
        except (FileNotFoundError, StorePermissionError):
            return
        try:
            for name in sorted(os.listdir(directory)):
                if name in self.referenced:
                    continue
                info = _lstat(directory, name)
                if info is None or now - info.st_mtime <= GRACE_SECONDS:
                    continue
                if _VALUE_FILE.match(name) and owned(name):
                    continue
                detail = "a value file no entry refers to"
                yield _removed(directory, name, f"data/{sub}/{name}", info, "orphan", detail, fix)
        finally:
            os.close(directory)


def _judge(fd: int, rec: Record) -> Problem | None:
    info = os.fstat(fd)
    size = rec.body_size
    if not is_ours(info):
        return "unreadable", "its value file is not a file of this store", info.st_size
    if info.st_size < size:
        detail = f"its value file has {info.st_size} of the {size} bytes its record says"
        return "truncated", detail, info.st_size
    if info.st_size > size:
        detail = f"its value file has {info.st_size} bytes, its record says {size}"
        return "checksum", detail, info.st_size
    digest = xxhash.xxh3_64()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(_HASH_CHUNK, size - offset), offset)
        if not chunk:
            return "truncated", f"its value file ended after {offset} of {size} bytes", offset
        digest.update(chunk)
        offset += len(chunk)
    if digest.intdigest() != rec.body_hash:
        return "checksum", "its value file fails its checksum", size
    return None


def temporaries(layout: Layout, fix: bool) -> Iterator[Damage]:
    """Leftovers of writes that never finished: anything in ``tmp/``, and temporaries of the
    root's small files (``.<name>.<pid>.<random>.tmp``), older than `GRACE_SECONDS`."""
    now = time.time()
    for parts, matches in (((), _ROOT_TEMPORARY.match), (("tmp",), None)):
        try:
            directory = _fs.open_dir(layout.root, *parts)
        except (FileNotFoundError, StorePermissionError):
            continue
        try:
            for name in sorted(os.listdir(directory)):
                if matches is not None and not matches(name):
                    continue
                info = _lstat(directory, name)
                if info is None or now - info.st_mtime <= GRACE_SECONDS:
                    continue
                where = "/".join((*parts, name))
                detail = "a temporary file of a write that never finished"
                yield _removed(directory, name, where, info, "temp", detail, fix)
        finally:
            os.close(directory)


def usage_counters(layout: Layout, fix: bool) -> Iterator[Damage]:
    """The usage counters file, if it is there and does not verify (fixed: zeroed)."""
    found = usage_file.problem(layout.root)
    if found is None:
        return
    detail, size = found
    if fix:
        usage_file.reset(layout.root)  # (a name planted there is replaced, not written through)
    yield Damage("unreadable", None, usage_file.NAME, size, detail, fix)


def _lstat(directory: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _removed(
    directory: int, name: str, where: str, info: os.stat_result, problem: str, detail: str,
    fix: bool,
) -> Damage:  # fmt: skip
    """The damage a stray name is, removed first when `fix` (the name only, never followed)."""
    fixed = False
    if fix:
        try:
            remove_name(directory, name)
            fixed = True
        except FileNotFoundError:
            fixed = True
        except OSError as exc:
            detail += f" (it cannot be removed: {exc.strerror})"
    size = info.st_size if stat.S_ISREG(info.st_mode) else 0
    return Damage(problem, None, where, size, detail, fixed)
