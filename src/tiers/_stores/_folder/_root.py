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
the rules (and code, `.._fs`) of DiskStore.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from ...errors import ConfigError
from .. import _fs
from ._entry_dir import TMP, TRASH
from ._locks import LOCKS
from ._naming import writer_pid

FORMAT = "tiers-folder"
VERSION = 1
MARKER = ".tiers-folder.json"
PROCS = ".procs"
STALE_SECONDS = 24 * 3600


def open_folder_root(path: str | os.PathLike[str]) -> Path:
    """Create or check the store directory at `path`; return it resolved."""
    root = _fs.open_root(path, MARKER)
    marker = root / MARKER
    content = _fs.read_or_write_marker(marker, {"format": FORMAT, "version": VERSION})
    fmt, version = content.get("format"), content.get("version")
    if fmt != FORMAT or version != VERSION:
        raise ConfigError(
            f"{root} holds a {fmt!r} store of version {version}; "
            f"this tiers reads {FORMAT!r} version {VERSION}"
        )
    for name in (TMP, TRASH, LOCKS, PROCS):
        _fs.make_dir(root / name)
    _fs.write_cosmetic_files(root)
    return root


def register(root: Path) -> None:
    """Note that this process uses the store (once per process; again after a fork)."""
    _fs.register_once(root / PROCS)


def recover(root: Path, clean_entries: Callable[[], object]) -> None:
    """Remove the temporary and trashed folders of writers that are gone; if a registered
    process died (or once a day), also `clean_entries` of what such a writer left inside
    an entry folder."""
    register(root)
    for part in (TMP, TRASH):
        sweep(root, part)
    procs = root / PROCS
    dead = _fs.dead_processes(procs)
    marker = procs / ".swept"
    try:
        daily = time.time() - marker.stat().st_mtime > STALE_SECONDS
    except FileNotFoundError:
        daily = True
    if dead or daily:
        clean_entries()
        _fs.forget_processes(procs, dead)
        if daily:
            with contextlib.suppress(OSError):
                marker.touch(mode=0o600)


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
