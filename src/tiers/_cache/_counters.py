"""Atomic counters (`Cache.incr`/`decr`) and `Cache.setdefault`: the rules, without I/O.

A counter lives in the cache's *counter tier*, its slowest tier, whose store must update a key
in one atomic step (`SupportsUpdate`); it is the counter's authority: every increment is one
read-modify-write there, so none is lost among threads, processes, and machines sharing that
tier. The faster tiers drop their copies after each increment (other processes' copies are
refused by coherence, as after any write), and a later `get` reads the authority again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._codec import Rejected
from .._stores import Entry

if TYPE_CHECKING:
    from ._policy import Policy as Cache
    from ._tier import Tier


def check_delta(delta: object, default: object) -> int:
    """`delta` as an int; a TypeError in one sentence for a bad `delta` or `default`."""
    if type(delta) is not int:
        raise TypeError(f"delta must be an int, not {type(delta).__qualname__!r}")
    if default is not None and type(default) is not int:
        raise TypeError(f"default must be an int or None, not {type(default).__qualname__!r}")
    return delta


def counter_tier(cache: Cache) -> Tier:
    """The tier holding the cache's counters (and deciding `setdefault`): its slowest, which
    must update atomically. A faster tier never stands in: its counts would be this
    process's alone."""
    last = cache._tiers[-1]
    if last.can.update:
        return last
    raise TypeError(
        f"{last.name} cannot update a key in one atomic step (SupportsUpdate), and a cache's "
        "counters live in its slowest tier, so this cache cannot keep them"
    )


def counting(
    cache: Cache, tier: Tier, k: str, key: object, delta: int, default: int | None,
    expires_at: float | None,
) -> Callable[[Entry | None], Entry]:  # fmt: skip
    """The change `tier.store.update` applies: the entry of the counter plus `delta`. A
    missing counter (or one that must not be used: damaged, another secret's) starts at
    `default`, with `expires_at`; an existing one keeps its expiry, tags and meta."""

    def change(entry: Entry | None) -> Entry:
        current: Any = None
        if entry is not None:
            try:
                current = cache._decode(tier, k, entry)
            except Rejected:
                entry = None
        if entry is None:
            if default is None:
                raise KeyError(key)
            value, expiry, tags, meta = default + delta, expires_at, tuple[str, ...](), None
        else:
            if type(current) is not int:
                raise TypeError(
                    f"the value of {key!r} is a {type(current).__qualname__!r}, not an int: "
                    "it cannot be incremented"
                )
            value, expiry, tags = current + delta, entry.expires_at, tuple(entry.tags)
            meta = dict(entry.meta) if entry.meta is not None else None
        live, shared, private = cache._entries(k, value, expiry, tags, meta)
        return cache._for_tier(tier, live, shared, private)

    return change


def counted(cache: Cache, tier: Tier, k: str, entry: Entry) -> int:
    """The value of the counter entry `tier` just wrote."""
    value: int = cache._decode(tier, k, entry)
    return value


def adding(
    cache: Cache, tier: Tier, k: str, value: Any, expires_at: float | None,
    tags: tuple[str, ...], meta: dict[str, Any] | None, found: list[Any],
) -> Callable[[Entry | None], Entry | None]:  # fmt: skip
    """The change `tier.store.update` applies for `setdefault`: `value`'s entry if the key
    holds nothing usable, else nothing (its value is left in `found`)."""

    def change(entry: Entry | None) -> Entry | None:
        found.clear()
        if entry is not None:
            try:
                found.append(cache._decode(tier, k, entry))
            except Rejected:
                pass
            else:
                return None
        live, shared, private = cache._entries(k, value, expires_at, tags, meta)
        return cache._for_tier(tier, live, shared, private)

    return change
