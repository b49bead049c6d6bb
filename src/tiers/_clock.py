"""Clocks: wall time for persistent expiry, monotonic time for in-process expiry."""

from __future__ import annotations

import time as _time
from typing import Protocol


class Clock(Protocol):
    """What stores and caches read the time from (a fake one makes TTL tests instant)."""

    def time(self) -> float:
        """Seconds since the epoch (wall clock, shared between processes)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (in-process deadlines)."""
        ...


class SystemClock:
    """The real clocks."""

    __slots__ = ()
    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Clock = SystemClock()
