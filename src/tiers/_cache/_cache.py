"""`Cache`: the public face — sync and async operations, mapping protocol, pickling."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, overload

from .._stores._protocol import SupportsKeys, implements
from .._types import MISSING
from ._async.operations import AsyncOps
from ._memoize import Memoized, P, R, decorate
from ._options import MemoizeOptions, MemoOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack
from ._sync.operations import SyncOps


class Cache(SyncOps, AsyncOps):
    """One cache over one or more tiers, fastest first.

    ``Cache(*tiers, ttl=None, serializer="pickle", compress=None, namespace="", secret=None,
    on_tier_error="degrade", lease=30.0, coherence="auto", max_age=60.0, name=None)``

    Each tier is a store, a path (a `DiskStore`) or a URL (``memory://?max_size=64MB``,
    ``disk:///path?max_size=10GB``, ``null://``). With no tiers: a 64 MB `MemoryStore` over a
    `DiskStore` in the user's cache directory. Reads are answered by the first tier that has
    the key and copied up; writes go to every tier. Every I/O method has an ``_async`` twin.
    Faster tiers never hide another process's write (`coherence`, `max_age`: docs/coherence.md).
    """

    @property
    def name(self) -> str:
        """The cache's name in metrics and logs: ``name=``, else the namespace, else
        "default"."""
        return self._name

    def __repr__(self) -> str:
        tiers = ", ".join(t.name for t in self._tiers)
        ns = f", namespace={self._namespace!r}" if self._namespace else ""
        return f"Cache({tiers}{ns})"

    def __reduce__(self) -> tuple[Any, ...]:
        stores = tuple(t.store for t in self._tiers)
        owned = tuple(t.owned for t in self._tiers)
        return (_rebuild, (stores, owned, self._options.as_kwargs()))

    # -- memoization -----------------------------------------------------------------------

    @overload
    def memoize(self, func: Callable[P, R], /) -> Memoized[P, R]: ...

    @overload
    def memoize(
        self, func: None = None, /, **options: Unpack[MemoizeOptions]
    ) -> Callable[[Callable[P, R]], Memoized[P, R]]: ...

    def memoize(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorator caching a function's results in this cache (``@cache.memoize`` or
        ``@cache.memoize(ttl=..., version=...)``); see docs/memoize.md.

        Options (`MemoizeOptions`): `ttl`, `tags`, `name` (default ``module.qualname``),
        `version`, `ignore` (parameters left out of the key), `key` (a callable replacing
        the content hash of the bound arguments), `lease`. Works on functions, methods,
        static and class methods, and ``async def``. Concurrent callers of a cold key wait
        for one computation (as `get_or_set`). Each entry's meta records its provenance.
        """
        checked = MemoOptions.check(self, "Cache.memoize()", options)
        if func is not None:
            return decorate(self, func, checked)
        return lambda function: decorate(self, function, checked)

    # -- mapping protocol ----------------------------------------------------------------

    def __getitem__(self, key: object) -> Any:
        value = self.get(key, MISSING)
        if value is MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: object, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: object) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return self.has(key)

    def __len__(self) -> int:
        """Live entries of this cache's namespace in its most complete (last) tier."""
        tier = self._scan_tier
        return int(tier.store.count(self._prefix)) if tier.can.keys else 0

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def keys(self, *, tag: str | None = None, prefix: str | None = None) -> Iterator[str]:
        """Keys of the most complete (last) tier, optionally only those with `tag` / `prefix`.

        Bad arguments raise here, not at the first ``next()``.
        """
        start = self._scan_prefix(tag, prefix)
        tier = self._scan_tier
        if not tier.can.keys:
            return iter(())
        return (self._user_key(stored) for stored in tier.store.keys(start, tag))

    def keys_async(
        self, *, tag: str | None = None, prefix: str | None = None
    ) -> AsyncIterator[str]:
        """Like `keys`, for ``async for`` (the store's ``keys_async``; blocking scans run in a
        worker thread)."""
        start = self._scan_prefix(tag, prefix)
        return self._keys_async(start, tag)

    async def _keys_async(self, start: str, tag: str | None) -> AsyncIterator[str]:
        tier = self._scan_tier
        if not tier.can.keys:
            return
        if implements(tier.store, SupportsKeys):
            async for stored in tier.store.keys_async(start, tag):
                yield self._user_key(stored)
            return
        import asyncio  # a store without keys_async: its scan runs in a worker thread

        for stored in await asyncio.to_thread(lambda: list(tier.store.keys(start, tag))):
            yield self._user_key(stored)

    def _scan_prefix(self, tag: object, prefix: object) -> str:
        if tag is not None:
            self._check_tags((tag,))
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__qualname__!r}")
        return self._prefix + (prefix or "")

    # -- context managers ----------------------------------------------------------------

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    async def __aenter__(self) -> Cache:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.close_async()


def _rebuild(stores: tuple[Any, ...], owned: tuple[bool, ...], options: dict[str, Any]) -> Cache:
    cache = Cache(*stores, **options)
    for tier, was_owned in zip(cache._tiers, owned, strict=True):
        tier.owned = was_owned
    return cache
