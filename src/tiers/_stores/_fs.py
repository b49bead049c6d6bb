"""Filesystem helpers shared by the stores that live in a directory (DiskStore, FolderStore).

- store roots: created 0700, owned by us, never a symlink; a non-empty directory that is not
  a store of ours is refused; a format marker written once, atomically;
- descriptor-walked access: `open_dir` opens ``root/a/b`` one component at a time with
  O_NOFOLLOW, so a symlink swapped in under the root fails the operation instead of being
  followed; `remove_tree` deletes the same way;
- the process registry (``procs/<pid>``): which processes had a store open, so the next opener
  can tell the leftovers of a killed writer (dead pid) from files still in flight.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._paths import make_private_dirs
from ..errors import ConfigError, StoreError, StoreFullError, StorePermissionError

if sys.platform != "win32":
    import fcntl

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW
COSMETIC = (".gitignore", "CACHEDIR.TAG")
Buffer = bytes | bytearray | memoryview


# -- errors ----------------------------------------------------------------------------------


def is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def translate(exc: OSError, message: str) -> Exception:
    """`StoreFullError` / `StorePermissionError` for what they mean, else `exc` itself."""
    if is_full(exc):
        return StoreFullError(exc.errno, f"{message}: no space left")
    if isinstance(exc, PermissionError):
        return StorePermissionError(f"{message}: permission denied")
    return exc


# -- store roots -----------------------------------------------------------------------------


def open_root(path: str | os.PathLike[str], marker: str) -> Path:
    """Create or check the store directory at `path` (resolved); refuse a directory of another
    user, a symlink or file, or one that is not empty and has no `marker` file."""
    root = Path(os.path.realpath(os.fspath(path)))
    try:
        created = make_private_dirs(root)
    except OSError as exc:
        raise translate(exc, f"cannot create the store directory {root}") from exc
    check_dir(root, fix_mode=True)
    marker_path = root / marker
    if not created and not marker_path.exists():
        stray = [p.name for p in root.iterdir() if not _is_ours_before_marker(p.name, marker)]
        if stray and not marker_path.exists():  # (it may have appeared while we listed)
            raise StorePermissionError(
                f"{root} is not empty and is not a tiers store; use an empty or new directory"
            )
    return root


def _is_ours_before_marker(name: str, marker: str) -> bool:
    """Files a store has before its marker: cosmetic ones, and the marker being written by
    another process creating the same store at this moment (`write_file_atomically`)."""
    return name in COSMETIC or (name.startswith(f".{marker}.") and name.endswith(".tmp"))


def read_or_write_marker(marker: Path, content: dict[str, Any]) -> dict[str, Any]:
    """The marker's JSON object; written as `content` first if missing (one writer wins).
    A marker that is not a small regular file of ours (a planted link) is refused."""
    try:
        text = read_small_file(marker)
    except FileNotFoundError:
        write_file_atomically(marker, json.dumps(content).encode() + b"\n", exclusive=True)
        text = read_small_file(marker)
    try:
        found = json.loads(text)
        if not isinstance(found, dict):
            raise TypeError("not an object")
    except (ValueError, TypeError, RecursionError) as exc:
        message = f"{marker} is damaged; delete the store directory to start over"
        raise DamagedMarker(message) from exc
    return found


class DamagedMarker(ConfigError):
    """A store's format marker is ours but does not hold a marker (a torn write, damage)."""


def read_small_file(path: Path, limit: int = 64 * 1024) -> str:
    """A small regular file's text, never through a symlink. (A second hard link is allowed:
    markers are only ever read, and replaced by rename, never written in place; a marker
    created by link() keeps its temporary name when a crash or an error stops the unlink.)"""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorePermissionError(f"{path} is a symlink; delete it to start over") from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            raise StorePermissionError(f"{path} is not a file of this store; delete it")
        data = os.read(fd, limit)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedMarker(f"{path} is damaged; delete the store directory to start over") from exc


def write_cosmetic_files(root: Path) -> None:
    """``.gitignore`` and ``CACHEDIR.TAG``: keep the cache out of git and backups."""
    _write_once(root / ".gitignore", b"# created by tiers: this directory is a cache\n*\n")
    _write_once(
        root / "CACHEDIR.TAG",
        b"Signature: 8a477f597d28d172789f06886806bc55\n"
        b"# This directory is a cache created by tiers (https://bford.info/cachedir/).\n",
    )


def make_dir(directory: Path) -> None:
    """mkdir 0700 (existing ones are checked: a real directory, ours, not a symlink). A new
    directory is synced into its parent, so that files made durable in it stay reachable."""
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise translate(exc, f"cannot create {directory}") from exc
    else:
        sync_dir(directory.parent)
    check_dir(directory, fix_mode=True)


def sync_dir(directory: Path) -> None:
    """fsync a directory (its entries); best effort where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, DIR_FLAGS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_dir(directory: Path, *, fix_mode: bool) -> None:
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StorePermissionError(f"{directory} must be a directory, not a symlink or a file")
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise StorePermissionError(
            f"{directory} belongs to another user (uid {info.st_uid}); refusing to use it"
        )
    if fix_mode and stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)


def write_file_atomically(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write `data` to a temporary name then rename (or link, if `exclusive`) it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # whatever is planted there (a link) goes, never what it points to
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_once(path: Path, data: bytes) -> None:
    if not path.exists():
        with contextlib.suppress(OSError):  # cosmetic files: never fail an open for them
            write_file_atomically(path, data, exclusive=True)


# -- descriptor-walked access ----------------------------------------------------------------


def open_dir(root: Path, *parts: str) -> int:
    """A descriptor of ``root/parts...``, refusing a symlink or non-directory at every step."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in parts:
            inner = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StorePermissionError(
                f"{root}/{'/'.join(parts)} is a symlink or not a directory; refusing it"
            ) from exc
        raise
    return fd


def flock(fd: int, *, exclusive: bool) -> None:
    """Wait for a shared or exclusive `flock` of `fd` (released when `fd` is closed)."""
    if sys.platform == "win32":
        raise StoreError("this store needs POSIX file locks (flock), which Windows lacks")
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


def read_exact(fd: int, size: int) -> bytes:
    """`size` bytes from `fd`, finishing short reads (huge files, signals); EOFError if the
    file ends first."""
    data = os.read(fd, size) if size else b""
    if len(data) < size:
        parts = [data]
        got = len(data)
        while got < size:
            chunk = os.read(fd, size - got)
            if not chunk:
                raise EOFError(f"the file ended after {got} of {size} bytes")
            parts.append(chunk)
            got += len(chunk)
        data = b"".join(parts)
    return data


def write_all(fd: int, body: Buffer) -> None:
    view = memoryview(body).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def remove_tree(parent_fd: int, name: str) -> None:
    """Delete ``name`` (a file or a directory tree) inside `parent_fd`, never following a
    symlink; an already absent name is fine."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent_fd)  # a file or a symlink: the link itself goes
        return
    try:
        for inner in os.listdir(fd):
            remove_tree(fd, inner)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=parent_fd)


# -- processes -------------------------------------------------------------------------------


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


_REGISTERED: set[Path] = set()  # procs directories this process is registered in


def register_once(procs: Path) -> None:
    """Note in `procs` that this process has the store open (once per process: a forked child
    registers again, at exit every registration is removed)."""
    if procs not in _REGISTERED:
        with contextlib.suppress(FileExistsError):
            path = procs / str(os.getpid())
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600))
        _REGISTERED.add(procs)


def forget_registrations() -> None:
    """After a fork: the child is a new process, registered nowhere yet."""
    _REGISTERED.clear()


def unregister_all() -> None:
    """At exit: this process no longer has any store open."""
    for procs in list(_REGISTERED):
        with contextlib.suppress(OSError):
            os.unlink(procs / str(os.getpid()))
    _REGISTERED.clear()


def dead_processes(procs: Path) -> set[int]:
    """Pids registered in `procs` that no longer run (they crashed with the store open)."""
    dead = set()
    for entry in os.scandir(procs):
        if entry.name.isdigit() and not pid_alive(int(entry.name)):
            dead.add(int(entry.name))
    return dead


def forget_processes(procs: Path, pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.unlink(procs / str(pid))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_registrations)
atexit.register(unregister_all)
