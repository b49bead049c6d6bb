"""DiskStore: a persistent store shared by the threads and processes of one host.

Entries are split into shards by a hash of their key; each shard is a slot table and a log of
records read with `pread` and written with `pwrite` (no file is ever mapped into memory).
Values up to `INLINE_MAX` bytes live in their record, larger ones in files of their own. Every
slot, record and value file is checksummed: damage is a miss, the entry is removed and
counted. See docs/decisions/0009-disk-engine-v2.md.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import math
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import xxhash

from ... import _rules
from ..._clock import SYSTEM_CLOCK, Clock
from ..._units import parse_size
from ...errors import StoreError
from .._fs import forget_registrations, os_errors, store_error, store_path, unregister_all
from .._generations import Generations
from .._protocol import Damage, Entry, StoreCounters, Usage
from .._twins import in_thread, inline, iter_in_thread
from . import _files as files
from . import _usage as usage_file
from ._budget import Budget
from ._format import (
    DIRECT_KEY_MAX,
    IN_FILE,
    LIVE,
    LONG_KEY,
    SLOT_SIZE,
    Record,
    Slot,
    SlotFields,
    body_hash,
    index_key,
    key_hash,
    key_of,
    pack_record,
    tag_bits,
    value_file_name,
)
from ._layout import Layout, open_layout
from ._scan import scan_shard
from ._shard import Shard
from ._shards import CHECK_SECONDS, ShardSet, recover_leftovers
from ._verify import verify as verify_store

INLINE_MAX = 32 * 1024
SCAN_BATCH = 4096  # entries `scan_async` reads in a worker thread at a time
_STAMP: Final = 6  # positions in SlotFields
_EXPIRES: Final = 7
_VERSION: Final = 9
_LIVE_STORES: weakref.WeakSet[DiskStore] = weakref.WeakSet()  # to reopen after a fork
_RETRY = object()
_monotonic = time.monotonic
_xxh3 = xxhash.xxh3_64_intdigest
T = TypeVar("T")


class DiskStore:
    """Persistent, crash-safe store in a directory, shared by threads and processes.

    `max_size` (bytes, or a string like ``"10GB"``) bounds everything the store keeps on
    disk: when a write goes over it, least recently used entries are evicted (and counted)
    until it fits; an entry larger than `max_size` is refused (counted as rejected).
    `durable=True` makes every write reach the disk (fsync) before it returns; without it,
    a crashed process loses nothing it wrote, but a power cut may lose the last writes.
    """

    holds_objects: ClassVar[bool] = False
    private: ClassVar[bool] = True  # only this user's files are read (0013)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_size: int | str | None = None,
        durable: bool = False,
    ) -> None:
        self.path = store_path(path, "DiskStore")
        if not isinstance(durable, bool):
            raise TypeError(f"durable must be True or False, not {durable!r}")
        self.max_size = parse_size(max_size, "max_size")
        self.durable = durable
        self.clock: Clock = SYSTEM_CLOCK
        self._lock = threading.Lock()
        self._closed = False
        self._stale = False
        self._index: ShardSet | None = None
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
        with os_errors(self, "open the store"):
            layout = open_layout(self.path)
            index = ShardSet(layout, self.max_size)
            recover_leftovers(layout, index)
        old: Layout | None = getattr(self, "_layout", None)
        self._layout: Layout = layout
        if old is not None:  # reopened: copies guarded by the old table are not trusted
            old.generations.close()
        self._budget = Budget(index, self.max_size)
        self._index = index
        self._stale = False

    def _ready(self) -> ShardSet:
        """The shards; reopened after a fork, or when the store directory was deleted."""
        index = self._index
        if index is None or self._closed:
            raise StoreError(f"{self!r} is closed")
        if (
            self._stale
            or time.monotonic() - index.checked > CHECK_SECONDS
            or self._layout.generations.retired()  # another process made a new store here
        ):
            with self._lock:
                index = self._index
                if index is None or self._closed:
                    raise StoreError(f"{self!r} is closed")
                if (
                    self._stale
                    or self._layout.generations.retired()
                    or (time.monotonic() - index.checked > CHECK_SECONDS and index.gone())
                ):
                    self._open()
                    index = self._index
        if index is None:
            raise StoreError(f"{self!r} is closed")
        return index

    def _route(self, key: str) -> tuple[ShardSet, Shard, bytes, int]:
        index = self._ready()
        lkey = index_key(key)
        khash = key_hash(lkey)
        return index, index.shards[khash % len(index.shards)], lkey, khash

    def _owns_file(self, name: str) -> bool:
        return self._ready().owns_file(name)

    # -- core -------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        found = self._lookup(key)
        if found is None:
            return None
        entry = found[3]
        if not isinstance(entry, Record) or entry.file_name is None:
            return entry  # (the value is in the record: the hot path ends here)
        return self._with_body(key, found)

    def _with_body(self, key: str, found: tuple[Shard, int, SlotFields, Entry]) -> Entry | None:
        """The entry `found` with its value read from its file; looked up again (up to 3
        times in all) when the file was replaced meanwhile."""
        for attempt in range(3):
            shard, position, slot, rec = found
            if not isinstance(rec, Record) or rec.file_name is None:
                return rec
            body = self._body(shard, position, slot, rec)
            if body is None:
                return None
            if body is not _RETRY:
                rec.value = body
                return rec
            again = self._lookup(key) if attempt < 2 else None
            if again is None:
                return None
            found = again
        return None

    def _lookup(self, key: str) -> tuple[Shard, int, SlotFields, Entry] | None:
        """The key's live entry (an expired or damaged one is removed), as `Shard.lookup`
        decodes it: a `Record` when its value is in a file of its own. Hot path."""
        index = self._index
        if (
            index is None
            or self._stale
            or _monotonic() - index.checked > CHECK_SECONDS
            or self._layout.generations.retired()
        ):
            index = self._ready()
        lkey = key.encode("utf-8", "surrogatepass")
        if not lkey or len(lkey) > DIRECT_KEY_MAX:
            lkey = index_key(key)
        khash = _xxh3(lkey) or 1
        shard = index.shards[khash % len(index.shards)]
        try:
            found = shard.lookup(lkey, khash)
        except OSError as exc:  # (no `with os_errors`: this is the hot path)
            raise store_error(exc, self, "read") from exc
        if found is None:
            return None
        position, slot, entry = found
        if isinstance(entry, Record) and entry.full_key is not None and entry.full_key != key:
            return None
        expires = slot[_EXPIRES]
        if expires != math.inf or self.max_size is not None:
            now = self.clock.time()
            if expires <= now:
                shard.discard(position, slot[_VERSION], "expirations")
                return None
            if expires != math.inf:
                entry.expires_at = expires
            if self.max_size is not None:
                self._budget.accessed(shard.number, lkey, slot[_STAMP], now)
        return shard, position, slot, entry

    def _body(self, shard: Shard, position: int, slot: SlotFields, rec: Record) -> object:
        """The value in the record's file; None if damaged (removed), `_RETRY` if replaced."""
        version = slot[_VERSION]
        try:
            body = files.read(self._layout, str(rec.file_name), rec.body_size)
        except FileNotFoundError:
            if shard.slot_of(slot[0], version) is None:
                return _RETRY  # replaced or deleted meanwhile: look again
            shard.discard(position, version, "rejected")
            return None
        except files.DamagedFile:
            shard.discard(position, version, "rejected")
            return None
        except OSError as exc:
            raise store_error(exc, self, "read a value file") from exc
        if body_hash(body) != rec.body_hash:
            shard.discard(position, version, "rejected")
            return None
        return body

    def set(
        self, key: str, entry: Entry, epoch: int | None = None, stamp: int | None = None
    ) -> bool:
        """Store the entry; False if refused: larger than `max_size`, or `epoch` given and the
        key changed since `epoch(key)` returned it (a copy from a slower tier then stays out).
        The key's generation becomes `stamp` (default: a random one)."""
        _rules.finite_times(entry.created_at, entry.expires_at)
        index, shard, lkey, khash = self._route(key)
        grown = self._put(index, shard, key, lkey, khash, entry, epoch, stamp)
        if grown is None:
            return False
        self._grew(grown)
        return True

    def _put(
        self, index: ShardSet, shard: Shard, key: str, lkey: bytes, khash: int, entry: Entry,
        epoch: int | None, stamp: int | None,
    ) -> int | None:  # fmt: skip
        """Write the entry (its value file first, if it has one) and point its slot at it;
        what the store's usage grew by, or None if refused (see `set`). The size limit is for
        the caller to enforce (`_grew`), holding no shard lock: it evicts from any shard."""
        body = entry.value
        size = memoryview(body).nbytes
        in_file = size > INLINE_MAX
        long_key = len(lkey) > DIRECT_KEY_MAX
        now = self.clock.time()
        version = self._budget.stamp(now)
        file_name = value_file_name(shard.number, khash, version, os.getpid()) if in_file else None
        rec = Record(
            b"" if in_file else bytes(body), bytes(entry.header), entry.created_at, None,
            tuple(entry.tags), dict(entry.meta) if entry.meta is not None else None, 0, lkey,
            size, body_hash(body), key if long_key else None, file_name,
        )  # fmt: skip
        data = pack_record(rec)
        cost = len(data) + (-(-size // 4096) * 4096 if in_file else 0)
        if self.max_size is not None and cost + SLOT_SIZE > self.max_size:
            self._delete(shard, lkey, khash)
            self._count(shard, "rejected")
            return None
        expires = math.inf if entry.expires_at is None else entry.expires_at
        slot = Slot(
            khash, 0, 0, 0, LIVE | (IN_FILE if in_file else 0) | (LONG_KEY if long_key else 0),
            tag_bits(rec.tags), version, expires, cost, version,
        )  # fmt: skip
        if file_name is not None:
            with os_errors(self, "write a value file"):
                files.write(self._layout, file_name, body, durable=self.durable)
        try:
            with os_errors(self, "write"):
                removed = shard.put(lkey, khash, data, slot, self.durable, epoch, stamp)
        except BaseException:
            if file_name is not None:
                files.unlink(self._layout, [file_name])
            raise
        if removed is None:  # changed meanwhile: the copy stays out
            if file_name is not None:
                files.unlink(self._layout, [file_name])
            return None
        index.unlink(removed.files)
        # the usage grew by the new record and file, less the old entry's file (its record
        # stays, as garbage), and by a table rebuilt bigger
        return cost - sum(s.cost - s.rlen for s in removed.slots) + removed.table_grown

    def _grew(self, grown: int) -> None:
        """A write grew the store's usage by `grown` bytes: enforce `max_size`."""
        if self.max_size is not None:
            with os_errors(self, "enforce max_size"):
                self._budget.wrote(grown)

    def delete(self, key: str) -> bool:
        _index, shard, lkey, khash = self._route(key)
        removed = self._delete(shard, lkey, khash)
        now = self.clock.time()
        return any(s.expires > now for s in removed)

    def _delete(self, shard: Shard, lkey: bytes, khash: int) -> list[Slot]:
        with os_errors(self, "delete"):
            removed = shard.delete(lkey, khash)
        shard.unlink_files(removed.files)
        return removed.slots

    def _count(self, shard: Shard, kind: str) -> None:
        with contextlib.suppress(OSError, StoreError), shard.locked() as (table, header):
            setattr(header, kind, getattr(header, kind) + 1)
            table.write_header(header)

    def clear(self, prefix: str = "") -> int:
        index = self._ready()
        now = self.clock.time()
        count = 0
        if prefix:  # a copy being put in from a slower tier must not land after the scan
            self._layout.generations.bump_all()
        for shard in index.shards:
            if prefix:
                count += self._remove_matching(shard, prefix, None, now)
                continue
            with os_errors(self, "clear"):
                _items, removed = shard.clear()
            index.unlink(removed.files)
            count += sum(1 for s in removed.slots if s.expires > now)
        self._budget.forget_total()
        return count

    def stats(self) -> StoreCounters:
        with os_errors(self, "read the counters"):
            items, nbytes, evictions, expirations, rejected = self._ready().totals()
        return StoreCounters(
            evictions=evictions, expirations=expirations, rejected=rejected, items=items,
            bytes=nbytes,
        )  # fmt: skip

    @property
    def records_access(self) -> bool:
        """Whether reads are recorded (`scan` gives `Entry.accessed_at`): with `max_size`,
        whose LRU order they keep; an entry never read since written has None."""
        return self.max_size is not None

    def close(self) -> None:
        """Close the store. Operations already running in other threads finish on the files
        they opened (closed when the last of them ends); later calls raise StoreError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            index, self._index = self._index, None
        if index is not None and not self._stale:
            with contextlib.suppress(OSError, StoreError):
                self._budget.flush()
        self._layout.generations.close()

    # -- capabilities -----------------------------------------------------------------------

    @property
    def generations(self) -> Generations:
        """The store's generation table (shared by the processes of this host)."""
        return self._layout.generations

    def generation_slot(self, key: str) -> int:
        """The key's slot in `generations`."""
        return Generations.index(key_hash(index_key(key)))

    def epoch(self, key: str) -> int:
        """The key's generation now: pass it to `set` to store only if the key is unchanged."""
        return int(self._layout.generations.view[self.generation_slot(key)])

    def info(self, key: str) -> Entry | None:
        found = self._lookup(key)
        if found is None:
            return None
        rec = found[3]
        rec.value = None
        return rec

    def pop(self, key: str) -> Entry | None:
        _index, shard, lkey, khash = self._route(key)
        with os_errors(self, "pop"):
            popped = shard.pop(lkey, khash)
        if popped is None:
            return None
        slot, rec, removed = popped
        try:
            if slot.expires <= self.clock.time():
                return None
            if slot.expires != math.inf:
                rec.expires_at = slot.expires
            if rec.file_name is None:
                return rec
            try:
                body = files.read(self._layout, rec.file_name, rec.body_size)
            except (FileNotFoundError, files.DamagedFile):
                return None
            if body_hash(body) != rec.body_hash:
                return None
            rec.value = body
            return rec
        finally:
            shard.unlink_files(removed.files)

    def update(self, key: str, change: Callable[[Entry | None], Entry | None]) -> Entry | None:
        """Replace the key's live entry by `change(entry)` in one shard transaction (see
        `SupportsUpdate`): the shard lock, which every writer of the shard in every process
        takes, is held from the read to the write, and `change` runs once, holding it (so it
        must be quick). A value file is written as `set` writes it; `max_size` is enforced
        after the lock is let go."""
        index, shard, lkey, khash = self._route(key)
        with contextlib.ExitStack() as held:
            with os_errors(self, "update"):
                held.enter_context(shard.exclusive())
            new = change(self._current(shard, key, lkey, khash))
            if new is None:
                return None
            _rules.finite_times(new.created_at, new.expires_at)
            grown = self._put(index, shard, key, lkey, khash, new, None, None)
        if grown is None:
            return None  # refused: larger than max_size
        self._grew(grown)
        return new

    def _current(self, shard: Shard, key: str, lkey: bytes, khash: int) -> Entry | None:
        """(Under the shard lock.) The key's live entry with its value, as `get` reads it
        (one expired or damaged is removed), but not moved up the LRU order: the caller is
        about to rewrite it."""
        try:
            found = shard.lookup(lkey, khash)
        except OSError as exc:
            raise store_error(exc, self, "read") from exc
        if found is None:
            return None
        position, slot, entry = found
        if isinstance(entry, Record) and entry.full_key is not None and entry.full_key != key:
            return None
        expires = slot[_EXPIRES]
        if expires <= self.clock.time():
            shard.discard(position, slot[_VERSION], "expirations")
            return None
        if expires != math.inf:
            entry.expires_at = expires
        if not isinstance(entry, Record) or entry.file_name is None:
            return entry
        body = self._body(shard, position, slot, entry)
        if body is None or body is _RETRY:  # (_RETRY: its file gone, under the lock: damage)
            return None
        entry.value = body
        return entry

    def touch(self, key: str, expires_at: float | None) -> bool:
        _rules.finite_times(None, expires_at)
        _index, shard, lkey, khash = self._route(key)
        expires = math.inf if expires_at is None else expires_at
        with os_errors(self, "touch"):
            return shard.set_expiry(lkey, khash, expires, self.clock.time())

    def expire(self) -> int:
        index = self._ready()
        now = self.clock.time()
        count = 0
        for shard in index.shards:
            with os_errors(self, "expire"):
                removed = shard.expire(now)
            index.unlink(removed.files)
            count += len(removed.slots)
        return count

    def evict(self, tag: str, prefix: str = "") -> int:
        index = self._ready()
        now = self.clock.time()
        self._layout.generations.bump_all()  # (as in clear: nothing lands after the scan)
        with os_errors(self, "evict"):
            return sum(self._remove_matching(shard, prefix, tag, now) for shard in index.shards)

    def keys(self, prefix: str = "", tag: str | None = None) -> Iterator[str]:
        for shard in self._ready().shards:
            with os_errors(self, "list keys"):
                found = list(self._matching(shard, prefix, tag, self.clock.time()))
            for key, _slot, _position in found:
                yield key

    def scan(self, prefix: str = "", tag: str | None = None) -> Iterator[tuple[str, Entry]]:
        """``(key, entry)`` of every entry present under `prefix` (with `tag`), expired ones
        included, values None (`SupportsScan`), streamed shard by shard, each shard's records
        read in file order (`_scan`). `Entry.accessed_at`: the last read the LRU order
        recorded, from the slot's stamp: a store with `max_size` records a read of an entry
        whose stamp is over a second old, written within a few seconds (or at close); None
        when no read was recorded since the entry was written (always, without `max_size`:
        reads then cost no write)."""
        for shard in self._ready().shards:
            batches = scan_shard(shard, prefix, tag)
            while True:
                with os_errors(self, "scan"):
                    batch = next(batches, None)
                if batch is None:
                    break
                yield from batch

    def count(self, prefix: str = "") -> int:
        if prefix:
            return sum(1 for _ in self.keys(prefix))
        index = self._ready()
        now = self.clock.time()
        total = 0
        with os_errors(self, "count"):
            for shard in index.shards:
                header = shard.header()
                if header is not None and header.min_expires > now:
                    total += header.items
                else:
                    total += sum(1 for _p, s, _t in shard.scan() if s.expires > now)
        return total

    # -- usage counters and verification -----------------------------------------------------

    def usage(self) -> Usage:
        """The usage counters every process added (`SupportsUsage`; zeros when there are
        none, or when their file is damaged)."""
        self._ready()
        with os_errors(self, "read the usage counters"):
            return usage_file.read(self._layout.root)

    def add_usage(self, usage: Usage) -> None:
        """Add to the usage counters, atomically across processes (an exclusive `flock`)."""
        usage_file.check(usage)
        self._ready()
        if not usage:
            return  # (nothing counted: `since` does not start)
        with os_errors(self, "add to the usage counters"):
            usage_file.add(self._layout.root, usage, self.clock.time())

    def reset_usage(self) -> None:
        """Zero the usage counters and the store's evictions, expirations and rejected."""
        index = self._ready()
        with os_errors(self, "reset the usage counters"):
            usage_file.reset(self._layout.root)
            for shard in index.shards:
                shard.reset_counters()

    def verify(self, fix: bool = False) -> Iterator[Damage]:
        """Every slot, record, value file and leftover of the store checked; each `Damage`
        found, removed or repaired first with `fix` (see `_verify` for what is checked and
        how). Files with no owner count once older than an hour (`GRACE_SECONDS`): younger,
        they may be writes in progress in other processes."""
        index = self._ready()
        checks = verify_store(self._layout, index.shards, index.owns_file, fix)
        while True:
            with os_errors(self, "verify"):
                damage = next(checks, None)
            if damage is None:
                return
            yield damage

    # -- locks (single-flight across processes) -------------------------------------------

    def acquire_lock(self, name: str, token: str, lease: float) -> bool:
        _index, shard, lkey, _khash = self._route(name)
        now = self.clock.time()
        return self._locked_call(shard.acquire_lock, lkey, token.encode(), now + lease, now)

    def renew_lock(self, name: str, token: str, lease: float) -> bool:
        _index, shard, lkey, _khash = self._route(name)
        return self._locked_call(shard.renew_lock, lkey, token.encode(), self.clock.time() + lease)

    def release_lock(self, name: str, token: str) -> bool:
        _index, shard, lkey, _khash = self._route(name)
        return self._locked_call(shard.release_lock, lkey, token.encode())

    def set_if_held(
        self, key: str, entry: Entry, name: str, token: str, stamp: int | None = None
    ) -> bool:
        """Store the entry only while `token` holds lock `name` (`SupportsFencedWrites`): the
        key's generation is read before the lock is checked and the write is conditional on
        it, so a successor who took the lock and wrote since is never overwritten."""
        epoch = self.epoch(key)
        _index, shard, lkey, _khash = self._route(name)
        if not self._locked_call(shard.holds_lock, lkey, token.encode(), self.clock.time()):
            return False
        return self.set(key, entry, epoch, stamp)

    def _locked_call(self, fn: Any, *args: Any) -> bool:
        with os_errors(self, "use a lock"):
            return bool(fn(*args))

    # -- scans ------------------------------------------------------------------------------

    def _matching(
        self, shard: Shard, prefix: str, tag: str | None, now: float | None
    ) -> Iterator[tuple[str, Slot, int]]:
        """Live (key, slot, position) of a shard under `prefix` (and with `tag`); expired
        ones too when `now` is None."""
        bits = tag_bits((tag,)) if tag is not None else 0
        for position, slot, _table in shard.scan(bits):
            if now is not None and slot.expires <= now:
                continue
            rec = shard.record(slot)
            if rec is None or (tag is not None and tag not in rec.tags):
                continue
            key = key_of(rec.lkey, rec.full_key)
            if key.startswith(prefix):
                yield key, slot, position

    def _remove_matching(self, shard: Shard, prefix: str, tag: str | None, now: float) -> int:
        # expired entries go too (uncounted), as they do in clear() and evict() of MemoryStore
        shard.barrier()  # (the caller changed every generation first: see `_removing`)
        matching = self._matching(shard, prefix, tag, None)
        doomed = [(position, slot) for _k, slot, position in matching]
        if not doomed:
            return 0
        with os_errors(self, "remove entries"):
            removed = shard.evict([(p, s.version) for p, s in doomed], None)
        shard.unlink_files(removed.files)
        return sum(1 for s in removed.slots if s.expires > now)

    # -- async twins (`_twins`): small index reads inline; file I/O and bulk work in a thread --

    delete_async = inline(delete)
    stats_async = inline(stats)
    close_async = inline(close)
    info_async = inline(info)
    touch_async = inline(touch)
    acquire_lock_async = inline(acquire_lock)
    renew_lock_async = inline(renew_lock)
    release_lock_async = inline(release_lock)
    clear_async = in_thread(clear)
    pop_async = in_thread(pop)
    update_async = in_thread(update)
    expire_async = in_thread(expire)
    evict_async = in_thread(evict)
    count_async = in_thread(count)
    keys_async = iter_in_thread(keys)
    usage_async = inline(usage)
    add_usage_async = in_thread(add_usage)
    reset_usage_async = in_thread(reset_usage)

    # written out: these go to a thread only when there is a value file to read or write

    async def get_async(self, key: str) -> Entry | None:
        found = self._lookup(key)
        if found is None:
            return None
        entry = found[3]
        if not isinstance(entry, Record) or entry.file_name is None:
            return entry
        return await asyncio.to_thread(self.get, key)

    async def set_async(
        self, key: str, entry: Entry, epoch: int | None = None, stamp: int | None = None
    ) -> bool:
        if memoryview(entry.value).nbytes > INLINE_MAX:
            return await asyncio.to_thread(self.set, key, entry, epoch, stamp)
        return self.set(key, entry, epoch, stamp)

    async def scan_async(
        self, prefix: str = "", tag: str | None = None
    ) -> AsyncIterator[tuple[str, Entry]]:
        """`scan`, for ``async for``: read in a worker thread `SCAN_BATCH` entries at a time
        (not listed whole first, as `iter_in_thread` would: memory stays bounded)."""
        entries = self.scan(prefix, tag)
        while True:
            batch = await asyncio.to_thread(_take, entries, SCAN_BATCH)
            for item in batch:
                yield item
            if len(batch) < SCAN_BATCH:
                return

    async def set_if_held_async(
        self, key: str, entry: Entry, name: str, token: str, stamp: int | None = None
    ) -> bool:
        if memoryview(entry.value).nbytes > INLINE_MAX:
            return await asyncio.to_thread(self.set_if_held, key, entry, name, token, stamp)
        return self.set_if_held(key, entry, name, token, stamp)


def _take(items: Iterator[T], count: int) -> list[T]:
    return list(itertools.islice(items, count))


def _rebuild(path: str, max_size: int | None, durable: bool) -> DiskStore:
    return DiskStore(path, max_size=max_size, durable=durable)


def _after_fork_in_child() -> None:
    for store in list(_LIVE_STORES):
        store._stale = True  # reopened on its next use: new descriptors, locks and budget
        store._lock = threading.Lock()  # another thread may have held it at the fork
    forget_registrations()


def _close_at_exit() -> None:
    for store in list(_LIVE_STORES):
        with contextlib.suppress(Exception):
            store.close()
    unregister_all()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_at_exit)
