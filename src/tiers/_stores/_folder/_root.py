"""The FolderStore root: creation and checks, and cleaning what killed processes left.

    <root>/.tiers-folder.json   format marker: {"format": "tiers-folder", "version": 1}
    <root>/<slug>-<hash>/       one folder per entry: metadata.json + data.<random>.<ext>
    <root>/.tmp/                entries being written, named <pid>.<random>
    <root>/.trash/              entries being deleted, named <pid>.<random>
    <root>/.locks/              one file per held lock
    <root>/.procs/<pid>         processes that have the store open (to find crashed writers)
    <root>/.stats.json          removal counters
    <root>/.usage.json          usage counters (hits, misses, sets, deletes, errors)
    <root>/.gitignore, CACHEDIR.TAG

Directories 0700, files 0600, a root of another user or a foreign non-empty directory refused:
the rules of DiskStore (`.._fs.open_root`). What exists is never chmodded on open; a store this
process cannot write (a read-only mount, ``chmod -R a-w``) opens read-only (`OWN_NAMES`).
Everything inside the root is reached by directory descriptor, never through a symlink, and
created under a fresh name then linked or renamed into place: a link planted at any of these
names is never read, written, chmodded or followed, and nothing is created or deleted outside
the root.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

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
OWN_DIRS = (TMP, TRASH, LOCKS, PROCS)
OWN_NAMES = (MARKER, *OWN_DIRS, ".stats.json", ".usage.json", ".generations.json",
             ".generations.lock")  # fmt: skip
"""What the store writes at the top of its root: if this process cannot write one of them,
the store opens read-only."""


def open_folder_root(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """Create or check the store directory at `path`; return it resolved, and why this
    process must not write it (None if it may: see `read_only`)."""
    root = _fs.open_root(path, MARKER)
    reason = _fs.read_only_reason(root, OWN_NAMES)
    root_fd = _fs.open_dir(root)
    try:
        if reason is None:
            content = _fs.read_or_write_marker(
                root_fd, root, MARKER, {"format": FORMAT, "version": VERSION}
            )
        else:
            content = _read_only_marker(root_fd, root, reason)
        fmt, version = content.get("format"), content.get("version")
        if fmt != FORMAT or version != VERSION:
            raise ConfigError(
                f"{root} holds a {fmt!r} store of version {version}; "
                f"this tiers reads {FORMAT!r} version {VERSION}"
            )
        if reason is None:
            for name in OWN_DIRS:
                make_own_dir(root_fd, name, root)
            _fs.write_cosmetic_files(root_fd)
    finally:
        os.close(root_fd)
    return root, reason


def _read_only_marker(root_fd: int, root: Path, reason: str) -> dict[str, object]:
    """The marker of a store this process cannot write (which must already be one)."""
    try:
        return _fs.read_marker(root_fd, root, MARKER)
    except FileNotFoundError:
        raise StorePermissionError(
            f"cannot make a FolderStore in {root}: {reason}; make it writable or choose "
            "another path"
        ) from None


# -- the store's own folders ----------------------------------------------------------------


def make_own_dir(root_fd: int, name: str, root: Path) -> None:
    """mkdir 0700 (an existing one is checked, never changed: a real directory, ours, not a
    symlink)."""
    created = True
    try:
        os.mkdir(name, 0o700, dir_fd=root_fd)
    except FileExistsError:
        created = False
    fd = _fs.open_subdir(root_fd, name, root / name)
    try:
        info = os.fstat(fd)
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise StorePermissionError(
                f"{root / name} belongs to another user (uid {info.st_uid}); refusing to use it"
            )
        if created and stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)  # (the umask may have cleared bits)
    finally:
        os.close(fd)


# -- the process registry (.procs/<pid>) -----------------------------------------------------


def register(root: Path) -> None:
    """Note that this process uses the store (once per process; again after a fork)."""
    _fs.register(root, PROCS)


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
        dead = _fs.dead_processes(procs_fd)
        try:
            swept = os.stat(SWEPT, dir_fd=procs_fd, follow_symlinks=False).st_mtime
        except FileNotFoundError:
            swept = 0.0
        daily = time.time() - swept > STALE_SECONDS
        if dead or daily:
            clean_entries()
            _fs.forget_processes(procs_fd, dead)
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


def abandoned(pid: int, info: os.stat_result, now: float) -> bool:
    """Whether a temporary item of writer `pid` is left over: the writer no longer runs,
    or the item is older than `STALE_SECONDS` (what `sweep` removes; `verify` reports)."""
    return now - info.st_mtime > STALE_SECONDS or not _fs.pid_alive(pid)


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
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if abandoned(pid, info, now):
                with contextlib.suppress(OSError):
                    _fs.remove_tree(fd, name)
                    removed += 1
    finally:
        os.close(fd)
    return removed
