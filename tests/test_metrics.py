"""tiers.metrics: Prometheus and OpenTelemetry views of `Cache.stats()`, latency histograms.

Every scrape goes through a real `prometheus_client.CollectorRegistry` and `generate_latest`,
every OpenTelemetry collection through the SDK's `MeterProvider` and `InMemoryMetricReader`.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import tiers
from tiers._types import TierStats
from tiers.errors import MissingDependencyError, StoreError
from tiers.metrics import (
    LATENCY_BUCKETS,
    PrometheusCollector,
    instrument_otel,
    register_prometheus,
    store_kind,
    time_operations,
    untime_operations,
)
from tiers.protocol import StoreCounters
from tiers.testing import FakeClock

from ._tiers import install_clock

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TIER_COUNTERS = [f.name for f in fields(TierStats) if f.name not in ("store", "items", "bytes")]


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of one scrape, by (sample name, labels)."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def runs(method: object) -> object:
    """The function a method runs: a bound method's function, else itself (a cache over a
    memory tier carries its fast paths as functions of the instance)."""
    return getattr(method, "__func__", method)


def timed(method: object) -> bool:
    return hasattr(method, "__wrapped__")


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {key: value for (sample, key), value in samples.items() if sample == name}


def otel_points(reader: InMemoryMetricReader) -> dict[str, dict[frozenset[Any], Any]]:
    """Each metric's data points (values, or the point for histograms) by attributes."""
    data = reader.get_metrics_data()
    out: dict[str, dict[frozenset[Any], Any]] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points = out.setdefault(metric.name, {})
                for point in metric.data.data_points:
                    value = getattr(point, "value", point)
                    points[frozenset((point.attributes or {}).items())] = value
    return out


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@pytest.fixture
def otel() -> Iterator[tuple[Any, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider.get_meter("test"), reader
    provider.shutdown()


def exercise(cache: tiers.Cache, memory: tiers.MemoryStore) -> None:
    """Two sets, a memory hit, a miss of every tier, a delete, and a hit of tier 1 only."""
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # tier 0 hit
    assert cache.get("zz") is None  # misses everywhere
    assert cache.delete("a")
    memory.delete(":b")  # (the cache's empty namespace: stored keys are ":" + key)
    assert cache.get("b") == 2  # tier 0 miss, tier 1 hit (copied up, not counted as a set)


EXPECTED = {  # per tier after `exercise`: (tier 0, tier 1)
    "hits": (1, 1), "misses": (2, 1), "sets": (2, 2), "deletes": (1, 1), "evictions": (0, 0),
    "expirations": (0, 0), "errors": (0, 0), "rejected": (0, 0), "lock_fallbacks": (0, 0),
    "lost_leases": (0, 0),
}  # fmt: skip


# -- Prometheus ------------------------------------------------------------------------------


def test_prometheus_exports_exact_counters_per_tier(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    memory = tiers.MemoryStore(max_size="1MB")
    with tiers.Cache(memory, str(tmp_path / "d"), name="sessions") as cache:
        collector = register_prometheus(cache, registry)
        assert isinstance(collector, PrometheusCollector)
        exercise(cache, memory)
        samples = scrape(registry)
        stats = cache.stats()
    tier0 = labels(cache="sessions", tier="0", store="memory")
    tier1 = labels(cache="sessions", tier="1", store="disk")
    for name, (first, second) in EXPECTED.items():
        assert series(samples, f"tiers_{name}_total") == {tier0: first, tier1: second}, name
    assert series(samples, "tiers_cache_hits_total") == {labels(cache="sessions"): 2}
    assert series(samples, "tiers_cache_misses_total") == {labels(cache="sessions"): 1}
    assert series(samples, "tiers_scrape_errors_total") == {labels(cache="sessions"): 0}
    # gauges: what stats() says now; max_bytes only for the tier with a max_size
    assert series(samples, "tiers_items") == {tier0: 1, tier1: 1}
    assert series(samples, "tiers_bytes") == {tier0: stats.tiers[0].bytes,
                                              tier1: stats.tiers[1].bytes}  # fmt: skip
    assert stats.tiers[1].bytes > 0
    assert series(samples, "tiers_max_bytes") == {tier0: 1_000_000}
    for name in TIER_COUNTERS:  # every counter of TierStats, this version's new ones too
        assert series(samples, f"tiers_{name}_total") == {
            tier0: getattr(stats.tiers[0], name),
            tier1: getattr(stats.tiers[1], name),
        }, name
    # counters are monotonic, read anew at each scrape
    with tiers.Cache(memory, str(tmp_path / "d"), name="other") as other:
        register_prometheus(other, registry)  # the same collector, a second cache
        other.get("nothing")
        again = scrape(registry)
    assert again[("tiers_cache_misses_total", labels(cache="other"))] == 1
    assert ("tiers_cache_misses_total", labels(cache="sessions")) not in again  # closed


def test_prometheus_counts_a_redis_tier_without_its_url(
    redis_url: str, registry: CollectorRegistry
) -> None:
    # credentials (the default user takes any password): never in a label
    url = redis_url.replace("redis://", "redis://default:hunter2@", 1)
    with tiers.Cache("memory://", url, name="remote") as cache:
        register_prometheus(cache, registry)
        cache.set("k", b"v" * 100)
        assert cache.get("k") == b"v" * 100
        cache.get("absent")
        samples = scrape(registry)
    tier0 = labels(cache="remote", tier="0", store="memory")
    tier1 = labels(cache="remote", tier="1", store="redis")
    assert series(samples, "tiers_sets_total") == {tier0: 1, tier1: 1}
    assert series(samples, "tiers_hits_total") == {tier0: 1, tier1: 0}
    assert series(samples, "tiers_misses_total") == {tier0: 1, tier1: 1}
    assert series(samples, "tiers_items") == {tier0: 1, tier1: 1}
    assert series(samples, "tiers_bytes")[tier1] > 100
    values = {value for _name, key in samples for _label, value in key}
    assert not any("://" in v or "127.0.0.1" in v or "hunter2" in v for v in values), values


class FlakyStats(tiers.MemoryStore):
    """A memory store whose stats() fails while `down` is set."""

    down = False

    def stats(self) -> StoreCounters:
        if self.down:
            raise OSError("stats unavailable")
        return super().stats()


def test_a_failing_tier_does_not_break_the_scrape(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    flaky = FlakyStats(max_items=1)
    with tiers.Cache("memory://", flaky, name="c") as cache:
        register_prometheus(cache, registry)
        cache.set("a", 1)
        cache.set("b", 2)  # evicts "a" from the one-item tier
        tier1 = labels(cache="c", tier="1", store="memory")
        before = scrape(registry)
        assert before[("tiers_evictions_total", tier1)] == 1
        assert before[("tiers_errors_total", tier1)] == 0
        flaky.down = True
        during = scrape(registry)
        flaky.down = False
        after = scrape(registry)
    # the scrape goes on; the tier's failure shows as errors; counters never go backwards
    assert during[("tiers_errors_total", tier1)] == 1
    assert during[("tiers_evictions_total", tier1)] == 1  # stats() said 0: the last value stays
    assert during[("tiers_items", tier1)] == 0  # a gauge says what stats() said
    assert during[("tiers_sets_total", tier1)] == 2
    assert during[("tiers_scrape_errors_total", labels(cache="c"))] == 0
    assert after[("tiers_evictions_total", tier1)] == 1
    assert after[("tiers_items", tier1)] == 1


def test_a_cache_whose_stats_raise_is_skipped_and_counted(
    tmp_path: Path, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        tiers.Cache("memory://", name="broken") as broken,
        tiers.Cache("memory://", name="fine") as fine,
    ):
        register_prometheus(broken, registry)
        register_prometheus(fine, registry)
        broken.set("k", 1)
        fine.set("k", 1)

        def fail() -> tiers.Stats:
            raise RuntimeError("no stats today")

        broken.stats = fail  # type: ignore[method-assign]
        first = scrape(registry)
        second = scrape(registry)
    errors = labels(cache="broken")
    assert first[("tiers_scrape_errors_total", errors)] == 1
    assert second[("tiers_scrape_errors_total", errors)] == 2
    assert ("tiers_sets_total", labels(cache="broken", tier="0", store="memory")) not in second
    assert second[("tiers_sets_total", labels(cache="fine", tier="0", store="memory"))] == 1
    assert second[("tiers_scrape_errors_total", labels(cache="fine"))] == 0
    assert "no stats today" in caplog.text


def test_collected_caches_are_held_weakly_and_closed_ones_drop_out(
    registry: CollectorRegistry,
) -> None:
    collector = PrometheusCollector()
    registry.register(collector)
    cache = tiers.Cache("memory://", name="gone")
    collector.add(cache)
    assert ("tiers_sets_total", labels(cache="gone", tier="0", store="memory")) in scrape(registry)
    cache.close()
    assert not any(key for key in scrape(registry) if ("cache", "gone") in key[1])
    del cache
    gc.collect()
    assert scrape(registry) == {}
    # a new cache may take the name of a closed one
    with tiers.Cache("memory://", name="gone") as again:
        collector.add(again)
        collector.add(again)  # again: no change
        assert scrape(registry)[("tiers_cache_hits_total", labels(cache="gone"))] == 0
        collector.remove(again)
        assert scrape(registry) == {}


def test_two_caches_with_one_name_are_refused(registry: CollectorRegistry) -> None:
    with tiers.Cache("memory://") as first, tiers.Cache("memory://") as second:
        assert first.name == second.name == "default"
        register_prometheus(first, registry)
        register_prometheus(first, registry)  # the same cache again: no change
        with pytest.raises(ValueError, match="name=") as raised:
            register_prometheus(second, registry)
        assert "'default'" in str(raised.value)


def test_registering_describes_without_reading_stats(registry: CollectorRegistry) -> None:
    calls = []
    with tiers.Cache("memory://", name="lazy") as cache:
        real = cache.stats

        def counted() -> tiers.Stats:
            calls.append(1)
            return real()

        cache.stats = counted  # type: ignore[method-assign]
        register_prometheus(cache, registry)  # auto_describe: describe(), not collect()
        assert calls == []
        scrape(registry)
        assert calls == [1]


def test_min_interval_reuses_stats(registry: CollectorRegistry) -> None:
    with tiers.Cache("memory://", name="slow") as cache:
        register_prometheus(cache, registry, min_interval=3600)
        cache.set("k", 1)
        assert scrape(registry)[("tiers_cache_hits_total", labels(cache="slow"))] == 0
        cache.get("k")
        assert scrape(registry)[("tiers_cache_hits_total", labels(cache="slow"))] == 0
    with pytest.raises(ValueError, match="min_interval"):
        PrometheusCollector(min_interval=-1)


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with (
        tiers.Cache("memory://") as cache,
        pytest.raises(MissingDependencyError, match=r"tiers\[prometheus\]"),
    ):
        register_prometheus(cache)


def test_missing_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    with (
        tiers.Cache("memory://") as cache,
        pytest.raises(MissingDependencyError, match=r"tiers\[otel\]"),
    ):
        instrument_otel(cache)


def test_store_kinds_carry_no_secrets(tmp_path: Path) -> None:
    s3 = tiers.ObjectStore(
        "s3://bucket/prefix?aws_access_key_id=AKIAEXAMPLE&aws_secret_access_key=SECRET"
        "&endpoint=http://127.0.0.1:1"
    )
    assert store_kind(s3) == "s3"
    assert store_kind(tiers.ObjectStore("gs://bucket/p")) == "gcs"
    assert store_kind(tiers.ObjectStore("memory://")) == "object"
    assert store_kind(tiers.RedisStore("redis://user:hunter2@127.0.0.1:1/0")) == "redis"
    assert store_kind(tiers.DiskStore(tmp_path / "d")) == "disk"
    assert store_kind(tiers.FolderStore.__new__(tiers.FolderStore)) == "folder"  # by class
    assert store_kind(tiers.NullStore()) == "null"
    assert store_kind(FlakyStats()) == "memory"  # a subclass is of its base's kind

    class MyFancyStore:
        pass

    assert store_kind(MyFancyStore()) == "myfancy"


# -- OpenTelemetry ------------------------------------------------------------------------


def test_otel_sees_the_same_numbers_per_tier(
    tmp_path: Path, otel: tuple[Any, InMemoryMetricReader], registry: CollectorRegistry
) -> None:
    meter, reader = otel
    memory = tiers.MemoryStore(max_size="1MB")
    with tiers.Cache(memory, str(tmp_path / "d"), name="sessions") as cache:
        instrument_otel(cache, meter)
        register_prometheus(cache, registry)
        exercise(cache, memory)
        points = otel_points(reader)
        samples = scrape(registry)
    tier0 = labels(cache="sessions", tier="0", store="memory")
    tier1 = labels(cache="sessions", tier="1", store="disk")
    for name, (first, second) in EXPECTED.items():
        assert points[f"tiers.{name}"] == {tier0: first, tier1: second}, name
    assert points["tiers.cache.hits"] == {labels(cache="sessions"): 2}
    assert points["tiers.cache.misses"] == {labels(cache="sessions"): 1}
    assert points["tiers.scrape_errors"] == {labels(cache="sessions"): 0}
    assert points["tiers.items"] == {tier0: 1, tier1: 1}
    assert points["tiers.max_bytes"] == {tier0: 1_000_000}
    # the same numbers as the Prometheus scrape
    for name in TIER_COUNTERS:
        assert points[f"tiers.{name}"] == series(samples, f"tiers_{name}_total"), name
    assert points["tiers.bytes"] == series(samples, "tiers_bytes")


def test_otel_reads_stats_once_per_collection(otel: tuple[Any, InMemoryMetricReader]) -> None:
    meter, reader = otel
    calls = []
    with tiers.Cache("memory://", name="once") as cache:
        real = cache.stats

        def counted() -> tiers.Stats:
            calls.append(1)
            return real()

        cache.stats = counted  # type: ignore[method-assign]
        instrument_otel(cache, meter)
        otel_points(reader)
        assert len(calls) == 1  # every instrument, one stats()
        cache.set("k", 1)
        points = otel_points(reader)
        assert len(calls) == 2
    assert points["tiers.sets"] == {labels(cache="once", tier="0", store="memory"): 1}


def test_otel_observes_several_caches_and_survives_a_failing_one(
    otel: tuple[Any, InMemoryMetricReader],
) -> None:
    meter, reader = otel
    with (
        tiers.Cache("memory://", name="one") as one,
        tiers.Cache("memory://", name="two") as two,
    ):
        instrument_otel(one, meter)
        instrument_otel(two, meter)  # the same instruments, a second cache
        instrument_otel(two, meter)  # again: no change
        one.set("k", 1)
        two.set("k", 1)
        two.set("j", 1)

        def fail() -> tiers.Stats:
            raise StoreError("no stats")

        one.stats = fail  # type: ignore[method-assign]
        points = otel_points(reader)
    assert points["tiers.sets"] == {labels(cache="two", tier="0", store="memory"): 2}
    assert points["tiers.scrape_errors"] == {labels(cache="one"): 1, labels(cache="two"): 0}


# -- stale= and its background refreshes ---------------------------------------------------

FRESHNESS = ("stale_served", "refreshes", "refresh_errors")


class Origin:
    """A factory returning its call's number; raises while `down` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def __call__(self) -> int:
        self.calls += 1
        if self.down:
            raise RuntimeError("the origin is down")
        return self.calls


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_stale_serves_refreshes_and_refresh_errors_are_exported_and_never_go_back(
    tmp_path: Path, registry: CollectorRegistry, otel: tuple[Any, InMemoryMetricReader]
) -> None:
    meter, reader = otel
    clock = FakeClock()
    ok, bad = Origin(), Origin()
    with tiers.Cache(tiers.MemoryStore(), tiers.DiskStore(tmp_path / "d"), name="fresh") as cache:
        install_clock(cache, clock)
        register_prometheus(cache, registry)
        instrument_otel(cache, meter)

        def read(key: str, origin: Origin) -> Any:
            return cache.get_or_set(key, origin, ttl=10, stale=100)

        def exported() -> tuple[float, ...]:
            """(stale_served, refreshes, refresh_errors) of a scrape, the same in OTel."""
            samples, points, key = scrape(registry), otel_points(reader), labels(cache="fresh")
            prometheus = tuple(samples[(f"tiers_cache_{n}_total", key)] for n in FRESHNESS)
            assert prometheus == tuple(points[f"tiers.cache.{n}"][key] for n in FRESHNESS)
            return prometheus

        assert read("ok", ok) == 1 and read("bad", bad) == 1  # computed in the foreground
        seen = [exported()]
        clock.advance(11)  # both stale
        assert read("ok", ok) == 1  # served stale; one refresh runs in the background
        wait_for(lambda: cache.get("ok") == 2)
        seen.append(exported())
        bad.down = True
        for _ in range(3):  # all served stale; the first starts a refresh, which fails, and
            assert read("bad", bad) == 1  # the others find it running or backing off (1 s)
        wait_for(lambda: cache.stats().refresh_errors == 1)
        seen.append(exported())
        assert bad.calls == 2 and ok.calls == 2
        stats = cache.stats()
        assert (stats.stale_served, stats.refreshes, stats.refresh_errors) == seen[-1]
        # a stats() reporting less (as a counter reset would look): the last values stay
        real = cache.stats
        cache.stats = lambda: replace(  # type: ignore[method-assign]
            real(), stale_served=0, refreshes=0, refresh_errors=0
        )
        seen.append(exported())
    assert seen == [(0, 0, 0), (1, 1, 0), (4, 2, 1), (4, 2, 1)]


# -- latency histograms ---------------------------------------------------------------------


def test_caches_without_timing_run_the_class_methods(registry: CollectorRegistry) -> None:
    with tiers.Cache("memory://", name="plain") as cache:
        plain = {name: runs(getattr(cache, name)) for name in ("get", "delete")}
        register_prometheus(cache, registry)  # the collector alone wraps nothing
        for op in ("get", "set", "delete", "get_or_set"):
            for name in (op, op + "_async"):
                assert not timed(getattr(cache, name)), name
        assert runs(cache.get) is plain["get"]  # (its fast path)
        assert runs(cache.delete) is plain["delete"] is type(cache).delete


def test_prometheus_latency_histograms_record_each_call(registry: CollectorRegistry) -> None:
    with tiers.Cache("memory://", name="timed") as cache:
        plain = {name: runs(getattr(cache, name)) for name in ("get", "get_async")}
        register_prometheus(cache, registry, observe_latency=True)
        register_prometheus(cache, registry, observe_latency=True)  # not timed twice
        cache.set("k", 1)
        cache.get("k")
        cache.get("k")
        cache["k"]  # the mapping protocol goes through get
        cache.get_or_set("new", lambda: 2)
        assert not cache.delete("absent")

        async def twins() -> None:
            await cache.set_async("a", 1)
            assert await cache.get_async("a") == 1
            assert await cache.get_or_set_async("b", lambda: 3) == 3
            assert await cache.delete_async("a")

        asyncio.run(twins())
        samples = scrape(registry)
        assert runs(cache.get.__wrapped__) is plain["get"]
        untime_operations(cache)
        assert runs(cache.get) is plain["get"]
        assert runs(cache.get_async) is plain["get_async"]
        cache.get("k")
    counts = series(samples, "tiers_operation_duration_seconds_count")
    assert counts == {
        labels(cache="timed", operation=op): n
        for op, n in (("get", 3), ("set", 1), ("delete", 1), ("get_or_set", 1),
                      ("get_async", 1), ("set_async", 1), ("delete_async", 1),
                      ("get_or_set_async", 1))
    }  # fmt: skip
    total = series(samples, "tiers_operation_duration_seconds_sum")
    assert all(0 < seconds < 5 for seconds in total.values())
    buckets = {
        dict(key)["le"] for key in series(samples, "tiers_operation_duration_seconds_bucket")
    }
    assert len(buckets) == len(LATENCY_BUCKETS) + 1  # and +Inf


def test_a_failing_call_is_timed_too(registry: CollectorRegistry) -> None:
    histogram = Histogram("h_seconds", "h", ["cache", "operation"], registry=registry)
    with tiers.Cache("memory://", name="t") as cache:
        time_operations(cache, histogram, operations=["get_or_set"])
        with pytest.raises(ZeroDivisionError):
            cache.get_or_set("k", lambda: 1 / 0)
        assert not timed(cache.get)  # only the chosen operation
    assert scrape(registry)[("h_seconds_count", labels(cache="t", operation="get_or_set"))] == 1


def test_time_operations_refuses_what_it_cannot_time() -> None:
    with tiers.Cache("memory://") as cache:
        before = dict(vars(cache))
        with pytest.raises(ValueError, match="close"):
            time_operations(cache, object(), operations=["close"])
        with pytest.raises(TypeError, match="Histogram"):
            time_operations(cache, object())
        wrong = Histogram("w_seconds", "w", ["op"], registry=CollectorRegistry())
        with pytest.raises(ValueError):
            time_operations(cache, wrong)
        assert vars(cache) == before  # nothing was put on the cache


def test_otel_latency_histogram(otel: tuple[Any, InMemoryMetricReader]) -> None:
    meter, reader = otel
    with tiers.Cache("memory://", name="o") as cache:
        instrument_otel(cache, meter, observe_latency=True)
        cache.set("k", 1)
        cache.get("k")
        asyncio.run(cache.get_async("k"))
        points = otel_points(reader)["tiers.operation.duration"]
    get = points[labels(cache="o", operation="get")]
    assert get.count == 1 and 0 < get.sum < 5
    assert list(get.explicit_bounds) == list(LATENCY_BUCKETS)
    assert points[labels(cache="o", operation="get_async")].count == 1
    assert points[labels(cache="o", operation="set")].count == 1
