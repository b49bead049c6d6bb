"""The DiskStore directory: creation, permissions, ownership and format checks.

    <root>/tiers-store.json   format marker: {"format": "tiers-disk", "version": 2, "shards": 8}
    <root>/index/00 .. 07/    one shard each: ``table`` (slots), ``log.<n>`` (records),
                              ``lock`` (the writers' flock), ``locks/`` (single-flight leases)
    <root>/data/<xx>/<name>   values too large to keep inline, one file each
    <root>/tmp/               files being written (named after the writing process)
    <root>/procs/<pid>        processes that have the store open (to find crashed writers)
    <root>/generations.json   the random name of the store's generation table in shared memory

Directories are 0700 and files 0600 whatever the umask; a directory owned by another user,
or one that is not empty and not a tiers store, is refused (shared with FolderStore: `.._fs`);
so is a store this process cannot write (a read-only mount, ``chmod -R a-w``), before
anything in it is changed.
A store of the first format (version 1, an LMDB index) is emptied and reused: a cache may
lose its entries to an upgrade, never fail to open.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ...errors import ConfigError, StorePermissionError
from .._fs import (
    DamagedMarker,
    make_dir,
    open_dir,
    open_root,
    read_marker,
    read_only_reason,
    read_or_write_marker,
    remove_tree,
    replace_file,
    write_cosmetic_files,
)
from .._generations import Generations, open_generations

if sys.platform != "win32":
    import fcntl

FORMAT = "tiers-disk"
VERSION = 2
SHARDS = 8
_MARKER = "tiers-store.json"
GENERATIONS = "generations.json"
_OLD_VERSIONS = (1,)


class Layout:
    """Paths of one store directory (created and checked by `open_layout`)."""

    def __init__(self, root: Path, shards: int, generations: Generations) -> None:
        self.root = root
        self.shards = shards
        self.generations = generations  # see _generations: stamps of changed keys
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
    reason = read_only_reason(root, (_MARKER, GENERATIONS, "index", "data", "tmp", "procs"))
    if reason is not None:  # (refused before anything in it is opened to write, or chmodded)
        raise StorePermissionError(
            f"cannot open the DiskStore at {root}: {reason}; a DiskStore writes even to read, "
            "so make it writable (a FolderStore can be read where it cannot write)"
        )
    root_fd = open_dir(root)
    try:
        shards = _read_or_write_marker(root_fd, root)
        layout = Layout(root, shards, open_generations(root_fd, root, GENERATIONS))
        for directory in (layout.index, layout.data, layout.tmp, layout.procs):
            make_dir(directory)
        write_cosmetic_files(root_fd)
    finally:
        os.close(root_fd)
    return layout


def _read_or_write_marker(root_fd: int, root: Path, *, again: bool = True) -> int:
    """The shard count of the store; a marker that is ours but damaged (or of the first
    format) empties the store and is written anew, once."""
    try:
        content = read_or_write_marker(
            root_fd, root, _MARKER, {"format": FORMAT, "version": VERSION, "shards": SHARDS}
        )
        fmt, version, shards = content["format"], content["version"], content["shards"]
    except (DamagedMarker, KeyError) as exc:
        if not again:
            raise ConfigError(f"{root / _MARKER} cannot be rewritten; delete {root}") from exc
        _reset(root_fd, damaged=True)  # ours, torn or damaged: start the store afresh
        return _read_or_write_marker(root_fd, root, again=False)
    if fmt == FORMAT and version in _OLD_VERSIONS and again:
        _reset(root_fd, damaged=False)
        return _read_or_write_marker(root_fd, root, again=False)
    if fmt == FORMAT and version == VERSION and shards != SHARDS and again:
        _reset(root_fd, damaged=True)  # a damaged count: keys would map to other shards
        return _read_or_write_marker(root_fd, root, again=False)
    if fmt != FORMAT or version != VERSION or shards != SHARDS:
        raise ConfigError(
            f"{root} holds a {fmt!r} store of version {version}; "
            f"this tiers reads {FORMAT!r} version {VERSION}"
        )
    return SHARDS


def _reset(root_fd: int, *, damaged: bool) -> None:
    """Empty a store of an older format, or whose marker is damaged, and mark it as this
    format (one process does it: the others wait on the directory's flock, then find it
    done)."""
    if sys.platform != "win32":
        fcntl.flock(root_fd, fcntl.LOCK_EX)
    try:
        try:
            content = read_marker(root_fd, Path("."), _MARKER)
        except (FileNotFoundError, DamagedMarker):
            content = {}
        current = (content.get("format"), content.get("version"), content.get("shards"))
        if damaged and current == (FORMAT, VERSION, SHARDS):
            return  # another process repaired it meanwhile
        if not damaged and (
            content.get("format") != FORMAT or content.get("version") not in _OLD_VERSIONS
        ):
            return  # another process upgraded it meanwhile
        for name in ("index", "data", "tmp", "reserve"):
            remove_tree(root_fd, name)
        new = {"format": FORMAT, "version": VERSION, "shards": SHARDS}
        replace_file(root_fd, _MARKER, json.dumps(new).encode() + b"\n")
    finally:
        if sys.platform != "win32":
            fcntl.flock(root_fd, fcntl.LOCK_UN)
