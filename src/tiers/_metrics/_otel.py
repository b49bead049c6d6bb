"""OpenTelemetry: observable instruments reading caches' stats once per collection."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError
from ._reading import CACHE_COUNTERS, COUNTERS, Reading, Source, TierReading, admit, check_interval
from ._timing import LATENCY_BUCKETS, time_operations

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation

    from .._cache import Cache

HISTOGRAM = "tiers.operation.duration"


def otel_metrics() -> Any:
    try:
        import opentelemetry.metrics
    except ImportError as exc:
        raise MissingDependencyError(
            'tiers.metrics needs opentelemetry-api: pip install "tiers[otel]"'
        ) from exc
    return opentelemetry.metrics


class _Instruments:
    """The instruments of one meter, observing every cache instrumented with it."""

    def __init__(self, meter: Meter) -> None:
        self.lock = threading.Lock()
        self.sources: list[Source] = []
        self.histogram: Any = None
        for name, text in COUNTERS.items():
            meter.create_observable_counter(
                f"tiers.{name}", [self._per_tier(f"tiers.{name}", _counter(name))], "1", text
            )
        for name, unit, text, value in (
            ("items", "{item}", "Entries the tier holds", _items),
            ("bytes", "By", "Bytes the tier holds", _bytes),
            ("max_bytes", "By", "The tier's size limit (tiers with a max_size)", _max_bytes),
        ):
            meter.create_observable_gauge(
                f"tiers.{name}", [self._per_tier(f"tiers.{name}", value)], unit, text
            )
        for name, text in CACHE_COUNTERS.items():
            meter.create_observable_counter(
                f"tiers.cache.{name}", [self._per_cache(f"tiers.cache.{name}", _total(name))],
                "1", text,
            )  # fmt: skip
        meter.create_observable_counter(
            "tiers.scrape_errors", [self._errors], "1",
            "Collections that could not read the cache's stats",
        )  # fmt: skip

    def latency(self, meter: Meter) -> Any:
        """The meter's latency histogram, made the first time."""
        if self.histogram is None:
            text = "Seconds a cache operation took (calls that raised included)"
            try:
                self.histogram = meter.create_histogram(
                    HISTOGRAM, "s", text, explicit_bucket_boundaries_advisory=LATENCY_BUCKETS
                )
            except TypeError:  # opentelemetry-api < 1.23: the SDK's (or a view's) buckets
                self.histogram = meter.create_histogram(HISTOGRAM, "s", text)
        return self.histogram

    def _live(self) -> list[Source]:
        with self.lock:
            return list(self.sources)

    def _per_tier(
        self, who: str, value: Callable[[TierReading], int | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """The callback of instrument `who`: `value` of each tier of each cache."""
        observation = otel_metrics().Observation

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for source in self._live():
                reading = source.read(who)
                for tier in reading.tiers if reading is not None else ():
                    measured = value(tier)
                    if measured is not None:
                        attributes = {"cache": source.name, "tier": tier.tier, "store": tier.store}
                        out.append(observation(measured, attributes))
            return out

        return observe

    def _per_cache(
        self, who: str, value: Callable[[Reading], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """The callback of instrument `who`: `value` of each cache."""
        observation = otel_metrics().Observation

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for source in self._live():
                reading = source.read(who)
                if reading is not None:
                    out.append(observation(value(reading), {"cache": source.name}))
            return out

        return observe

    def _errors(self, _options: CallbackOptions) -> Iterable[Observation]:
        observation = otel_metrics().Observation
        out = []
        for source in self._live():
            source.read("tiers.scrape_errors")  # this collection's failure counts now
            if source.live():
                out.append(observation(source.scrape_errors, {"cache": source.name}))
        return out


def _counter(name: str) -> Callable[[TierReading], int]:
    return lambda tier: tier.counters[name]


def _total(name: str) -> Callable[[Reading], int]:
    return lambda reading: reading.counters[name]


def _items(tier: TierReading) -> int:
    return tier.items


def _bytes(tier: TierReading) -> int:
    return tier.bytes


def _max_bytes(tier: TierReading) -> int | None:
    return tier.max_bytes


_METERS: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_INSTRUMENTING = threading.Lock()


def instrument_otel(
    cache: Cache,
    meter: Meter | None = None,
    *,
    observe_latency: bool = False,
    min_interval: float = 0.0,
) -> None:
    """Observe `cache`'s stats with OpenTelemetry instruments of `meter` (default:
    ``opentelemetry.metrics.get_meter("tiers")``), read once per collection.

    An observable counter ``tiers.<name>`` for each counter of `TierStats` (``tiers.hits``,
    ``tiers.misses``, ``tiers.sets``, ...) and gauges ``tiers.items``,
    ``tiers.bytes``, ``tiers.max_bytes`` with attributes ``cache``, ``tier``, ``store``;
    counters ``tiers.cache.<name>`` for each of `CACHE_COUNTERS` (``tiers.cache.hits``,
    ``tiers.cache.misses``, ``tiers.cache.stale_served``, ``tiers.cache.refreshes``,
    ``tiers.cache.refresh_errors``) and ``tiers.scrape_errors`` with attribute ``cache``.
    One set of instruments per meter observes every cache given with it.
    `observe_latency`: also record each ``get``, ``set``, ``delete`` and ``get_or_set`` (and
    ``_async`` twin) in the histogram ``tiers.operation.duration`` (seconds; see
    `time_operations`). `min_interval`: seconds during which the last stats are reused.
    """
    check_interval(min_interval)
    if meter is None:
        from .. import __version__

        meter = otel_metrics().get_meter("tiers", __version__)
    else:
        otel_metrics()
    with _INSTRUMENTING:
        instruments = _METERS.get(meter)
        if instruments is None:
            instruments = _METERS[meter] = _Instruments(meter)
        with instruments.lock:
            kept = admit(instruments.sources, cache)
            if kept is not None:
                instruments.sources = [*kept, Source(cache, min_interval)]
        if observe_latency:
            time_operations(cache, instruments.latency(meter))
