"""The public I/O methods of `Cache`, written once as coroutines.

``_sync/operations.py`` is generated from this file by ``scripts/unasync.py`` (``await``
dropped, ``x_async`` renamed ``x``, ``Async*`` classes renamed ``Sync*``; ``.prims`` is each
package's own). Edit the files of ``_async/``, then run ``python scripts/unasync.py``; a test
fails when the two disagree.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from ..._codec import Rejected
from ..._hashing import hash_key
from ..._stores import StoreCounters
from ..._stores._writer import writing
from ..._types import MISSING, EntryInfo, Stats, TierHealth
from ...errors import StoreFullError
from .. import _counters as counters
from .._core import file_bytes, write_temp_file
from .._options import unexpected_options
from .prims import (
    to_thread_async,
)
from .single_flight import AsyncSingleFlight

_PROBE = "\0tiers health check"  # the key `check` reads: never written


class AsyncOps(AsyncSingleFlight):
    """The I/O methods of `Cache`."""

    async def get_async(self, key: object, default: Any = None) -> Any:
        """The value of `key` from the first tier that has it live, else `default`.

        A value found in a slower tier is copied into the faster ones with its remaining TTL.
        Expired, damaged and unauthenticated entries are misses (removed and counted).
        """
        k = self._key(key)
        first = self._tiers[0]
        if first.direct and not first.suspect and not (first.stale and k in first.stale):
            entry = first.store.get(k)  # (a MemoryStore: no I/O, nothing to fail)
            if entry is not None:
                first.hits += 1
                return entry.value
        value = await self._lookup_async(k)
        if value is MISSING:
            self._misses += 1
            return default
        return value

    async def set_async(
        self,
        key: object,
        value: Any,
        *,
        ttl: Any = MISSING,
        tags: Any = (),
        meta: Any = None,
        bind: Any = None,
        **unexpected: NoReturn,
    ) -> None:
        """Store `value` under `key` in every tier (slowest first).

        `ttl`: seconds or a timedelta (default: the cache's), None for no expiry. `tags`:
        strings for `evict`. `meta`: JSON-serialisable provenance shown by `info`. `bind`: a
        weak-referenceable object; the entry is deleted when it is garbage-collected.
        """
        if unexpected:
            raise TypeError(unexpected_options("Cache.set()", unexpected))
        k = self._key(key)
        self._check_bind(bind)
        expires_at = self._expires_at(ttl)
        checked_tags, checked_meta = self._check_tags(tags), self._check_meta(meta)
        await self._store_async([(k, value)], expires_at, checked_tags, checked_meta)
        if bind is not None or self._binds:
            self._bind(k, bind)

    async def get_many_async(self, keys: Iterable[Any], default: Any = None) -> dict[Any, Any]:
        """``{key: value}`` for `keys` (`default` for those no tier has), asking each tier for
        all the keys it still misses at once where its store can (e.g. one Redis round trip).
        Hits in slower tiers are copied up as with `get`."""
        requested = list(dict.fromkeys(keys))
        stored = [self._key(key) for key in requested]
        found = await self._lookup_many_async(stored)
        out: dict[Any, Any] = {}
        for key, k in zip(requested, stored, strict=True):
            value = found.get(k, MISSING)
            if value is MISSING:
                self._misses += 1
                value = default
            out[key] = value
        return out

    async def set_many_async(
        self, items: Mapping[Any, Any], *, ttl: Any = MISSING, tags: Any = (), meta: Any = None
    ) -> None:
        """Store every ``key: value`` of `items` in every tier, each tier in one batch where its
        store can; options as `set`. All values are encoded before anything is written."""
        if not isinstance(items, Mapping):
            raise TypeError(
                f"set_many takes a mapping of keys to values, not {type(items).__qualname__!r}"
            )
        expires_at = self._expires_at(ttl)
        checked_tags, checked_meta = self._check_tags(tags), self._check_meta(meta)
        pairs = [(self._key(key), value) for key, value in items.items()]
        for k, _value in pairs:
            self._unbind(k)
        if pairs:
            await self._store_async(pairs, expires_at, checked_tags, checked_meta)

    async def add_async(
        self, value: Any, *, key: object = None, ttl: Any = MISSING, tags: Any = (),
        meta: Any = None,
    ) -> str:  # fmt: skip
        """Store `value`; with no `key`, under its content hash (`hash_key`). Returns the key."""
        if key is None:
            key = hash_key(value)
        name = key if isinstance(key, str) else self._user_key(self._key(key))
        await self.set_async(name, value, ttl=ttl, tags=tags, meta=meta)
        return name

    async def pop_async(self, key: object, default: Any = MISSING) -> Any:
        """Remove `key` from every tier and return its value; KeyError if absent and no default.

        (`MISSING` as `default` means "no default".) Each store removes atomically: among
        processes popping one key of a shared tier, one gets its value.
        """
        with writing(self._writer):  # (its announcements name this cache)
            k = self._key(key)
            self._unbind(k)
            value: Any = MISSING
            for tier in self._tiers:
                if not tier.breaker.allow():
                    continue
                try:
                    if tier.can.pop:
                        entry = await tier.store.pop_async(k)
                    else:
                        entry = await tier.store.get_async(k)
                        if entry is not None:
                            await tier.store.delete_async(k)
                except Exception as exc:
                    self._failed(tier, exc, "pop")
                    continue
                if entry is None:
                    continue
                tier.deletes += 1
                if value is MISSING:
                    try:
                        value = self._decode(tier, k, entry)
                    except Rejected as exc:
                        self._rejected(tier, k, exc)
            if value is MISSING:
                if default is MISSING:
                    raise KeyError(key)
                return default
            return value

    async def incr_async(
        self, key: object, delta: int = 1, *, default: int | None = 0, ttl: Any = MISSING
    ) -> int:
        """Add `delta` to the int under `key` and return the new value, atomically: among
        threads, processes, and machines sharing the counter's tier, no increment is lost.

        The counter's authority is the slowest tier (docs/operations.md#counters): the
        increment is one atomic step there, and the faster tiers drop their copies. A
        missing counter starts at `default` (None: KeyError), expiring after `ttl` (default:
        the cache's); an existing one keeps its expiry. TypeError if the value is not an int.
        """
        k, checked = self._key(key), counters.check_delta(delta, default)
        expires_at = self._expires_at(ttl)
        tier = counters.counter_tier(self)
        change = counters.counting(self, tier, k, key, checked, default, expires_at)
        entry = await self._update_async(tier, k, change, "increment")
        if entry is None:
            raise StoreFullError(f"{tier.name} refused the counter {key!r}")
        return counters.counted(self, tier, k, entry)

    async def setdefault_async(
        self, key: object, default: Any, *, ttl: Any = MISSING, tags: Any = (), meta: Any = None
    ) -> Any:
        """The value of `key`; if it has none, store `default` (with `ttl`, `tags`, `meta`, as
        `set`) and return it. Atomic like `incr`: among callers racing on a missing key, one
        stores its default and the others get that value."""
        return (await self._setdefault_async(key, default, ttl=ttl, tags=tags, meta=meta))[1]

    async def _setdefault_async(
        self, key: object, default: Any, *, ttl: Any = MISSING, tags: Any = (), meta: Any = None
    ) -> tuple[bool, Any]:
        """`setdefault`, and whether it stored `default`."""
        k = self._key(key)
        expires_at = self._expires_at(ttl)
        checked_tags, checked_meta = self._check_tags(tags), self._check_meta(meta)
        tier = counters.counter_tier(self)
        found: list[Any] = []
        change = counters.adding(
            self, tier, k, default, expires_at, checked_tags, checked_meta, found
        )
        entry = await self._update_async(tier, k, change, "set")
        if entry is not None:
            return True, self._normalized(k, default)
        if found:
            return False, found[0]
        raise StoreFullError(f"{tier.name} refused the value of {key!r}")

    async def decr_async(
        self, key: object, delta: int = 1, *, default: int | None = 0, ttl: Any = MISSING
    ) -> int:
        """`incr_async` by `-delta`."""
        checked = counters.check_delta(delta, default)
        return await self.incr_async(key, -checked, default=default, ttl=ttl)

    async def delete_async(self, key: object) -> bool:
        """Remove `key` from every tier; True if any tier had it live."""
        k = self._key(key)
        self._unbind(k)
        return await self._delete_stored_async(k)

    async def has_async(self, key: object) -> bool:
        """True if some tier holds `key` live (without loading or verifying its value)."""
        return await self._peek_async(self._key(key)) is not None

    async def touch_async(self, key: object, *, ttl: Any) -> bool:
        """Give `key` a new expiry (`ttl` seconds from now; None: never) in every tier."""
        with writing(self._writer):  # (its announcements name this cache)
            k = self._key(key)
            expires_at = self._expires_at(ttl)
            found = False
            for tier in reversed(self._tiers):
                if not tier.breaker.allow():
                    continue
                try:
                    if self._copy_of_local(tier) and tier.can.guard:  # its guard refuses it now
                        await tier.store.delete_async(k)
                    elif tier.can.touch:
                        found = await tier.store.touch_async(k, expires_at) or found
                    else:
                        entry = await tier.store.get_async(k)
                        if entry is not None:  # a copy: the store may have handed out its own
                            renewed = replace(entry, expires_at=expires_at)
                            found = await tier.store.set_async(k, renewed) or found
                except Exception as exc:
                    self._failed(tier, exc, "touch")
            return found

    async def expire_async(self) -> int:
        """Remove expired entries from every tier; return how many (from the tier that had most)."""
        self._check_open()
        counts = [0]
        for tier in reversed(self._tiers):
            if tier.can.expire and tier.breaker.allow():
                try:
                    n = await tier.store.expire_async()
                    counts.append(0 if self._copy_of_local(tier) else n)
                except Exception as exc:
                    self._failed(tier, exc, "expire")
        return max(counts)

    async def evict_async(self, tag: str) -> int:
        """Remove the entries tagged `tag` from every tier; return how many."""
        with writing(self._writer):  # (its announcements name this cache)
            self._check_open()
            self._check_tags((tag,))
            counts = [0]
            for tier in reversed(self._tiers):
                if tier.can.evict and tier.breaker.allow():
                    try:
                        n = await tier.store.evict_async(tag, self._prefix)
                        counts.append(0 if self._copy_of_local(tier) else n)
                    except Exception as exc:
                        await self._unsure_async(tier, tag=tag)
                        self._failed(tier, exc, "evict")
            return max(counts)

    async def clear_async(self) -> int:
        """Remove every entry of this cache (its namespace) from every tier; return how many."""
        self._check_open()
        self._unbind_all()
        return await self._clear_under_async(self._prefix)

    async def _clear_under_async(self, prefix: str) -> int:
        """Remove the stored keys starting with `prefix` from every tier; return how many."""
        with writing(self._writer):  # (its announcements name this cache)
            self._check_open()
            counts = [0]
            for tier in reversed(self._tiers):
                if tier.breaker.allow():
                    try:
                        n = await tier.store.clear_async(prefix)
                        counts.append(0 if self._copy_of_local(tier) else n)
                    except Exception as exc:
                        await self._unsure_async(tier, prefix=prefix)
                        self._failed(tier, exc, "clear")
            return max(counts)

    async def info_async(self, key: object) -> EntryInfo | None:
        """What the first tier holding `key` knows about it, without the value; None if absent."""
        k = self._key(key)
        found = await self._peek_async(k)
        return None if found is None else self._info(found[0], self._user_key(k), found[1])

    async def get_or_set_async(
        self,
        key: object,
        factory: Callable[[], Any],
        *,
        ttl: Any = MISSING,
        tags: Any = (),
        meta: Any = None,
        lease: float | None = None,
        stale: Any = None,
        early: bool | float = False,
        **unexpected: NoReturn,
    ) -> Any:
        """The value of `key`, computing it with `factory()` once if it is missing.

        Concurrent callers of a missing key wait for one computation: threads and coroutines
        of this process, and other processes (or machines) sharing a tier with locks. A lock
        holder that dies loses the lock after `lease` seconds (default: the cache's); a live
        one keeps renewing it, and one that lost it anyway (paused, or `factory` holding the
        GIL past the lease) does not store its result over its successor's. If `factory`
        raises, every waiting caller gets the exception.

        `stale` (seconds): for that long after `ttl`, callers get the old value at once while
        one caller refreshes it in the background; `early` (True or XFetch's beta): refresh
        hot values shortly before `ttl` (docs/memoize.md#freshness). Both need a ttl.
        """
        if unexpected:
            raise TypeError(unexpected_options("Cache.get_or_set()", unexpected))
        if not callable(factory):
            raise TypeError(f"factory must be callable, not {type(factory).__qualname__!r}")
        k = self._key(key)
        self._expires_at(ttl)  # validate now; the expiry itself counts from the computation
        checked_tags, checked_meta = self._check_tags(tags), self._check_meta(meta)
        lease_s = self._check_lease(lease)
        fresh = self._check_freshness(ttl, stale, early, "Cache.get_or_set()")
        return await self._get_or_compute_async(
            k, factory, ttl, checked_tags, checked_meta, lease_s, fresh
        )

    @asynccontextmanager
    async def getfile_async(
        self,
        key: object,
        *,
        delete: bool = True,
        suffix: str = "",
        directory: str | os.PathLike[str] | None = None,
    ) -> AsyncIterator[Path]:
        """A file (mode 0600) holding the bytes or str value of `key`, removed on exit if
        `delete`. KeyError if the key is absent, TypeError if its value is not bytes or str."""
        self._check_getfile(delete, suffix, directory)
        value = await self.get_async(key, MISSING)
        if value is MISSING:
            raise KeyError(key)
        path = await to_thread_async(write_temp_file, file_bytes(key, value), suffix, directory)
        try:
            yield path
        finally:
            if delete:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    async def stats_async(self) -> Stats:
        """Totals and per-tier counters (see `Stats`)."""
        self._check_open()
        counters = []
        for tier in self._tiers:
            try:
                counters.append(await tier.store.stats_async())
            except Exception as exc:
                tier.errors += 1
                tier.breaker.failure(exc, "report stats")
                counters.append(StoreCounters())
        return self._stats(counters)

    async def check_async(self) -> list[TierHealth]:
        """Ask every tier for a (missing) key, failing ones included, for readiness probes:
        per tier whether it answered, how fast, and the error if it did not."""
        self._check_open()
        found = []
        for tier in self._tiers:
            began = time.perf_counter()
            try:
                await tier.store.get_async(self._prefix + _PROBE)
            except Exception as exc:
                error: str | None = f"{type(exc).__name__}: {exc}"
            else:
                error = None
            found.append(
                TierHealth(
                    tier=tier.index, store=tier.name, ok=error is None,
                    seconds=time.perf_counter() - began, error=error,
                    skipped=not tier.breaker.allow(),
                )
            )  # fmt: skip
        return found

    async def close_async(self) -> None:
        """Close the tiers this cache opened from paths or URLs (stores passed in stay open)."""
        if self._closed:
            return
        self._closed = True
        self._uninstall_fast_paths()
        self._close_channels()
        self._unbind_all()
        self._unlink_memos()
        if self._usage_at_exit is not None:
            self._usage_at_exit.detach()
            await self._usage.flush_async()
        for tier in self._tiers:
            if tier.owned:
                await tier.store.close_async()
