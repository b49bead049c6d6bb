"""The DiskStore directory: creation, permissions, ownership and format checks.

    <root>/tiers-store.json   format marker: {"format": "tiers-disk", "version": 2, "shards": 8}
    <root>/index/00 .. 07/    one shard each: ``table`` (slots), ``log.<n>`` (records),
                              ``lock`` (the writers' flock), ``locks/`` (single-flight leases)
    <root>/data/<xx>/<name>   values too large to keep inline, one file each
    <root>/tmp/               files being written (named after the writing process)
    <root>/procs/<pid>        processes that have the store open (to find crashed writers)

Directories are 0700 and files 0600 whatever the umask; a directory owned by another user,
or one that is not empty and not a tiers store, is refused (shared with FolderStore: `.._fs`).
A store of the first format (version 1, an LMDB index) is emptied and reused: a cache may
lose its entries to an upgrade, never fail to open.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ...errors import ConfigError
from .._fs import (
    make_dir,
    open_dir,
    open_root,
    read_or_write_marker,
    remove_tree,
    write_cosmetic_files,
    write_file_atomically,
)

if sys.platform != "win32":
    import fcntl

FORMAT = "tiers-disk"
VERSION = 2
SHARDS = 8
_MARKER = "tiers-store.json"
_OLD_VERSIONS = (1,)


class Layout:
    """Paths of one store directory (created and checked by `open_layout`)."""

    def __init__(self, root: Path, shards: int) -> None:
        self.root = root
        self.shards = shards
        self.index = root / "index"
        self.data = root / "data"
        self.tmp = root / "tmp"
        self.procs = root / "procs"

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
    if fmt == FORMAT and version in _OLD_VERSIONS:
        _upgrade(marker.parent)
        return _read_or_write_marker(marker)
    if fmt != FORMAT or version != VERSION or not isinstance(shards, int) or not 1 <= shards <= 256:
        raise ConfigError(
            f"{marker.parent} holds a {fmt!r} store of version {version}; "
            f"this tiers reads {FORMAT!r} version {VERSION}"
        )
    return shards


def _upgrade(root: Path) -> None:
    """Empty a store of an older format and mark it as this one (one process does it: the
    others wait on the directory's flock, then find it done)."""
    fd = open_dir(root)
    try:
        if sys.platform != "win32":
            fcntl.flock(fd, fcntl.LOCK_EX)
        content = read_or_write_marker(root / _MARKER, {})
        if content.get("format") != FORMAT or content.get("version") not in _OLD_VERSIONS:
            return  # another process upgraded it meanwhile
        for name in ("index", "data", "tmp", "reserve"):
            remove_tree(fd, name)
        new = {"format": FORMAT, "version": VERSION, "shards": SHARDS}
        write_file_atomically(root / _MARKER, json.dumps(new).encode() + b"\n")
    finally:
        os.close(fd)
