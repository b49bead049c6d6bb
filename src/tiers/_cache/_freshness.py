"""Freshness: when a cached value of `get_or_set` or memoize is refreshed in the background.

An entry written with a `Freshness` lives ``ttl + stale`` seconds in the stores, and its meta
records when it stops being fresh (``fresh_until``, epoch seconds) and how long it took to
compute (``duration_s``, a float: XFetch needs sub-second durations). A caller that finds it:

- fresh, and not picked for an early refresh: gets it;
- past ``fresh_until`` (stale), or picked by XFetch (Vattani, Chierichetti and Lowenstein,
  VLDB 2015: refresh when ``now - duration * beta * ln(u) >= fresh_until``, u uniform in
  (0, 1]): gets it too, and one caller refreshes it in the background.

Once the stores drop it (``ttl + stale`` passed), callers wait for one computation, as
without these options. The rules here do no I/O; `single_flight` runs the refresh.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .._units import parse_ttl

FRESH_UNTIL: Final = "fresh_until"
DURATION: Final = "duration_s"
BACKOFF_FIRST: Final = 1.0
"""Seconds a process waits before retrying a refresh that failed (doubled on each failure)."""
BACKOFF_MAX: Final = 60.0
BUSY_WAIT: Final = 0.25
"""Seconds a process waits before trying again to refresh a key another caller was refreshing
(its lock was taken): it is then soon refreshed, or, if that caller died, its lease ends."""

STORED: Final = "stored"
BUSY: Final = "busy"
FAILED: Final = "failed"
"""How a refresh ended: a new value stored; another caller held the key; an exception."""

_RANDOM = random.Random()

Relink = Callable[[], None]
"""What memoize's fast path passes with a value it found due: called once its refresh is
stored (so the fast path finds the new value at once)."""


@dataclass(frozen=True, slots=True)
class Freshness:
    """`stale`: seconds a value is served after its ttl while one caller refreshes it;
    `beta`: XFetch's eagerness (0: no early refresh, 1: the paper's default)."""

    stale: float
    beta: float

    @classmethod
    def check(cls, stale: object, early: object) -> Freshness | None:
        """The checked options (None when neither is set); a one-sentence error if bad."""
        seconds = 0.0 if stale is None else parse_ttl(stale, "stale")
        if isinstance(early, bool):
            beta = 1.0 if early else 0.0
        elif isinstance(early, (int, float)):
            beta = float(early)
            if not (beta > 0 and math.isfinite(beta)):
                raise ValueError(f"early must be True, False or a positive beta, not {early!r}")
        else:
            kind = type(early).__qualname__
            raise TypeError(f"early must be True, False or a positive beta, not {kind!r}")
        if not seconds and not beta:
            return None
        return cls(stale=seconds or 0.0, beta=beta)

    def needs_ttl(self, ttl: float | None, call: str) -> float:
        """The ttl these options refresh around; a ValueError if there is none."""
        if ttl is None:
            option = "stale" if self.stale else "early"
            raise ValueError(f"{call} with {option}= needs a ttl (the entry never expires)")
        return ttl

    def terms(
        self, fresh_until: float, meta: Mapping[str, Any] | None, duration: float
    ) -> tuple[float, dict[str, Any]]:
        """(expiry in the stores, meta) of a value computed in `duration` seconds that is
        fresh until `fresh_until`."""
        out = dict(meta or {})
        out[FRESH_UNTIL] = fresh_until
        out[DURATION] = round(duration, 6)
        return fresh_until + self.stale, out

    def due(self, meta: Mapping[str, Any] | None, now: float, rng: random.Random) -> bool:
        """Whether a caller that finds an entry with this `meta` at `now` refreshes it: it is
        stale, or XFetch picks it. An entry written without these options never is."""
        until = _number(meta, FRESH_UNTIL)
        if until is None:
            return False
        if now >= until:
            return True
        if not self.beta:
            return False
        duration = _number(meta, DURATION) or 0.0
        return now - duration * self.beta * math.log(1.0 - rng.random()) >= until


class Refreshes:
    """The keys this process refreshes now, and when each that failed may be tried again."""

    __slots__ = ("_backoff", "_lock", "_running")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._backoff: dict[str, tuple[float, float]] = {}  # key: (retry at, last delay)

    def claim(self, key: str, now: float) -> bool:
        """True if the caller should refresh `key` (and must call `done`)."""
        with self._lock:
            if key in self._running:
                return False
            retry = self._backoff.get(key)
            if retry is not None and now < retry[0]:
                return False
            self._running.add(key)
            return True

    def done(self, key: str, outcome: str, now: float) -> None:
        """The refresh of `key` ended with `outcome`: after a failure the next waits a
        (doubled) backoff; when another caller held the key (`BUSY`), `BUSY_WAIT`."""
        with self._lock:
            self._running.discard(key)
            if outcome == FAILED:
                last = self._backoff.get(key)
                delay = BACKOFF_FIRST if last is None else min(last[1] * 2, BACKOFF_MAX)
                self._backoff[key] = (now + delay, delay)
            elif outcome == BUSY:
                self._backoff[key] = (now + BUSY_WAIT, 0.0)
            else:
                self._backoff.pop(key, None)

    def running(self) -> int:
        with self._lock:
            return len(self._running)


def stale_since(meta: Mapping[str, Any] | None, now: float) -> float | None:
    """Seconds the entry has been stale at `now`; None if it is fresh or has no freshness."""
    until = _number(meta, FRESH_UNTIL)
    return None if until is None or now < until else now - until


def fresh_until(meta: Mapping[str, Any] | None) -> float | None:
    return _number(meta, FRESH_UNTIL)


def default_rng() -> random.Random:
    """The generator XFetch draws from (a cache may be given a seeded one in tests)."""
    return _RANDOM


def _number(meta: Mapping[str, Any] | None, name: str) -> float | None:
    if not meta:
        return None
    value = meta.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
