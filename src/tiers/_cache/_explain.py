"""What a memoized function knows about its entries: `f.explain(...)` and `f.entries()`.

`explain` says what a call would do, without computing or changing anything. It lists what
each tier that can (`SupportsScan`) holds of this function, every version, expired entries
included (a prefix listing on Redis, S3 and memory; a walk of the index on a DiskStore), and
asks the other tiers for the call's entry. From that: a hit (fresh, stale, or due for an early
refresh) on the fastest tier holding it live, else why not: the entry expired and is not yet
removed, the same arguments are stored under another version (the code changed), or nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._stores import Entry
from .._stores._protocol import SupportsScan, implements
from .._types import EntryInfo, _utc
from ._freshness import DURATION, FRESH_UNTIL

if TYPE_CHECKING:
    from ._memoize import Memo
    from ._tier import Tier


@dataclass(frozen=True, slots=True)
class Explanation:
    """What a call of a memoized function would do now, and why (``str()`` says it in words).

    `outcome`: "hit" (a fresh value would be returned), "stale" (the value would be returned
    and refreshed in the background), "refresh-early" (a hit that XFetch may refresh; see
    `refresh_chance`) or "miss" (the function would run). `tier`/`store`: the tier that holds
    the entry (None on a miss). `reason`: why, in one sentence. `found`: on a miss, entries of
    the same arguments under other versions, or this key's expired entry, fastest tier first.
    """

    outcome: str
    key: str
    reason: str
    tier: int | None = None
    store: str | None = None
    age_s: float | None = None
    expires_in_s: float | None = None
    stale_for_s: float | None = None
    refresh_chance: float | None = None
    info: EntryInfo | None = None
    found: tuple[EntryInfo, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        return f"{self.outcome}: {self.reason}"


def explain(memo: Memo, arguments: dict[str, Any]) -> Explanation:
    """What a call with these bound `arguments` would do (see `Explanation`)."""
    cache = memo.cache
    cache._check_open()
    user_key = memo.user_key(arguments)
    k = cache._key(user_key)
    now = cache._clock.time()
    failing: list[str] = []
    listed: list[tuple[Tier, str, Entry]] = []
    for tier in cache._tiers:
        if implements(tier.store, SupportsScan):  # (read before any get removes the expired)
            held = [(tier, key, entry) for key, entry in _listed(memo, tier, True)]
            listed.extend(held)
            mine = [entry for _tier, key, entry in held if key == k]
            entry = mine[0] if mine and _live(mine[0], now) else None
        else:
            try:
                entry = _head(tier, k)
            except Exception as exc:
                failing.append(f"tier {tier.index} ({tier.name}) failed: {type(exc).__name__}")
                continue
        if entry is not None:
            return _found(memo, tier, user_key, entry, now)
    return _missed(memo, user_key, listed, failing)


def entries(memo: Memo, all_versions: bool) -> Iterator[EntryInfo]:
    """The live entries of `memo`'s function (this version, or every one), each once, from
    the fastest tier holding it, with their provenance in `meta`."""
    cache = memo.cache
    cache._check_open()
    now = cache._clock.time()
    seen: set[str] = set()
    for tier in cache._tiers:
        for k, entry in _listed(memo, tier, all_versions):
            if k in seen or not _live(entry, now):
                continue
            seen.add(k)
            yield cache._info(tier, cache._user_key(k), entry)


def prefixes(memo: Memo, all_versions: bool) -> tuple[str, ...]:
    """The stored-key prefixes of `memo`'s entries: its version's, or every version's."""
    base = memo.cache._prefix
    if not all_versions:
        return (base + memo.prefix,)
    return (base + memo.name + "/", base + memo.name + "@")


# -- helpers -------------------------------------------------------------------------------


def _live(entry: Entry, now: float) -> bool:
    return entry.expires_at is None or entry.expires_at > now


def _head(tier: Tier, k: str) -> Entry | None:
    if not tier.breaker.allow():
        return None
    entry: Entry | None = tier.store.info(k) if tier.can.info else tier.store.get(k)
    return entry


def _listed(memo: Memo, tier: Tier, all_versions: bool) -> Iterator[tuple[str, Entry]]:
    """(stored key, head) of what `tier` holds of `memo`'s function, expired included;
    nothing from a tier that cannot list its entries or fails to."""
    store = tier.store
    if not tier.breaker.allow() or not implements(store, SupportsScan):
        return
    for prefix in prefixes(memo, all_versions):
        try:
            yield from store.scan(prefix)
        except Exception as exc:
            tier.errors += 1
            tier.breaker.failure(exc, "list entries")
            return


def _found(memo: Memo, tier: Tier, user_key: str, entry: Entry, now: float) -> Explanation:
    cache = memo.cache
    info = cache._info(tier, user_key, entry)
    age = now - entry.created_at
    expires_in = None if entry.expires_at is None else entry.expires_at - now
    where = f"tier {tier.index} ({tier.name}) holds it, computed {_ago(age)}"
    meta = entry.meta or {}
    until = _number(meta.get(FRESH_UNTIL))
    fresh = memo.options.fresh
    hit = Explanation(
        "hit", user_key, "", tier=tier.index, store=tier.name, age_s=age,
        expires_in_s=expires_in, info=info,
    )  # fmt: skip
    if until is not None and fresh is not None and now >= until:
        stale_for = now - until
        reason = (
            f"{where}; stale for {stale_for:.1f} s: returned at once while one caller "
            f"recomputes it in the background (dropped in {_seconds(expires_in)})"
        )
        return replace(hit, outcome="stale", reason=reason, stale_for_s=stale_for)
    ends = "never expires" if expires_in is None else f"expires in {_seconds(expires_in)}"
    if until is not None and fresh is not None:
        ends = f"fresh for {_seconds(until - now)} more"
        duration = _number(meta.get(DURATION)) or 0.0
        if fresh.beta and duration > 0:
            chance = math.exp(-(until - now) / (duration * fresh.beta))
            reason = (
                f"{where}, {ends}; XFetch refreshes it early with probability {chance:.3g} "
                f"per call now (recompute {duration:.3g} s, beta {fresh.beta:g})"
            )
            return replace(hit, outcome="refresh-early", reason=reason, refresh_chance=chance)
    return replace(hit, reason=f"{where}, {ends}")


def _missed(
    memo: Memo, user_key: str, listed: list[tuple[Tier, str, Entry]], failing: list[str]
) -> Explanation:
    cache = memo.cache
    args_hash = user_key.rpartition("/")[2]
    own_key = cache._key(user_key)
    expired: list[EntryInfo] = []
    others: list[EntryInfo] = []
    for tier, k, entry in listed:
        if k == own_key:
            expired.append(cache._info(tier, user_key, entry))
        elif k.rpartition("/")[2] == args_hash:
            others.append(cache._info(tier, cache._user_key(k), entry))
    tail = f" ({'; '.join(failing)})" if failing else ""
    if expired and expired[0].expires_at is not None:
        ago = cache._clock.time() - expired[0].expires_at.timestamp()
        reason = f"its entry expired {_ago(ago)} (not yet removed)"
        return Explanation("miss", user_key, reason + tail, found=tuple(expired + others))
    if others:
        newest = max(others, key=lambda info: info.created_at)
        reason = _other_version(memo, newest)
        return Explanation("miss", user_key, reason + tail, found=tuple(others))
    return Explanation("miss", user_key, "no tier holds an entry for these arguments" + tail)


def _other_version(memo: Memo, other: EntryInfo) -> str:
    meta = other.meta or {}
    stamp = _when(other.created_at)
    stored_code = meta.get("code")
    if memo.code is not None and isinstance(stored_code, str):
        return (
            f"the code changed since: the stored result (computed {stamp}) has code hash "
            f"{stored_code}, the function's code now hashes to {memo.code}"
        )
    version = meta.get("version", other.key.partition("@")[2].partition("/")[0] or None)
    return (
        f"another version holds these arguments: version {version!r} (computed {stamp}); "
        f"this function asks for version {memo.version!r}"
    )


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _seconds(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s"


def _ago(seconds: float) -> str:
    return f"{seconds:.1f} s ago"


def _when(moment: datetime) -> str:
    return _utc(moment.timestamp()).isoformat(timespec="seconds")
