"""tiers on Dask: one cache per worker, built on the worker by a `WorkerPlugin`.

A `Cache` passed to a task as an argument is pickled with it: it arrives with its configuration
but an empty memory tier, fresh connections and no single-flight shared with the other tasks —
in every task. Install one per worker instead::

    client.register_plugin(tiers.dask.CachePlugin(tiers.MemoryStore(max_items=1024),
                                                  "redis://cache-host:6379/0", ttl=3600))

    @tiers.dask.memoize(ttl=600)          # the worker's cache, found when the task runs
    def load(path): ...

    def task(x):
        cache = tiers.dask.worker_cache()  # the same Cache for every task on this worker
        return cache.get_or_set(("step", x), lambda: compute(x))

With a shared tier (Redis, object storage, or a DiskStore on the workers' common host), a cold
key is computed once across all workers: the cache's single-flight takes the shared tier's lock.
Needs ``distributed`` (``pip install "tiers[dask]"``).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._cache import Cache
from ._cache._memoize import Memoized, P, R
from ._cache._options import MemoizeOptions, check_names
from ._defaults import default_cache
from .errors import MissingDependencyError

if TYPE_CHECKING:
    from typing_extensions import Unpack

try:
    from distributed import WorkerPlugin, get_worker
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise MissingDependencyError(
        'tiers.dask needs the distributed package: pip install "tiers[dask]"'
    ) from exc

__all__ = ["CachePlugin", "memoize", "worker_cache"]

_PLUGIN_PREFIX = "tiers-cache-"


class CachePlugin(WorkerPlugin):
    """Builds ``Cache(*tiers, **cache_options)`` on each worker when it starts (and on workers
    that join later), and closes it when the worker stops. `name` tells caches apart when a
    cluster has several; tasks find theirs with ``worker_cache(name)``.

    Tiers are given as they would be to `Cache` (stores, paths, URLs); they travel to the
    workers pickled, which for stores means their configuration only.
    """

    idempotent = False

    def __init__(self, *tiers: object, name: str = "default", **cache_options: Any) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, not {name!r}")
        self.tiers = tiers
        self.cache_name = name
        self.cache_options = cache_options
        self.name = _PLUGIN_PREFIX + name
        self.cache: Cache | None = None

    def setup(self, worker: Any) -> None:
        self.cache = Cache(*self.tiers, **self.cache_options)

    def teardown(self, worker: Any) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["cache"] = None  # configuration travels, the cache is built on the worker
        return state


def worker_cache(name: str = "default") -> Cache:
    """The `Cache` a `CachePlugin` named `name` installed on the worker running this task.

    Outside a Dask worker (a local call, a test), `tiers.default_cache()` for the default name;
    a RuntimeError for another name or when no such plugin is registered on this worker.
    """
    try:
        worker = get_worker()
    except ValueError:  # not running in a worker
        if name == "default":
            return default_cache()
        raise RuntimeError(
            f"worker_cache({name!r}) called outside a Dask worker; "
            "call it from a task, or use a Cache of your own here"
        ) from None
    plugin = worker.plugins.get(_PLUGIN_PREFIX + name)
    if not isinstance(plugin, CachePlugin) or plugin.cache is None:
        raise RuntimeError(
            f"no tiers cache named {name!r} on this worker: register it first with "
            f"client.register_plugin(tiers.dask.CachePlugin(..., name={name!r}))"
        )
    return plugin.cache


def memoize(
    func: Callable[..., Any] | None = None,
    /,
    *,
    cache: str = "default",
    **options: Unpack[MemoizeOptions],
) -> Any:
    """``Cache.memoize`` against ``worker_cache(cache)``, resolved when the function is called
    (so it can be defined on the client and pickled into tasks). Options as `Cache.memoize`;
    `name` defaults to the function's qualified name, so every worker uses the same keys."""
    check_names("tiers.dask.memoize()", options)

    def decorate(function: Callable[P, R]) -> Memoized[P, R]:
        return _WorkerMemoized(function, cache, dict(options))  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


class _WorkerMemoized:
    """A function memoized into whichever worker cache is current when it is called."""

    def __init__(self, func: Callable[..., Any], cache: str, options: dict[str, Any]) -> None:
        self.__wrapped__ = func
        self._cache_name = cache
        self._options = options
        self._memoized: weakref.WeakKeyDictionary[Cache, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        functools.update_wrapper(self, func)

    def _for(self, cache: Cache) -> Any:
        found = self._memoized.get(cache)
        if found is None:
            with self._lock:
                found = self._memoized.get(cache)
                if found is None:
                    found = self._memoized[cache] = cache.memoize(**self._options)(self.__wrapped__)
        return found

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._for(worker_cache(self._cache_name))(*args, **kwargs)

    @property
    def cache(self) -> Cache:
        return worker_cache(self._cache_name)

    def key(self, *args: Any, **kwargs: Any) -> str:
        return str(self._for(self.cache).key(*args, **kwargs))

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self._for(self.cache).invalidate(*args, **kwargs))

    def __getstate__(self) -> dict[str, Any]:
        return {"func": self.__wrapped__, "cache": self._cache_name, "options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["func"], state["cache"], state["options"])  # type: ignore[misc]

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return self if instance is None else functools.partial(self, instance)
