"""Per-key single-flight shared by threads and coroutines: one leader fetches, others wait."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from typing import Any

BYPASS = object()
"""What a blocking `wait` returns instead of deadlocking behind a coroutine of its own thread."""


class Flight:
    """One in-progress fetch; waiters block (threads) or await (coroutines) its outcome."""

    def __init__(self) -> None:
        self._thread = threading.get_ident()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._value: Any = None
        self._error: BaseException | None = None

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        """Record the outcome and wake every waiter, whatever thread or loop it runs on."""
        with self._lock:
            self._value, self._error = value, error
            self._done.set()
            futures, self._futures = self._futures, []
        for loop, future in futures:
            loop.call_soon_threadsafe(_resolve, future)

    def _outcome(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self) -> Any:
        """Block until the leader finishes; its value, or its exception raised here.

        When the leader is a coroutine of this very thread's event loop, blocking would stall
        it forever: `BYPASS` is returned at once and the caller fetches for itself.
        """
        if self._thread == threading.get_ident() and not self._done.is_set():
            return BYPASS
        self._done.wait()
        return self._outcome()

    async def wait_async(self) -> Any:
        """Await the leader's outcome without blocking the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if not self._done.is_set():
                self._futures.append((loop, future))
            else:
                future.set_result(None)
        await future
        return self._outcome()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Flights:
    """The flights in progress, by key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flying: dict[Hashable, Flight] = {}

    def claim(self, key: Hashable) -> tuple[Flight, bool]:
        """The flight for `key` and whether the caller leads it (and must `land` it)."""
        with self._lock:
            flight = self._flying.get(key)
            if flight is not None:
                return flight, False
            flight = self._flying[key] = Flight()
            return flight, True

    def land(self, key: Hashable, value: Any = None, error: BaseException | None = None) -> None:
        """End the flight for `key` with its outcome."""
        with self._lock:
            flight = self._flying.pop(key, None)
        if flight is not None:
            flight.finish(value, error)
