"""Counting the callers that wait on a flight, so that a single-flight test lets its leader
finish once every caller has joined, not after a sleep that is long enough only most of the time.

The one place tests reach into where flights live: ``Cache._flights`` and a
`CachingReadableStore`'s read state (both private).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable

from tiers import Cache, CachingReadableStore
from tiers._flight import Flight, Flights


class Waiters:
    """How many callers joined a flight as waiters (not leading it), on the flights it counts."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.count = 0

    def joined(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Block until `count` waiters joined (an AssertionError after `timeout` seconds)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.count >= count, timeout):
                raise AssertionError(f"{self.count} callers waited, not {count}")

    async def wait_for_async(self, count: int, timeout: float = 10.0) -> None:
        """`wait_for` without blocking the event loop (whose coroutines may be the waiters)."""
        await asyncio.to_thread(self.wait_for, count, timeout)


class _CountedFlights(Flights):
    def __init__(self, waiters: Waiters) -> None:
        super().__init__()
        self.waiters = waiters

    def join(self, key: Hashable) -> tuple[Flight, bool]:
        flight, leads = super().join(key)
        if not leads:
            self.waiters.joined()
        return flight, leads


def count_waiters(*owners: Cache | CachingReadableStore) -> Waiters:
    """Count, from now on, the waiters on the flights of these caches or read-through stores
    (installed while none is in flight)."""
    waiters = Waiters()
    for owner in owners:
        if isinstance(owner, CachingReadableStore):
            owner._state.flights = _CountedFlights(waiters)
        else:
            owner._flights = _CountedFlights(waiters)
    return waiters
