"""Prometheus: a collector reading caches' stats at scrape time, and latency histograms."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError
from ._reading import CACHE_COUNTERS, COUNTERS, Source, admit, check_interval
from ._timing import LATENCY_BUCKETS, time_operations

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from .._cache import Cache

_TIER = ["cache", "tier", "store"]
HISTOGRAM = "tiers_operation_duration_seconds"


def prometheus_module() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError as exc:
        raise MissingDependencyError(
            'tiers.metrics needs prometheus_client: pip install "tiers[prometheus]"'
        ) from exc
    return prometheus_client


class PrometheusCollector:
    """A Prometheus collector of caches' `stats()`, read when scraped (pull: nothing is
    counted on the caches' paths). Register it with ``registry.register(collector)``.

    Per tier (labels ``cache``, ``tier``, ``store``): a counter ``tiers_<name>_total`` for
    each counter of `TierStats` (hits, misses, sets, deletes, evictions, expirations,
    errors, rejected, lock_fallbacks, lost_leases, ...) and the gauges ``tiers_items``,
    ``tiers_bytes``, ``tiers_max_bytes`` (tiers with a ``max_size``). Per cache (label
    ``cache``): a counter ``tiers_cache_<name>_total`` for each of `CACHE_COUNTERS`:
    ``tiers_cache_hits_total``, ``tiers_cache_misses_total`` (a get any tier answered is one
    hit), ``tiers_cache_stale_served_total``, ``tiers_cache_refreshes_total``,
    ``tiers_cache_refresh_errors_total`` (background refreshes of ``stale=``/``early=`` values
    that raised: alert on it); and ``tiers_scrape_errors_total`` (scrapes whose ``stats()``
    raised: that cache is skipped).

    Caches are held weakly; closed or garbage-collected ones drop out. `min_interval`:
    seconds during which a cache's last stats are reused (``stats()`` of a Redis or object
    storage tier scans it: O(n)).
    """

    def __init__(self, *caches: Cache, min_interval: float = 0.0) -> None:
        prometheus_module()
        check_interval(min_interval)
        self._lock = threading.Lock()
        self._sources: list[Source] = []
        for cache in caches:
            self.add(cache, min_interval=min_interval)

    def add(self, cache: Cache, *, min_interval: float = 0.0) -> None:
        """Collect `cache` too (again: no change). ValueError if another cache collected
        here has its name."""
        check_interval(min_interval)
        with self._lock:
            kept = admit(self._sources, cache)
            if kept is not None:
                self._sources = [*kept, Source(cache, min_interval)]

    def remove(self, cache: Cache) -> None:
        """Stop collecting `cache`."""
        with self._lock:
            self._sources = [s for s in self._sources if s.cache is not cache]

    def describe(self) -> list[Metric]:
        """The metric families, without samples (a registry checks names with it)."""
        return list(_families().values())

    def collect(self) -> list[Metric]:
        """The samples of every cache collected, read now; never raises for a cache."""
        families = _families()
        with self._lock:
            sources = list(self._sources)
        for source in sources:
            if not source.live():
                continue
            reading = source.read()
            if not source.live():  # closed while being read
                continue
            families["scrape_errors"].add_metric([source.name], source.scrape_errors)
            if reading is None:
                continue
            for name in CACHE_COUNTERS:
                families[f"cache_{name}"].add_metric([source.name], reading.counters[name])
            for tier in reading.tiers:
                labels = [source.name, tier.tier, tier.store]
                for name in COUNTERS:
                    families[name].add_metric(labels, tier.counters[name])
                families["items"].add_metric(labels, tier.items)
                families["bytes"].add_metric(labels, tier.bytes)
                if tier.max_bytes is not None:
                    families["max_bytes"].add_metric(labels, tier.max_bytes)
        return list(families.values())


def _families() -> dict[str, Any]:
    core = prometheus_module().core
    counter, gauge = core.CounterMetricFamily, core.GaugeMetricFamily
    families: dict[str, Any] = {
        name: counter(f"tiers_{name}", f"{text}.", labels=_TIER) for name, text in COUNTERS.items()
    }
    families["items"] = gauge("tiers_items", "Entries the tier holds.", labels=_TIER)
    families["bytes"] = gauge("tiers_bytes", "Bytes the tier holds.", labels=_TIER)
    families["max_bytes"] = gauge(
        "tiers_max_bytes", "The tier's size limit (tiers with a max_size).", labels=_TIER
    )
    for name, text in CACHE_COUNTERS.items():
        families[f"cache_{name}"] = counter(f"tiers_cache_{name}", f"{text}.", labels=["cache"])
    families["scrape_errors"] = counter(
        "tiers_scrape_errors", "Scrapes that could not read the cache's stats.", labels=["cache"]
    )
    return families


class _Registered:
    """What `register_prometheus` put in one registry."""

    def __init__(self, collector: PrometheusCollector) -> None:
        self.collector = collector
        self.histogram: Any = None


_REGISTRIES: weakref.WeakKeyDictionary[Any, _Registered] = weakref.WeakKeyDictionary()
_REGISTERING = threading.Lock()


def register_prometheus(
    cache: Cache,
    registry: CollectorRegistry | None = None,
    *,
    observe_latency: bool = False,
    min_interval: float = 0.0,
) -> PrometheusCollector:
    """Export `cache`'s stats to `registry` (default: prometheus_client's global
    ``REGISTRY``) through one `PrometheusCollector` per registry, which it returns.

    `observe_latency`: also time the cache's ``get``, ``set``, ``delete`` and ``get_or_set``
    (and ``_async`` twins) into the histogram ``tiers_operation_duration_seconds`` (labels
    ``cache``, ``operation``; see `time_operations`). `min_interval`: see
    `PrometheusCollector`. Registering a cache again changes nothing (but may turn timing on).
    """
    prometheus = prometheus_module()
    if registry is None:
        registry = prometheus.REGISTRY
    with _REGISTERING:
        state = _REGISTRIES.get(registry)
        if state is None:
            collector = PrometheusCollector()
            collector.add(cache, min_interval=min_interval)
            registry.register(collector)
            state = _REGISTRIES[registry] = _Registered(collector)
        else:
            state.collector.add(cache, min_interval=min_interval)
        if observe_latency:
            if state.histogram is None:
                state.histogram = prometheus.Histogram(
                    HISTOGRAM,
                    "Seconds a cache operation took (calls that raised included).",
                    ["cache", "operation"],
                    registry=registry,
                    buckets=LATENCY_BUCKETS,
                )
            time_operations(cache, state.histogram)
        return state.collector
