"""One shard of the DiskStore index: an LMDB environment with its named databases.

    entries  lkey -> record                      (see _records.py)
    lru      stamp + lkey -> ""                  eviction order, oldest first
    expiry   expires_us + lkey -> ""             entries with a TTL, soonest first
    tags     tag + NUL + lkey -> ""              entries by tag
    files    file name -> lkey                   which record owns a value file
    locks    lock name -> token NUL expires      leased single-flight locks
    meta     b"stats" -> items, bytes, evictions, expirations, rejected

Every method is one LMDB transaction, so each change is atomic and crash-safe. Secondary
entries that no longer match their record (left by a damaged record) are dropped lazily by
whoever walks over them. LMDB allows one environment per file per process: `_ENVS` shares it
between the stores of a process (this is a requirement of LMDB, not a cache).
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from .._fs import make_dir
from ._records import (
    STATS,
    DamagedRecord,
    Record,
    expiry_key,
    lru_key,
    pack,
    split_stamped,
    tag_key,
    unpack,
)

_DBS = ("entries", "lru", "expiry", "tags", "files", "locks", "meta")
_STATS_KEY = b"stats"
_LOCK = struct.Struct("<d")
MAP_SIZE = 1 << 35  # address space reserved per shard; files grow only as data is written
_T = TypeVar("_T")

# LMDB errors that mean the environment's file is damaged (the shard is rebuilt).
DAMAGED_ERRORS: tuple[type[BaseException], ...] = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.PanicError,
    lmdb.BadRslotError,
    lmdb.BadTxnError,
    lmdb.InvalidParameterError,
)


@dataclass
class _Shared:
    pid: int
    env: Any
    dbs: dict[str, Any]
    users: int = 1


_ENVS: dict[str, _Shared] = {}
_ENVS_LOCK = threading.Lock()


@dataclass
class Removed:
    """What a write transaction removed: records (for their files) and bytes freed."""

    records: list[Record] = field(default_factory=list)
    freed: int = 0
    damaged: int = 0

    @property
    def files(self) -> list[str]:
        return [r.file_name for r in self.records if r.file_name is not None]


class Shard:
    """An LMDB environment holding a slice of the entries (by hash of their key)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key = str(path)
        with _ENVS_LOCK:
            shared = _ENVS.get(self._key)
            if shared is not None and shared.pid == os.getpid():
                shared.users += 1
            else:  # first use in this process (an env inherited through fork is not reused)
                shared = _ENVS[self._key] = _open(path)
        self.env = shared.env
        d = shared.dbs
        self.entries, self.lru, self.expiry = d["entries"], d["lru"], d["expiry"]
        self.tags, self.files, self.locks, self.meta = d["tags"], d["files"], d["locks"], d["meta"]

    def close(self) -> None:
        with _ENVS_LOCK:
            shared = _ENVS.get(self._key)
            if shared is None or shared.env is not self.env:
                return
            shared.users -= 1
            if shared.users <= 0:
                del _ENVS[self._key]
                if shared.pid == os.getpid():
                    shared.env.close()

    def forget(self) -> None:
        """After a fork: drop the parent's environment from this process's registry, unclosed
        (LMDB forbids using or closing an environment inherited through fork)."""
        with _ENVS_LOCK:
            shared = _ENVS.get(self._key)
            if shared is not None and shared.env is self.env:
                del _ENVS[self._key]

    def abandon(self) -> None:
        """Drop this process's handle without touching the file (after damage or a fork)."""
        with _ENVS_LOCK:
            shared = _ENVS.get(self._key)
            if shared is not None and shared.env is self.env:
                del _ENVS[self._key]
        with contextlib.suppress(lmdb.Error):
            self.env.close()

    def inode(self) -> int:
        return os.stat(self.path / "data.mdb").st_ino

    def sync(self) -> None:
        self.env.sync(True)

    def _write(self, fn: Callable[[Any], _T]) -> _T:
        with self.env.begin(write=True) as txn:
            return fn(txn)

    # -- reads ----------------------------------------------------------------------------

    def get(self, lkey: bytes) -> bytes | None:
        with self.env.begin(db=self.entries) as txn:
            raw: bytes | None = txn.get(lkey)
            return raw

    def stats(self) -> tuple[int, int, int, int, int]:
        with self.env.begin(db=self.meta) as txn:
            raw = txn.get(_STATS_KEY)
        return STATS.unpack(raw) if raw is not None else (0, 0, 0, 0, 0)

    def oldest_costs(self, limit: int) -> list[tuple[int, bytes, int]]:
        """Up to `limit` (stamp, lkey, cost) of the least recently used entries, oldest first."""
        out = []
        with self.env.begin(db=self.lru) as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                stamp, lkey = split_stamped(key)
                raw = txn.get(lkey, db=self.entries)
                try:
                    cost = unpack(raw).cost(lkey, len(raw)) if raw is not None else 0
                except DamagedRecord:
                    cost = len(raw) if raw is not None else 0
                out.append((stamp, lkey, cost))
                if len(out) >= limit:
                    break
        return out

    def scan(self, prefix: bytes, after: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (lkey, record) pairs with lkeys starting with `prefix`, after `after`."""
        out: list[tuple[bytes, bytes]] = []
        with self.env.begin(db=self.entries) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(after or prefix):
                return out
            if after is not None and cursor.key() == after and not cursor.next():
                return out
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                out.append((key, value))
                if len(out) >= limit:
                    break
        return out

    def tagged(self, tag: str) -> list[bytes]:
        start = tag_key(tag, b"")
        with self.env.begin(db=self.tags) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(start):
                return []
            out = []
            for key in cursor.iternext(values=False):
                if not key.startswith(start):
                    break
                out.append(key[len(start) :])
            return out

    def count_expired(self, now: float) -> int:
        limit = int(now * 1_000_000)
        count = 0
        with self.env.begin(db=self.expiry) as txn:
            for key in txn.cursor().iternext(values=False):
                if split_stamped(key)[0] > limit:
                    break
                count += 1
        return count

    def owns_file(self, name: str) -> bool:
        with self.env.begin(db=self.files) as txn:
            return txn.get(name.encode("ascii")) is not None

    # -- writes ---------------------------------------------------------------------------

    def put(self, lkey: bytes, rec: Record, packed: bytes, cost: int) -> Removed:
        """Store `rec` (packed, costing `cost` bytes), replacing what was there (returned)."""

        def txn_fn(txn: Any) -> Removed:
            removed = Removed()
            self._unlink_entry(txn, lkey, removed)
            txn.put(lkey, packed, db=self.entries)
            self._link(txn, lkey, rec)
            items = 1 - len(removed.records) - removed.damaged
            self._add_stats(txn, items=items, nbytes=cost - removed.freed)
            return removed

        return self._write(txn_fn)

    def delete(self, lkey: bytes, expect_stamp: int | None = None) -> Removed:
        """Remove the entry (only if its stamp is `expect_stamp`, when given)."""

        def txn_fn(txn: Any) -> Removed:
            removed = Removed()
            if expect_stamp is not None:
                raw = txn.get(lkey, db=self.entries)
                try:
                    if raw is None or unpack(raw).stamp != expect_stamp:
                        return removed
                except DamagedRecord:
                    pass
            self._unlink_entry(txn, lkey, removed)
            self._count_removed(txn, removed)
            return removed

        return self._write(txn_fn)

    def count_removal(self, kind: str, count: int = 1) -> None:
        """Record `count` expirations, evictions or rejections done by a `delete`."""

        def txn_fn(txn: Any) -> None:
            self._add_stats(txn, **{kind: count})

        self._write(txn_fn)

    def evict(self, victims: Iterable[tuple[int, bytes]]) -> Removed:
        """Remove the given (stamp, lkey) entries if unchanged; count them as evictions."""

        def txn_fn(txn: Any) -> Removed:
            removed = Removed()
            for stamp, lkey in victims:
                raw = txn.get(lkey, db=self.entries)
                if raw is not None:
                    try:
                        if unpack(raw).stamp != stamp:
                            continue
                    except DamagedRecord:
                        pass
                else:
                    txn.delete(lru_key(stamp, lkey), db=self.lru)  # dangling: drop it
                    continue
                self._unlink_entry(txn, lkey, removed)
            self._count_removed(txn, removed, "evictions")
            return removed

        return self._write(txn_fn)

    def expire(self, now: float, limit: int = 1000) -> Removed:
        """Remove up to `limit` entries expired at `now`."""
        bound = int(now * 1_000_000)

        def txn_fn(txn: Any) -> Removed:
            removed = Removed()
            doomed: list[bytes] = []
            for key in txn.cursor(db=self.expiry).iternext(values=False):
                if split_stamped(key)[0] > bound or len(doomed) >= limit:
                    break
                doomed.append(key)
            for key in doomed:
                _, lkey = split_stamped(key)
                if not self._unlink_entry(txn, lkey, removed):
                    txn.delete(key, db=self.expiry)
            self._count_removed(txn, removed, "expirations")
            return removed

        return self._write(txn_fn)

    def restamp(self, stamps: dict[bytes, int]) -> None:
        """Move entries up the LRU order (batched access times)."""

        def txn_fn(txn: Any) -> None:
            for lkey, stamp in stamps.items():
                raw = txn.get(lkey, db=self.entries)
                if raw is None:
                    continue
                try:
                    rec = unpack(raw)
                except DamagedRecord:
                    continue
                if rec.stamp >= stamp:
                    continue
                txn.delete(lru_key(rec.stamp, lkey), db=self.lru)
                rec.stamp = stamp
                txn.put(lkey, pack(rec), db=self.entries)
                txn.put(lru_key(stamp, lkey), b"", db=self.lru)

        self._write(txn_fn)

    def set_expiry(self, lkey: bytes, expires_at: float | None, now: float) -> bool:
        def txn_fn(txn: Any) -> bool:
            raw = txn.get(lkey, db=self.entries)
            if raw is None:
                return False
            try:
                rec = unpack(raw)
            except DamagedRecord:
                return False
            if rec.expires_at is not None and rec.expires_at <= now:
                return False
            old_cost = rec.cost(lkey, len(raw))
            if rec.expires_at is not None:
                txn.delete(expiry_key(rec.expires_at, lkey), db=self.expiry)
            rec.expires_at = expires_at
            packed = pack(rec)
            txn.put(lkey, packed, db=self.entries)
            if expires_at is not None:
                txn.put(expiry_key(expires_at, lkey), b"", db=self.expiry)
            self._add_stats(txn, nbytes=rec.cost(lkey, len(packed)) - old_cost)
            return True

        return self._write(txn_fn)

    def clear_all(self) -> tuple[int, list[str]]:
        """Drop every entry (not the locks); return (entries removed, their file names)."""

        def txn_fn(txn: Any) -> tuple[int, list[str]]:
            names = [k.decode("ascii") for k in txn.cursor(db=self.files).iternext(values=False)]
            items = STATS.unpack(txn.get(_STATS_KEY, db=self.meta) or STATS.pack(0, 0, 0, 0, 0))
            for db in (self.entries, self.lru, self.expiry, self.tags, self.files):
                txn.drop(db, delete=False)
            txn.put(_STATS_KEY, STATS.pack(0, 0, *items[2:]), db=self.meta)
            return items[0], names

        return self._write(txn_fn)

    def remove_many(self, lkeys: Iterable[bytes]) -> Removed:
        def txn_fn(txn: Any) -> Removed:
            removed = Removed()
            for lkey in lkeys:
                self._unlink_entry(txn, lkey, removed)
            self._count_removed(txn, removed)
            return removed

        return self._write(txn_fn)

    # -- locks ----------------------------------------------------------------------------

    def acquire_lock(self, name: bytes, token: bytes, expires: float, now: float) -> bool:
        def txn_fn(txn: Any) -> bool:
            held = txn.get(name, db=self.locks)
            if held is not None:
                owner, until = _split_lock(held)
                if owner != token and until > now:
                    return False
            txn.put(name, token + b"\0" + _LOCK.pack(expires), db=self.locks)
            return True

        return self._write(txn_fn)

    def renew_lock(self, name: bytes, token: bytes, expires: float) -> bool:
        def txn_fn(txn: Any) -> bool:
            held = txn.get(name, db=self.locks)
            if held is None or _split_lock(held)[0] != token:
                return False
            txn.put(name, token + b"\0" + _LOCK.pack(expires), db=self.locks)
            return True

        return self._write(txn_fn)

    def release_lock(self, name: bytes, token: bytes) -> bool:
        def txn_fn(txn: Any) -> bool:
            held = txn.get(name, db=self.locks)
            if held is None or _split_lock(held)[0] != token:
                return False
            txn.delete(name, db=self.locks)
            return True

        return self._write(txn_fn)

    # -- helpers (inside a write transaction) -----------------------------------------------

    def _unlink_entry(self, txn: Any, lkey: bytes, removed: Removed) -> bool:
        """Delete the record of `lkey` and its secondary entries; False if there was none."""
        raw = txn.get(lkey, db=self.entries)
        if raw is None:
            return False
        txn.delete(lkey, db=self.entries)
        try:
            rec = unpack(raw)
        except DamagedRecord:
            removed.damaged += 1
            return True
        txn.delete(lru_key(rec.stamp, lkey), db=self.lru)
        if rec.expires_at is not None:
            txn.delete(expiry_key(rec.expires_at, lkey), db=self.expiry)
        for tag in rec.tags:
            txn.delete(tag_key(tag, lkey), db=self.tags)
        if rec.file_name is not None:
            txn.delete(rec.file_name.encode("ascii"), db=self.files)
        removed.records.append(rec)
        removed.freed += rec.cost(lkey, len(raw))
        return True

    def _link(self, txn: Any, lkey: bytes, rec: Record) -> None:
        txn.put(lru_key(rec.stamp, lkey), b"", db=self.lru)
        if rec.expires_at is not None:
            txn.put(expiry_key(rec.expires_at, lkey), b"", db=self.expiry)
        for tag in rec.tags:
            txn.put(tag_key(tag, lkey), b"", db=self.tags)
        if rec.file_name is not None:
            txn.put(rec.file_name.encode("ascii"), lkey, db=self.files)

    def _count_removed(self, txn: Any, removed: Removed, kind: str | None = None) -> None:
        """Account for `removed` (damaged records count as rejected; the rest as `kind`)."""
        counts = {kind: len(removed.records)} if kind else {}
        self._add_stats(
            txn, items=-len(removed.records) - removed.damaged, nbytes=-removed.freed,
            rejected=removed.damaged, **counts,
        )  # fmt: skip

    def _add_stats(
        self,
        txn: Any,
        *,
        items: int = 0,
        nbytes: int = 0,
        evictions: int = 0,
        expirations: int = 0,
        rejected: int = 0,
    ) -> None:
        raw = txn.get(_STATS_KEY, db=self.meta)
        cur = STATS.unpack(raw) if raw is not None else (0, 0, 0, 0, 0)
        new = (
            max(0, cur[0] + items),
            max(0, cur[1] + nbytes),
            cur[2] + evictions,
            cur[3] + expirations,
            cur[4] + rejected,
        )
        txn.put(_STATS_KEY, STATS.pack(*new), db=self.meta)


def _split_lock(raw: bytes) -> tuple[bytes, float]:
    """(token, lease end) of ``token + NUL + double``; the double may hold NULs of its own."""
    end = len(raw) - _LOCK.size
    if end < 1 or raw[end - 1] != 0:
        return raw, 0.0  # not a lock we wrote: an expired lease
    return raw[: end - 1], _LOCK.unpack_from(raw, end)[0]


def _open(path: Path) -> _Shared:
    make_dir(path)  # 0700, ours, not a symlink
    map_size = MAP_SIZE
    while True:
        try:
            env = lmdb.open(
                str(path),
                map_size=map_size,
                subdir=True,
                max_dbs=len(_DBS),
                max_readers=1024,
                max_spare_txns=8,
                sync=False,
                metasync=False,
                readahead=False,
                mode=0o600,
                lock=True,
            )
            break
        except lmdb.MemoryError:
            if map_size <= 1 << 28:
                raise
            map_size //= 2  # a limited address space (ulimit -v): reserve less
    for name in ("data.mdb", "lock.mdb"):
        os.chmod(path / name, 0o600)
    dbs = {name: env.open_db(name.encode(), create=True) for name in _DBS}
    return _Shared(pid=os.getpid(), env=env, dbs=dbs)
