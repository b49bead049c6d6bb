"""One computation per missing key (written once, as coroutines).

Within a process, callers of a key join one *flight* (`tiers._flight.Flights`): one leader
computes, the others wait for its value or exception; a waiter whose leader was interrupted
takes over. Across processes, the leader also takes a leased lock of the *lock tier* (the
slowest tier with locks), renews it while computing, and stores its result only while the
lease is current (a `Fence`: see `_write_fenced_async` in `tiering`). When the lock tier
fails, callers retry with backoff for a lease, then compute without it (counted).

With `Freshness` options (``stale=``, ``early=``: see `.._freshness`), a caller that finds a
stale value, or one XFetch picks, gets it at once and starts a *refresh* in the background (a
thread, or a task for coroutines): at most one per key in this process, which computes only if
it takes the lock tier's lock for the key without waiting (so one among processes), and stores
under that lease. A refresh that fails is logged and counted; this process waits a backoff
before trying again, and the old value is served until the stores drop it.

Generated into ``_sync/single_flight.py`` by scripts/unasync.py.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..._flight import INTERRUPTED
from ..._stores import Entry
from ..._types import MISSING
from .._core import Meta
from .._freshness import BUSY, FAILED, STORED, Freshness, Relink, fresh_until, stale_since
from .._tier import Fence, Tier
from .prims import (
    call_factory_async,
    sleep_async,
    start_background_async,
    start_renewer_async,
    wait_flight_async,
)
from .tiering import AsyncTiering


class AsyncSingleFlight(AsyncTiering):
    """`get_or_set` and memoize past their argument checks."""

    async def _get_or_compute_async(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness | None = None, due: Relink | None = None,
    ) -> Any:  # fmt: skip
        """`get_or_set` past argument checks (memoize checks its options once and calls this).
        `due`: memoize's fast path found the value due for a refresh (XFetch drew already);
        called once the refresh is stored (to index the new value)."""
        if fresh is None:
            value = await self._lookup_async(k)
        else:
            value = await self._lookup_fresh_async(k, factory, ttl, tags, meta, lease, fresh, due)
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
                    value = await self._compute_async(k, factory, ttl, tags, meta, lease, fresh)
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

    async def _lookup_fresh_async(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness, due: Relink | None = None,
    ) -> Any:  # fmt: skip
        """`_lookup_async`, starting a background refresh of a value found stale or picked
        by XFetch (the value is returned all the same); `due`: picked already."""
        found: list[Entry] = []
        value = await self._lookup_async(k, found=found)
        if value is not MISSING and found:
            entry_meta = found[-1].meta
            now = self._clock.time()
            picked = due is not None and fresh_until(entry_meta) is not None
            if picked or fresh.due(entry_meta, now, self._rng):
                if stale_since(entry_meta, now) is not None:
                    self._stale_served += 1
                self._refresh_soon_async(
                    k, factory, ttl, tags, meta, lease, fresh, fresh_until(entry_meta), due
                )
        return value

    async def _compute_async(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness | None = None,
    ) -> Any:  # fmt: skip
        """Compute and store, holding the cross-process lock of the lock tier if there is one;
        the result is stored only while that lock's lease is current (see `Fence`)."""
        tier = self._lock_tier
        if tier is None:
            return await self._produce_async(k, factory, ttl, tags, meta, fresh)
        if not tier.breaker.allow():  # known to be failing: no lock to wait for
            tier.lock_fallbacks += 1
            return await self._produce_async(k, factory, ttl, tags, meta, fresh)
        name = "flight/" + k
        token = uuid.uuid4().hex
        taken, value = await self._take_lock_async(tier, k, name, token, lease)
        if not taken:
            if value is not MISSING:  # stored by the holder while we waited
                return value
            return await self._produce_async(k, factory, ttl, tags, meta, fresh)
        fence = Fence(tier, name, token, lease, time.monotonic())
        try:
            value = await self._lookup_async(k, counted=False)  # stored by the previous holder?
            if value is not MISSING:
                return value
            return await self._produce_renewing_async(k, factory, ttl, tags, meta, fresh, fence)
        finally:
            with contextlib.suppress(Exception):
                await tier.store.release_lock_async(name, token)

    async def _produce_renewing_async(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        fresh: Freshness | None, fence: Fence,
    ) -> Any:  # fmt: skip
        """`_produce_async` under `fence`, renewing its lease every third of it meanwhile."""
        renewer = start_renewer_async(lambda: self._renew_async(fence, k), fence.lease / 3)
        try:
            return await self._produce_async(k, factory, ttl, tags, meta, fresh, fence)
        finally:
            renewer.stop()

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
        fresh: Freshness | None = None, fence: Fence | None = None,
    ) -> Any:  # fmt: skip
        started = time.perf_counter()
        value = self._normalized(k, await call_factory_async(factory))
        duration = time.perf_counter() - started
        if callable(meta):  # provenance: completed with the computation's duration
            meta = meta(duration)
        expires_at = self._expires_at(ttl)
        if fresh is not None and expires_at is not None:
            expires_at, meta = fresh.terms(expires_at, meta, duration)
        await self._store_async([(k, value)], expires_at, tags, meta, fence)
        return value

    # -- refreshing in the background (stale=, early=) --------------------------------------

    def _refresh_soon_async(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness, seen: float | None, relink: Relink | None = None,
    ) -> None:  # fmt: skip
        """Start a background refresh of `k` unless one runs in this process or the last
        one failed less than a backoff ago. `seen`: the fresh_until of the value found."""
        if not self._refreshes.claim(k, time.monotonic()):
            return
        start_background_async(
            lambda: self._refresh_async(k, factory, ttl, tags, meta, lease, fresh, seen, relink),
            "tiers-refresh",
        )

    async def _refresh_claimed_async(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness, seen: float | None, relink: Relink | None = None,
    ) -> bool:  # fmt: skip
        """(From a background worker: memoize's fast path.) `_refresh_async` here and now,
        unless a refresh of `k` runs in this process or waits out a backoff; True if a new
        value was stored."""
        if not self._refreshes.claim(k, time.monotonic()):
            return False
        return await self._refresh_async(k, factory, ttl, tags, meta, lease, fresh, seen, relink)

    async def _refresh_async(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness, seen: float | None, relink: Relink | None = None,
    ) -> bool:  # fmt: skip
        """Recompute `k` in the background (see the module docstring); never raises. True
        if a new value was stored, and then `relink` is called."""
        outcome = FAILED
        try:
            flight, leader = self._flights.join(k)
            if not leader:  # a caller of this process computes it already
                outcome = BUSY
                return False
            try:
                value = await self._refresh_locked_async(
                    k, factory, ttl, tags, meta, lease, fresh, seen
                )
            except BaseException as exc:
                flight.set_exception(exc)
                raise
            else:
                flight.set_result(INTERRUPTED if value is MISSING else value)
            finally:
                self._flights.finish(k, flight)
            outcome = BUSY if value is MISSING else STORED
            if relink is not None and outcome is STORED:
                relink()
        except Exception as exc:
            self._refresh_failed(k, exc)
        finally:
            self._refreshes.done(k, outcome, time.monotonic())
        return outcome is STORED

    async def _refreshed_elsewhere_async(self, tier: Tier, k: str, seen: float | None) -> Any:
        """The value `tier` (the lock tier) holds for `k` if another caller refreshed it since
        it was `seen` stale, copied into the faster tiers; else MISSING. Read from `tier`
        itself: a faster tier's copy may lag behind it (until revalidated)."""
        try:
            entry = await tier.store.get_async(k)
        except Exception as exc:
            self._failed(tier, exc, "get")
            return MISSING
        if entry is None or fresh_until(entry.meta) == seen:
            return MISSING
        return await self._answer_async(tier, k, entry, None, counted=False)

    async def _refresh_locked_async(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness, seen: float | None,
    ) -> Any:  # fmt: skip
        """The refreshed value, or MISSING when another caller (maybe in another process)
        holds the key's lock or has refreshed it already."""
        if self._closed:
            return MISSING
        tier = self._lock_tier
        if tier is None or not tier.breaker.allow():
            self._refreshed += 1
            return await self._produce_async(k, factory, ttl, tags, meta, fresh)
        name = "flight/" + k
        token = uuid.uuid4().hex
        try:
            taken = await tier.store.acquire_lock_async(name, token, lease)
        except Exception as exc:
            self._failed(tier, exc, "take a lock")
            raise
        if not taken:  # its holder refreshes it (or computes it, the value having gone)
            return MISSING
        fence = Fence(tier, name, token, lease, time.monotonic())
        try:
            value = await self._refreshed_elsewhere_async(tier, k, seen)
            if value is not MISSING:
                return value
            self._refreshed += 1
            return await self._produce_renewing_async(k, factory, ttl, tags, meta, fresh, fence)
        finally:
            with contextlib.suppress(Exception):
                await tier.store.release_lock_async(name, token)
