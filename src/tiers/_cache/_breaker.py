"""Circuit breaker per tier: skip a failing tier for a cool-down after consecutive failures."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("tiers")

THRESHOLD = 3
COOLDOWN = 10.0


class Breaker:
    """Counts consecutive failures of one tier; opens (skips the tier) after `THRESHOLD`."""

    __slots__ = ("_name", "failures", "open_until")

    def __init__(self, name: str) -> None:
        self._name = name
        self.failures = 0
        self.open_until = 0.0

    def allow(self) -> bool:
        """False while open; after the cool-down one call is let through to probe the tier."""
        return not self.open_until or time.monotonic() >= self.open_until

    def success(self) -> None:
        if self.failures:
            if self.open_until:
                log.warning("tiers: %s answers again; using it", self._name)
            self.failures = 0
            self.open_until = 0.0

    def failure(self, exc: BaseException) -> None:
        self.failures += 1
        if self.failures >= THRESHOLD:
            if not self.open_until:
                log.warning(
                    "tiers: %s failed %d times in a row (%s: %s); skipping it for %.0f s",
                    self._name, self.failures, type(exc).__name__, exc, COOLDOWN,
                )  # fmt: skip
            self.open_until = time.monotonic() + COOLDOWN
        else:
            log.debug("tiers: %s failed (%s: %s)", self._name, type(exc).__name__, exc)
