"""The one place tests reach into a cache's tiers (``Cache._tiers``, private): the stores a
cache opened itself, a tier's state (``suspect``), and a fake clock for all of them."""

from __future__ import annotations

from typing import Any

from tiers import Cache
from tiers._cache._tier import Tier
from tiers.testing import FakeClock


def tiers_of(cache: Cache) -> list[Tier]:
    """The cache's tiers, fastest first."""
    return list(cache._tiers)


def tier_of(cache: Cache, index: int = 0) -> Tier:
    """Tier `index` of the cache (negative counts from the slowest)."""
    return cache._tiers[index]


def store_of(cache: Cache, index: int = 0) -> Any:
    """The store of tier `index`."""
    return cache._tiers[index].store


def stores_of(cache: Cache) -> list[Any]:
    """The stores of all tiers, fastest first."""
    return [tier.store for tier in cache._tiers]


def install_clock(cache: Cache, clock: FakeClock, *, stores: bool = True) -> None:
    """Run the cache, its breakers and (unless `stores` is False) its stores on `clock`."""
    cache._clock = clock
    for tier in cache._tiers:
        tier.breaker.clock = clock
        if stores:
            tier.store.clock = clock
