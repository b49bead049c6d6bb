"""`FolderStore.verify`, for one entry folder: every byte of the entry checked, and what is
wrong reported as `Damage` (with `fix`, removed first).

Checked under the folder's shared flock, as a read is (a replacement in progress is never
taken for damage):

- the name: a directory of the store's user (a link or file planted there, a folder of
  another user: ``unreadable``);
- ``metadata.json``: present (a folder without it is an ``orphan``), a regular file of the
  store's with one name, sound (its own checksum) and naming a key of this folder (else
  ``unreadable``);
- the data file it names: present (``missing``), the store's own (``unreadable``), as long
  as recorded (shorter: ``truncated``; longer: ``checksum``), its xxh3-64 as recorded
  (``checksum``);
- anything else in the folder: an ``orphan`` (what a writer killed inside its commit leaves).

A fix takes the key's change lock (a new generation stamp: no copy in a memory tier
outlives it) and the folder's exclusive flock, checks again, then removes the folder, or
only the orphans beside a sound entry, as a read meeting damage does. A link is removed
itself, never what it leads to. Values are hashed, never decoded.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import xxhash

from .._fs import NOFOLLOW, remove_tree
from .._protocol import Damage
from . import _entry_dir as dirs
from ._changes import Changes
from ._counters import CounterFile
from ._metadata import DamagedMetadata, Metadata, decode
from ._naming import ENTRY_DIR, METADATA, entry_dir
from ._owned import describe, is_owned
from ._verify_root import RootCheck, guarded

_CHUNK = 1 << 20
_READ = os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0)  # a planted fifo never blocks


def verify_folder(
    root: Path,
    root_fd: int,
    changes: Changes,
    files: Sequence[CounterFile],
    now: float,
    *,
    fix: bool,
) -> Iterator[Damage]:
    """Every damage in the store at `root`: its own files first (`_verify_root`), then each
    name at its top as the directory lists it (entry folders: `check_entry`)."""
    own = RootCheck(root, root_fd, files, now, fix=fix)
    yield from own.own_files()
    for name in dirs.listed(root_fd):
        if ENTRY_DIR.match(name):
            check = functools.partial(check_entry, root_fd, name, changes, fix=fix)
            yield from guarded(name, check)
        else:
            yield from own.top(name)


def check_entry(root_fd: int, name: str, changes: Changes, *, fix: bool) -> list[Damage]:
    """What is wrong with entry folder `name` (with `fix`: removed, ``fixed=True``)."""
    try:
        info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
    except FileNotFoundError:
        return []  # removed meanwhile
    if not stat.S_ISDIR(info.st_mode):
        return [_unlinked(root_fd, name, info, fix=fix)]
    with dirs.locked(root_fd, name, exclusive=False) as fd:
        found = [] if fd is None else _inspect(fd, name)[0]
    if not found or not fix:
        return found
    trashed = None
    with changes.changing(name), dirs.locked(root_fd, name, exclusive=True) as fd:
        if fd is None:
            return []
        found, whole = _inspect(fd, name)  # again: nothing changes it now
        try:
            if whole:
                trashed = dirs.trash(root_fd, name, fd)
            else:
                for damage in found:
                    remove_tree(fd, damage.location.rpartition("/")[2])
        except OSError:
            return found  # (reported, not fixed)
    dirs.discard(root_fd, trashed)
    return [replace(damage, fixed=True) for damage in found]


def _unlinked(root_fd: int, name: str, info: os.stat_result, *, fix: bool) -> Damage:
    """A link or file planted where an entry folder belongs (with `fix`: the name removed,
    never what a link leads to)."""
    damage = Damage(
        "unreadable", None, name, info.st_size, f"{describe(info)} where an entry folder belongs"
    )
    if not fix:
        return damage
    try:
        os.unlink(name, dir_fd=root_fd)
    except FileNotFoundError:
        pass
    except OSError:
        return damage
    return replace(damage, fixed=True)


def _inspect(fd: int, name: str) -> tuple[list[Damage], bool]:
    """(what is wrong in the locked folder `fd`, whether the whole folder must go)."""
    folder = os.fstat(fd)
    if folder.st_uid != _euid(folder):
        detail = f"a folder of another user (uid {folder.st_uid})"
        return [Damage("unreadable", None, name, _bytes(fd), detail)], True
    found = _stat(fd, METADATA)
    where = f"{name}/{METADATA}"
    if found is None:
        detail = "an entry folder without metadata.json (its files belong to no entry)"
        return [Damage("orphan", None, name, _bytes(fd), detail)], True
    if not is_owned(found):
        detail = f"metadata.json is {describe(found)}"
        return [Damage("unreadable", None, where, _bytes(fd), detail)], True
    m, problem = _metadata(fd, name)
    if m is None:
        return [Damage("unreadable", None, where, _bytes(fd), problem)], True
    damages = []
    data = _data_damage(fd, name, m)
    if data is not None:
        damages.append(data)
    for other in os.listdir(fd):
        info = _stat(fd, other)
        if other in (METADATA, m.data) or info is None:
            continue
        detail = "left by a writer killed while replacing the entry"
        if not is_owned(info):
            detail = f"{describe(info)} beside the entry's files"
        damages.append(Damage("orphan", None, f"{name}/{other}", info.st_size, detail))
    return damages, data is not None


def _metadata(fd: int, name: str) -> tuple[Metadata | None, str]:
    """(the folder's sound metadata, or None and why not)."""
    raw = dirs.read_metadata(fd)
    if raw is None:
        return None, "metadata.json cannot be read (larger than any the store writes)"
    try:
        m = decode(raw)
    except DamagedMetadata as exc:
        return None, str(exc)
    if entry_dir(m.key) != name:
        return None, "metadata.json names a key of another folder (moved or copied by hand)"
    return m, ""


def _data_damage(fd: int, name: str, m: Metadata) -> Damage | None:
    where = f"{name}/{m.data}"
    info = _stat(fd, m.data)
    if info is None:
        return Damage("missing", m.key, where, 0, "the data file metadata.json names is gone")
    size = info.st_size
    if not is_owned(info):
        return Damage("unreadable", m.key, where, size, f"the data file is {describe(info)}")
    if size < m.size:
        return Damage("truncated", m.key, where, size, f"{size} of the {m.size} bytes recorded")
    if size > m.size:
        return Damage("checksum", m.key, where, size, f"{size} bytes where {m.size} are recorded")
    digest = _digest(fd, m.data, info)
    if digest is None:
        return Damage("unreadable", m.key, where, size, "the data file cannot be read")
    if digest != m.checksum:
        return Damage("checksum", m.key, where, size, "the bytes do not match their checksum")
    return None


def _digest(fd: int, data: str, info: os.stat_result) -> str | None:
    """The xxh3-64 of the data file, read in chunks (None if it cannot be read, or is not
    the file stat-ed)."""
    try:
        dfd = os.open(data, _READ, dir_fd=fd)
    except OSError:
        return None
    try:
        held = os.fstat(dfd)
        if (held.st_dev, held.st_ino) != (info.st_dev, info.st_ino) or not is_owned(held):
            return None
        hasher = xxhash.xxh3_64()
        while chunk := os.read(dfd, _CHUNK):
            hasher.update(chunk)
        return hasher.hexdigest()
    except OSError:  # (EIO: a bad sector)
        return None
    finally:
        os.close(dfd)


def _stat(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _bytes(fd: int) -> int:
    """Bytes of the files directly in the folder `fd`."""
    total = 0
    for other in os.listdir(fd):
        info = _stat(fd, other)
        total += 0 if info is None else info.st_size
    return total


def _euid(info: os.stat_result) -> int:
    return os.geteuid() if hasattr(os, "geteuid") else info.st_uid
