"""Value files of the DiskStore: written whole or not at all, read back exactly.

A value file is first written under ``tmp/`` and renamed into ``data/`` before its record is
committed, so no reader ever sees a torn file. File names are 32 hex characters: the shard
(2), random (22) and the writer's pid (8), which lets a later process tell the leftovers of
a crashed writer (in ``tmp/``, or renamed but never committed) from files still in flight.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterable

from ._layout import Layout, make_dir

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_STALE_SECONDS = 24 * 3600
Buffer = bytes | bytearray | memoryview


class DamagedFile(ValueError):
    """A value file whose size does not match its record."""


def new_name(shard: int) -> str:
    return f"{shard:02x}{secrets.token_hex(11)}{os.getpid() & 0xFFFFFFFF:08x}"


def writer_pid(name: str) -> int | None:
    try:
        return int(name[24:32], 16) if len(name) >= 32 else None
    except ValueError:
        return None


def write(layout: Layout, name: str, body: Buffer, *, durable: bool) -> None:
    """Write `body` to ``data/`` under `name`, atomically. OSError (ENOSPC...) leaves nothing."""
    tmp = layout.tmp / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(body).cast("B")
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        final = layout.data_path(name)
        try:
            os.rename(tmp, final)
        except FileNotFoundError:
            make_dir(final.parent)
            os.rename(tmp, final)
        if durable:
            _fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read(layout: Layout, name: str, size: int) -> bytes:
    """The file's bytes; FileNotFoundError if gone, `DamagedFile` if its size is wrong."""
    fd = os.open(layout.data_path(name), os.O_RDONLY | _NOFOLLOW)
    try:
        actual = os.fstat(fd).st_size
        if actual != size:
            raise DamagedFile(f"value file has {actual} bytes, its record says {size}")
        data = os.read(fd, size)
        if len(data) < size:  # a short read (huge files, signals): finish it
            parts = [data]
            got = len(data)
            while got < size:
                chunk = os.read(fd, size - got)
                if not chunk:
                    raise DamagedFile("value file ended early")
                parts.append(chunk)
                got += len(chunk)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)


def unlink(layout: Layout, names: Iterable[str]) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(layout.data_path(name))


def register_process(layout: Layout) -> None:
    path = layout.procs / str(os.getpid())
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600))


def unregister_process(layout: Layout) -> None:
    with contextlib.suppress(OSError):
        os.unlink(layout.procs / str(os.getpid()))


def dead_processes(layout: Layout) -> set[int]:
    """Pids registered in ``procs/`` that no longer run (they crashed with the store open)."""
    dead = set()
    for entry in os.scandir(layout.procs):
        if entry.name.isdigit() and not pid_alive(int(entry.name)):
            dead.add(int(entry.name))
    return dead


def forget_processes(layout: Layout, pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.unlink(layout.procs / str(pid))


def sweep_tmp(layout: Layout) -> int:
    """Remove files in ``tmp/`` left by writers that are gone (or older than a day)."""
    removed = 0
    now = time.time()
    for entry in os.scandir(layout.tmp):
        pid = writer_pid(entry.name)
        try:
            stale = now - entry.stat(follow_symlinks=False).st_mtime > _STALE_SECONDS
        except FileNotFoundError:
            continue
        if stale or pid is None or not pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


def sweep_orphans(
    layout: Layout, dead_pids: set[int], is_referenced: Callable[[str], bool], *, every: bool
) -> int:
    """Remove value files no record references, written by `dead_pids` (or, with `every`,
    by anyone, when older than a day: leftovers of a reused pid)."""
    removed = 0
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for sub in os.scandir(layout.data):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(sub.path):
                pid = writer_pid(entry.name)
                if pid not in dead_pids:
                    if not every:
                        continue
                    try:
                        if now - entry.stat(follow_symlinks=False).st_mtime < _STALE_SECONDS:
                            continue
                    except FileNotFoundError:
                        continue
                if not is_referenced(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    # A zombie (dead, not yet reaped by its parent) still answers kill(0): check its state.
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


def _fsync_dir(directory: os.PathLike[str] | str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
