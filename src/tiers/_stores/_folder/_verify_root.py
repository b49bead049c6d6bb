"""`FolderStore.verify`, for the store's own files (the layout is in `_root`):

- its folders ``.tmp``, ``.trash``, ``.locks`` and ``.procs``: missing (``index``), or a link,
  a file or another user's folder in their place (``unreadable``); a fix makes them again;
- the counter files ``.stats.json`` and ``.usage.json`` (`CounterFile.damage`: ``index`` if
  missing, ``unreadable`` if damaged, forged or not the store's; a fix rewrites what can be
  read of them), and ``.gitignore`` or ``CACHEDIR.TAG`` that are not the store's files;
- leftovers of writes that never finished (``temp``): the items of ``.tmp`` and ``.trash``,
  and the temporary names a marker is written under, that the store's own sweep removes:
  their writer no longer runs, or they are more than a day old (`_root.abandoned`); younger
  ones of a running writer are in flight and left alone;
- lock files nobody holds any more: a lease that ended more than `LOCK_GRACE` ago, or an
  empty file that old (``temp``), a lock that cannot be read (``unreadable``);
- registrations in ``.procs`` of processes that no longer run (``index``);
- anything else in these folders or at the top of the root (``orphan``).

A fix removes a link itself, never what it leads to (`remove_tree`), and nothing outside the
root. Every check reads by descriptor, without following links.
"""

from __future__ import annotations

import functools
import math
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from ..._codec._documents import load_object
from ..._fileio import pread_exact
from ...errors import TiersError
from .._fs import (
    COSMETIC_FILES,
    DIR_FLAGS,
    NOFOLLOW,
    flocked,
    open_subdir,
    pid_alive,
    remove_tree,
)
from .._fs import write_cosmetic_files as write_cosmetic
from .._protocol import Damage
from ._changes import LOCK_NAME, TABLE_NAME
from ._counters import CounterFile
from ._entry_dir import TMP, TRASH
from ._locks import LOCKS
from ._naming import writer_pid
from ._owned import describe, is_owned, open_owned
from ._root import MARKER, OWN_DIRS, PROCS, SWEPT, abandoned, make_own_dir

LOCK_GRACE = 3600.0
"""Seconds after its lease ended that a lock file counts as left behind."""

_TOP_TEMP = re.compile(r"\..+\.(\d+)\.[0-9a-f]{12}\.tmp\Z")  # `_fs._put_whole`'s names
_LOCK_FILE = re.compile(r"[0-9a-f]{32}\.lock\Z")
_LOCK_MAX = 64 * 1024
_DEPTH = 16  # how deep sizes are added up in a planted tree


class RootCheck:
    """The checks of the store's own files in the root `root_fd` of `root`; `now` is the
    store's clock (leases), file ages are read on the system's."""

    def __init__(
        self, root: Path, root_fd: int, files: Sequence[CounterFile], now: float, *, fix: bool
    ) -> None:
        self.root, self.root_fd, self.files, self.now, self.fix = root, root_fd, files, now, fix
        self.known = frozenset(
            {MARKER, *OWN_DIRS, TABLE_NAME, LOCK_NAME, *COSMETIC_FILES, *(f.file for f in files)}
        )

    def own_files(self) -> Iterator[Damage]:
        """Damage to the store's folders and files (everything but the top-level names)."""
        for name in OWN_DIRS:
            yield from guarded(name, functools.partial(self._own_dir, name))
        for file in self.files:
            yield from guarded(file.file, functools.partial(self._counters, file))
        for name in COSMETIC_FILES:
            yield from guarded(name, functools.partial(self._cosmetic, name))
        for part in (TMP, TRASH):
            yield from self._inside(part, self._temporary)
        yield from self._inside(LOCKS, self._lock)
        yield from self._inside(PROCS, self._registration)

    def top(self, name: str) -> list[Damage]:
        """Damage of a name at the top of the root that is not an entry folder's."""
        return guarded(name, lambda: self._top(name))

    # -- the top of the root ---------------------------------------------------------------

    def _own_dir(self, name: str) -> list[Damage]:
        info = _stat(self.root_fd, name)
        if info is None:
            damage = Damage("index", None, name, 0, "a folder of the store is missing")
        elif not stat.S_ISDIR(info.st_mode):
            detail = f"{describe(info)} where a folder of the store belongs"
            damage = Damage("unreadable", None, name, info.st_size, detail)
        elif info.st_uid != _euid(info):
            detail = f"a folder of another user (uid {info.st_uid})"
            damage = Damage("unreadable", None, name, _tree_bytes(self.root_fd, name), detail)
        else:
            return []

        def remedy() -> None:
            if info is not None:
                remove_tree(self.root_fd, name)
            make_own_dir(self.root_fd, name, self.root)

        return [self._fixed(damage, remedy)]

    def _counters(self, file: CounterFile) -> list[Damage]:
        found = file.damage(self.root_fd)
        if found is None:
            return []
        info = _stat(self.root_fd, file.file)
        size = 0 if info is None else info.st_size
        return [self._fixed(Damage(found[0], None, file.file, size, found[1]), file.repair)]

    def _cosmetic(self, name: str) -> list[Damage]:
        info = _stat(self.root_fd, name)
        if info is None or is_owned(info):
            return []
        detail = f"{describe(info)}, not the store's"
        damage = Damage("unreadable", None, name, info.st_size, detail)

        def remedy() -> None:
            _unlink_if(self.root_fd, name, info)
            write_cosmetic(self.root_fd)

        return [self._fixed(damage, remedy)]

    def _top(self, name: str) -> list[Damage]:
        info = _stat(self.root_fd, name)
        if name in self.known or info is None:
            return []
        temp = _TOP_TEMP.match(name)
        if temp is not None and stat.S_ISREG(info.st_mode):
            if not abandoned(int(temp[1]), info, time.time()):
                return []  # a marker being written right now
            detail = "a file being written when its writer stopped"
            damage = Damage("temp", None, name, info.st_size, detail)
            return [self._fixed(damage, lambda: _unlink_if(self.root_fd, name, info))]
        detail = f"{describe(info)} that is not the store's"
        damage = Damage("orphan", None, name, _tree_bytes(self.root_fd, name), detail)
        return [self._fixed(damage, lambda: remove_tree(self.root_fd, name))]

    # -- inside the store's folders --------------------------------------------------------

    def _inside(
        self, part: str, check: Callable[[int, str, str, os.stat_result], list[Damage]]
    ) -> Iterator[Damage]:
        """`check` (folder, name, location, lstat) of every item in the folder `part` (not
        looked into if it is not the store's folder: reported by `_own_dir`)."""
        try:
            fd = open_subdir(self.root_fd, part, part)
        except (OSError, TiersError):
            return
        try:
            for name in os.listdir(fd):
                where = f"{part}/{name}"
                info = _stat(fd, name)
                if info is not None:
                    yield from guarded(where, functools.partial(check, fd, name, where, info))
        finally:
            os.close(fd)

    def _temporary(self, fd: int, name: str, where: str, info: os.stat_result) -> list[Damage]:
        pid = writer_pid(name)
        if pid is None or stat.S_ISLNK(info.st_mode):
            detail = f"{describe(info)} that no write of the store made"
            damage = Damage("orphan", None, where, _tree_bytes(fd, name), detail)
        elif abandoned(pid, info, time.time()):
            detail = f"left by a write or removal that never finished (process {pid})"
            damage = Damage("temp", None, where, _tree_bytes(fd, name), detail)
        else:
            return []  # in flight
        return [self._fixed(damage, lambda: remove_tree(fd, name))]

    def _lock(self, fd: int, name: str, where: str, info: os.stat_result) -> list[Damage]:
        if not _LOCK_FILE.match(name):
            detail = f"{describe(info)} that is not a lock of the store"
            damage = Damage("orphan", None, where, _tree_bytes(fd, name), detail)
            return [self._fixed(damage, lambda: remove_tree(fd, name))]
        if not is_owned(info):
            detail = f"{describe(info)} where a lock file belongs"
            damage = Damage("unreadable", None, where, info.st_size, detail)
            return [self._fixed(damage, lambda: _unlink_if(fd, name, info))]
        with flocked(fd, name, lambda: _open_lock(fd, name), exclusive=False) as lfd:
            found = None if lfd is None else self._lock_problem(lfd)
        if found is None:
            return []
        damage = Damage(found[0], None, where, info.st_size, found[1])
        return [self._fixed(damage, lambda: self._release(fd, name))]

    def _lock_problem(self, lfd: int) -> tuple[str, str] | None:
        """What is wrong with the (flock-ed) lock file: unreadable, or left behind."""
        raw = pread_exact(lfd, _LOCK_MAX + 1, 0)
        if not raw:  # made, not yet written (or its writer stopped there)
            if time.time() - os.fstat(lfd).st_mtime > LOCK_GRACE:
                return "temp", "an empty lock file no process is taking"
            return None
        try:
            found = load_object(raw)
            token, expires = found["token"], found["expires"]
        except (ValueError, KeyError):
            return "unreadable", "the lock is not a sound JSON lock (token and lease)"
        if not isinstance(token, str) or type(expires) not in (int, float):
            return "unreadable", "the lock is not a sound JSON lock (token and lease)"
        if not math.isfinite(expires):
            return "unreadable", "the lock's lease never ends"
        if expires < self.now - LOCK_GRACE:
            return "temp", "a lock whose lease ended more than an hour ago (never released)"
        return None

    def _release(self, fd: int, name: str) -> None:
        """Remove a lock file left behind, under its exclusive flock, if it still is."""
        with flocked(fd, name, lambda: open_owned(fd, name, create=False), exclusive=True) as lfd:
            if lfd is not None and self._lock_problem(lfd) is not None:
                os.unlink(name, dir_fd=fd)

    def _registration(self, fd: int, name: str, where: str, info: os.stat_result) -> list[Damage]:
        if name == SWEPT:
            if is_owned(info):
                return []
            detail = f"{describe(info)} where the store notes its last sweep"
            damage = Damage("unreadable", None, where, info.st_size, detail)
            return [self._fixed(damage, lambda: _unlink_if(fd, name, info))]
        if name.isdigit() and stat.S_ISREG(info.st_mode):
            if pid_alive(int(name)):
                return []
            detail = f"registers process {name}, which no longer runs"
            damage = Damage("index", None, where, info.st_size, detail)
            return [self._fixed(damage, lambda: _unlink_if(fd, name, info))]
        detail = f"{describe(info)} that is not a registration of the store"
        damage = Damage("orphan", None, where, _tree_bytes(fd, name), detail)
        return [self._fixed(damage, lambda: remove_tree(fd, name))]

    def _fixed(self, damage: Damage, remedy: Callable[[], object]) -> Damage:
        """`damage`, after `remedy` when fixing (``fixed=True`` if it worked)."""
        if not self.fix:
            return damage
        try:
            remedy()
        except FileNotFoundError:
            pass  # gone meanwhile: nothing left to fix
        except (OSError, TiersError):
            return damage
        return replace(damage, fixed=True)


def guarded(where: str, check: Callable[[], list[Damage]]) -> list[Damage]:
    """`check()`; what it could not read (EIO, EACCES, a link swapped in) as ``unreadable``
    damage it cannot fix, instead of an error ending `verify`."""
    try:
        return check()
    except FileNotFoundError:
        return []  # removed meanwhile
    except (OSError, TiersError) as exc:
        why = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
        return [Damage("unreadable", None, where, 0, f"cannot be checked: {why}")]


def _open_lock(fd: int, name: str) -> int | None:
    """The lock file to read (None if it went, or is no longer the store's)."""
    try:
        lfd = os.open(name, os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0), dir_fd=fd)
    except FileNotFoundError:
        return None
    if not is_owned(os.fstat(lfd)):
        os.close(lfd)
        return None
    return lfd


def _unlink_if(dir_fd: int, name: str, info: os.stat_result) -> None:
    """Unlink `name` if it still is the file `info` describes (the name only: a link goes,
    never what it leads to)."""
    now = _stat(dir_fd, name)
    if now is not None and (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino):
        os.unlink(name, dir_fd=dir_fd)


def _stat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _tree_bytes(parent_fd: int, name: str, depth: int = 0) -> int:
    """Bytes of `name` and, for a folder, of what it holds (links are not followed)."""
    info = _stat(parent_fd, name)
    if info is None or not stat.S_ISDIR(info.st_mode) or depth >= _DEPTH:
        return 0 if info is None else info.st_size
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        return 0
    try:
        return sum(_tree_bytes(fd, inner, depth + 1) for inner in os.listdir(fd))
    finally:
        os.close(fd)


def _euid(info: os.stat_result) -> int:
    return os.geteuid() if hasattr(os, "geteuid") else info.st_uid
