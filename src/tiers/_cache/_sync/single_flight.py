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
from ..._types import MISSING
from .._core import Meta
from .._tier import Fence, Tier
from .prims import (
    call_factory,
    sleep,
    start_renewer,
    wait_flight,
)
from .tiering import SyncTiering


class SyncSingleFlight(SyncTiering):
    """`get_or_set` and memoize past their argument checks."""

    def _get_or_compute(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float,
    ) -> Any:  # fmt: skip
        """`get_or_set` past argument checks (memoize checks its options once and calls this)."""
        value = self._lookup(k)
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
                    value = self._compute(k, factory, ttl, tags, meta, lease)
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

    def _compute(
        self, k: str, factory: Callable[[], Any], ttl: Any, tags: tuple[str, ...], meta: Meta,
        lease: float,
    ) -> Any:  # fmt: skip
        """Compute and store, holding the cross-process lock of the lock tier if there is one;
        the result is stored only while that lock's lease is current (see `Fence`)."""
        tier = self._lock_tier
        if tier is None:
            return self._produce(k, factory, ttl, tags, meta)
        if not tier.breaker.allow():  # known to be failing: no lock to wait for
            tier.lock_fallbacks += 1
            return self._produce(k, factory, ttl, tags, meta)
        name = "flight/" + k
        token = uuid.uuid4().hex
        taken, value = self._take_lock(tier, k, name, token, lease)
        if not taken:
            if value is not MISSING:  # stored by the holder while we waited
                return value
            return self._produce(k, factory, ttl, tags, meta)
        fence = Fence(tier, name, token, lease, time.monotonic())
        try:
            value = self._lookup(k, counted=False)  # stored by the previous holder?
            if value is not MISSING:
                return value
            renewer = start_renewer(lambda: self._renew(fence, k), lease / 3)
            try:
                return self._produce(k, factory, ttl, tags, meta, fence)
            finally:
                renewer.stop()
        finally:
            with contextlib.suppress(Exception):
                tier.store.release_lock(name, token)

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
        fence: Fence | None = None,
    ) -> Any:  # fmt: skip
        started = time.perf_counter()
        value = self._normalized(k, call_factory(factory))
        if callable(meta):  # provenance: completed with the computation's duration
            meta = meta(time.perf_counter() - started)
        self._store([(k, value)], self._expires_at(ttl), tags, meta, fence)
        return value
