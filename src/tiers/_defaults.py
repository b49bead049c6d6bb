"""`default_cache()`: the process-wide cache over the default stack, built on first use."""

from __future__ import annotations

import threading

from ._cache import Cache

_lock = threading.Lock()
_default: Cache | None = None


def default_cache() -> Cache:
    """The shared default `Cache`: 64 MB in memory over a disk store in the user cache dir.

    Built on first call (``$TIERS_CACHE_DIR`` overrides the directory), then reused.
    """
    global _default  # noqa: PLW0603  (the one module-level cache DESIGN.md allows)
    if _default is None:
        with _lock:
            if _default is None:
                _default = Cache()
    return _default
