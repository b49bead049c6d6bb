"""Fast paths for a cache whose first tier is a `MemoryStore`: hits read without a lock, and
plain writes to a memory-only cache skip the general write path; and `get` for a cache whose
only tier is a DiskStore (`_local_reads`), without the layers the full path walks.

`install` puts, on one cache *instance*, functions that shadow the class's `get`, `get_many`
(and their ``_async`` twins) and, when the memory tier is the only tier and holds objects as
given (the pickle serializer), `set` and `set_many`. Each handles the common case itself and
hands everything else to the class's method, unchanged:

- a read of a ``str`` key finds its slot in the store's view of the cache's namespace
  (`MemoryStore.view`: a dict read, atomic without the lock), serves it only while its
  deadline and guard say so — the rules of the store's own `get` (expiry, revalidation,
  coherence: docs/coherence.md) — and marks it `touched` so eviction gives it a second
  chance instead of reordering (as memoize's fast path does, decision 0006). A miss, an
  expired, due or guarded-and-changed slot, a key the tier missed a write of (`stale`), or a
  non-``str`` key takes the full path.
- a write of a ``str`` key with a finite ``ttl`` (or the default), no tags, meta or bind
  goes to `MemoryStore.putter`, which builds no `Entry` until one is read through `get`.
- (DiskStore alone) `get` asks the store and decodes, counting as the full path does; a tier
  with failures, a store that raises or an entry the codec refuses take the full path.

Each sync function and its ``_async`` twin are written out in full, not generated or shared
through a helper: on a path this short, one more call is a quarter of the time.

The functions never see a closed cache: `close` calls the `uninstall` returned here, which
removes them and turns those a caller may still hold to the full path (which raises).
Decision 0014 says why and what it costs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._sizeof import estimate_size
from .._stores._memory import NEVER
from .._types import MISSING

if TYPE_CHECKING:
    from ._cache import Cache

_BYTES = sys.getsizeof(b"")  # what `sys.getsizeof` adds to a bytes' length
_NUMBERS = frozenset((int, float))  # (not bool: a ttl of True is refused by the full path)
_MAX_TTL = 1e15  # seconds; longer (or odd) ttls are checked and refused by the full path
_NOTHING: dict[str, Any] = {}


def install(cache: Cache) -> Callable[[], None]:
    """Put the fast paths on `cache` if its first tier is a MemoryStore; returns what removes
    them (a no-op if none were put)."""
    from ._cache import Cache

    first = cache._tiers[0]
    if len(cache._tiers) == 1 and first.private and not first.holds_objects:
        fast, stop_reading = _local_reads(cache)
    elif not first.direct:
        return _nothing_to_remove
    else:
        fast, stop_reading = _reads(cache)
    cls = type(cache)
    if len(cache._tiers) == 1 and first.direct and not cache._normalizes:
        fast.update(_writes(cache))
        fast.update(_batch_writes(cache))
    for name in list(fast):
        if getattr(cls, name) is not getattr(Cache, name):  # a subclass's own method stays
            del fast[name]
    for name, function in fast.items():
        function.__name__ = name
        function.__qualname__ = f"{cls.__qualname__}.{name}"
        function.__doc__ = getattr(cls, name).__doc__
        vars(cache)[name] = function

    def uninstall() -> None:
        stop_reading()
        for name, function in fast.items():
            if vars(cache).get(name) is function:
                del vars(cache)[name]

    return uninstall


def _reads(cache: Cache) -> tuple[dict[str, Callable[..., Any]], Callable[[], None]]:
    """`get` and `get_many` (and twins) reading the memory tier's slots without its lock, and
    what makes `get` take the full path from then on (at close)."""
    cls = type(cache)
    first = cache._tiers[0]
    store = first.store
    prefix = cache._prefix
    stale = first.stale  # (never rebound: emptied and refilled in place)
    slot_of = store.view(prefix).get
    slow_get, slow_get_async = cls.get.__get__(cache), cls.get_async.__get__(cache)
    serving = True
    alone = len(cache._tiers) == 1

    def miss(k: str) -> Any:
        """`_lookup` of a key the view does not hold: the memory tier has no slot for it (a
        miss there, counted; asked again by `_lookup` when tiers below may promote)."""
        if alone:
            first.misses += 1
            return MISSING
        return cache._lookup(k)

    async def miss_async(k: str) -> Any:
        if alone:
            first.misses += 1
            return MISSING
        return await cache._lookup_async(k)

    def get(key: object, default: Any = None) -> Any:
        slot = slot_of(key) if type(key) is str else None
        if (
            slot is not None
            and ((due := slot.deadline) is NEVER or due > store.monotonic())
            and (slot.gens is None or slot.gens.view[slot.gslot] == slot.gstamp)
            and not (stale and prefix + key in stale)  # type: ignore[operator]
        ):  # fmt: skip
            slot.touched = True
            first.hits += 1
            return slot.value
        if slot is None and serving and type(key) is str:  # not in the tier: the tiers below
            value = miss(prefix + key)
            if value is MISSING:
                cache._misses += 1
                return default
            return value
        return slow_get(key, default)

    async def get_async(key: object, default: Any = None) -> Any:
        slot = slot_of(key) if type(key) is str else None
        if (
            slot is not None
            and ((due := slot.deadline) is NEVER or due > store.monotonic())
            and (slot.gens is None or slot.gens.view[slot.gslot] == slot.gstamp)
            and not (stale and prefix + key in stale)  # type: ignore[operator]
        ):  # fmt: skip
            slot.touched = True
            first.hits += 1
            return slot.value
        if slot is None and serving and type(key) is str:  # not in the tier: the tiers below
            value = await miss_async(prefix + key)
            if value is MISSING:
                cache._misses += 1
                return default
            return value
        return await slow_get_async(key, default)

    def stop() -> None:
        nonlocal slot_of, serving
        slot_of = _NOTHING.get  # (a caller holding a function now always takes the full path)
        serving = False

    reads: dict[str, Callable[..., Any]] = {"get": get, "get_async": get_async}
    return {**reads, **_batch_reads(cache)}, stop


def _batch_reads(cache: Cache) -> dict[str, Callable[..., Any]]:
    """`get_many` (and its twin): every key the view holds a servable slot for, as `get`
    does; the others (all of them once the cache is closed) from the class's method."""
    cls = type(cache)
    first = cache._tiers[0]
    store = first.store
    prefix = cache._prefix
    stale = first.stale
    slot_of = store.view(prefix).get
    slow_many, slow_many_async = cls.get_many.__get__(cache), cls.get_many_async.__get__(cache)

    def hits_of(keys: Iterable[Any]) -> tuple[dict[Any, Any], list[Any]]:
        """({key: value or MISSING}, keys to ask the full path for), in the order asked."""
        out: dict[Any, Any] = {}
        rest: list[Any] = []
        if cache._closed:
            return out, list(keys)
        now = store.monotonic()
        for key in keys:
            slot = slot_of(key) if type(key) is str else None
            if (
                slot is not None and ((due := slot.deadline) is NEVER or due > now)
                and (slot.gens is None or slot.gens.view[slot.gslot] == slot.gstamp)
                and not (stale and prefix + key in stale)
            ):  # fmt: skip
                slot.touched = True
                out[key] = slot.value
            elif key not in out:
                out[key] = MISSING
                rest.append(key)
        first.hits += len(out) - len(rest)
        return out, rest

    def get_many(keys: Iterable[Any], default: Any = None) -> dict[Any, Any]:
        out, rest = hits_of(keys)
        if rest:
            out.update(slow_many(rest, default))
        return out

    async def get_many_async(keys: Iterable[Any], default: Any = None) -> dict[Any, Any]:
        out, rest = hits_of(keys)
        if rest:
            out.update(await slow_many_async(rest, default))
        return out

    return {"get_many": get_many, "get_many_async": get_many_async}


def _local_reads(cache: Cache) -> tuple[dict[str, Callable[..., Any]], Callable[[], None]]:
    """`get` for a cache whose only tier is a private local store (a DiskStore): the full
    path's single-tier case without its layers — the store's answer decoded, hits and misses
    counted. A tier with failures, a key it missed a write of, a store that raises and an
    entry the codec refuses take the full path (which reads again, and reports or removes)."""
    cls = type(cache)
    tier = cache._tiers[0]
    store, breaker, stale = tier.store, tier.breaker, tier.stale
    prefix = cache._prefix
    decode = cache._decode  # (the rule of what a tier's entry may be: `Policy._decode`)
    slow_get = cls.get.__get__(cache)
    serving = True

    def get(key: object, default: Any = None) -> Any:
        if type(key) is not str or not serving or breaker.failures or stale:
            return slow_get(key, default)
        k = prefix + key
        try:
            entry = store.get(k)
            if entry is None:
                tier.misses += 1
                cache._misses += 1
                return default
            value = decode(tier, k, entry)
        except Exception:  # (failures and refusals are the full path's to count and handle)
            return slow_get(key, default)
        tier.hits += 1
        return value

    def stop() -> None:
        nonlocal serving
        serving = False

    return {"get": get}, stop


def _writes(cache: Cache) -> dict[str, Callable[..., Any]]:
    """`set` (and its twin) for a cache whose only tier is a MemoryStore."""
    cls = type(cache)
    first = cache._tiers[0]
    prefix = cache._prefix
    default_ttl = cache._ttl
    put = first.store.putter(prefix)
    slow_set, slow_set_async = cls.set.__get__(cache), cls.set_async.__get__(cache)

    def set(
        key: object, value: Any, *, ttl: Any = MISSING, tags: Any = (), meta: Any = None,
        bind: Any = None, **unexpected: Any,
    ) -> None:  # fmt: skip
        if ttl is MISSING:
            ttl = default_ttl
        if (
            type(key) is not str or meta is not None or bind is not None or unexpected
            or type(tags) is not tuple or tags or cache._binds or cache._closed
            or (ttl is not None and not (type(ttl) in _NUMBERS and 0 < ttl < _MAX_TTL))
        ):  # fmt: skip
            slow_set(key, value, ttl=ttl, tags=tags, meta=meta, bind=bind, **unexpected)
            return
        size = len(value) + _BYTES if type(value) is bytes else estimate_size(value)
        put(key, value, cache._clock.time(), ttl, size)
        first.sets += 1

    async def set_async(
        key: object, value: Any, *, ttl: Any = MISSING, tags: Any = (), meta: Any = None,
        bind: Any = None, **unexpected: Any,
    ) -> None:  # fmt: skip
        if ttl is MISSING:
            ttl = default_ttl
        if (
            type(key) is not str or meta is not None or bind is not None or unexpected
            or type(tags) is not tuple or tags or cache._binds or cache._closed
            or (ttl is not None and not (type(ttl) in _NUMBERS and 0 < ttl < _MAX_TTL))
        ):  # fmt: skip
            await slow_set_async(key, value, ttl=ttl, tags=tags, meta=meta, bind=bind, **unexpected)
            return
        size = len(value) + _BYTES if type(value) is bytes else estimate_size(value)
        put(key, value, cache._clock.time(), ttl, size)
        first.sets += 1

    return {"set": set, "set_async": set_async}


def _batch_writes(cache: Cache) -> dict[str, Callable[..., Any]]:
    """`set_many` (and its twin) for a cache whose only tier is a MemoryStore."""
    cls = type(cache)
    first = cache._tiers[0]
    prefix = cache._prefix
    default_ttl = cache._ttl
    put_many = first.store.put_many
    slow_many, slow_many_async = cls.set_many.__get__(cache), cls.set_many_async.__get__(cache)

    def seconds(ttl: Any) -> Any:
        """`ttl` as seconds (None: never), or MISSING if the full path must check it."""
        if ttl is MISSING:
            return default_ttl
        if ttl is None:
            return None
        kind = type(ttl)
        if (kind is int or kind is float) and 0 < ttl < _MAX_TTL:
            return ttl
        return MISSING

    def batch(items: Any, ttl: Any, tags: Any, meta: Any) -> list[tuple[str, Any, int]] | None:
        """(stored key, value, size) of `items` if the fast path takes them all, else None."""
        if type(items) is not dict or type(tags) is not tuple or tags or meta is not None:
            return None
        if cache._binds:
            return None
        out = []
        for key, value in items.items():
            if type(key) is not str:
                return None
            out.append((key, value, len(value) + _BYTES if type(value) is bytes else sizeof(value)))
        return out

    def set_many(
        items: Mapping[Any, Any], *, ttl: Any = MISSING, tags: Any = (), meta: Any = None
    ) -> None:
        ttl_s = seconds(ttl)
        triples = None if ttl_s is MISSING or cache._closed else batch(items, ttl, tags, meta)
        if triples is None:
            slow_many(items, ttl=ttl, tags=tags, meta=meta)
            return
        put_many(prefix, triples, cache._clock.time(), ttl_s)
        first.sets += len(triples)

    async def set_many_async(
        items: Mapping[Any, Any], *, ttl: Any = MISSING, tags: Any = (), meta: Any = None
    ) -> None:
        ttl_s = seconds(ttl)
        triples = None if ttl_s is MISSING or cache._closed else batch(items, ttl, tags, meta)
        if triples is None:
            await slow_many_async(items, ttl=ttl, tags=tags, meta=meta)
            return
        put_many(prefix, triples, cache._clock.time(), ttl_s)
        first.sets += len(triples)

    return {"set_many": set_many, "set_many_async": set_many_async}


def sizeof(value: Any) -> int:
    """`estimate_size`, bytes (the commonest value) counted without a call (as in `set`)."""
    if type(value) is bytes:
        return len(value) + _BYTES
    return estimate_size(value)


def _nothing_to_remove() -> None:
    """(A cache without a memory first tier has no fast paths.)"""
