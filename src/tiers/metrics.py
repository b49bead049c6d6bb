"""Metrics for operators: Prometheus and OpenTelemetry views of `Cache.stats()`, and
optional per-operation latency histograms (docs/operations.md).

>>> from prometheus_client import start_http_server
>>> from tiers.metrics import register_prometheus
>>> cache = tiers.Cache("memory://", "/var/cache/app", name="sessions")
>>> register_prometheus(cache)          # into prometheus_client's global REGISTRY
>>> start_http_server(9100)

Both are pull-based: nothing is counted on a cache's path; ``stats()`` is read when a scrape
or a collection asks. Latency histograms are off unless asked for, and then wrap only the
methods of the caches they time. Needs ``tiers[prometheus]`` (``prometheus_client``) or
``tiers[otel]`` (``opentelemetry-api``), imported when first used.
"""

from __future__ import annotations

from ._metrics._otel import instrument_otel
from ._metrics._prometheus import PrometheusCollector, register_prometheus
from ._metrics._reading import store_kind
from ._metrics._timing import LATENCY_BUCKETS, OPERATIONS, time_operations, untime_operations
from ._public import publish

__all__ = [
    "register_prometheus",
    "PrometheusCollector",
    "instrument_otel",
    "time_operations",
    "untime_operations",
    "store_kind",
    "OPERATIONS",
    "LATENCY_BUCKETS",
]

publish(__name__, globals(), __all__)
del publish
