# Generated from _async/single_flight.py by scripts/unasync.py: do not edit by hand.
"""Blocking twin of ``_async/single_flight.py`` (generated; the docstring is there)."""

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
    call_factory,
    sleep,
    start_background,
    start_renewer,
    wait_flight,
)
from .tiering import SyncTiering


class SyncSingleFlight(SyncTiering):
    """`get_or_set` and memoize past their argument checks."""

    def _get_or_compute(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness | None = None, due: Relink | None = None,
    ) -> Any:  # fmt: skip
        """`get_or_set` past argument checks (memoize checks its options once and calls this).
        `due`: memoize's fast path found the value due for a refresh (XFetch drew already);
        called once the refresh is stored (to index the new value)."""
        if fresh is None:
            value = self._lookup(k)
        else:
            value = self._lookup_fresh(k, factory, ttl, tags, meta, lease, fresh, due)
        if value is not MISSING:
            return value
        self._misses += 1
        handed_over = False  # a leader was interrupted: another may have stored it since
        while True:
            flight, leader = self._flights.join(k)
            if not leader:
                value = wait_flight(flight)
                if value is not INTERRUPTED:
                    return value
                handed_over = True
                continue
            try:
                value = self._lookup(k, counted=False) if handed_over else MISSING
                if value is MISSING:
                    value = self._compute(k, factory, ttl, tags, meta, lease, fresh)
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

    def _lookup_fresh(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness, due: Relink | None = None,
    ) -> Any:  # fmt: skip
        """`_lookup_async`, starting a background refresh of a value found stale or picked
        by XFetch (the value is returned all the same); `due`: picked already."""
        found: list[Entry] = []
        value = self._lookup(k, found=found)
        if value is not MISSING and found:
            entry_meta = found[-1].meta
            now = self._clock.time()
            picked = due is not None and fresh_until(entry_meta) is not None
            if picked or fresh.due(entry_meta, now, self._rng):
                if stale_since(entry_meta, now) is not None:
                    self._stale_served += 1
                self._refresh_soon(
                    k, factory, ttl, tags, meta, lease, fresh, fresh_until(entry_meta), due
                )
        return value

    def _compute(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness | None = None,
    ) -> Any:  # fmt: skip
        """Compute and store, holding the cross-process lock of the lock tier if there is one;
        the result is stored only while that lock's lease is current (see `Fence`)."""
        tier = self._lock_tier
        if tier is None:
            return self._produce(k, factory, ttl, tags, meta, fresh)
        if not tier.breaker.allow():  # known to be failing: no lock to wait for
            tier.lock_fallbacks += 1
            return self._produce(k, factory, ttl, tags, meta, fresh)
        name = "flight/" + k
        token = uuid.uuid4().hex
        taken, value = self._take_lock(tier, k, name, token, lease)
        if not taken:
            if value is not MISSING:  # stored by the holder while we waited
                return value
            return self._produce(k, factory, ttl, tags, meta, fresh)
        fence = Fence(tier, name, token, lease, time.monotonic())
        try:
            value = self._lookup(k, counted=False)  # stored by the previous holder?
            if value is not MISSING:
                return value
            return self._produce_renewing(k, factory, ttl, tags, meta, fresh, fence)
        finally:
            with contextlib.suppress(Exception):
                tier.store.release_lock(name, token)

    def _produce_renewing(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        fresh: Freshness | None, fence: Fence,
    ) -> Any:  # fmt: skip
        """`_produce_async` under `fence`, renewing its lease every third of it meanwhile."""
        renewer = start_renewer(lambda: self._renew(fence, k), fence.lease / 3)
        try:
            return self._produce(k, factory, ttl, tags, meta, fresh, fence)
        finally:
            renewer.stop()

    def _take_lock(
        self, tier: Tier, k: str, name: str, token: str, lease: float
    ) -> tuple[bool, Any]:
        """Wait for lock `name` of `tier`: (True, MISSING) once it is ours, (False, value) if
        its holder stored the value meanwhile, (False, MISSING) if the tier failed for a whole
        `lease` (the caller computes without the lock). Failures are retried with backoff."""
        delay = 0.002
        failing_since: float | None = None
        while True:
            try:
                acquired = tier.store.acquire_lock(name, token, lease)
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
            sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05 if failing_since is None else 1.0)
            value = self._lookup(k, counted=False)
            if value is not MISSING:
                return False, value

    def _renew(self, fence: Fence, k: str) -> bool:
        """Extend `fence`'s lease (from the renewer); False, logged, once it is lost."""
        held = fence.tier.store.renew_lock(fence.name, fence.token, fence.lease)
        return self._renewed(fence, k, held)

    def _produce(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        fresh: Freshness | None = None, fence: Fence | None = None,
    ) -> Any:  # fmt: skip
        started = time.perf_counter()
        value = self._normalized(k, call_factory(factory))
        duration = time.perf_counter() - started
        if callable(meta):  # provenance: completed with the computation's duration
            meta = meta(duration)
        expires_at = self._expires_at(ttl)
        if fresh is not None and expires_at is not None:
            expires_at, meta = fresh.terms(expires_at, meta, duration)
        self._store([(k, value)], expires_at, tags, meta, fence)
        return value

    # -- refreshing in the background (stale=, early=) --------------------------------------

    def _refresh_soon(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness, seen: float | None, relink: Relink | None = None,
    ) -> None:  # fmt: skip
        """Start a background refresh of `k` unless one runs in this process or the last
        one failed less than a backoff ago. `seen`: the fresh_until of the value found."""
        if not self._refreshes.claim(k, time.monotonic()):
            return
        start_background(
            lambda: self._refresh(k, factory, ttl, tags, meta, lease, fresh, seen, relink),
            "tiers-refresh",
        )

    def _refresh_claimed(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float, fresh: Freshness, seen: float | None, relink: Relink | None = None,
    ) -> bool:  # fmt: skip
        """(From a background worker: memoize's fast path.) `_refresh_async` here and now,
        unless a refresh of `k` runs in this process or waits out a backoff; True if a new
        value was stored."""
        if not self._refreshes.claim(k, time.monotonic()):
            return False
        return self._refresh(k, factory, ttl, tags, meta, lease, fresh, seen, relink)

    def _refresh(
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
                value = self._refresh_locked(
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

    def _refreshed_elsewhere(self, tier: Tier, k: str, seen: float | None) -> Any:
        """The value `tier` (the lock tier) holds for `k` if another caller refreshed it since
        it was `seen` stale, copied into the faster tiers; else MISSING. Read from `tier`
        itself: a faster tier's copy may lag behind it (until revalidated)."""
        try:
            entry = tier.store.get(k)
        except Exception as exc:
            self._failed(tier, exc, "get")
            return MISSING
        if entry is None or fresh_until(entry.meta) == seen:
            return MISSING
        return self._answer(tier, k, entry, None, counted=False)

    def _refresh_locked(
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
            return self._produce(k, factory, ttl, tags, meta, fresh)
        name = "flight/" + k
        token = uuid.uuid4().hex
        try:
            taken = tier.store.acquire_lock(name, token, lease)
        except Exception as exc:
            self._failed(tier, exc, "take a lock")
            raise
        if not taken:  # its holder refreshes it (or computes it, the value having gone)
            return MISSING
        fence = Fence(tier, name, token, lease, time.monotonic())
        try:
            value = self._refreshed_elsewhere(tier, k, seen)
            if value is not MISSING:
                return value
            self._refreshed += 1
            return self._produce_renewing(k, factory, ttl, tags, meta, fresh, fence)
        finally:
            with contextlib.suppress(Exception):
                tier.store.release_lock(name, token)
