"""Blocking twins of `_async/prims.py`, used by the generated modules of this package."""

from __future__ import annotations

import contextlib
import inspect
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


def start_background(run: Callable[[], None], name: str) -> None:
    """Call `run()` in a daemon thread, not waited for."""
    threading.Thread(target=run, name=name, daemon=True).start()


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
