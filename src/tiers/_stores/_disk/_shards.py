"""The shards of one store directory as this process sees them.

`ShardSet` opens the shards and notices, at most every `CHECK_SECONDS`, when their files lost
their names (the store directory was deleted, or replaced): the store then reopens at its path
instead of going on with files nobody else sees. Opening a store also cleans what crashed
processes left behind (`recover_leftovers`): temp files, value files no slot owns, and the
counters of shards a crashed writer may have left off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

from .. import _fs
from . import _files as files
from ._format import parse_file_name
from ._io import Fd, NotOurs, open_or_replace
from ._layout import Layout
from ._shard import Shard

CHECK_SECONDS = 1.0  # how often to notice a store directory deleted under us
if sys.platform != "win32":
    import fcntl

SEGMENT_MAX = 64 << 20  # log segment size of an unbounded store
_SWEEP_EVERY_SECONDS = 24 * 3600


def segment_max(max_size: int | None, shards: int) -> int:
    """Log segment size: small enough that compacting one is a small part of a bounded store."""
    if max_size is None:
        return SEGMENT_MAX
    return max(16 << 10, min(SEGMENT_MAX, max_size // (8 * shards)))


class ShardSet:
    """The shards of a store, opened for this process."""

    def __init__(self, layout: Layout, max_size: int | None) -> None:
        self.layout = layout
        size = segment_max(max_size, layout.shards)
        self.shards: list[Shard] = []
        self._unswept: set[int] = set()  # shards salvaged while opening, swept once all are
        for i in range(layout.shards):
            self.shards.append(Shard(i, layout.shard_dir(i), size, self, layout.generations))
        for i in sorted(self._unswept):
            files.sweep_shard(layout, i, self.owns_file)
        self.checked = time.monotonic()
        self._index_dir: Fd | None = None

    @contextlib.contextmanager
    def evicting(self) -> Iterator[None]:
        """Hold the store's eviction lock (an exclusive `flock` of the ``index`` directory,
        taken only by a writer that found the store over its limit): one process evicts at a
        time, so that several finding it full at once do not each make the same room."""
        if self._index_dir is None:
            self._index_dir = Fd(_fs.open_dir(self.layout.index))
        fd = self._index_dir.fd
        if sys.platform != "win32":
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if sys.platform != "win32":
                fcntl.flock(fd, fcntl.LOCK_UN)

    def gone(self) -> bool:
        """Whether the store's files lost their names (checked at most every second)."""
        self.checked = time.monotonic()
        return any(shard.gone() for shard in self.shards)

    def unlink(self, names: list[str]) -> None:
        files.unlink(self.layout, names)

    def sweep_shard(self, shard: int) -> None:
        """Remove the shard's value files no slot owns, whoever wrote them (after damage).
        While the shards are being opened, once they all are (until then `owns_file` cannot
        tell, and would have every file of the shard removed)."""
        if len(self.shards) < self.layout.shards:
            self._unswept.add(shard)
            return
        files.sweep_shard(self.layout, shard, self.owns_file)

    def totals(self) -> tuple[int, int, int, int, int]:
        """items, bytes, evictions, expirations, rejected, summed over the shards."""
        items = nbytes = evictions = expirations = rejected = 0
        for shard in self.shards:
            header = shard.header()
            rejected += shard.rejected_on_open
            if header is None:
                continue
            items += header.items
            nbytes += header.live
            evictions += header.evictions
            expirations += header.expirations
            rejected += header.rejected
        return items, nbytes, evictions, expirations, rejected

    def owns_file(self, name: str) -> bool:
        """Whether a live slot owns the value file `name` (its name says which slot)."""
        parsed = parse_file_name(name)
        if parsed is None or parsed[0] >= len(self.shards):
            return False
        shard, khash, version, _pid = parsed
        if shard >= len(self.shards):  # during __init__: a shard not opened yet owns nothing
            return False
        return self.shards[shard].slot_of(khash, version) is not None

    def recount(self) -> None:
        for shard in self.shards:
            shard.recount()


def recover_leftovers(layout: Layout, index: ShardSet) -> None:
    """Register this process with the store and clean what crashed processes left: their
    temp files, value files no slot owns (and, once a day, any old ones), and counters a
    crashed writer may have left off."""
    _fs.register(layout.root, "procs")
    files.sweep_tmp(layout)
    dead = files.dead_processes(layout)
    every = _sweep_due(layout)
    if dead:
        index.recount()
    if dead or every:
        files.sweep_orphans(layout, dead, index.owns_file, every=every)
        files.forget_processes(layout, dead)


def _sweep_due(layout: Layout) -> bool:
    """Whether the daily sweep is due; marks it done (never following a planted link)."""
    procs = _fs.open_dir(layout.root, "procs")
    try:
        try:
            info = os.stat(".swept", dir_fd=procs, follow_symlinks=False)
            due = time.time() - info.st_mtime > _SWEEP_EVERY_SECONDS
        except FileNotFoundError:
            due = True
        if due:
            with contextlib.suppress(OSError, NotOurs):
                marker = open_or_replace(procs, ".swept")
                os.utime(marker.fd)
        return due
    finally:
        os.close(procs)
