"""A shared tier's clock as this process sees it: the offset from the local clock.

Machines sharing a Redis server or a bucket judge expiry and leases on the *server's* time,
so that a machine whose clock is a minute off neither keeps serving what everyone else sees
as expired nor writes entries that are born expired. A store measures the offset by asking
the server for its time between two readings of the local clock (Redis ``TIME``; an object
store's ``Last-Modified`` of a probe it writes, which has one-second resolution) and then
converts: a deadline goes to the server as ``local + offset`` and comes back as
``server - offset``. A store given another clock than the system's (a test's fake clock) is
never measured: its offset is 0, so advancing the fake clock ages entries as it always did.

An offset within the measurement's own uncertainty is taken as 0 (the clocks agree as far as
anyone can tell); a larger one is corrected and logged once as a WARNING with its size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from .._clock import SYSTEM_CLOCK, Clock
from ._protocol import Entry

log = logging.getLogger("tiers")

REMEASURE = 300.0
"""Seconds between measurements on the system clock (NTP steps, drift)."""

WARN_ABOVE = 1.0
"""Skew (seconds) worth a warning: beyond it, expiry would visibly differ between machines."""


class ServerTime:
    """The offset (server clock minus `clock.time()`) of one store's server."""

    __slots__ = ("_clock", "_name", "_next", "_warned", "offset", "uncertainty")

    def __init__(self, name: str, clock: Clock) -> None:
        self._name = name
        self._clock = clock
        self._next = 0.0  # monotonic time of the next measurement (0: never measured)
        self._warned = 0.0  # the offset last warned about
        self.offset = 0.0
        self.uncertainty = 0.0

    @property
    def clock(self) -> Clock:
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        """A new local clock: the system's is measured again, any other taken as the server's
        (offset 0)."""
        self._clock = clock
        self._next = 0.0
        if clock is not SYSTEM_CLOCK:
            self.offset = self.uncertainty = 0.0

    def due(self) -> bool:
        """Whether a measurement is needed before the next use: on the system clock, never
        measured or last measured over `REMEASURE` ago."""
        if self._clock is not SYSTEM_CLOCK:
            return False
        return not self._next or time.monotonic() >= self._next

    def measured(self, sent: float, received: float, low: float, high: float) -> None:
        """The server read its clock between local times `sent` and `received` (on
        `clock.time()`) and said it was between `low` and `high` (equal when exact)."""
        least, most = low - received, high - sent
        middle = (least + most) / 2
        self.uncertainty = (most - least) / 2
        self.offset = 0.0 if abs(middle) <= self.uncertainty else middle
        self._next = time.monotonic() + REMEASURE
        if abs(self.offset) > WARN_ABOVE and abs(self.offset - self._warned) > WARN_ABOVE:
            self._warned = self.offset
            log.warning(
                "this machine's clock is %.1f s %s %s's; expiry and leases there are "
                "judged on its clock (corrected by %.1f s)",
                abs(self.offset), "behind" if self.offset > 0 else "ahead of", self._name,
                self.offset,
            )  # fmt: skip

    def failed(self) -> None:
        """No measurement could be made: keep the last offset, try again in a while."""
        self._next = time.monotonic() + min(REMEASURE, 10.0)

    def now(self) -> float:
        """The server's time now, as best known."""
        return self._clock.time() + self.offset

    def to_server(self, local: float | None) -> float | None:
        return None if local is None else local + self.offset

    def to_local(self, server: float | None) -> float | None:
        return None if server is None else server - self.offset

    def remote(self, entry: Entry) -> Entry:
        """`entry` with its expiry on the server's clock, as written. `created_at` stays the
        writer's: it only informs, while expiry decides what every reader sees."""
        if not self.offset or entry.expires_at is None:
            return entry
        return replace(entry, expires_at=entry.expires_at + self.offset)

    def local(self, entry: Entry | None) -> Entry | None:
        """A stored `entry` with its expiry on the local clock, as returned: a faster tier it
        is copied into keeps it for the time the server gives it still."""
        if not self.offset or entry is None or entry.expires_at is None:
            return entry
        return replace(entry, expires_at=entry.expires_at - self.offset)
