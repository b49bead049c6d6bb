"""Blocking twins of `_async/prims.py`, used by the generated modules of this package."""

from __future__ import annotations

import contextlib
import inspect
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..._flight import STALLS, Flight, wait

_T = TypeVar("_T")


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def wait_flight(flight: Flight) -> Any:
    """The leader's outcome; never a wait that could not end (see `_flight.wait`)."""
    value = wait(flight)
    if value is STALLS:
        raise RuntimeError(
            "a blocking get_or_set would wait for a coroutine of this thread's own event loop, "
            "computing the same key: call get_or_set_async from coroutines"
        )
    return value


def call_factory(factory: Callable[[], Any]) -> Any:
    result = factory()
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise TypeError("the factory returned an awaitable; use get_or_set_async for async code")
    return result


class _Workers:
    """Daemon threads that run background calls (refreshes), started as needed and kept:
    handing a call to an idle one costs far less than starting a thread. At most `limit`;
    past that, calls wait in the queue. Daemons: a refresh never holds up the exit."""

    def __init__(self, limit: int) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], object], str]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0
        self._limit = limit

    def submit(self, run: Callable[[], object], name: str) -> None:
        with self._lock:
            spawn = self._idle == 0 and self._started < self._limit
            if spawn:
                self._started += 1
            else:
                self._idle -= 1  # (claimed: the next submit counts one fewer idle)
        self._queue.put((run, name))
        if spawn:
            threading.Thread(target=self._work, name="tiers-background", daemon=True).start()

    def _work(self) -> None:
        while True:
            run, name = self._queue.get()
            thread = threading.current_thread()
            thread.name = name
            with contextlib.suppress(Exception):
                run()
            thread.name = "tiers-background"
            with self._lock:
                self._idle += 1


_WORKERS = _Workers(limit=8)


def start_background(run: Callable[[], object], name: str) -> None:
    """Call `run()` in a daemon worker thread, not waited for."""
    _WORKERS.submit(run, name)


def to_thread(fn: Callable[..., _T], *args: Any) -> _T:
    return fn(*args)


class Renewer:
    """Calls `renew` every `interval` seconds from a daemon thread until stopped."""

    def __init__(self, renew: Callable[[], bool], interval: float) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(renew, interval), name="tiers-lease", daemon=True
        )
        self._thread.start()

    def _run(self, renew: Callable[[], bool], interval: float) -> None:
        while not self._stopped.wait(interval):
            with contextlib.suppress(Exception):
                if not renew():
                    return

    def stop(self) -> None:
        self._stopped.set()


def start_renewer(renew: Callable[[], bool], interval: float) -> Renewer:
    return Renewer(renew, interval)
