"""`default_cache()` and `memoize()`: the entry points that need no Cache of one's own."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, overload

from ._cache import Cache
from ._cache._memoize import Memoized, P, R
from ._cache._options import NAMES

_lock = threading.Lock()
_default: Cache | None = None


def default_cache() -> Cache:
    """The shared default `Cache`: 64 MB in memory over a disk store in the user cache dir.

    Built on first call (``$TIERS_CACHE_DIR`` overrides the directory), then reused.
    """
    global _default  # noqa: PLW0603  (the one module-level cache: docs/architecture.md)
    if _default is None:
        with _lock:
            if _default is None:
                _default = Cache()
    return _default


@overload
def memoize(func: Callable[P, R], /) -> Memoized[P, R]: ...  # type: ignore[overload-overlap]


@overload
def memoize(*tiers: object, **options: Any) -> Callable[[Callable[P, R]], Memoized[P, R]]: ...


def memoize(*tiers: object, **options: Any) -> Any:
    """``@tiers.memoize(*tiers, ttl=..., **cache_options)``: memoize into a `Cache` over these
    tiers (built here with the options `Cache()` takes), or into `default_cache()` when none
    are given. Bare ``@tiers.memoize`` uses the default cache. Memoize options
    (`MemoizeOptions`) as `Cache.memoize`."""
    memo = {name: options.pop(name) for name in NAMES & options.keys()}
    if len(tiers) == 1 and _is_function(tiers[0]) and not options:
        return default_cache().memoize(**memo)(tiers[0])  # type: ignore[arg-type]
    cache = default_cache() if not tiers and not options else Cache(*tiers, **options)
    return cache.memoize(**memo)


def _is_function(candidate: object) -> bool:
    """A bare ``@tiers.memoize`` receives the function where tiers would be."""
    if isinstance(candidate, (str, os.PathLike, staticmethod, classmethod)):
        return isinstance(candidate, (staticmethod, classmethod))
    return callable(candidate) and not hasattr(candidate, "holds_objects")
