"""`CachingReadableStore`: an obspec read-through cache, drop-in for obspec-utils' class."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

from . import _blocks, _plans
from ._state import ReadState

_READS = (
    "get", "get_async", "get_range", "get_range_async", "get_ranges", "get_ranges_async",
    "head", "head_async",
)  # fmt: skip


def _checked(store: Any, max_size: int, cache: Any, block_size: int | None) -> None:
    missing = [name for name in _READS if not callable(getattr(store, name, None))]
    if missing:
        raise TypeError(
            f"CachingReadableStore needs a store with the obspec read methods, but "
            f"{type(store).__qualname__} lacks {', '.join(missing)}."
        )
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
        raise ValueError(f"max_size must be a non-negative int of bytes, got {max_size!r}")
    if block_size is not None and (
        isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0
    ):
        raise ValueError(f"block_size must be None or a positive int of bytes, got {block_size!r}")
    from .._cache import Cache

    if cache is not None and not isinstance(cache, Cache):
        raise TypeError(f"cache must be a tiers.Cache or None, not {type(cache).__qualname__!r}")


def _rebuild(
    cls: type[CachingReadableStore], store: Any, max_size: int, cache: Any, block_size: int | None
) -> CachingReadableStore:
    return cls(store, max_size, cache=cache, block_size=block_size)


class CachingReadableStore:
    """Read-through cache over an obspec store: whole objects (or aligned blocks) in memory.

    A drop-in for obspec-utils' class of the same name. Concurrent misses of one path make one
    origin request; no lock is held during I/O. `block_size` caches aligned blocks so a small
    range of a large object fetches only the blocks it covers; `cache` (a `tiers.Cache`) is a
    next level shared across processes, keyed by the object's version. Objects larger than
    `max_size` are served from the origin and never held whole.
    """

    def __init__(
        self,
        store: Any,
        max_size: int = 256 * 2**20,
        *,
        cache: Any = None,
        block_size: int | None = None,
    ) -> None:
        _checked(store, max_size, cache, block_size)
        self._store = store
        self._max_size = max_size
        self._cache = cache
        self._block_size = block_size
        self._state = ReadState(store, max_size, block_size, cache)

    def __getattr__(self, name: str) -> Any:
        """Forward unknown public attributes (e.g. `prefix`) to the wrapped store."""
        if name.startswith("_") or "_store" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self._store, name)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as a fresh, empty instance over the same store and configuration."""
        return _rebuild, (type(self), self._store, self._max_size, self._cache, self._block_size)

    def __repr__(self) -> str:
        return f"CachingReadableStore({self._store!r}, max_size={self._max_size})"

    def __enter__(self) -> CachingReadableStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.clear_cache()

    # -- the in-memory level -----------------------------------------------------------------

    @property
    def cache_size(self) -> int:
        """Bytes held in memory (whole objects and blocks)."""
        return self._state.size()

    @property
    def cached_paths(self) -> list[str]:
        """Paths held in memory, least recently used first."""
        return self._state.paths()

    def clear_cache(self) -> None:
        """Drop everything held in memory (the `cache=` level is shared and left as it is)."""
        self._state.clear()

    # -- reads -------------------------------------------------------------------------------

    def get(self, path: str, *, options: Any = None) -> Any:
        """The whole object (or the `range` of `options`) as a GetResult with the origin's meta."""
        return _plans.run(_plans.get(self._state, path, options))

    async def get_async(self, path: str, *, options: Any = None) -> Any:
        """Async form of `get`."""
        return await _plans.run_async(_plans.get(self._state, path, options))

    def get_range(
        self, path: str, *, start: int, end: int | None = None, length: int | None = None
    ) -> Any:
        """Bytes [start, end) or [start, start + length) of the object."""
        span = _blocks.check_range(start, end, length)
        return _plans.run(_plans.ranges(self._state, path, [span], True))

    async def get_range_async(
        self, path: str, *, start: int, end: int | None = None, length: int | None = None
    ) -> Any:
        """Async form of `get_range`."""
        span = _blocks.check_range(start, end, length)
        return await _plans.run_async(_plans.ranges(self._state, path, [span], True))

    def get_ranges(
        self,
        path: str,
        *,
        starts: Sequence[int],
        ends: Sequence[int] | None = None,
        lengths: Sequence[int] | None = None,
    ) -> Any:
        """Several byte ranges of the object, in order."""
        spans = _blocks.check_ranges(starts, ends, lengths)
        return _plans.run(_plans.ranges(self._state, path, spans, False))

    async def get_ranges_async(
        self,
        path: str,
        *,
        starts: Sequence[int],
        ends: Sequence[int] | None = None,
        lengths: Sequence[int] | None = None,
    ) -> Any:
        """Async form of `get_ranges`."""
        spans = _blocks.check_ranges(starts, ends, lengths)
        return await _plans.run_async(_plans.ranges(self._state, path, spans, False))

    def head(self, path: str) -> Any:
        """The origin's ObjectMeta, asked once per path and remembered."""
        return _plans.run(_plans.head(self._state, path))

    async def head_async(self, path: str) -> Any:
        """Async form of `head`."""
        return await _plans.run_async(_plans.head(self._state, path))

    # -- writes: forwarded to the origin, invalidating the paths they touch -------------------

    def put(self, path: str, file: Any, **kwargs: Any) -> Any:
        """Write through to the origin; forgets what is cached for `path`."""
        return _plans.run(_plans.write(self._state, "put", (path, file), kwargs, [path]))

    async def put_async(self, path: str, file: Any, **kwargs: Any) -> Any:
        """Async form of `put`."""
        plan = _plans.write(self._state, "put", (path, file), kwargs, [path])
        return await _plans.run_async(plan)

    def delete(self, paths: str | Sequence[str]) -> Any:
        """Delete at the origin; forgets what is cached for those paths."""
        return _plans.run(_plans.write(self._state, "delete", (paths,), {}, _listed(paths)))

    async def delete_async(self, paths: str | Sequence[str]) -> Any:
        """Async form of `delete`."""
        plan = _plans.write(self._state, "delete", (paths,), {}, _listed(paths))
        return await _plans.run_async(plan)

    def copy(self, from_: str, to: str, **kwargs: Any) -> Any:
        """Copy at the origin; forgets what is cached for `to`."""
        return _plans.run(_plans.write(self._state, "copy", (from_, to), kwargs, [to]))

    async def copy_async(self, from_: str, to: str, **kwargs: Any) -> Any:
        """Async form of `copy`."""
        plan = _plans.write(self._state, "copy", (from_, to), kwargs, [to])
        return await _plans.run_async(plan)

    def rename(self, from_: str, to: str, **kwargs: Any) -> Any:
        """Rename at the origin; forgets what is cached for both paths."""
        return _plans.run(_plans.write(self._state, "rename", (from_, to), kwargs, [from_, to]))

    async def rename_async(self, from_: str, to: str, **kwargs: Any) -> Any:
        """Async form of `rename`."""
        plan = _plans.write(self._state, "rename", (from_, to), kwargs, [from_, to])
        return await _plans.run_async(plan)


def _listed(paths: str | Sequence[str]) -> list[str]:
    return [paths] if isinstance(paths, str) else list(paths)
