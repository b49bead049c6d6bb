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
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import lmdb
import xxhash

from ..._clock import SYSTEM_CLOCK, Clock
from ..._units import parse_size
from ...errors import StoreError, StoreFullError
from .._fs import forget_registrations, is_full, unregister_all
from .._protocol import Entry, StoreCounters
from . import _files as files
from ._budget import Budget
from ._index import Shard
from ._layout import Layout, ensure_reserve, open_layout, release_reserve
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
from ._shards import (
    Damaged,
    ShardSet,
    recover_leftovers,
)

INLINE_MAX = 32 * 1024
SCAN_BATCH = 512

_LIVE_STORES: weakref.WeakSet[DiskStore] = weakref.WeakSet()  # to mark stale after a fork


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

    # -- opening ------------------------------------------------------------------------

    def _open(self) -> None:
        layout = open_layout(self.path)
        self._layout: Layout = layout
        self._stale = False
        self._index = ShardSet(layout, repr(self))
        self._budget = Budget(self._index, self.max_size)
        recover_leftovers(layout, self._index.owns_file)
        ensure_reserve(layout)

    def _ready(self) -> ShardSet:
        """The shards, reopened after a fork (and after another process rebuilt one)."""
        if self._stale:
            with self._lock:
                if self._stale:
                    self._index.forget()
                    self._open()
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        self._index.check()
        return self._index

    def _route(self, key: str) -> tuple[int, Shard, bytes]:
        """(shard number, shard, index key) of `key`."""
        index = self._ready()
        lkey = index_key(key)
        i = index.of(lkey)
        return i, index.shards[i], lkey

    def _owns_file(self, name: str) -> bool:
        return self._index.owns_file(name)

    @staticmethod
    def _entry(rec: Record, body: bytes | None) -> Entry:
        """The record as the entry a read returns (a record is an Entry; each read decodes
        its own, so setting its value is safe)."""
        rec.value = body
        return rec

    @staticmethod
    def _live(rec: Record, now: float) -> bool:
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
        index = self._ready() if self._stale or self._closed else self._index
        index.check()
        lkey = key.encode("utf-8", "surrogatepass")
        if not lkey or len(lkey) > DIRECT_KEY_MAX:
            lkey = index_key(key)
        i = xxhash.xxh3_64_intdigest(lkey) % len(index.shards)  # index.of(), inlined
        shard = index.shards[i]
        try:
            with shard.env.begin(db=shard.entries) as txn:
                raw = txn.get(lkey)
        except lmdb.Error:
            try:
                raw = index.guard(i, shard.get, lkey)
            except Damaged:
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
            if self.max_size is not None:
                self._budget.accessed(i, lkey, rec.stamp, now)
        return i, lkey, rec

    def _body(self, i: int, lkey: bytes, rec: Record) -> object:
        """The record's value; None if damaged (removed), `_RETRY` if replaced meanwhile."""
        if rec.file_name is None:
            return rec.value
        try:
            body = files.read(self._layout, rec.file_name, rec.body_size)
        except FileNotFoundError:
            current = self._index.shards[i].get(lkey)
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
        index = self._index
        try:
            removed = index.removing(i, index.shards[i].delete, lkey, stamp)
            if kind is not None and removed.records:
                index.guard(i, index.shards[i].count_removal, kind, len(removed.records))
        except (Damaged, StoreError):
            pass  # a read never fails because a cleanup could not run

    def set(self, key: str, entry: Entry) -> bool:
        i, shard, lkey = self._route(key)
        index = self._index
        body = entry.value
        size = memoryview(body).nbytes
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
            stamp=self._budget.stamp(self.clock.time()),
            body_size=size,
            body_hash=body_hash(body),
            full_key=key if len(lkey) > DIRECT_KEY_MAX else None,
            file_name=files.new_name(i) if in_file else None,
        )
        packed = pack(rec)
        cost = rec.cost(lkey, len(packed))
        if self.max_size is not None and cost > self.max_size:
            index.removing(i, shard.delete, lkey, None)
            index.guard(i, shard.count_removal, "rejected")
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
            removed = index.guard(i, shard.put, lkey, rec, packed, cost)
        except BaseException:
            if rec.file_name is not None:
                files.unlink(self._layout, [rec.file_name])
            raise
        files.unlink(self._layout, removed.files)
        if self.durable:
            shard.sync()
        self._budget.wrote(cost - removed.freed)
        return True

    def delete(self, key: str) -> bool:
        i, shard, lkey = self._route(key)
        try:
            removed = self._index.removing(i, shard.delete, lkey, None)
        except Damaged:
            return False
        now = self.clock.time()
        return any(self._live(r, now) for r in removed.records)

    def clear(self, prefix: str = "") -> int:
        index = self._ready()
        now = self.clock.time()
        count = 0
        for i, shard in enumerate(index.shards):
            if prefix:
                count += self._remove_matching(i, prefix, None, now)
                continue
            try:
                expired = index.guard(i, shard.count_expired, now)
                try:
                    items, names = index.guard(i, shard.clear_all)
                except StoreFullError:
                    if not release_reserve(self._layout):
                        raise
                    items, names = index.guard(i, shard.clear_all)
            except Damaged:
                continue
            files.unlink(self._layout, names)
            count += max(0, items - expired)
        self._budget.forget_total()
        ensure_reserve(self._layout)
        return count

    def stats(self) -> StoreCounters:
        items, nbytes, evictions, expirations, rejected = self._ready().totals()
        return StoreCounters(
            evictions=evictions, expirations=expirations, rejected=rejected, items=items,
            bytes=nbytes,
        )  # fmt: skip

    def close(self) -> None:
        if self._closed:
            return
        if not self._stale:
            self._budget.flush()
            self._index.close()
        self._closed = True

    # -- capabilities -----------------------------------------------------------------------

    def info(self, key: str) -> Entry | None:
        found = self._lookup(key)
        return None if found is None else self._entry(found[2], None)

    def pop(self, key: str) -> Entry | None:
        i, shard, lkey = self._route(key)
        try:
            removed = self._index.guard(i, shard.delete, lkey, None)
        except Damaged:
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
        i, shard, lkey = self._route(key)
        try:
            return self._index.guard(i, shard.set_expiry, lkey, expires_at, self.clock.time())
        except Damaged:
            return False

    def expire(self) -> int:
        index = self._ready()
        now = self.clock.time()
        count = 0
        for i, shard in enumerate(index.shards):
            while True:
                try:
                    removed = index.removing(i, shard.expire, now)
                except Damaged:
                    break
                count += len(removed.records)
                if len(removed.records) + removed.damaged < 1000:
                    break
        return count

    def evict(self, tag: str, prefix: str = "") -> int:
        index = self._ready()
        now = self.clock.time()
        return sum(self._remove_matching(i, prefix, tag, now) for i in range(len(index.shards)))

    def keys(self, prefix: str = "", tag: str | None = None) -> Iterator[str]:
        for i in range(len(self._ready().shards)):
            for key, _rec in self._matching(i, prefix, tag, self.clock.time()):
                yield key

    def count(self, prefix: str = "") -> int:
        if prefix:
            return sum(1 for _ in self.keys(prefix))
        index = self._ready()
        now = self.clock.time()
        total = 0
        for i, shard in enumerate(index.shards):
            try:
                total += index.guard(i, shard.stats)[0] - index.guard(i, shard.count_expired, now)
            except Damaged:
                continue
        return max(0, total)

    # -- locks (single-flight across processes) -------------------------------------------

    def acquire_lock(self, name: str, token: str, lease: float) -> bool:
        i, shard, lkey = self._route(name)
        now = self.clock.time()
        return self._index.guard(i, shard.acquire_lock, lkey, token.encode(), now + lease, now)

    def renew_lock(self, name: str, token: str, lease: float) -> bool:
        i, shard, lkey = self._route(name)
        expires = self.clock.time() + lease
        return self._index.guard(i, shard.renew_lock, lkey, token.encode(), expires)

    def release_lock(self, name: str, token: str) -> bool:
        i, shard, lkey = self._route(name)
        return self._index.guard(i, shard.release_lock, lkey, token.encode())

    # -- scans ------------------------------------------------------------------------------

    def _matching(
        self, i: int, prefix: str, tag: str | None, now: float | None
    ) -> Iterator[tuple[str, Record]]:
        """Live (key, record) pairs of shard `i` under `prefix` (and with `tag`); expired ones
        too when `now` is None."""
        shard = self._index.shards[i]
        if tag is not None:
            try:
                lkeys = self._index.guard(i, shard.tagged, tag)
            except Damaged:
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
                batch = self._index.guard(i, shard.scan, start, after, SCAN_BATCH)
            except Damaged:
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
                chunk = self._index.removing(i, self._index.shards[i].remove_many, batch)
            except Damaged:
                break
            removed += sum(1 for r in chunk.records if self._live(r, now))
        return removed

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


_RETRY = object()


def _rebuild(path: str, max_size: int | None, durable: bool) -> DiskStore:
    return DiskStore(path, max_size=max_size, durable=durable)


def _after_fork_in_child() -> None:
    for store in list(_LIVE_STORES):
        store._stale = True  # reopened on its next use, with a new ShardSet and Budget
        store._lock = threading.Lock()  # another thread may have held it at the fork
    forget_registrations()


def _unregister_at_exit() -> None:
    for store in list(_LIVE_STORES):
        with contextlib.suppress(Exception):
            store.close()
    unregister_all()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_unregister_at_exit)
