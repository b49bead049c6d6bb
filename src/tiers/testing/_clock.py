"""A clock that moves only when told to, so expiry and LRU tests run instantly."""

from __future__ import annotations

import threading

_MONOTONIC_ORIGIN = 500.0  # away from `time()`, as real clocks are: mixing them up shows


class FakeClock:
    """Wall and monotonic time that advance together, only through `advance`.

    Install it on a store (``store.clock = FakeClock()``) or pass it where a `Clock` is
    taken. Safe to read and advance from several threads.
    """

    __slots__ = ("_lock", "_offset", "_start")

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._lock = threading.Lock()
        self._start = float(start)
        self._offset = 0.0

    def __repr__(self) -> str:
        return f"FakeClock(time={self.time()!r})"

    def time(self) -> float:
        """Seconds since the epoch: `start` plus everything advanced so far."""
        with self._lock:
            return self._start + self._offset

    def monotonic(self) -> float:
        """Monotonic seconds: moves exactly as `time` does, from another origin."""
        with self._lock:
            return _MONOTONIC_ORIGIN + self._offset

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds` (never back: monotonic time cannot)."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward, got {seconds!r} seconds")
        with self._lock:
            self._offset += seconds
