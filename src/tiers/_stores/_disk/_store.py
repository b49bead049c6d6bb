"""DiskStore: a persistent store shared by the threads and processes of one host.

Records live in an LMDB index split into shards (so writers in different processes rarely
wait for each other); values up to `INLINE_MAX` bytes live in their record, larger ones in
files of their own. Every record and every value file is checksummed (xxh3-64): damage is a
miss, the entry is removed and counted. See docs/decisions/0001-disk-engine.md.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import lmdb
import xxhash

from ..._clock import SYSTEM_CLOCK, Clock
from ..._units import parse_size
from ...errors import StoreError, StoreFullError
from .._protocol import Entry, StoreCounters
from . import _files as files
from ._index import DAMAGED_ERRORS, Removed, Shard
from ._layout import Layout, ensure_reserve, is_full, open_layout, release_reserve
from ._records import (
    DIRECT_KEY_MAX,
    IN_FILE,
    LONG_KEY,
    DamagedRecord,
    Record,
    body_hash,
    index_key,
    key_of,
    pack,
    prefix_bounds,
    unpack,
)

INLINE_MAX = 32 * 1024
TOUCH_GRANULARITY_US = 1_000_000  # an access moves an entry up the LRU if its stamp is older
TOUCH_BATCH = 1024
TOUCH_MAX_AGE = 2.0
REFRESH_SECONDS = 0.1  # how stale this process's view of the total size may get
INODE_CHECK_SECONDS = 1.0  # how often to notice a shard another process rebuilt
SCAN_BATCH = 512
_T = TypeVar("_T")

_LIVE_STORES: weakref.WeakSet[DiskStore] = weakref.WeakSet()
_REGISTERED: set[Path] = set()


class DiskStore:
    """Persistent, crash-safe store in a directory, shared by threads and processes.

    `max_size` (bytes, or a string like ``"10GB"``) bounds everything the store keeps on
    disk: when a write goes over it, least recently used entries are evicted (and counted)
    until it fits; an entry larger than `max_size` is refused (counted as rejected).
    `durable=True` makes every write reach the disk (fsync) before it returns; without it,
    a crashed process loses nothing it wrote, but a power cut may lose the last writes.
    """

    holds_objects: ClassVar[bool] = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_size: int | str | None = None,
        durable: bool = False,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            kind = type(path).__qualname__
            raise TypeError(f"DiskStore path must be a str or a path, not {kind!r}")
        if not isinstance(durable, bool):
            raise TypeError(f"durable must be True or False, not {durable!r}")
        self.path = Path(path)
        self.max_size = parse_size(max_size, "max_size")
        self.durable = durable
        self.clock: Clock = SYSTEM_CLOCK
        self._lock = threading.Lock()
        self._closed = False
        self._open()
        _LIVE_STORES.add(self)

    def __repr__(self) -> str:
        extra = f", max_size={self.max_size}" if self.max_size is not None else ""
        extra += ", durable=True" if self.durable else ""
        return f"DiskStore({str(self.path)!r}{extra})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (str(self.path), self.max_size, self.durable))

    @property
    def directory(self) -> Path:
        """The store's resolved directory."""
        return self._layout.root

    # -- opening --------------------------------------------------------------------------

    def _open(self) -> None:
        layout = open_layout(self.path)
        self._layout: Layout = layout
        self._pid = os.getpid()
        self._stale = False
        self._shards = [self._open_shard(i) for i in range(layout.shards)]
        self._inodes = [self._shard_inode(i) for i in range(layout.shards)]
        self._inodes_checked = time.monotonic()
        self._pending: list[dict[bytes, int]] = [{} for _ in self._shards]
        self._pending_count = 0
        self._pending_since = 0.0
        self._total = 0
        self._total_at = -1.0
        self._last_stamp = 0
        self._stamp_lock = threading.Lock()
        self._recover_leftovers()
        ensure_reserve(layout)

    def _open_shard(self, i: int) -> Shard:
        path = self._layout.shard_dir(i)
        try:
            return Shard(path)
        except DAMAGED_ERRORS:  # the index file is unusable: start this shard afresh
            self._quarantine(path)
            shard = Shard(path)
            shard.count_removal("rejected")
            return shard

    def _shard_inode(self, i: int) -> int:
        try:
            return self._shards[i].inode()
        except FileNotFoundError:
            return -1

    def _recover_leftovers(self) -> None:
        """Clean what crashed processes left: temp files and uncommitted value files."""
        layout = self._layout
        if layout.root not in _REGISTERED:
            files.register_process(layout)
            _REGISTERED.add(layout.root)
        files.sweep_tmp(layout)
        dead = files.dead_processes(layout)
        marker = layout.procs / ".swept"
        try:
            every = time.time() - marker.stat().st_mtime > 24 * 3600
        except FileNotFoundError:
            every = True
        if dead or every:
            files.sweep_orphans(layout, dead, self._owns_file, every=every)
            files.forget_processes(layout, dead)
            if every:
                with contextlib.suppress(OSError):
                    marker.touch(mode=0o600)

    def _owns_file(self, name: str) -> bool:
        try:
            shard = int(name[:2], 16)
        except ValueError:
            return False
        return shard < len(self._shards) and self._shards[shard].owns_file(name)

    def _ready(self) -> list[Shard]:
        """The shards, reopened after a fork and after another process rebuilt one."""
        if self._stale:
            self._reopen_after_fork()
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        now = time.monotonic()
        if now - self._inodes_checked > INODE_CHECK_SECONDS:
            self._inodes_checked = now
            for i in range(len(self._shards)):
                if self._shard_inode(i) != self._inodes[i]:
                    self._reopen_shard(i)
        return self._shards

    def _reopen_after_fork(self) -> None:
        with self._lock:
            if self._stale:
                for shard in self._shards:
                    shard.forget()
                self._open()

    def _reopen_shard(self, i: int) -> None:
        with self._lock:
            self._shards[i].abandon()
            self._shards[i] = self._open_shard(i)
            self._inodes[i] = self._shard_inode(i)

    def _recover(self, i: int) -> None:
        """Shard `i` is damaged: rebuild it empty (its value files become orphans, swept)."""
        with self._lock:
            if self._shard_inode(i) != self._inodes[i]:
                pass  # another process rebuilt it already
            else:
                self._shards[i].abandon()
                self._quarantine(self._layout.shard_dir(i))
            self._shards[i] = self._open_shard(i)
            self._inodes[i] = self._shard_inode(i)
            self._shards[i].count_removal("rejected")
        files.sweep_orphans(self._layout, set(), self._owns_file, every=False)

    def _quarantine(self, path: Path) -> None:
        doomed = path.with_name(f"{path.name}.damaged.{os.getpid()}.{time.time_ns()}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------

    def _shard_of(self, lkey: bytes) -> int:
        return xxhash.xxh3_64_intdigest(lkey) % len(self._shards)

    def _stamp(self) -> int:
        with self._stamp_lock:  # unique per process: a stamp is also the record's version
            stamp = max(int(self.clock.time() * 1_000_000), self._last_stamp + 1)
            self._last_stamp = stamp
            return stamp

    def _guard(self, i: int, fn: Callable[..., _T], *args: Any) -> _T:
        """Run an index operation; translate LMDB errors (full disk, damage) at the boundary."""
        try:
            return fn(*args)
        except lmdb.MapFullError as exc:
            raise StoreFullError(28, f"{self!r}: the index of shard {i} is full") from exc
        except DAMAGED_ERRORS as exc:
            self._recover(i)
            raise _Damaged from exc
        except lmdb.Error as exc:
            if "No space left" in str(exc) or "quota" in str(exc).lower():
                raise StoreFullError(28, f"{self!r}: no space left on the device") from exc
            raise StoreError(f"{self!r}: {exc}") from exc

    def _removing(self, i: int, fn: Callable[..., Removed], *args: Any) -> Removed:
        """Run a removal; on a full disk give up the reserve file once and retry."""
        try:
            removed = self._guard(i, fn, *args)
        except StoreFullError:
            if not release_reserve(self._layout):
                raise
            removed = self._guard(i, fn, *args)
        files.unlink(self._layout, removed.files)
        return removed

    @staticmethod
    def _entry(rec: Record, body: bytes | None) -> Entry:
        """The record as the entry a read returns (a record is an Entry; each read decodes
        its own, so setting its value is safe)."""
        rec.value = body
        return rec

    def _live(self, rec: Record, now: float) -> bool:
        return rec.expires_at is None or rec.expires_at > now

    # -- core -------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        found = self._lookup(key)
        if found is None:
            return None
        rec = found[2]
        if rec.file_name is None:
            return rec
        for _attempt in range(3):
            body = self._body(*found)
            if body is not _RETRY:
                return None if body is None else self._entry(found[2], body)  # type: ignore[arg-type]
            found = self._lookup(key)
            if found is None:
                return None
        return None

    def _lookup(self, key: str) -> tuple[int, bytes, Record] | None:
        """Find the live record of `key` (removing it if expired or damaged). Hot path."""
        if (
            self._stale
            or self._closed
            or time.monotonic() - self._inodes_checked > INODE_CHECK_SECONDS
        ):
            self._ready()
        lkey = key.encode("utf-8", "surrogatepass")
        if not lkey or len(lkey) > DIRECT_KEY_MAX:
            lkey = index_key(key)
        i = xxhash.xxh3_64_intdigest(lkey) % len(self._shards)
        shard = self._shards[i]
        try:
            with shard.env.begin(db=shard.entries) as txn:
                raw = txn.get(lkey)
        except lmdb.Error:
            try:
                raw = self._guard(i, shard.get, lkey)
            except _Damaged:
                return None
        if raw is None:
            return None
        try:
            rec = unpack(raw)
        except DamagedRecord:
            self._discard(i, lkey, None, None)
            return None
        if rec.full_key is not None and rec.full_key != key:
            return None
        expires = rec.expires_at
        if expires is not None or self.max_size is not None:
            now = self.clock.time()
            if expires is not None and expires <= now:
                self._discard(i, lkey, rec.stamp, "expirations")
                return None
            if self.max_size is not None and now * 1_000_000 - rec.stamp > TOUCH_GRANULARITY_US:
                self._note_access(i, lkey)
        return i, lkey, rec

    def _body(self, i: int, lkey: bytes, rec: Record) -> object:
        """The record's value; None if damaged (removed), `_RETRY` if replaced meanwhile."""
        if rec.file_name is None:
            return rec.value
        try:
            body = files.read(self._layout, rec.file_name, rec.body_size)
        except FileNotFoundError:
            current = self._shards[i].get(lkey)
            if current is None:
                return None  # deleted meanwhile: a plain miss
            try:
                if unpack(current).file_name != rec.file_name:
                    return _RETRY  # replaced meanwhile: read the new value
            except DamagedRecord:
                pass
            self._discard(i, lkey, rec.stamp, "rejected")
            return None
        except files.DamagedFile:
            self._discard(i, lkey, rec.stamp, "rejected")
            return None
        if body_hash(body) != rec.body_hash:
            self._discard(i, lkey, rec.stamp, "rejected")
            return None
        return body

    def _discard(self, i: int, lkey: bytes, stamp: int | None, kind: str | None) -> None:
        """Remove an expired or damaged entry found by a read (if nobody replaced it)."""
        try:
            removed = self._removing(i, self._shards[i].delete, lkey, stamp)
            if kind is not None and removed.records:
                self._guard(i, self._shards[i].count_removal, kind, len(removed.records))
        except (_Damaged, StoreError):
            pass  # a read never fails because a cleanup could not run

    def set(self, key: str, entry: Entry) -> bool:
        shards = self._ready()
        body = entry.value
        size = memoryview(body).nbytes
        lkey = index_key(key)
        i = self._shard_of(lkey)
        in_file = size > INLINE_MAX
        header = bytes(entry.header)
        rec = Record(
            value=b"" if in_file else bytes(body),
            header=header,
            created_at=entry.created_at,
            expires_at=entry.expires_at,
            tags=tuple(entry.tags),
            meta=dict(entry.meta) if entry.meta is not None else None,
            size=size + len(header),
            flags=(IN_FILE if in_file else 0) | (LONG_KEY if len(lkey) > DIRECT_KEY_MAX else 0),
            stamp=self._stamp(),
            body_size=size,
            body_hash=body_hash(body),
            full_key=key if len(lkey) > DIRECT_KEY_MAX else None,
            file_name=files.new_name(i) if in_file else None,
        )
        packed = pack(rec)
        cost = rec.cost(lkey, len(packed))
        if self.max_size is not None and cost > self.max_size:
            self._removing(i, shards[i].delete, lkey, None)
            self._guard(i, shards[i].count_removal, "rejected")
            return False
        if rec.file_name is not None:
            try:
                files.write(self._layout, rec.file_name, body, durable=self.durable)
            except OSError as exc:
                if is_full(exc):
                    message = f"{self!r}: no space left on the device"
                    raise StoreFullError(exc.errno, message) from exc
                raise StoreError(f"{self!r}: cannot write a value file: {exc}") from exc
        try:
            removed = self._guard(i, shards[i].put, lkey, rec, packed, cost)
        except BaseException:
            if rec.file_name is not None:
                files.unlink(self._layout, [rec.file_name])
            raise
        files.unlink(self._layout, removed.files)
        if self.durable:
            shards[i].sync()
        if self.max_size is not None:
            self._total += cost - removed.freed
            self._enforce_limit()
        return True

    def delete(self, key: str) -> bool:
        shards = self._ready()
        lkey = index_key(key)
        i = self._shard_of(lkey)
        try:
            removed = self._removing(i, shards[i].delete, lkey, None)
        except _Damaged:
            return False
        now = self.clock.time()
        return any(self._live(r, now) for r in removed.records)

    def clear(self, prefix: str = "") -> int:
        shards = self._ready()
        now = self.clock.time()
        count = 0
        for i, shard in enumerate(shards):
            if prefix:
                count += self._remove_matching(i, prefix, None, now)
                continue
            try:
                expired = self._guard(i, shard.count_expired, now)
                try:
                    items, names = self._guard(i, shard.clear_all)
                except StoreFullError:
                    if not release_reserve(self._layout):
                        raise
                    items, names = self._guard(i, shard.clear_all)
            except _Damaged:
                continue
            files.unlink(self._layout, names)
            count += max(0, items - expired)
        self._total_at = -1.0
        ensure_reserve(self._layout)
        return count

    def stats(self) -> StoreCounters:
        shards = self._ready()
        totals = [0, 0, 0, 0, 0]
        for i, shard in enumerate(shards):
            try:
                for n, value in enumerate(self._guard(i, shard.stats)):
                    totals[n] += value
            except _Damaged:
                continue
        items, nbytes, evictions, expirations, rejected = totals
        return StoreCounters(
            evictions=evictions, expirations=expirations, rejected=rejected, items=items,
            bytes=nbytes,
        )  # fmt: skip

    def close(self) -> None:
        if self._closed:
            return
        if not self._stale:
            self._flush_touches()
            for shard in self._shards:
                shard.close()
        self._closed = True

    # -- capabilities -----------------------------------------------------------------------

    def info(self, key: str) -> Entry | None:
        found = self._lookup(key)
        return None if found is None else self._entry(found[2], None)

    def pop(self, key: str) -> Entry | None:
        shards = self._ready()
        lkey = index_key(key)
        i = self._shard_of(lkey)
        try:
            removed = self._guard(i, shards[i].delete, lkey, None)
        except _Damaged:
            return None
        if not removed.records:
            return None
        rec = removed.records[0]
        try:
            if not self._live(rec, self.clock.time()):
                return None
            if rec.file_name is None:
                return rec
            try:
                body = files.read(self._layout, rec.file_name, rec.body_size)
            except (FileNotFoundError, files.DamagedFile):
                return None
            return self._entry(rec, body) if body_hash(body) == rec.body_hash else None
        finally:
            files.unlink(self._layout, removed.files)

    def touch(self, key: str, expires_at: float | None) -> bool:
        shards = self._ready()
        lkey = index_key(key)
        i = self._shard_of(lkey)
        try:
            return self._guard(i, shards[i].set_expiry, lkey, expires_at, self.clock.time())
        except _Damaged:
            return False

    def expire(self) -> int:
        shards = self._ready()
        now = self.clock.time()
        count = 0
        for i, shard in enumerate(shards):
            while True:
                try:
                    removed = self._removing(i, shard.expire, now)
                except _Damaged:
                    break
                count += len(removed.records)
                if len(removed.records) + removed.damaged < 1000:
                    break
        return count

    def evict(self, tag: str, prefix: str = "") -> int:
        shards = self._ready()
        now = self.clock.time()
        return sum(self._remove_matching(i, prefix, tag, now) for i in range(len(shards)))

    def keys(self, prefix: str = "", tag: str | None = None) -> Iterator[str]:
        for i in range(len(self._ready())):
            for key, _rec in self._matching(i, prefix, tag, self.clock.time()):
                yield key

    def count(self, prefix: str = "") -> int:
        if prefix:
            return sum(1 for _ in self.keys(prefix))
        shards = self._ready()
        now = self.clock.time()
        total = 0
        for i, shard in enumerate(shards):
            try:
                total += self._guard(i, shard.stats)[0] - self._guard(i, shard.count_expired, now)
            except _Damaged:
                continue
        return max(0, total)

    # -- locks (single-flight across processes) -------------------------------------------

    def _lock_key(self, name: str) -> tuple[int, bytes]:
        lkey = index_key(name)
        return self._shard_of(lkey), lkey

    def acquire_lock(self, name: str, token: str, lease: float) -> bool:
        shards = self._ready()
        i, lkey = self._lock_key(name)
        now = self.clock.time()
        return self._guard(i, shards[i].acquire_lock, lkey, token.encode(), now + lease, now)

    def renew_lock(self, name: str, token: str, lease: float) -> bool:
        shards = self._ready()
        i, lkey = self._lock_key(name)
        expires = self.clock.time() + lease
        return self._guard(i, shards[i].renew_lock, lkey, token.encode(), expires)

    def release_lock(self, name: str, token: str) -> bool:
        shards = self._ready()
        i, lkey = self._lock_key(name)
        return self._guard(i, shards[i].release_lock, lkey, token.encode())

    # -- scans ------------------------------------------------------------------------------

    def _matching(
        self, i: int, prefix: str, tag: str | None, now: float | None
    ) -> Iterator[tuple[str, Record]]:
        """Live (key, record) pairs of shard `i` under `prefix` (and with `tag`); expired ones
        too when `now` is None."""
        shard = self._shards[i]
        if tag is not None:
            try:
                lkeys = self._guard(i, shard.tagged, tag)
            except _Damaged:
                return
            for lkey in lkeys:
                raw = shard.get(lkey)
                try:
                    rec = unpack(raw) if raw is not None else None
                except DamagedRecord:
                    continue
                if rec is not None and tag in rec.tags and (now is None or self._live(rec, now)):
                    key = key_of(lkey, rec.full_key)
                    if key.startswith(prefix):
                        yield key, rec
            return
        start = prefix_bounds(prefix)
        after: bytes | None = None
        while True:
            try:
                batch = self._guard(i, shard.scan, start, after, SCAN_BATCH)
            except _Damaged:
                return
            for lkey, raw in batch:
                try:
                    rec = unpack(raw)
                except DamagedRecord:
                    continue
                key = key_of(lkey, rec.full_key)
                if key.startswith(prefix) and (now is None or self._live(rec, now)):
                    yield key, rec
            if len(batch) < SCAN_BATCH:
                return
            after = batch[-1][0]

    def _remove_matching(self, i: int, prefix: str, tag: str | None, now: float) -> int:
        # expired entries go too (uncounted), as they do in clear() and evict() of MemoryStore
        doomed = [index_key(key) for key, _rec in self._matching(i, prefix, tag, None)]
        removed = 0
        for start in range(0, len(doomed), SCAN_BATCH):
            try:
                batch = doomed[start : start + SCAN_BATCH]
                chunk = self._removing(i, self._shards[i].remove_many, batch)
            except _Damaged:
                break
            removed += sum(1 for r in chunk.records if self._live(r, now))
        return removed

    # -- size limit and LRU -------------------------------------------------------------------

    def _note_access(self, i: int, lkey: bytes) -> None:
        with self._lock:
            if not self._pending_count:
                self._pending_since = time.monotonic()
            self._pending[i][lkey] = self._stamp()
            self._pending_count += 1
            due = (
                self._pending_count >= TOUCH_BATCH
                or time.monotonic() - self._pending_since > TOUCH_MAX_AGE
            )
        if due:
            self._flush_touches()

    def _flush_touches(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, [{} for _ in self._shards]
            self._pending_count = 0
        for i, stamps in enumerate(pending):
            if stamps:
                with contextlib.suppress(_Damaged, StoreError):
                    self._guard(i, self._shards[i].restamp, stamps)

    def _sum_bytes(self) -> int:
        total = 0
        for i, shard in enumerate(self._shards):
            with contextlib.suppress(_Damaged):
                total += self._guard(i, shard.stats)[1]
        self._total = total
        self._total_at = time.monotonic()
        return total

    def _enforce_limit(self) -> None:
        """Evict least recently used entries until the store fits in `max_size`."""
        limit = self.max_size
        if limit is None:
            return
        stale = time.monotonic() - self._total_at > REFRESH_SECONDS
        if not stale and self._total <= limit:
            return
        if self._sum_bytes() <= limit:
            return
        self._flush_touches()
        for _round in range(10_000):
            excess = self._sum_bytes() - limit
            if excess <= 0:
                return
            candidates = []
            for i, shard in enumerate(self._shards):
                with contextlib.suppress(_Damaged):
                    oldest = self._guard(i, shard.oldest_costs, 64)
                    candidates += [(stamp, i, lkey, cost) for stamp, lkey, cost in oldest]
            if not candidates:
                return
            candidates.sort()
            victims: list[list[tuple[int, bytes]]] = [[] for _ in self._shards]
            for stamp, i, lkey, cost in candidates:
                victims[i].append((stamp, lkey))
                excess -= cost
                if excess <= 0:
                    break
            for i, chosen in enumerate(victims):
                if chosen:
                    with contextlib.suppress(_Damaged):
                        self._removing(i, self._shards[i].evict, chosen)

    # -- async twins: index work is in-memory fast; file I/O and bulk work go to a thread --

    async def get_async(self, key: str) -> Entry | None:
        found = self._lookup(key)
        if found is None:
            return None
        if found[2].file_name is None:
            return found[2]
        return await asyncio.to_thread(self.get, key)

    async def set_async(self, key: str, entry: Entry) -> bool:
        if memoryview(entry.value).nbytes > INLINE_MAX:
            return await asyncio.to_thread(self.set, key, entry)
        return self.set(key, entry)

    async def delete_async(self, key: str) -> bool:
        return self.delete(key)

    async def clear_async(self, prefix: str = "") -> int:
        return await asyncio.to_thread(self.clear, prefix)

    async def stats_async(self) -> StoreCounters:
        return self.stats()

    async def close_async(self) -> None:
        self.close()

    async def info_async(self, key: str) -> Entry | None:
        return self.info(key)

    async def pop_async(self, key: str) -> Entry | None:
        return await asyncio.to_thread(self.pop, key)

    async def touch_async(self, key: str, expires_at: float | None) -> bool:
        return self.touch(key, expires_at)

    async def expire_async(self) -> int:
        return await asyncio.to_thread(self.expire)

    async def evict_async(self, tag: str, prefix: str = "") -> int:
        return await asyncio.to_thread(self.evict, tag, prefix)

    async def count_async(self, prefix: str = "") -> int:
        return await asyncio.to_thread(self.count, prefix)

    async def acquire_lock_async(self, name: str, token: str, lease: float) -> bool:
        return self.acquire_lock(name, token, lease)

    async def renew_lock_async(self, name: str, token: str, lease: float) -> bool:
        return self.renew_lock(name, token, lease)

    async def release_lock_async(self, name: str, token: str) -> bool:
        return self.release_lock(name, token)


class _Damaged(Exception):
    """The shard was damaged and rebuilt: the operation found nothing."""


_RETRY = object()


def _rebuild(path: str, max_size: int | None, durable: bool) -> DiskStore:
    return DiskStore(path, max_size=max_size, durable=durable)


def _after_fork_in_child() -> None:
    for store in list(_LIVE_STORES):
        store._stale = True
        store._lock = threading.Lock()  # another thread may have held it at the fork
        store._stamp_lock = threading.Lock()
    _REGISTERED.clear()


def _unregister_at_exit() -> None:
    for store in list(_LIVE_STORES):
        with contextlib.suppress(Exception):
            store.close()
    for root in list(_REGISTERED):
        with contextlib.suppress(Exception):
            files.unregister_process(Layout(root, 0))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_unregister_at_exit)
