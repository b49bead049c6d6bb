"""Per-operation latency: timed wrappers put on one cache instance, none on the others.

`time_operations` assigns a timed wrapper of each bound method (``get``, ``set``, ...,
and its ``_async`` twin) as an attribute of the cache *instance*; attribute lookup finds it
before the class's method. A cache that is not timed has no such attribute and runs exactly
the class's methods: timing costs nothing unless it is on. (`Cache` has no ``__slots__``, so
its instances take attributes.)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._reading import cache_name

if TYPE_CHECKING:
    from .._cache import Cache

OPERATIONS = ("get", "set", "delete", "get_or_set")
"""The operations timed by default (each with its ``_async`` twin)."""
_TIMEABLE = frozenset(
    {"get", "set", "delete", "get_or_set", "get_many", "set_many", "add", "pop", "has", "touch"}
)
LATENCY_BUCKETS = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Histogram bounds in seconds, 1 µs (a memory hit) to 10 s (a slow remote tier)."""
_MARK = "_tiers_histogram"  # a timed wrapper's attribute: the histogram it records into


def time_operations(
    cache: Cache, histogram: object, *, operations: Iterable[str] = OPERATIONS
) -> None:
    """Record the seconds each call of `operations` (and their ``_async`` twins) on `cache`
    takes into `histogram`, labelled with the cache's name and the operation's.

    `histogram`: a ``prometheus_client.Histogram`` with label names ``cache`` and
    ``operation``, or an OpenTelemetry ``Histogram`` (attributes ``cache`` and
    ``operation``). Calls that raise are recorded too. Timing a cache twice with the same
    histogram changes nothing; `untime_operations` removes every timing. Memoized functions'
    hits on their fast path do not go through ``get`` and are not timed.
    """
    names = [operations] if isinstance(operations, str) else list(operations)
    unknown = [op for op in names if op not in _TIMEABLE]
    if unknown:
        raise ValueError(f"cannot time {unknown[0]!r}; choose from {sorted(_TIMEABLE)}")
    recorder = _recorder(histogram, cache_name(cache))
    for base in names:
        for op in (base, base + "_async"):
            method = getattr(cache, op)
            if _timed_with(method, histogram):
                continue
            observe = recorder(op)
            wrapper = _async(method, observe) if op.endswith("_async") else _sync(method, observe)
            setattr(wrapper, _MARK, histogram)
            setattr(cache, op, wrapper)


def untime_operations(cache: Cache) -> None:
    """Remove the timing `time_operations` put on `cache`: its methods are the class's again
    (a wrapper someone else put over a timed one is left, with the timing under it)."""
    for base in _TIMEABLE:
        for op in (base, base + "_async"):
            while hasattr(vars(cache).get(op), _MARK):
                inner = vars(cache)[op].__wrapped__
                if getattr(inner, "__func__", None) is getattr(type(cache), op, None):
                    delattr(cache, op)  # the class's method again
                else:
                    setattr(cache, op, inner)


def _timed_with(method: object, histogram: object) -> bool:
    while hasattr(method, _MARK):
        if getattr(method, _MARK) is histogram:
            return True
        method = getattr(method, "__wrapped__", None)
    return False


def _recorder(histogram: object, name: str) -> Callable[[str], Callable[[float], None]]:
    """For an operation's name: the function recording one call's seconds."""
    metric: Any = histogram
    if callable(getattr(metric, "labels", None)) and callable(getattr(metric, "observe", None)):
        return lambda op: metric.labels(cache=name, operation=op).observe
    if callable(getattr(metric, "record", None)):

        def otel(op: str) -> Callable[[float], None]:
            attributes = {"cache": name, "operation": op}
            return lambda seconds: metric.record(seconds, attributes)

        return otel
    raise TypeError(
        "histogram must be a prometheus_client Histogram (labels cache, operation) or an "
        f"OpenTelemetry Histogram, not {type(histogram).__qualname__!r}"
    )


def _sync(method: Callable[..., Any], observe: Callable[[float], None]) -> Callable[..., Any]:
    clock = time.perf_counter

    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return method(*args, **kwargs)
        finally:
            observe(clock() - start)

    return timed


def _async(method: Callable[..., Any], observe: Callable[[float], None]) -> Callable[..., Any]:
    clock = time.perf_counter

    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return await method(*args, **kwargs)
        finally:
            observe(clock() - start)

    return timed
