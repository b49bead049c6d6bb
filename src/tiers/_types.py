"""Small public value types: the `MISSING` sentinel, `EntryInfo` and `Stats`."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Final, Literal


class _Missing(enum.Enum):
    """Type of `MISSING`: a single-member enum, so type checkers narrow it away."""

    MISSING = enum.auto()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> Literal[False]:
        return False


MISSING: Final = _Missing.MISSING
"""Marks "no value": ``cache.get(key, MISSING) is MISSING`` tells a miss from a cached None."""

_LATEST = datetime.max.replace(tzinfo=timezone.utc)


def _utc(ts: float) -> datetime:
    """A UTC datetime; times past year 9999 (a very long TTL, or a forged one) clamp to it."""
    try:
        return datetime.fromtimestamp(ts, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return _LATEST if ts > 0 else datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """What a cache knows about one entry, without its value.

    `tier` is the position of the tier that answered (0 = fastest) and `store` its description.
    Times are timezone-aware UTC datetimes; `expires_at` is None for entries that never expire.
    """

    key: str
    size: int
    created_at: datetime
    expires_at: datetime | None
    tags: tuple[str, ...]
    meta: Mapping[str, Any] | None
    tier: int
    store: str

    @property
    def ttl(self) -> float | None:
        """Seconds left before expiry (negative once expired), or None for no expiry."""
        if self.expires_at is None:
            return None
        return (self.expires_at - datetime.now(timezone.utc)).total_seconds()


_COUNTERS = (
    "hits", "misses", "sets", "deletes", "evictions", "expirations", "rejected", "errors",
    "lock_fallbacks", "lost_leases", "foreign",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TierStats:
    """Counters of one tier.

    hits, misses, sets and errors count this process's calls through the cache, deletes the
    entries its calls removed;
    evictions, expirations and rejected (corrupted, unauthenticated or oversized entries)
    count what the store removed or refused, and items and bytes are its current contents
    (for a DiskStore: across all processes, as recorded on disk). On the tier whose locks
    single-flight uses: lock_fallbacks counts computations done without its lock because it
    failed for a whole lease, lost_leases results not stored because their lock's lease had
    ended before they were (another caller may have taken over). foreign counts entries read
    that were signed with another secret: misses, left in place.
    """

    store: str
    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    evictions: int = 0
    expirations: int = 0
    rejected: int = 0
    errors: int = 0
    items: int = 0
    bytes: int = 0
    lock_fallbacks: int = 0
    lost_leases: int = 0
    foreign: int = 0

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses), 0.0 before any lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@dataclass(frozen=True, slots=True)
class TierHealth:
    """What `Cache.check()` found of one tier: whether it answered a read, in how many
    seconds, the error if not, and whether the cache is skipping it after failures."""

    tier: int
    store: str
    ok: bool
    seconds: float
    error: str | None = None
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class Stats:
    """Totals and per-tier counters of a cache (see `TierStats` for what each counts).

    Totals: a get that any tier answered is one hit, a get no tier answered is one miss; the
    other counters are summed over tiers, and items/bytes are those of the most complete
    (last) tier. Of this process's calls with ``stale=``/``early=``: stale_served counts
    stale values served, refreshes the background recomputations it ran, refresh_errors
    those that raised (the stale value was kept).
    """

    hits: int
    misses: int
    sets: int
    deletes: int
    evictions: int
    expirations: int
    rejected: int
    errors: int
    items: int
    bytes: int
    lock_fallbacks: int = 0
    lost_leases: int = 0
    foreign: int = 0
    tiers: tuple[TierStats, ...] = field(default_factory=tuple)
    stale_served: int = 0
    refreshes: int = 0
    refresh_errors: int = 0

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses), 0.0 before any lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    @classmethod
    def from_tiers(cls, hits: int, misses: int, tiers: tuple[TierStats, ...]) -> Stats:
        """Build totals from per-tier counters (pure; see the class docstring)."""
        summed = {name: sum(getattr(t, name) for t in tiers) for name in _COUNTERS[2:]}
        last = tiers[-1] if tiers else TierStats(store="")
        return cls(
            hits=hits, misses=misses, items=last.items, bytes=last.bytes, tiers=tiers, **summed
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON output), tiers included."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["tiers"] = [{f.name: getattr(t, f.name) for f in fields(t)} for t in self.tiers]
        return out
