"""Files at fixed names that the store rewrites in place, opened only if they are its own.

``.stats.json`` and ``.locks/<hash>.lock`` are rewritten in place (under a `flock`), so whoever
can write inside the root could plant a link there and have us write, truncate or chmod the
file it leads to. `open_owned` refuses a symlink (``O_NOFOLLOW``) and takes a file only if it
is a regular file of ours with a single link; anything else at the name is removed (the name
only: the file a link leads to keeps its content and its other names) and a new file is
created in its place with ``O_EXCL``. Nothing is read from a file before it passes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from .._fs import NOFOLLOW, remove_tree

_ATTEMPTS = 8  # each one gives way to a process that created the same name meanwhile
_AGAIN = -1
_FLAGS = os.O_RDWR | NOFOLLOW | getattr(os, "O_NONBLOCK", 0)  # (a planted fifo never blocks)


def is_owned(info: os.stat_result) -> bool:
    """A regular file of this user's with no other name (a hard link would give it one)."""
    euid = os.geteuid() if hasattr(os, "geteuid") else info.st_uid
    return stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_uid == euid


def describe(info: os.stat_result) -> str:
    """What a file that is not the store's own is, in a few words."""
    if stat.S_ISLNK(info.st_mode):
        return "a symlink (never followed)"
    if stat.S_ISDIR(info.st_mode):
        return "a directory"
    if not stat.S_ISREG(info.st_mode):
        return "a special file (a fifo, a socket or a device)"
    euid = os.geteuid() if hasattr(os, "geteuid") else info.st_uid
    if info.st_uid != euid:
        return f"a file of another user (uid {info.st_uid})"
    if info.st_nlink > 1:
        return f"a file with {info.st_nlink} names (a hard link)"
    return "a file"


def open_owned(dir_fd: int, name: str, *, create: bool) -> int | None:
    """A read-write descriptor of the file `name` in `dir_fd`, mode 0600; None if there is
    none and not `create`. A link or anything else planted at `name` is removed first (and
    with `create`, replaced by a new empty file)."""
    for _ in range(_ATTEMPTS):
        fd = _open(dir_fd, name, create=create)
        if fd is None or fd == _AGAIN:
            if fd is None:
                return None
            continue
        try:
            info = os.fstat(fd)
            if is_owned(info):
                if stat.S_IMODE(info.st_mode) != 0o600:
                    os.fchmod(fd, 0o600)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if info.st_nlink == 0:
            continue  # ours, removed since we opened it (a released lock): look again
        with contextlib.suppress(FileNotFoundError):
            at = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if (at.st_dev, at.st_ino) == (info.st_dev, info.st_ino):
                os.unlink(name, dir_fd=dir_fd)  # the link goes, never what it leads to
    raise OSError(errno.EAGAIN, f"{name} keeps being replaced; giving up")


def _open(dir_fd: int, name: str, *, create: bool) -> int | None:
    """A descriptor of the regular file at `name` (created if missing and `create`); None if
    missing; `_AGAIN` after removing what was in the way (a symlink, a directory, a fifo:
    never opened) or losing a race to create it."""
    try:
        found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        found = None
    if found is not None and not stat.S_ISREG(found.st_mode):
        remove_tree(dir_fd, name)
        return _AGAIN
    try:
        return os.open(name, _FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EACCES):
            raise
        remove_tree(dir_fd, name)  # swapped since the stat: not ours either
        return _AGAIN
    try:
        return os.open(name, _FLAGS | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        return _AGAIN  # another process made it meanwhile: take theirs


def open_owned_to_read(dir_fd: int, name: str) -> int | None:
    """A read-only descriptor of the file `name` if it is a regular file of ours (None if
    missing or anything else): for a store opened read-only, which changes nothing."""
    try:
        fd = os.open(name, os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0), dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO, errno.EACCES):
            return None
        raise
    if not is_owned(os.fstat(fd)):
        os.close(fd)
        return None
    return fd
