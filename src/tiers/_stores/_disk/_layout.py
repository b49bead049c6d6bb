"""The DiskStore directory: creation, permissions, ownership and format checks.

    <root>/tiers-store.json   format marker: {"format": "tiers-disk", "version": 1, "shards": 8}
    <root>/index/00 .. 07/    one LMDB environment per shard (records and their indexes)
    <root>/data/<xx>/<name>   values too large to keep inline, one file each
    <root>/tmp/               files being written (named after the writing process)
    <root>/procs/<pid>        processes that have the store open (to find crashed writers)
    <root>/reserve            a small file deleted when the disk is full, so deletes still run

Directories are 0700 and files 0600 whatever the umask; a directory owned by another user,
or one that is not empty and not a tiers store, is refused (shared with FolderStore: `.._fs`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ...errors import ConfigError
from .._fs import NOFOLLOW, make_dir, open_root, read_or_write_marker, write_cosmetic_files

FORMAT = "tiers-disk"
VERSION = 1
SHARDS = 8
RESERVE_SIZE = 256 * 1024
_MARKER = "tiers-store.json"
_NOFOLLOW = NOFOLLOW


class Layout:
    """Paths of one store directory (created and checked by `open_layout`)."""

    def __init__(self, root: Path, shards: int) -> None:
        self.root = root
        self.shards = shards
        self.index = root / "index"
        self.data = root / "data"
        self.tmp = root / "tmp"
        self.procs = root / "procs"
        self.reserve = root / "reserve"

    def shard_dir(self, shard: int) -> Path:
        return self.index / f"{shard:02x}"

    def data_path(self, name: str) -> Path:
        return self.data / name[2:4] / name


def open_layout(path: str | os.PathLike[str]) -> Layout:
    """Create or check the store directory at `path` and return its layout."""
    root = open_root(path, _MARKER)
    shards = _read_or_write_marker(root / _MARKER)
    layout = Layout(root, shards)
    for directory in (layout.index, layout.data, layout.tmp, layout.procs):
        make_dir(directory)
    write_cosmetic_files(root)
    return layout


def _read_or_write_marker(marker: Path) -> int:
    content = read_or_write_marker(marker, {"format": FORMAT, "version": VERSION, "shards": SHARDS})
    try:
        fmt, version, shards = content["format"], content["version"], content["shards"]
    except KeyError as exc:
        raise ConfigError(f"{marker} is damaged; delete the store directory to start over") from exc
    if fmt != FORMAT or version != VERSION or not isinstance(shards, int) or shards < 1:
        raise ConfigError(
            f"{marker.parent} holds a {fmt!r} store of version {version}; "
            f"this tiers reads {FORMAT!r} version {VERSION}"
        )
    return shards


def ensure_reserve(layout: Layout) -> None:
    """Create the reserve file if missing and there is room (deleted when the disk fills)."""
    if layout.reserve.exists():
        return
    try:
        fd = os.open(layout.reserve, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    except OSError:
        return
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, b"\0" * RESERVE_SIZE)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(layout.reserve)
        return
    os.close(fd)


def release_reserve(layout: Layout) -> bool:
    """Delete the reserve file to give a full disk some room; True if there was one."""
    try:
        os.unlink(layout.reserve)
    except FileNotFoundError:
        return False
    return True
