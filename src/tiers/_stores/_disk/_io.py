"""File access for the DiskStore engine: descriptors that close themselves, files opened only if
they are ours, and whole reads and writes at an offset.

The engine never maps a file into memory: a mapped file that another program truncates kills
its reader with SIGBUS. Every read is a `pread` whose result is checked before use.

A file is ours when it is a regular file (not a symlink: ``O_NOFOLLOW``), owned by this user,
with a single name (``st_nlink == 1``): a hard link planted in the store must never let a
write reach a file outside it. A name holding anything else is removed (the name only: an
unlink never touches what a link points to) and the file is recreated.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from .. import _fs

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_OPEN = os.O_RDWR | _fs.NOFOLLOW | O_CLOEXEC


class Fd:
    """An open descriptor, closed when the last reference goes: operations in flight keep the
    files they started with open, so `close()` racing other threads never pulls a descriptor
    from under them (nor lets its number be reused under them)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class NotOurs(OSError):
    """A store path holds a symlink, a hard-linked file, another user's file or a directory."""


def is_ours(info: os.stat_result) -> bool:
    return (
        stat.S_ISREG(info.st_mode)
        and info.st_nlink == 1
        and (not hasattr(os, "geteuid") or info.st_uid == os.geteuid())
    )


def open_ours(dir_fd: int, name: str, *, create: bool = False, exclusive: bool = False) -> Fd:
    """Open ``name`` in `dir_fd` for reading and writing, if it is ours (`NotOurs` otherwise).

    FileNotFoundError when absent and not `create`; FileExistsError when `exclusive` and it
    exists. A created file is 0600 whatever the umask.
    """
    flags = _OPEN | (os.O_CREAT if create else 0) | (os.O_EXCL if exclusive else 0)
    try:
        fd = Fd(os.open(name, flags, 0o600, dir_fd=dir_fd))
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise NotOurs(exc.errno, f"{name} is not a file of this store") from None
        raise
    if not is_ours(os.fstat(fd.fd)):
        raise NotOurs(errno.EPERM, f"{name} is not a file of this store")
    if create:
        os.fchmod(fd.fd, 0o600)
    return fd


def remove_name(dir_fd: int, name: str) -> None:
    """Remove a name (a file, or a link itself: never what it points to); absent is fine."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        _fs.remove_tree(dir_fd, name)
    except OSError as exc:
        if exc.errno != errno.EISDIR:  # macOS says EPERM for unlink of a directory
            raise
        _fs.remove_tree(dir_fd, name)


def open_or_replace(dir_fd: int, name: str) -> Fd:
    """Open ``name``, creating it; whatever else is planted under that name is removed first."""
    try:
        return open_ours(dir_fd, name, create=True)
    except NotOurs:
        remove_name(dir_fd, name)
        return open_ours(dir_fd, name, create=True, exclusive=True)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of `data` at `offset` (finishing short writes)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def fsync_dir(dir_fd: int) -> None:
    os.fsync(dir_fd)
