"""The DiskStore directory: creation, permissions, ownership and format checks.

    <root>/tiers-store.json   format marker: {"format": "tiers-disk", "version": 1, "shards": 8}
    <root>/index/00 .. 07/    one LMDB environment per shard (records and their indexes)
    <root>/data/<xx>/<name>   values too large to keep inline, one file each
    <root>/tmp/               files being written (named after the writing process)
    <root>/procs/<pid>        processes that have the store open (to find crashed writers)
    <root>/reserve            a small file deleted when the disk is full, so deletes still run

Directories are 0700 and files 0600 whatever the umask; a directory owned by another user,
or one that is not empty and not a tiers store, is refused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path

from ...errors import ConfigError, StoreFullError, StorePermissionError

FORMAT = "tiers-disk"
VERSION = 1
SHARDS = 8
RESERVE_SIZE = 256 * 1024
_MARKER = "tiers-store.json"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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
    root = Path(os.path.realpath(os.fspath(path)))
    created = False
    try:
        root.mkdir(parents=True, mode=0o700)
        created = True
    except FileExistsError:
        pass
    except OSError as exc:
        raise _translate(exc, f"cannot create the store directory {root}") from exc
    _check_dir(root, fix_mode=True)
    marker = root / _MARKER
    if not created and not marker.exists():
        stray = [p.name for p in root.iterdir() if not _is_ours_before_marker(p.name)]
        if stray and not marker.exists():  # (it may have appeared while we listed)
            raise StorePermissionError(
                f"{root} is not empty and is not a tiers store; use an empty or new directory"
            )
    shards = _read_or_write_marker(marker)
    layout = Layout(root, shards)
    for directory in (layout.index, layout.data, layout.tmp, layout.procs):
        make_dir(directory)
    _write_once(root / ".gitignore", b"# created by tiers: this directory is a cache\n*\n")
    _write_once(
        root / "CACHEDIR.TAG",
        b"Signature: 8a477f597d28d172789f06886806bc55\n"
        b"# This directory is a cache created by tiers (https://bford.info/cachedir/).\n",
    )
    return layout


def _is_ours_before_marker(name: str) -> bool:
    """Files a store has before its marker: cosmetic ones, and the marker being written by
    another process creating the same store at this moment (`write_file_atomically`)."""
    return name in (".gitignore", "CACHEDIR.TAG") or (
        name.startswith(f".{_MARKER}.") and name.endswith(".tmp")
    )


def make_dir(directory: Path) -> None:
    """mkdir 0700 (existing ones are checked: a real directory, ours, not a symlink)."""
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _translate(exc, f"cannot create {directory}") from exc
    _check_dir(directory, fix_mode=True)


def _check_dir(directory: Path, *, fix_mode: bool) -> None:
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StorePermissionError(f"{directory} must be a directory, not a symlink or a file")
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise StorePermissionError(
            f"{directory} belongs to another user (uid {info.st_uid}); refusing to use it"
        )
    if fix_mode and stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)


def _read_or_write_marker(marker: Path) -> int:
    try:
        text = marker.read_text("utf-8")
    except FileNotFoundError:
        content = {"format": FORMAT, "version": VERSION, "shards": SHARDS}
        write_file_atomically(marker, json.dumps(content).encode() + b"\n", exclusive=True)
        text = marker.read_text("utf-8")
    try:
        content = json.loads(text)
        fmt, version, shards = content["format"], content["version"], content["shards"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{marker} is damaged; delete the store directory to start over") from exc
    if fmt != FORMAT or version != VERSION or not isinstance(shards, int) or shards < 1:
        raise ConfigError(
            f"{marker.parent} holds a {fmt!r} store of version {version}; "
            f"this tiers reads {FORMAT!r} version {VERSION}"
        )
    return shards


def write_file_atomically(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write `data` to a temporary name then rename (or link, if `exclusive`) it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
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


def is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _translate(exc: OSError, message: str) -> Exception:
    if is_full(exc):
        return StoreFullError(exc.errno, f"{message}: no space left")
    if isinstance(exc, PermissionError):
        return StorePermissionError(f"{message}: permission denied")
    return exc
