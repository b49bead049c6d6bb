"""Operations on entry folders: write whole, read consistently, replace and remove atomically.

Protocol (every path walked by descriptor with O_NOFOLLOW from the root):

- A write builds ``.tmp/<pid>.<random>/`` holding the data file and ``metadata.json``, then
  renames it to the entry's name. If the entry exists, it takes the folder's exclusive
  `flock`, moves the data file in (a new, unique name) and renames ``metadata.json`` over the
  old one — the commit point — then removes every other file in the folder. A rewrite
  (`rewrite`, for updates) skips the temporary folder: under the exclusive flock it creates
  the new data file in the entry's folder and renames a new ``metadata.json`` over the old.
- A read takes the folder's shared flock while it reads ``metadata.json`` and opens the data
  file it names, so it never sees a half-replaced entry, nor a data file removed under it.
- A removal takes the exclusive lock and renames the folder into ``.trash/`` (one atomic step
  for readers), then deletes it there.
- Whoever holds a folder's lock checks that the name still leads to the folder it locked (a
  removal may have renamed it away meanwhile) and starts over if not.

Nothing is ever written inside an entry folder except under its exclusive lock, so whoever
holds it may delete any file ``metadata.json`` does not name: the leftovers of a writer killed
inside its commit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from ...errors import StorePermissionError
from .._fs import (
    DIR_FLAGS,
    NOFOLLOW,
    Buffer,
    flocked,
    open_subdir,
    read_exact,
    remove_tree,
    write_all,
)
from ._naming import METADATA, temp_name

TMP, TRASH = ".tmp", ".trash"
_READ = os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0)  # a planted fifo never blocks
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW
_NOT_A_FILE = (errno.ENOENT, errno.ELOOP)


class DataFileDamaged(ValueError):
    """The data file is missing or its size is not the one metadata.json records."""


def locked(
    root_fd: int, name: str, *, exclusive: bool
) -> contextlib.AbstractContextManager[int | None]:
    """The entry folder `name`, opened and flock-ed (None if there is none)."""
    return flocked(root_fd, name, lambda: open_entry(root_fd, name), exclusive=exclusive)


def open_entry(root_fd: int, name: str) -> int | None:
    """The folder `name` (None if absent); `StorePermissionError` for a symlink or a file."""
    try:
        return open_subdir(root_fd, name, f"{name} in the store")
    except FileNotFoundError:
        return None


# -- reading ---------------------------------------------------------------------------------


METADATA_MAX = 64 << 20


def read_metadata(fd: int) -> bytes | None:
    """The bytes of the folder's metadata.json; None if it has none."""
    try:
        mfd = os.open(METADATA, _READ, dir_fd=fd)
    except OSError as exc:
        if exc.errno in _NOT_A_FILE:
            return None  # missing, or a symlink planted in its place: never followed
        raise
    try:
        info = os.fstat(mfd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            return None  # a fifo, a device, or a hard link to a file outside: never read
        if info.st_size > METADATA_MAX:
            return None  # no metadata tiers writes is this big (a planted sparse file)
        return _read_all(mfd, info.st_size)
    finally:
        os.close(mfd)


def open_data(fd: int, data: str) -> int:
    """A descriptor of the data file `data` (`DataFileDamaged` if it is missing)."""
    try:
        return os.open(data, _READ, dir_fd=fd)
    except OSError as exc:
        if exc.errno in _NOT_A_FILE:
            raise DataFileDamaged(f"data file {data} is missing (or a symlink)") from None
        raise


def read_data(dfd: int, size: int) -> bytes:
    """The data file's bytes, which must be `size` of them; closes `dfd`."""
    try:
        info = os.fstat(dfd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:  # (0: replaced since opened)
            raise DataFileDamaged("data file is not a file of the store (a link, a fifo...)")
        actual = info.st_size
        if actual != size:
            raise DataFileDamaged(f"data file has {actual} bytes, metadata.json says {size}")
        return _read_all(dfd, size)
    finally:
        os.close(dfd)


def _read_all(fd: int, size: int) -> bytes:
    try:
        return read_exact(fd, size)
    except EOFError as exc:
        raise DataFileDamaged(str(exc)) from None


def listed(dir_fd: int) -> Iterator[str]:
    """The names in the directory `dir_fd`, read as they are needed: memory stays bounded
    however many there are (names added or removed meanwhile may or may not be given)."""
    with os.scandir(dir_fd) as found:
        for item in found:
            yield item.name


def folder_sizes(root_fd: int, name: str) -> tuple[bool, int]:
    """(whether the folder holds a metadata.json, bytes of its files)."""
    fd = open_entry(root_fd, name)
    if fd is None:
        return False, 0
    has_metadata, total = False, 0
    try:
        with os.scandir(fd) as found:
            for item in found:
                with contextlib.suppress(FileNotFoundError):
                    total += item.stat(follow_symlinks=False).st_size
                has_metadata = has_metadata or item.name == METADATA
    finally:
        os.close(fd)
    return has_metadata, total


# -- writing ---------------------------------------------------------------------------------


def write(root_fd: int, name: str, data: str, body: Buffer, metadata: bytes) -> None:
    """Store the entry folder `name` holding `body` as `data` and `metadata`, atomically:
    readers see the previous entry or this one. OSError (ENOSPC...) leaves nothing behind."""
    tmp_fd = open_subdir(root_fd, TMP, f"{TMP} in the store")
    tname = temp_name()
    try:
        os.mkdir(tname, 0o700, dir_fd=tmp_fd)
        try:
            tfd = os.open(tname, DIR_FLAGS, dir_fd=tmp_fd)
            try:
                os.fchmod(tfd, 0o700)
                create_file(tfd, data, body)
                create_file(tfd, METADATA, metadata)
                _commit(root_fd, tmp_fd, tname, tfd, name, data)
            finally:
                os.close(tfd)
        except BaseException:
            with contextlib.suppress(OSError):
                remove_tree(tmp_fd, tname)
            raise
    finally:
        os.close(tmp_fd)


def rewrite(root_fd: int, name: str, data: str, body: Buffer, metadata: bytes) -> None:
    """`write`, rewriting an existing folder in place (no new folder: fewer steps): under its
    exclusive lock, the data file goes in beside the old one, metadata.json is renamed over
    the old one (the commit point), then the old data file is removed. A folder that is not
    there, or whose new data file's name is taken, is written by `write`."""
    with locked(root_fd, name, exclusive=True) as fd:
        if fd is not None:
            try:
                create_file(fd, data, body)
            except FileExistsError:
                pass  # (a random name taken: `write` moves its file over that one)
            else:
                try:
                    replace_metadata(root_fd, fd, metadata)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(data, dir_fd=fd)
                    raise
                remove_others(fd, data)
                return
    write(root_fd, name, data, body, metadata)


def _commit(root_fd: int, tmp_fd: int, tname: str, tfd: int, name: str, data: str) -> None:
    while True:
        try:
            os.rename(tname, name, src_dir_fd=tmp_fd, dst_dir_fd=root_fd)
            return  # a new entry: the whole folder appeared at once
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.EISDIR):
                raise StorePermissionError(f"entry {name} is not a folder; refusing it") from exc
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        with locked(root_fd, name, exclusive=True) as fd:
            if fd is None:
                continue  # removed meanwhile: the rename may work now
            os.rename(data, data, src_dir_fd=tfd, dst_dir_fd=fd)
            os.rename(METADATA, METADATA, src_dir_fd=tfd, dst_dir_fd=fd)  # the commit point
            remove_others(fd, data)
        os.rmdir(tname, dir_fd=tmp_fd)
        return


def replace_metadata(root_fd: int, fd: int, metadata: bytes) -> None:
    """Replace the metadata.json of the folder `fd` (whose exclusive lock the caller holds)."""
    tmp_fd = open_subdir(root_fd, TMP, f"{TMP} in the store")
    tname = temp_name()
    try:
        create_file(tmp_fd, tname, metadata)
        try:
            os.rename(tname, METADATA, src_dir_fd=tmp_fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tname, dir_fd=tmp_fd)
            raise
    finally:
        os.close(tmp_fd)


def create_file(dir_fd: int, name: str, body: Buffer) -> None:
    """A new 0600 file `name` in `dir_fd` holding `body` (removed again if writing fails)."""
    fd = os.open(name, _CREATE, 0o600, dir_fd=dir_fd)
    try:
        os.fchmod(fd, 0o600)
        write_all(fd, body)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        raise
    os.close(fd)


def remove_others(fd: int, data: str) -> int:
    """Delete what the locked folder `fd` holds besides metadata.json and `data`."""
    removed = 0
    for other in os.listdir(fd):
        if other not in (METADATA, data):
            remove_tree(fd, other)
            removed += 1
    return removed


# -- removing --------------------------------------------------------------------------------


def trash(root_fd: int, name: str, fd: int) -> str | None:
    """Take the locked folder `name` out of the root in one step (into ``.trash/``); return
    its name there, to `discard` once unlocked. If there is no room to rename it (a full
    disk can refuse to grow ``.trash/``), delete it in place: metadata.json first, so readers
    (who wait for the lock) find it gone; then None."""
    try:
        trash_fd = os.open(TRASH, DIR_FLAGS, dir_fd=root_fd)
    except OSError:
        trash_fd = -1
    if trash_fd >= 0:
        tname = temp_name()
        try:
            os.rename(name, tname, src_dir_fd=root_fd, dst_dir_fd=trash_fd)
            return tname
        except OSError:
            pass
        finally:
            os.close(trash_fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(METADATA, dir_fd=fd)
    remove_others(fd, METADATA)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=root_fd)
    return None


def discard(root_fd: int, trashed: str | None) -> None:
    """Delete a folder `trash` moved into ``.trash/`` (a killed process's is swept later)."""
    if trashed is None:
        return
    with contextlib.suppress(OSError):
        trash_fd = os.open(TRASH, DIR_FLAGS, dir_fd=root_fd)
        try:
            remove_tree(trash_fd, trashed)
        finally:
            os.close(trash_fd)
