"""The index shards of one store directory as this process sees them.

`ShardSet` opens the shards, reopens one that another process rebuilt, rebuilds one whose LMDB
file is damaged, and runs index operations through `guard`, which translates LMDB errors at the
boundary (full disk → `StoreFullError`, damage → a rebuilt shard and `Damaged`). Opening a
store also cleans what crashed processes left behind (`recover_leftovers`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import xxhash

from ...errors import StoreError, StoreFullError
from .. import _fs
from . import _files as files
from ._index import DAMAGED_ERRORS, Removed, Shard
from ._layout import Layout, release_reserve

INODE_CHECK_SECONDS = 1.0  # how often to notice a shard another process rebuilt
_SWEEP_EVERY_SECONDS = 24 * 3600
_T = TypeVar("_T")


class Damaged(Exception):
    """The shard was damaged and has been rebuilt: the operation found nothing."""


class ShardSet:
    """The LMDB shards of a store, opened for this process."""

    def __init__(self, layout: Layout, name: str) -> None:
        self.layout = layout
        self._name = name
        self._lock = threading.Lock()
        self.shards = [self._open(i) for i in range(layout.shards)]
        self._inodes = [self._inode(i) for i in range(layout.shards)]
        self._checked = time.monotonic()

    def of(self, lkey: bytes) -> int:
        """The shard holding index key `lkey`."""
        return xxhash.xxh3_64_intdigest(lkey) % len(self.shards)

    def check(self) -> None:
        """Reopen shards another process rebuilt (checked at most every second)."""
        now = time.monotonic()
        if now - self._checked > INODE_CHECK_SECONDS:
            self._checked = now
            for i in range(len(self.shards)):
                if self._inode(i) != self._inodes[i]:
                    with self._lock:
                        self.shards[i].abandon()
                        self.shards[i] = self._open(i)
                        self._inodes[i] = self._inode(i)

    def guard(self, i: int, fn: Callable[..., _T], *args: Any) -> _T:
        """Run an index operation on shard `i`, translating LMDB errors."""
        try:
            return fn(*args)
        except lmdb.MapFullError as exc:
            raise StoreFullError(28, f"{self._name}: the index of shard {i} is full") from exc
        except DAMAGED_ERRORS as exc:
            self.recover(i)
            raise Damaged from exc
        except lmdb.Error as exc:
            if "No space left" in str(exc) or "quota" in str(exc).lower():
                raise StoreFullError(28, f"{self._name}: no space left on the device") from exc
            raise StoreError(f"{self._name}: {exc}") from exc

    def removing(self, i: int, fn: Callable[..., Removed], *args: Any) -> Removed:
        """Run a removal and unlink the files it freed; on a full disk, give up the reserve
        file once and retry (LMDB needs free pages even to delete)."""
        try:
            removed = self.guard(i, fn, *args)
        except StoreFullError:
            if not release_reserve(self.layout):
                raise
            removed = self.guard(i, fn, *args)
        files.unlink(self.layout, removed.files)
        return removed

    def totals(self) -> list[int]:
        """items, bytes, evictions, expirations, rejected, summed over the shards."""
        totals = [0, 0, 0, 0, 0]
        for i, shard in enumerate(self.shards):
            with contextlib.suppress(Damaged):
                for n, value in enumerate(self.guard(i, shard.stats)):
                    totals[n] += value
        return totals

    def owns_file(self, name: str) -> bool:
        """Whether a record references the value file `name` (its shard is in its name)."""
        try:
            shard = int(name[:2], 16)
        except ValueError:
            return False
        return shard < len(self.shards) and self.shards[shard].owns_file(name)

    def recover(self, i: int) -> None:
        """Shard `i` is damaged: rebuild it empty (counted); its value files become orphans."""
        with self._lock:
            if self._inode(i) == self._inodes[i]:  # else another process rebuilt it already
                self.shards[i].abandon()
                _quarantine(self.layout.shard_dir(i))
            self.shards[i] = self._open(i)
            self._inodes[i] = self._inode(i)
            self.shards[i].count_removal("rejected")
        files.sweep_orphans(self.layout, set(), self.owns_file, every=False)

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    def forget(self) -> None:
        """After a fork: let go of the parent's environments without closing them."""
        for shard in self.shards:
            shard.forget()

    def _open(self, i: int) -> Shard:
        path = self.layout.shard_dir(i)
        try:
            return Shard(path)
        except DAMAGED_ERRORS:  # the index file is unusable: start this shard afresh
            _quarantine(path)
            shard = Shard(path)
            shard.count_removal("rejected")
            return shard

    def _inode(self, i: int) -> int:
        try:
            return self.shards[i].inode()
        except FileNotFoundError:
            return -1


def recover_leftovers(layout: Layout, owns_file: Callable[[str], bool]) -> None:
    """Register this process with the store and clean what crashed processes left: their
    temp files and their value files no record references (and, once a day, any old ones)."""
    _fs.register_once(layout.procs)
    files.sweep_tmp(layout)
    dead = files.dead_processes(layout)
    marker = layout.procs / ".swept"
    try:
        every = time.time() - marker.stat().st_mtime > _SWEEP_EVERY_SECONDS
    except FileNotFoundError:
        every = True
    if dead or every:
        files.sweep_orphans(layout, dead, owns_file, every=every)
        files.forget_processes(layout, dead)
        if every:
            with contextlib.suppress(OSError):
                marker.touch(mode=0o600)


def _quarantine(path: Path) -> None:
    doomed = path.with_name(f"{path.name}.damaged.{os.getpid()}.{time.time_ns()}")
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
