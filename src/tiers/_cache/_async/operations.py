"""Cache operations, written once as coroutines: tiering, promotion, single-flight.

``_sync_ops.py`` is generated from this file by ``scripts/unasync.py`` (``await`` dropped,
``x_async`` renamed ``x``, ``_async_prims`` swapped for ``_sync_prims``). Edit this file, then
run ``python scripts/unasync.py``; a test fails when the two disagree.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from .._codec import Rejected
from .._flight import INTERRUPTED
from .._hashing import hash_key
from .._stores import Entry, StoreCounters
from .._stores._generations import new_stamp
from .._stores._protocol import UNCHANGED
from .._stores._writer import writing
from .._types import MISSING, EntryInfo, Stats, TierHealth
from ._async_prims import (
    call_factory_async,
    sleep_async,
    start_renewer_async,
    to_thread_async,
    wait_flight_async,
)
from ._coherence import LOCAL
from ._core import (
    CacheCore,
    Fence,
    Meta,
    Tier,
    file_bytes,
    unexpected_options,
    write_temp_file,
)

_PROBE = "\0tiers health check"  # the key `check` reads: never written


class AsyncOps(CacheCore):
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
                    if tier.pops:
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
                    if self._copy_of_local(tier) and tier.guards:  # its guard refuses it now
                        await tier.store.delete_async(k)
                    elif tier.touches:
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
            if tier.expires and tier.breaker.allow():
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
                if tier.evicts and tier.breaker.allow():
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
        **unexpected: NoReturn,
    ) -> Any:
        """The value of `key`, computing it with `factory()` once if it is missing.

        Concurrent callers of a missing key wait for one computation: threads and coroutines
        of this process, and other processes (or machines) sharing a tier with locks. A lock
        holder that dies loses the lock after `lease` seconds (default: the cache's); a live
        one keeps renewing it, and one that lost it anyway (paused, or `factory` holding the
        GIL past the lease) does not store its result over its successor's. If `factory`
        raises, every waiting caller gets the exception.
        """
        if unexpected:
            raise TypeError(unexpected_options("Cache.get_or_set()", unexpected))
        if not callable(factory):
            raise TypeError(f"factory must be callable, not {type(factory).__qualname__!r}")
        k = self._key(key)
        self._expires_at(ttl)  # validate now; the expiry itself counts from the computation
        checked_tags, checked_meta = self._check_tags(tags), self._check_meta(meta)
        lease_s = self._check_lease(lease)
        return await self._get_or_compute_async(
            k, factory, ttl, checked_tags, checked_meta, lease_s
        )

    async def _get_or_compute_async(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float,
    ) -> Any:  # fmt: skip
        """`get_or_set` past argument checks (memoize checks its options once and calls this)."""
        value = await self._lookup_async(k)
        if value is not MISSING:
            return value
        self._misses += 1
        handed_over = False  # a leader was interrupted: another may have stored it since
        while True:
            flight, leader = self._flights.join(k)
            if not leader:
                value = await wait_flight_async(flight)
                if value is not INTERRUPTED:
                    return value
                handed_over = True
                continue
            try:
                value = await self._lookup_async(k, counted=False) if handed_over else MISSING
                if value is MISSING:
                    value = await self._compute_async(k, factory, ttl, tags, meta, lease)
            except Exception as exc:
                flight.set_exception(exc)
                raise
            except BaseException:
                flight.set_result(INTERRUPTED)
                raise
            else:
                flight.set_result(value)
                return value
            finally:
                self._flights.finish(k, flight)

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
        self._close_channels()
        self._unbind_all()
        self._unlink_memos()
        for tier in self._tiers:
            if tier.owned:
                await tier.store.close_async()

    # -- internals --------------------------------------------------------------------------

    async def _lookup_async(self, k: str, *, counted: bool = True) -> Any:
        """The value of stored key `k` or MISSING; promotes what slower tiers return.

        `counted=False` for the repeated looks of a caller waiting for another's computation:
        their misses are not new misses.
        """
        epochs: dict[int, int] | None = None
        for tier in self._tiers:
            breaker = tier.breaker
            if tier.suspect:  # it may have missed invalidations: not read at all (and a copy
                epochs = self._epoch_before_copy(tier, k, epochs)  # put in once it is back
                continue  # must not miss one either)
            if breaker.open_until and not breaker.allow():
                continue
            if tier.stale and k in tier.stale:  # its copy may predate a write: a miss here
                await self._drop_async(tier, k)
                continue
            if tier.witness is not None:
                epochs = self._witnessed(tier, k, epochs)
            try:
                entry = await tier.store.get_async(k)
            except Exception as exc:
                self._failed(tier, exc, "get")
                continue
            if breaker.failures:
                breaker.success()  # a miss is an answer too: the failures were not consecutive
            if entry is None:
                if tier.revalidating:
                    value = await self._revalidate_async(tier, k)
                    if value is not MISSING:
                        return value
                tier.misses += counted
                epochs = self._epoch_before_copy(tier, k, epochs)  # a slower tier may promote
                continue
            try:
                value = self._decode(tier, k, entry)
            except Rejected as exc:
                await self._refuse_async(tier, k, exc)
                continue
            tier.hits += 1
            if tier.index:
                await self._promote_async(tier, k, entry, value, epochs)
            return value
        return MISSING

    async def _lookup_many_async(self, stored: list[str]) -> dict[str, Any]:
        """{stored key: value} of the keys some tier has; like `_lookup_async` (kept apart: a
        single get is the hot path) but each tier is asked for all its misses at once."""
        found: dict[str, Any] = {}
        remaining = list(stored)
        epochs: dict[int, dict[str, int]] = {}
        for tier in self._tiers:
            if not remaining:
                break
            if not tier.breaker.allow() or tier.suspect:
                continue
            asked = [k for k in remaining if not (tier.stale and k in tier.stale)]
            if tier.witness is not None:
                self._witnessed_many(tier, asked, epochs)
            try:
                if tier.batches:
                    entries = await tier.store.get_many_async(asked)
                else:
                    entries = [await tier.store.get_async(k) for k in asked]
            except Exception as exc:
                self._failed(tier, exc, "get")
                continue
            if tier.breaker.failures:
                tier.breaker.success()
            for k, entry in zip(asked, entries, strict=True):
                value = await self._answer_async(tier, k, entry, epochs)
                if value is not MISSING:
                    found[k] = value
            remaining = [k for k in remaining if k not in found]
        return found

    async def _answer_async(
        self, tier: Tier, k: str, entry: Entry | None, epochs: dict[int, dict[str, int]]
    ) -> Any:
        """(`_lookup_many_async`.) The value of what `tier` answered for `k`, or MISSING."""
        if entry is None:
            if tier.revalidating:
                value = await self._revalidate_async(tier, k)
                if value is not MISSING:
                    return value
            tier.misses += 1
            if tier.epochs and tier is not self._tiers[-1]:
                epochs.setdefault(tier.index, {}).setdefault(k, tier.store.epoch(k))
            return MISSING
        try:
            value = self._decode(tier, k, entry)
        except Rejected as exc:
            await self._refuse_async(tier, k, exc)
            return MISSING
        tier.hits += 1
        if tier.index:
            taken = {i: by_key[k] for i, by_key in epochs.items() if k in by_key}
            await self._promote_async(tier, k, entry, value, taken)
        return value

    async def _revalidate_async(self, tier: Tier, k: str) -> Any:
        """The value of `tier`'s copy of `k` that is due for revalidation, once its guardian
        says it is unchanged (without sending it where the store can); the new value if it
        changed; MISSING if it is gone, or cannot be asked (the copy is then not served)."""
        copy = tier.store.due_copy(k)
        source = tier.guardian
        if copy is None or source is None or source.suspect or not source.breaker.allow():
            return MISSING
        epoch = tier.store.epoch(k) if tier.epochs else None
        try:
            if source.revalidates and copy.version is not None:
                found = await source.store.revalidate_async(k, copy.version)
            else:
                found = await source.store.get_async(k)
        except Exception as exc:
            self._failed(source, exc, "revalidate")
            return MISSING
        if found is UNCHANGED:
            tier.store.renew(k, copy, self._max_age)
            tier.hits += 1
            return copy.value
        if found is None:
            await self._drop_async(tier, k)
            return MISSING
        try:
            value = self._decode(source, k, found)
        except Rejected as exc:
            await self._refuse_async(source, k, exc)
            await self._drop_async(tier, k)
            return MISSING
        source.hits += 1
        await self._promote_async(
            source, k, found, value, None if epoch is None else {tier.index: epoch}
        )
        return value

    async def _peek_async(self, k: str) -> tuple[Tier, Entry] | None:
        """The first tier holding `k` live and its entry, read without the value if it can."""
        for tier in self._tiers:
            if not tier.breaker.allow() or (tier.stale and k in tier.stale):
                continue
            try:
                if tier.infos:
                    entry = await tier.store.info_async(k)
                else:
                    entry = await tier.store.get_async(k)
            except Exception as exc:
                self._failed(tier, exc, "look up")
                continue
            if entry is not None:
                return tier, entry
        return None

    async def _promote_async(
        self, source: Tier, k: str, entry: Entry, value: Any, epochs: dict[int, int] | None
    ) -> None:
        """Copy an entry `source` returned into the faster tiers, slowest first (each copy
        conditional on the key being unchanged since the look began, where its tier can)."""
        live, encoded = self._promotion(source, k, entry, value)
        stamps = {i: e for i, e in (epochs or {}).items() if self._tiers[i].kind == LOCAL}
        for tier in reversed(self._tiers[: source.index]):
            if not tier.breaker.allow() or tier.suspect:
                continue
            copy = live if tier.holds_objects else encoded
            try:
                epoch = (epochs or {}).get(tier.index)
                await self._put_copy_async(tier, k, copy, epoch, stamps, source)
            except Exception as exc:  # a failed copy costs a later miss, never the read
                tier.errors += 1
                tier.breaker.failure(exc, "copy a value up")
            else:
                tier.stale.discard(k)

    async def _put_copy_async(
        self, tier: Tier, k: str, copy: Entry, epoch: int | None, stamps: dict[int, int],
        source: Tier | None,
    ) -> bool:  # fmt: skip
        """Write `copy` of `k` (from `source`, None for the caller's own write) into `tier`,
        guarded as its guardian requires (see _coherence). `stamps`: the generation each LOCAL
        tier was written or read under, by tier index; this write's is added."""
        copy, guard, due = self._copy_terms(tier, k, copy, stamps, source)
        if tier.guards and (guard is not None or due is not None):
            stored: bool = await tier.store.set_async(k, copy, epoch, guard, due)
        elif tier.watched:  # (the copies above take the stamp it writes)
            written = new_stamp()
            stored = await tier.store.set_async(k, copy, epoch, written)
            if stored:
                stamps[tier.index] = written
        elif tier.epochs:
            stored = await tier.store.set_async(k, copy, epoch)
        else:
            stored = await tier.store.set_async(k, copy)
        return stored

    async def _store_async(
        self, items: list[tuple[str, Any]], expires_at: float | None, tags: tuple[str, ...],
        meta: dict[str, Any] | None, fence: Fence | None = None,
    ) -> None:  # fmt: skip
        """Write (stored key, value) pairs to every tier, slowest first, each tier in one batch
        when its store can. Every value is encoded before anything is written. With a
        `fence` (one computed item), its lock's tier is written first and only while the
        lease is current; if it is not, nothing is written."""
        with writing(self._writer):  # (its announcements name this cache)
            encoded = [(k, *self._entries(k, value, expires_at, tags, meta)) for k, value in items]
            last = len(self._tiers) - 1
            epochs = {
                (t.index, k): t.store.epoch(k)
                for t in self._tiers if t.epochs and t.holds_objects and t.index < last
                for k, _value in items
            }  # fmt: skip
            stamps: dict[str, dict[int, int]] = {}
            written = False
            order = list(reversed(self._tiers))
            if fence is not None:
                order.remove(fence.tier)
                order.insert(0, fence.tier)
            for tier in order:
                if not tier.breaker.allow():
                    for k, _live, _encoded in encoded:
                        self._missed(tier, k)
                    continue
                if tier.suspect:  # bypassed until its invalidations flow: its old copies go
                    for k, _live, _encoded in encoded:
                        await self._drop_async(tier, k)
                    continue
                batch = [(k, self._for_tier(tier, live, enc)) for k, live, enc in encoded]
                try:
                    if fence is not None and tier is fence.tier:
                        if not await self._write_fenced_async(fence, batch[0], stamps):
                            return
                    else:
                        await self._write_async(tier, batch, epochs, stamps)
                except Exception as exc:
                    await self._write_failed_async(tier, batch, written, stamps)
                    self._failed(tier, exc, "set")
                    continue
                written = True
                self._wrote(tier, encoded)

    async def _write_fenced_async(
        self, fence: Fence, item: tuple[str, Entry], stamps: dict[str, dict[int, int]]
    ) -> bool:
        """Write a computed entry to its lock's tier if the lease is still current; False,
        counted and logged, if it is not (nothing written)."""
        tier, (k, entry) = fence.tier, item
        stamped = stamps.setdefault(k, {})
        if not tier.fences:  # a store without fenced writes: check the lease, then write
            held = await tier.store.renew_lock_async(fence.name, fence.token, fence.lease)
            if held:
                await self._write_async(tier, [item], {}, stamps)
        elif tier.watched:  # (the copies above take the stamp it writes)
            stamped[tier.index] = tier.store.epoch(k)  # what they keep if this write fails
            written = new_stamp()
            held = await tier.store.set_if_held_async(k, entry, fence.name, fence.token, written)
            if held:
                stamped[tier.index] = written
        else:
            held = await tier.store.set_if_held_async(k, entry, fence.name, fence.token)
        if not held:
            self._lease_lost(fence, k)
        return bool(held)

    async def _write_failed_async(
        self, tier: Tier, batch: list[tuple[str, Entry]], written: bool,
        stamps: dict[str, dict[int, int]],
    ) -> None:  # fmt: skip
        """`tier` failed to take `batch` (the caller then reports it)."""
        if written or not self._raise:
            # Other tiers hold (or will hold) the new values: this tier's old copies must not
            # be served later, nor, when raising now, the faster tiers' copies.
            for doomed in self._tiers[: tier.index + 1] if self._raise else (tier,):
                for k, _entry in batch:
                    await self._drop_async(doomed, k)
        # Under "raise" with nothing written yet, every tier keeps its previous values, but for
        # the copies answering to this tier: it may yet apply the write (a reply lost). (Under
        # "degrade" the faster tiers take the new values next.)
        if self._raise:
            await self._unsure_async(tier, [k for k, _entry in batch])
        if tier.watched:  # the copies above answer to what it holds now
            for k, _entry in batch:
                stamps.setdefault(k, {})[tier.index] = tier.store.epoch(k)

    async def _unsure_async(
        self, tier: Tier, keys: list[str] | None = None, tag: str | None = None,
        prefix: str | None = None,
    ) -> None:  # fmt: skip
        """`tier` failed a change of `keys` (None: of everything under the prefix, or what has
        `tag`) that it may apply all the same (a timeout): the copies answering to it go, as
        the change's announcement would have taken them (this cache skips its own)."""
        for above in self._tiers[: tier.index]:
            if above.guardian is not tier:
                continue
            try:
                if keys is not None:
                    for k in keys:
                        await above.store.delete_async(k)
                elif tag is not None and above.evicts:
                    await above.store.evict_async(tag, self._prefix)
                else:
                    await above.store.clear_async(prefix or self._prefix)
            except Exception:  # it cannot be emptied: it is not read until a write heals it
                for k in keys or ():
                    self._missed(above, k)

    async def _write_async(
        self, tier: Tier, batch: list[tuple[str, Entry]], epochs: dict[tuple[int, str], int],
        stamps: dict[str, dict[int, int]],
    ) -> None:  # fmt: skip
        """Write `batch` to `tier`: in one call when its store takes batches and its copies
        need no guard, else entry by entry (see `_put_copy_async`)."""
        if tier.watched:  # should this write fail, the copies above keep what it had
            for k, _entry in batch:
                stamps.setdefault(k, {})[tier.index] = tier.store.epoch(k)
        if len(batch) > 1 and tier.batches and tier.guardian is None and tier.kind != LOCAL:
            await tier.store.set_many_async(batch)
            return
        for k, entry in batch:
            epoch = epochs.get((tier.index, k))
            await self._put_copy_async(tier, k, entry, epoch, stamps.setdefault(k, {}), None)

    async def _delete_stored_async(self, k: str) -> bool:
        with writing(self._writer):  # (its announcements name this cache)
            found = False
            for tier in reversed(self._tiers):
                if not tier.breaker.allow():
                    self._missed(tier, k)
                    continue
                try:
                    removed = await tier.store.delete_async(k)
                except Exception as exc:
                    await self._unsure_async(tier, [k])
                    self._failed(tier, exc, "delete")  # raises under "raise": the caller knows
                    self._missed(tier, k)
                    continue
                if tier.stale:
                    tier.stale.discard(k)
                if tier.breaker.failures:
                    tier.breaker.success()
                if removed:
                    tier.deletes += 1
                    found = found or not self._copy_of_local(tier)
            return found

    async def _refuse_async(self, tier: Tier, k: str, exc: Rejected) -> None:
        """`tier`'s entry of `k` must not be used: counted, and removed unless it is intact
        but signed with another secret (see `_rejected`)."""
        if self._rejected(tier, k, exc):
            await self._drop_async(tier, k)

    async def _drop_async(self, tier: Tier, k: str) -> None:
        """Remove `k` from `tier` if it can; else remember that its copy must not be served."""
        try:
            await tier.store.delete_async(k)
        except Exception:
            self._missed(tier, k)
        else:
            tier.stale.discard(k)

    async def _compute_async(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float,
    ) -> Any:  # fmt: skip
        """Compute and store, holding the cross-process lock of the lock tier if there is one;
        the result is stored only while that lock's lease is current (see `Fence`)."""
        tier = self._lock_tier
        if tier is None:
            return await self._produce_async(k, factory, ttl, tags, meta)
        if not tier.breaker.allow():  # known to be failing: no lock to wait for
            tier.lock_fallbacks += 1
            return await self._produce_async(k, factory, ttl, tags, meta)
        name = "flight/" + k
        token = uuid.uuid4().hex
        taken, value = await self._take_lock_async(tier, k, name, token, lease)
        if not taken:
            if value is not MISSING:  # stored by the holder while we waited
                return value
            return await self._produce_async(k, factory, ttl, tags, meta)
        fence = Fence(tier, name, token, lease, time.monotonic())
        try:
            value = await self._lookup_async(k, counted=False)  # stored by the previous holder?
            if value is not MISSING:
                return value
            renewer = start_renewer_async(lambda: self._renew_async(fence, k), lease / 3)
            try:
                return await self._produce_async(k, factory, ttl, tags, meta, fence)
            finally:
                renewer.stop()
        finally:
            with contextlib.suppress(Exception):
                await tier.store.release_lock_async(name, token)

    async def _take_lock_async(
        self, tier: Tier, k: str, name: str, token: str, lease: float
    ) -> tuple[bool, Any]:
        """Wait for lock `name` of `tier`: (True, MISSING) once it is ours, (False, value) if
        its holder stored the value meanwhile, (False, MISSING) if the tier failed for a whole
        `lease` (the caller computes without the lock). Failures are retried with backoff."""
        delay = 0.002
        failing_since: float | None = None
        while True:
            try:
                acquired = await tier.store.acquire_lock_async(name, token, lease)
            except Exception as exc:
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if self._lock_failed(tier, exc, now - failing_since, lease):
                    return False, MISSING
                delay = max(delay, 0.05)
            else:
                if failing_since is not None:  # it answers again (and reads may use it)
                    tier.breaker.success()
                    failing_since = None
                if acquired:
                    return True, MISSING
            await sleep_async(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05 if failing_since is None else 1.0)
            value = await self._lookup_async(k, counted=False)
            if value is not MISSING:
                return False, value

    async def _renew_async(self, fence: Fence, k: str) -> bool:
        """Extend `fence`'s lease (from the renewer); False, logged, once it is lost."""
        held = await fence.tier.store.renew_lock_async(fence.name, fence.token, fence.lease)
        return self._renewed(fence, k, held)

    async def _produce_async(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        fence: Fence | None = None,
    ) -> Any:  # fmt: skip
        started = time.perf_counter()
        value = self._normalized(k, await call_factory_async(factory))
        if callable(meta):  # provenance: completed with the computation's duration
            meta = meta(time.perf_counter() - started)
        await self._store_async([(k, value)], self._expires_at(ttl), tags, meta, fence)
        return value
