"""A Django cache backend on tiers: ``"BACKEND": "tiers.django.TiersCache"``.

::

    CACHES = {"default": {
        "BACKEND": "tiers.django.TiersCache",
        "LOCATION": ["memory://?max_items=10000", "/var/cache/myapp"],  # a str or a list
        "TIMEOUT": 300,
        "OPTIONS": {"serializer": "pickle", "namespace": "myapp", "on_tier_error": "degrade"},
    }}

`LOCATION` gives the tiers as `tiers.Cache` takes them (paths, URLs, stores), fastest first;
`OPTIONS` are `tiers.Cache`'s options (namespace: "django" unless given) plus Django's
`MAX_ENTRIES` and `CULL_FREQUENCY`. Aliases with the same LOCATION and OPTIONS share one
`tiers.Cache` for the process (`TiersCache.cache`), which `close()` leaves open. The ``a*``
methods use tiers' own ``*_async`` methods. Over a memory tier, values are pickled as Django's
own backends pickle them (str, bytes, int, float, bool and None are kept as they are), so a
value read is a copy, never the object another request changes. docs/django.md has the rest.
"""

from __future__ import annotations

import copy
import inspect
import pickle
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from os import PathLike
from typing import Any

from ._cache import Cache
from ._types import MISSING
from .errors import ConfigError, MissingDependencyError, SerializationError

try:
    from django.core.cache.backends.base import (
        DEFAULT_TIMEOUT,
        MEMCACHE_MAX_KEY_LENGTH,
        BaseCache,
    )
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise MissingDependencyError("tiers.django needs Django: pip install 'tiers[django]'") from exc

__all__ = ["TiersCache"]

DEFAULT_NAMESPACE = "django"
_DJANGO_OPTIONS = ("MAX_ENTRIES", "CULL_FREQUENCY")
_MEMCACHE_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # (as Django's memcached_error_chars_re)
_AS_IS = frozenset({str, bytes, int, float, bool, type(None)})
"""Immutable values stored as they are: tiers keeps them code-free, and `incr` needs ints."""


class TiersCache(BaseCache):  # type: ignore[misc]  # (Django has no type information)
    """Django's cache API over a `tiers.Cache` (see the module's docstring)."""

    _max_entries: int | None  # (None: no culling)

    def __init__(self, location: object, params: dict[str, Any]) -> None:
        super().__init__(params)
        options = dict(params.get("OPTIONS") or {})
        culls = "MAX_ENTRIES" in options or "max_entries" in params
        for name in _DJANGO_OPTIONS:
            options.pop(name, None)
        if "ttl" in options:
            raise ConfigError("give a Django cache's default ttl as TIMEOUT, not OPTIONS['ttl']")
        options.setdefault("namespace", DEFAULT_NAMESPACE)
        if not culls:
            self._max_entries = None  # bounds are the tiers' own (max_items=, max_size=)
        self.cache: Cache = shared_cache(location, options)
        """The `tiers.Cache` behind this alias: `stats()`, `check()`, `evict()`, ..."""
        live = any(t.holds_objects for t in self.cache._tiers)  # (a memory tier)
        pickles = self.cache._codec.name == "pickle"
        self._freezes = pickles and live  # (else every tier hands out a new object anyway)
        self._copies = live  # (objects a memory tier holds that were not frozen: copied)
        self._pickle_errors = _PickleErrors(pickles and not live)

    def validate_key(self, key: str) -> None:
        """Django's key warnings (`CacheKeyWarning`), checked first without Django's lazily
        compiled pattern, which costs ~1.7 µs a call: most of a memory hit."""
        if len(key) > MEMCACHE_MAX_KEY_LENGTH or _MEMCACHE_UNSAFE.search(key) is not None:
            super().validate_key(key)

    # -- values and timeouts -------------------------------------------------------------------

    def _freeze(self, value: Any) -> Any:
        """What is stored for `value`: over a memory tier, its pickle (as Django's own backends
        store it) unless it is immutable; else the value, which tiers encodes."""
        if not self._freezes or type(value) in _AS_IS:
            return value
        return Pickled(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))

    def _thaw(self, stored: Any) -> Any:
        """The value `stored` holds, a fresh object each time unless it is immutable."""
        if type(stored) is Pickled:
            return pickle.loads(stored.data)
        if self._copies and type(stored) not in _AS_IS:
            return copy.deepcopy(stored)  # (JSON or msgpack data; another alias's writes)
        return stored

    def _ttl(self, timeout: Any) -> float | None:
        """tiers' ttl for a Django timeout: seconds, None for ever, 0 for "gone at once"."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return max(float(timeout), 0.0)

    # -- culling (MAX_ENTRIES, only when set) ----------------------------------------------------

    def _victims(self, keys: list[str], most: int) -> list[str] | None:
        """The keys to remove before a write, None for all (CULL_FREQUENCY=0)."""
        if len(keys) < most:
            return []
        if self._cull_frequency == 0:
            return None
        return keys[: len(keys) // self._cull_frequency]

    def _cull(self) -> None:
        if self._max_entries is None:
            return
        victims = self._victims(list(self.cache.keys()), self._max_entries)
        if victims is None:
            self.cache.clear()
        for key in victims or ():
            self.cache.delete(key)

    async def _acull(self) -> None:
        if self._max_entries is None:
            return
        victims = self._victims([key async for key in self.cache.keys_async()], self._max_entries)
        if victims is None:
            await self.cache.clear_async()
        for key in victims or ():
            await self.cache.delete_async(key)

    # -- the cache API -------------------------------------------------------------------------

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        value = self.cache.get(self.make_and_validate_key(key, version=version), MISSING)
        if type(value) is Pickled:  # (the usual hit over a memory tier: `_thaw` inlined)
            return pickle.loads(value.data)
        return default if value is MISSING else self._thaw(value)

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        k = self.make_and_validate_key(key, version=version)
        stored, ttl = self._freeze(value), self._ttl(timeout)
        if ttl == 0:
            self.cache.delete(k)
            return
        self._cull()
        with self._pickle_errors:
            self.cache.set(k, stored, ttl=ttl)

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        k = self.make_and_validate_key(key, version=version)
        stored, ttl = self._freeze(value), self._ttl(timeout)
        if ttl == 0:
            return not self.cache.has(k)
        self._cull()
        with self._pickle_errors:
            added, _value = self.cache._setdefault(k, stored, ttl=ttl)
        return added

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        k, ttl = self.make_and_validate_key(key, version=version), self._ttl(timeout)
        if ttl == 0:
            return self.cache.delete(k)
        return self.cache.touch(k, ttl=ttl)

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self.cache.delete(self.make_and_validate_key(key, version=version))

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return self.cache.has(self.make_and_validate_key(key, version=version))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        k = self.make_and_validate_key(key, version=version)
        try:
            return self.cache.incr(k, delta, default=None)
        except KeyError:
            raise ValueError(f"Key '{k}' not found") from None

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        made = self._made(keys, version)
        found = self.cache.get_many(made, MISSING)
        return {made[k]: self._thaw(v) for k, v in found.items() if v is not MISSING}

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        items = self._frozen(data, version)
        ttl = self._ttl(timeout)
        if ttl == 0:
            for k in items:
                self.cache.delete(k)
        elif items:
            self._cull()
            with self._pickle_errors:
                self.cache.set_many(items, ttl=ttl)
        return []

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        for k in self._made(keys, version):
            self.cache.delete(k)

    def clear(self) -> None:
        self.cache.clear()

    def get_or_set(
        self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> Any:
        """The value of `key`; if absent, `default` (called if callable) is stored and returned.
        Concurrent callers of a missing key compute it once (tiers' `get_or_set`)."""
        k = self.make_and_validate_key(key, version=version)
        value = self.cache.get(k, MISSING)
        if value is not MISSING:
            return self._thaw(value)
        ttl = self._ttl(timeout)
        if ttl == 0:
            return default() if callable(default) else default
        self._cull()
        with self._pickle_errors:
            return self._thaw(self.cache.get_or_set(k, self._factory(default), ttl=ttl))

    def close(self, **kwargs: Any) -> None:
        """Nothing to release after a request: the tiers stay open for the next one."""

    # -- async: tiers' own *_async methods -------------------------------------------------------

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        k = self.make_and_validate_key(key, version=version)
        value = await self.cache.get_async(k, MISSING)
        return default if value is MISSING else self._thaw(value)

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        k = self.make_and_validate_key(key, version=version)
        stored, ttl = self._freeze(value), self._ttl(timeout)
        if ttl == 0:
            await self.cache.delete_async(k)
            return
        await self._acull()
        with self._pickle_errors:
            await self.cache.set_async(k, stored, ttl=ttl)

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        k = self.make_and_validate_key(key, version=version)
        stored, ttl = self._freeze(value), self._ttl(timeout)
        if ttl == 0:
            return not await self.cache.has_async(k)
        await self._acull()
        with self._pickle_errors:
            added, _value = await self.cache._setdefault_async(k, stored, ttl=ttl)
        return added

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        k, ttl = self.make_and_validate_key(key, version=version), self._ttl(timeout)
        if ttl == 0:
            return await self.cache.delete_async(k)
        return await self.cache.touch_async(k, ttl=ttl)

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return await self.cache.delete_async(self.make_and_validate_key(key, version=version))

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return await self.cache.has_async(self.make_and_validate_key(key, version=version))

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        k = self.make_and_validate_key(key, version=version)
        try:
            return await self.cache.incr_async(k, delta, default=None)
        except KeyError:
            raise ValueError(f"Key '{k}' not found") from None

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return await self.aincr(key, -delta, version=version)

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        made = self._made(keys, version)
        found = await self.cache.get_many_async(made, MISSING)
        return {made[k]: self._thaw(v) for k, v in found.items() if v is not MISSING}

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        items = self._frozen(data, version)
        ttl = self._ttl(timeout)
        if ttl == 0:
            for k in items:
                await self.cache.delete_async(k)
        elif items:
            await self._acull()
            with self._pickle_errors:
                await self.cache.set_many_async(items, ttl=ttl)
        return []

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        for k in self._made(keys, version):
            await self.cache.delete_async(k)

    async def aclear(self) -> None:
        await self.cache.clear_async()

    async def aget_or_set(
        self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> Any:
        """`get_or_set`, with tiers' `get_or_set_async` (`default` may be async)."""
        k = self.make_and_validate_key(key, version=version)
        value = await self.cache.get_async(k, MISSING)
        if value is not MISSING:
            return self._thaw(value)
        ttl = self._ttl(timeout)
        factory = self._afactory(default)
        if ttl == 0:
            return self._thaw(await factory())
        await self._acull()
        with self._pickle_errors:
            return self._thaw(await self.cache.get_or_set_async(k, factory, ttl=ttl))

    async def aclose(self, **kwargs: Any) -> None:
        """As `close`: nothing to release."""

    # -- helpers ------------------------------------------------------------------------------

    def _made(self, keys: Iterable[Any], version: int | None) -> dict[str, Any]:
        """``{stored key: key}`` for Django keys, each validated (warned about)."""
        return {self.make_and_validate_key(key, version=version): key for key in keys}

    def _frozen(self, data: Mapping[Any, Any], version: int | None) -> dict[str, Any]:
        """``{stored key: stored value}`` for a `set_many`: every value pickled first."""
        return {
            self.make_and_validate_key(key, version=version): self._freeze(value)
            for key, value in data.items()
        }

    def _factory(self, default: Any) -> Callable[[], Any]:
        """The tiers factory for Django's `default` (a value, or a callable making it)."""
        return lambda: self._freeze(default() if callable(default) else default)

    def _afactory(self, default: Any) -> Callable[[], Awaitable[Any]]:
        """`_factory` for the async methods: `default()` may also be awaitable."""

        async def make() -> Any:
            made = default() if callable(default) else default
            return self._freeze(await made if inspect.isawaitable(made) else made)

        return make


class _PickleErrors:
    """Around a write that tiers pickles: what pickle raised for a value goes through as it is
    (`pickle.PicklingError`, ...), as with Django's own backends, not tiers' wrapping of it."""

    __slots__ = ("on",)

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if self.on and isinstance(exc, SerializationError) and exc.__cause__ is not None:
            raise exc.__cause__ from None


class Pickled:
    """A value pickled by `TiersCache`: immutable, so the copy a memory tier keeps is never
    changed by a caller. tiers signs it on the byte tiers as any other object."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pickled, (self.data,))

    def __repr__(self) -> str:
        return f"<tiers.django.Pickled: {len(self.data)} bytes>"


# -- the process's shared stores ----------------------------------------------------------------

_shared: dict[tuple[object, ...], Cache] = {}
_shared_lock = threading.Lock()


def _tiers(location: object) -> tuple[object, ...]:
    """LOCATION as `tiers.Cache`'s tiers: "" or nothing is tiers' default stack."""
    if isinstance(location, (str, PathLike)):
        return (location,) if location else ()
    if isinstance(location, Sequence):
        return tuple(location)
    if location is None:
        return ()
    return (location,)


def shared_cache(location: object, options: Mapping[str, Any]) -> Cache:
    """The process's one `tiers.Cache` over `location` with `options` (opened on first use;
    again if someone closed it)."""
    tiers = _tiers(location)
    key = (tiers, tuple(sorted(options.items())))
    with _shared_lock:
        cache = _shared.get(key)
        if cache is None or cache._closed:
            cache = _shared[key] = Cache(*tiers, **options)
        return cache


def _close_all() -> None:
    """Close and forget every shared cache (for tests: their stores live in temporary places)."""
    with _shared_lock:
        caches = list(_shared.values())
        _shared.clear()
    for cache in caches:
        cache.close()
