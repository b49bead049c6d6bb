"""The FolderStore root: creation and checks, and cleaning what killed processes left.

    <root>/.tiers-folder.json   format marker: {"format": "tiers-folder", "version": 1}
    <root>/<slug>-<hash>/       one folder per entry: metadata.json + data.<random>.<ext>
    <root>/.tmp/                entries being written, named <pid>.<random>
    <root>/.trash/              entries being deleted, named <pid>.<random>
    <root>/.locks/              one file per held lock
    <root>/.procs/<pid>         processes that have the store open (to find crashed writers)
    <root>/.stats.json          removal counters
    <root>/.gitignore, CACHEDIR.TAG

Directories 0700, files 0600, a root of another user or a foreign non-empty directory refused:
the rules of DiskStore (`.._fs.open_root`). Everything inside the root is reached by directory
descriptor, never through a symlink, and created under a fresh name then linked or renamed
into place: a link planted at any of these names is never read, written, chmodded or
followed, and nothing is created or deleted outside the root.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..._codec._documents import load_object
from ...errors import ConfigError, StorePermissionError
from .. import _fs
from ._entry_dir import TMP, TRASH
from ._locks import LOCKS
from ._naming import writer_pid

FORMAT = "tiers-folder"
VERSION = 1
MARKER = ".tiers-folder.json"
PROCS = ".procs"
SWEPT = ".swept"
STALE_SECONDS = 24 * 3600
_MARKER_MAX = 64 * 1024
_COSMETIC = {
    ".gitignore": b"# created by tiers: this directory is a cache\n*\n",
    "CACHEDIR.TAG": b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This directory is a cache created by tiers (https://bford.info/cachedir/).\n",
}


def open_folder_root(path: str | os.PathLike[str]) -> Path:
    """Create or check the store directory at `path`; return it resolved."""
    root = _fs.open_root(path, MARKER)
    root_fd = _fs.open_dir(root)
    try:
        content = _read_or_write_marker(root_fd, root)
        fmt, version = content.get("format"), content.get("version")
        if fmt != FORMAT or version != VERSION:
            raise ConfigError(
                f"{root} holds a {fmt!r} store of version {version}; "
                f"this tiers reads {FORMAT!r} version {VERSION}"
            )
        for name in (TMP, TRASH, LOCKS, PROCS):
            _make_dir(root_fd, name, root)
        for name, data in _COSMETIC.items():
            with contextlib.suppress(OSError):  # cosmetic: never fail an open for them
                if not _exists(root_fd, name):
                    _write_new(root_fd, name, data)
    finally:
        os.close(root_fd)
    return root


# -- the marker and other files written once -----------------------------------------------


def _read_or_write_marker(root_fd: int, root: Path) -> dict[str, Any]:
    """The marker's JSON object; written first if missing (one writer wins). A marker that is
    not a small regular file of ours, alone with its name (a planted link), is refused."""
    try:
        raw = _read_marker(root_fd, root)
    except FileNotFoundError:
        _write_new(root_fd, MARKER, json.dumps({"format": FORMAT, "version": VERSION}).encode())
        raw = _read_marker(root_fd, root)
    try:
        found = load_object(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{root / MARKER} is damaged; delete the store directory to start over"
        ) from exc
    return found


def _read_marker(root_fd: int, root: Path) -> bytes:
    try:
        flags = os.O_RDONLY | _fs.NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(MARKER, flags, dir_fd=root_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise StorePermissionError(f"{root / MARKER} is a link; delete it") from exc
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            _forget_marker_temporaries(root_fd, info)  # a writer could not unlink its own
            info = os.fstat(fd)
        if not (stat.S_ISREG(info.st_mode) and info.st_nlink == 1) or info.st_size > _MARKER_MAX:
            raise StorePermissionError(f"{root / MARKER} is not a file of this store; delete it")
        return _fs.read_exact(fd, info.st_size)
    except EOFError as exc:
        raise ConfigError(f"{root / MARKER} is damaged; delete the store directory") from exc
    finally:
        os.close(fd)


def _forget_marker_temporaries(root_fd: int, marker: os.stat_result) -> None:
    """Unlink the temporary names the marker was written under (``.<marker>.<...>.tmp``) that
    still lead to it: what a writer whose last unlink failed (EIO) leaves behind."""
    for name in os.listdir(root_fd):
        if not (name.startswith(f".{MARKER}.") and name.endswith(".tmp")):
            continue
        with contextlib.suppress(FileNotFoundError):
            info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            if (info.st_dev, info.st_ino) == (marker.st_dev, marker.st_ino):
                os.unlink(name, dir_fd=root_fd)


def _write_new(root_fd: int, name: str, data: bytes) -> None:
    """Create `name` holding `data` unless it exists (one writer wins): written and fsynced
    under a fresh temporary name, then linked into place, so it appears whole or not at all."""
    tmp = f".{name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _fs.NOFOLLOW, 0o600, dir_fd=root_fd)
    try:
        try:
            os.fchmod(fd, 0o600)
            _fs.write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, name, src_dir_fd=root_fd, dst_dir_fd=root_fd, follow_symlinks=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=root_fd)


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _make_dir(root_fd: int, name: str, root: Path) -> None:
    """mkdir 0700 (an existing one is checked: a real directory, ours, not a symlink)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=root_fd)
    try:
        fd = os.open(name, _fs.DIR_FLAGS, dir_fd=root_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StorePermissionError(
                f"{root / name} must be a directory, not a symlink or a file"
            ) from exc
        raise
    try:
        info = os.fstat(fd)
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise StorePermissionError(
                f"{root / name} belongs to another user (uid {info.st_uid}); refusing to use it"
            )
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


# -- the process registry (.procs/<pid>) -----------------------------------------------------

_REGISTERED: set[Path] = set()  # roots this process is registered in


def register(root: Path) -> None:
    """Note that this process uses the store (once per process; again after a fork)."""
    if root in _REGISTERED:
        return
    fd = _fs.open_dir(root, PROCS)  # never through a symlink swapped in for .procs
    try:
        with contextlib.suppress(FileExistsError):
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _fs.NOFOLLOW
            os.close(os.open(str(os.getpid()), flags, 0o600, dir_fd=fd))
    finally:
        os.close(fd)
    _REGISTERED.add(root)


def _unregister_all() -> None:
    """At exit: this process no longer has any store open."""
    for root in list(_REGISTERED):
        with contextlib.suppress(OSError, StorePermissionError):
            fd = _fs.open_dir(root, PROCS)
            try:
                os.unlink(str(os.getpid()), dir_fd=fd)
            finally:
                os.close(fd)
    _REGISTERED.clear()


def _dead_processes(procs_fd: int) -> set[int]:
    """Pids registered that no longer run (they crashed with the store open)."""
    return {int(n) for n in os.listdir(procs_fd) if n.isdigit() and not _fs.pid_alive(int(n))}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_REGISTERED.clear)
atexit.register(_unregister_all)


# -- recovery --------------------------------------------------------------------------------


def recover(root: Path, clean_entries: Callable[[], object]) -> None:
    """Remove the temporary and trashed folders of writers that are gone; if a registered
    process died (or once a day), also `clean_entries` of what such a writer left inside
    an entry folder."""
    register(root)
    for part in (TMP, TRASH):
        sweep(root, part)
    procs_fd = _fs.open_dir(root, PROCS)
    try:
        dead = _dead_processes(procs_fd)
        try:
            swept = os.stat(SWEPT, dir_fd=procs_fd, follow_symlinks=False).st_mtime
        except FileNotFoundError:
            swept = 0.0
        daily = time.time() - swept > STALE_SECONDS
        if dead or daily:
            clean_entries()
            for pid in dead:
                with contextlib.suppress(OSError):
                    os.unlink(str(pid), dir_fd=procs_fd)
            if daily:
                with contextlib.suppress(OSError):
                    _replace_empty(procs_fd, SWEPT)
    finally:
        os.close(procs_fd)


def _replace_empty(dir_fd: int, name: str) -> None:
    """A new empty file at `name` (its mtime is now): whatever link was there goes first."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)  # the link itself, never what it leads to
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _fs.NOFOLLOW
    os.close(os.open(name, flags, 0o600, dir_fd=dir_fd))


def sweep(root: Path, part: str) -> int:
    """Remove the items in ``root/part`` of writers no longer running (or older than a day)."""
    removed = 0
    now = time.time()
    try:
        fd = _fs.open_dir(root, part)
    except (FileNotFoundError, PermissionError):
        return 0
    try:
        for name in os.listdir(fd):
            pid = writer_pid(name)
            if pid is None:
                continue
            try:
                age = now - os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if age > STALE_SECONDS or not _fs.pid_alive(pid):
                with contextlib.suppress(OSError):
                    _fs.remove_tree(fd, name)
                    removed += 1
    finally:
        os.close(fd)
    return removed
