"""Value files of the DiskStore: written whole or not at all, read back exactly.

A value file is first written under ``tmp/`` and renamed into ``data/`` before its record is
committed, so no reader ever sees a torn file. File names are 42 hex characters: the shard,
the key hash and the version of the slot that owns the file, and the writer's pid, which lets
a later process tell the leftovers of a crashed writer (in ``tmp/``, or renamed but never
committed) from files still in flight (see `_format.value_file_name`).

Every path is walked by directory descriptor with ``O_NOFOLLOW``, and a value file is read
only if it is a regular file of ours with a single name: nothing planted under the store's
root (a symlink, a hard link to a file elsewhere) is ever read, written or followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator

from ...errors import StorePermissionError
from .. import _fs
from .._fs import pid_alive, read_exact
from ._io import is_ours
from ._layout import Layout

_NOFOLLOW = _fs.NOFOLLOW
_DIR = _fs.DIR_FLAGS
_NAME = re.compile(r"[0-9a-f]{42}\Z")
_STALE_SECONDS = 24 * 3600
_PREFIX_LENGTH = 34
Buffer = bytes | bytearray | memoryview


class DamagedFile(ValueError):
    """A value file whose size does not match its record."""


def writer_pid(name: str) -> int | None:
    try:
        return int(name[34:42], 16) if len(name) == 42 else None
    except ValueError:
        return None


def write(layout: Layout, name: str, body: Buffer, *, durable: bool) -> None:
    """Write `body` to ``data/`` under `name`, atomically. OSError (ENOSPC...) leaves nothing.

    Directories are walked by descriptor with O_NOFOLLOW: a symlink swapped in anywhere under
    the store's root makes the write fail instead of landing outside.
    """
    tmp_dir = open_dir(layout, "tmp")
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=tmp_dir)
        try:
            try:
                os.fchmod(fd, 0o600)
                _fs.write_all(fd, body)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            data_dir = _data_subdir(layout, name)
            try:
                os.rename(name, name, src_dir_fd=tmp_dir, dst_dir_fd=data_dir)
                if durable:
                    os.fsync(data_dir)
            finally:
                os.close(data_dir)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=tmp_dir)
            raise
    finally:
        os.close(tmp_dir)


def open_dir(layout: Layout, *parts: str) -> int:
    """A descriptor of ``root/parts...``, refusing a symlink or non-directory at every step."""
    return _fs.open_dir(layout.root, *parts)


def _data_subdir(layout: Layout, name: str) -> int:
    sub = name[2:4]
    try:
        return open_dir(layout, "data", sub)
    except FileNotFoundError:
        data = open_dir(layout, "data")
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(sub, 0o700, dir_fd=data)
                os.fsync(data)  # the new directory survives a power cut with its files
            fd = os.open(sub, _DIR, dir_fd=data)
            os.fchmod(fd, 0o700)
            return fd
        finally:
            os.close(data)


def read(layout: Layout, name: str, size: int) -> bytes:
    """The file's bytes; FileNotFoundError if gone, `DamagedFile` if its size is wrong or it
    is not a file of ours."""
    try:
        directory = open_dir(layout, "data", name[2:4])
    except StorePermissionError:
        raise DamagedFile("value file directory is not ours") from None
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=directory)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR):
            raise DamagedFile("value file is not a file") from None
        raise
    finally:
        os.close(directory)
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 0:
            raise FileNotFoundError(errno.ENOENT, "value file removed while opened", name)
        if not is_ours(info):
            raise DamagedFile("value file is not a file of this store")
        if info.st_size != size:
            raise DamagedFile(f"value file has {info.st_size} bytes, its record says {size}")
        try:
            return read_exact(fd, size)
        except EOFError as exc:
            raise DamagedFile(f"value file: {exc}") from None
    finally:
        os.close(fd)


def unlink(layout: Layout, names: Iterable[str]) -> None:
    """Remove value files (already absent ones are fine), never through a symlink. A name of
    34 characters is the prefix a slot determines: every file starting with it goes. Best
    effort: a file that cannot be removed now is an orphan, swept at a later open."""
    for name in names:
        try:
            fd = open_dir(layout, "data", name[2:4])
        except OSError:  # absent, not ours, or an I/O error
            continue
        try:
            doomed = [name]
            if len(name) == _PREFIX_LENGTH:
                doomed = [n for n in os.listdir(fd) if n.startswith(name) and _NAME.match(n)]
            for one in doomed:
                with contextlib.suppress(OSError):
                    os.unlink(one, dir_fd=fd)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)


def dead_processes(layout: Layout) -> set[int]:
    """Pids registered in ``procs/`` that no longer run (they crashed with the store open)."""
    fd = open_dir(layout, "procs")
    try:
        return _fs.dead_processes(fd)
    finally:
        os.close(fd)


def forget_processes(layout: Layout, pids: Iterable[int]) -> None:
    fd = open_dir(layout, "procs")
    try:
        _fs.forget_processes(fd, pids)
    finally:
        os.close(fd)


def sweep_tmp(layout: Layout) -> int:
    """Remove files in ``tmp/`` left by writers that are gone (or older than a day)."""
    removed = 0
    now = time.time()
    for fd, name, info in _files_in(layout, ("tmp",)):
        pid = writer_pid(name)
        if now - info.st_mtime > _STALE_SECONDS or pid is None or not pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
                removed += 1
    return removed


def sweep_orphans(
    layout: Layout, dead_pids: set[int], is_referenced: Callable[[str], bool], *, every: bool
) -> int:
    """Remove value files no record references whose writer is gone: in `dead_pids`, or any
    pid no longer running (a file whose record another process replaced, that died before
    unlinking it, carries its first writer's pid). With `every`, also those of live pids
    older than a day: leftovers of a reused pid. A live writer's file may be in flight."""
    removed = 0
    now = time.time()
    gone: dict[int | None, bool] = dict.fromkeys(dead_pids, True)
    for fd, name, info in _value_files(layout):
        pid = writer_pid(name)
        if pid not in gone:
            gone[pid] = pid is not None and not pid_alive(pid)
        if not gone[pid] and (not every or now - info.st_mtime < _STALE_SECONDS):
            continue
        if not is_referenced(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
                removed += 1
    return removed


def sweep_shard(layout: Layout, shard: int, is_referenced: Callable[[str], bool]) -> int:
    """Remove every value file of `shard` no slot references, whoever wrote it (after the
    shard was salvaged, its lost entries' files would otherwise stay forever)."""
    removed = 0
    prefix = f"{shard:02x}"
    for fd, name, _info in _value_files(layout):
        if name.startswith(prefix) and not is_referenced(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
                removed += 1
    return removed


def _value_files(layout: Layout) -> Iterator[tuple[int, str, os.stat_result]]:
    """(directory fd, name, stat) of every value file in ``data/<2 hex digits>/``."""
    try:
        subdirs = sorted(n for n in os.listdir(layout.data) if re.fullmatch("[0-9a-f]{2}", n))
    except FileNotFoundError:
        return
    for sub in subdirs:
        yield from _files_in(layout, ("data", sub))


def _files_in(layout: Layout, parts: tuple[str, ...]) -> Iterator[tuple[int, str, os.stat_result]]:
    """(directory fd, name, stat) of the regular files named like ours in ``root/parts``."""
    try:
        fd = open_dir(layout, *parts)
    except (FileNotFoundError, StorePermissionError):
        return
    try:
        for name in os.listdir(fd):
            if not _NAME.match(name):
                continue
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                yield fd, name, info
    finally:
        os.close(fd)
