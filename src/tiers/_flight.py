"""In-process single-flight: one computation per key among threads and coroutines.

The leader computes; followers wait on the same `Flight`, a `concurrent.futures.Future`:
threads block on it (`wait`), coroutines await it through ``asyncio.wrap_future``
(`wait_async`), on any loop. The cache's `get_or_set` and memoize, and the
CachingReadableStore's fetches, all fly this way.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from concurrent.futures import Future
from typing import Any, Final

INTERRUPTED: Final = object()
"""The result of a flight whose leader was interrupted (cancelled, KeyboardInterrupt) rather
than failed: that is not the waiters' business, so they try again and one of them leads."""

STALLS: Final = object()
"""What a blocking `wait` returns instead of waiting for a coroutine of its own thread's event
loop, which the wait would stall for ever."""


class Flight(Future[Any]):
    """A computation in progress, remembering who leads it and on which thread."""

    def __init__(self, leader: object, in_coroutine: bool) -> None:
        super().__init__()
        self.leader = leader
        self.in_coroutine = in_coroutine
        self.thread = threading.get_ident()


class Flights:
    __slots__ = ("_active", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[Hashable, Flight] = {}

    def join(self, key: Hashable) -> tuple[Flight, bool]:
        """The key's flight and whether the caller leads it (must compute and `finish`)."""
        me, in_coroutine = _caller()
        with self._lock:
            found = self._active.get(key)
            if found is not None:
                if found.leader == me:
                    raise RuntimeError(
                        f"get_or_set for {key!r} was called again while computing it "
                        "(the factory asks for its own key)"
                    )
                return found, False
            flight = self._active[key] = Flight(me, in_coroutine)
            return flight, True

    def finish(self, key: Hashable, flight: Flight) -> None:
        """Forget the key's flight (its outcome is set)."""
        with self._lock:
            if self._active.get(key) is flight:
                del self._active[key]


def wait(flight: Flight) -> Any:
    """Block until the leader finishes: its result, or its exception raised here; `STALLS`
    at once if the leader is a coroutine of this thread's event loop."""
    if flight.in_coroutine and flight.thread == threading.get_ident() and not flight.done():
        return STALLS
    return flight.result()


async def wait_async(flight: Flight) -> Any:
    """Await the leader's outcome without blocking the event loop."""
    return await asyncio.shield(asyncio.wrap_future(flight))


def _caller() -> tuple[object, bool]:
    """(the current task when in a coroutine, else the current thread; whether a task)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return (task, True) if task is not None else (threading.get_ident(), False)
