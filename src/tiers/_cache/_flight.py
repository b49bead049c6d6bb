"""In-process single-flight: one computation per key among threads and coroutines.

The leader runs the computation; followers wait on the same `concurrent.futures.Future`
(threads block on it, coroutines await it through ``asyncio.wrap_future``, on any loop).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Final

INTERRUPTED: Final = object()
"""The result of a flight whose leader was interrupted (cancelled, KeyboardInterrupt) rather
than failed: that is not the waiters' business, so they try again and one of them leads."""


class Flights:
    __slots__ = ("_active", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, tuple[Future[Any], object]] = {}

    def join(self, key: str) -> tuple[Future[Any], bool]:
        """The key's future and whether the caller leads (must compute and `finish`)."""
        me = _caller()
        with self._lock:
            found = self._active.get(key)
            if found is not None:
                if found[1] == me:
                    raise RuntimeError(
                        f"get_or_set for {key!r} was called again while computing it "
                        "(the factory asks for its own key)"
                    )
                return found[0], False
            future: Future[Any] = Future()
            self._active[key] = (future, me)
            return future, True

    def finish(self, key: str, future: Future[Any]) -> None:
        with self._lock:
            found = self._active.get(key)
            if found is not None and found[0] is future:
                del self._active[key]


def _caller() -> object:
    """The current task when in a coroutine, else the current thread."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return task if task is not None else threading.get_ident()
