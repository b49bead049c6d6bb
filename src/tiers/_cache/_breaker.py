"""Circuit breaker per tier: skip a failing tier for a cool-down after consecutive failures,
and say so where people look.

Visibility: the first failure of each kind of operation on a tier is a WARNING (a shared tier
that cannot take a write is seen at once); later ones at most one WARNING per tier per
`QUIET` seconds, counting those left unsaid. Opening the breaker is a WARNING, closing it
an INFO. Messages go to the ``tiers`` logger without a prefix of their own.

Cool-down and quiet time are read on the breaker's `clock` (a `FakeClock` in tests, so that
they pass without waiting).
"""

from __future__ import annotations

import logging

from .._clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("tiers")

THRESHOLD = 3
COOLDOWN = 10.0
QUIET = 60.0


class Breaker:
    """Counts consecutive failures of one tier; opens (skips the tier) after `THRESHOLD`."""

    __slots__ = ("_name", "_said", "_told", "_unsaid", "clock", "failures", "open_until")

    def __init__(self, name: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self._name = name
        self.clock = clock  # its monotonic time; replaceable, like a store's
        self.failures = 0
        self.open_until = 0.0
        self._told: set[str] = set()  # operations whose failure was a WARNING already
        self._said = 0.0  # monotonic time of the last WARNING
        self._unsaid = 0  # failures since then that were not

    def allow(self) -> bool:
        """False while open; after the cool-down one call is let through to probe the tier."""
        return not self.open_until or self.clock.monotonic() >= self.open_until

    def success(self) -> None:
        if self.failures:
            if self.open_until:
                log.info("%s answers again; using it", self._name)
            self.failures = 0
            self.open_until = 0.0

    def failure(self, exc: BaseException, action: str) -> None:
        """`action` (set, get, delete, …) failed with `exc`."""
        self.failures += 1
        now = self.clock.monotonic()
        if self.failures >= THRESHOLD:
            opening = not self.open_until
            self.open_until = now + COOLDOWN
            if opening:
                self._say(now, "%s failed %d times in a row (last: %s: %s); skipping it for %.0f s",
                          self._name, self.failures, type(exc).__name__, exc, COOLDOWN)  # fmt: skip
                return
        if action not in self._told or now - self._said >= QUIET:
            self._told.add(action)
            self._say(now, "%s failed to %s (%s: %s)", self._name, action, type(exc).__name__, exc)
        else:
            self._unsaid += 1
            log.debug("%s failed to %s (%s: %s)", self._name, action, type(exc).__name__, exc)

    def _say(self, now: float, message: str, *args: object) -> None:
        if self._unsaid:
            message += "; %d other failures since the last warning"
            args = (*args, self._unsaid)
        log.warning(message, *args)
        self._said, self._unsaid = now, 0
