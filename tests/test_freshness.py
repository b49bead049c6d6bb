"""Freshness in one process: `stale=` serves the old value while one caller refreshes it,
`early=` refreshes before expiry (XFetch, checked statistically with a seeded generator and a
fake clock), a failing refresh keeps the stale value until it expires, and `f.explain`,
`f.entries` and `f.clear` on every kind of tier. Across processes: test_freshness_processes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tiers
from tiers import Cache, DiskStore, MemoryStore
from tiers._cache._freshness import Freshness
from tiers.testing import FakeClock

from ._tiers import install_clock

TTL = 0.4


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    with Cache(MemoryStore(), DiskStore(tmp_path / "disk")) as made:
        yield made


class Counter:
    """A factory that counts its calls, sleeps `delay`, and returns the call's number."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self.calls = 0
        self.fail = False
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            self.calls += 1
            number = self.calls
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the origin is down")
        return number


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    value = call()
    return value, time.perf_counter() - began


# -- stale= ------------------------------------------------------------------------------


def test_a_stale_value_is_served_at_once_while_one_thread_refreshes_it(cache: Cache) -> None:
    factory = Counter()
    assert cache.get_or_set("k", factory, ttl=TTL, stale=30) == 1
    time.sleep(TTL + 0.05)
    results: list[tuple[int, float]] = []
    threads = [
        threading.Thread(target=lambda: results.append(timed(
            lambda: cache.get_or_set("k", factory, ttl=TTL, stale=30)))
        )
        for _ in range(8)
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [value for value, _ in results] == [1] * 8  # the stale value, to every caller
    assert max(seconds for _, seconds in results) < factory.delay / 2  # none waited for it
    wait_for(lambda: cache.get_or_set("k", factory, ttl=TTL, stale=30) == 2)
    assert factory.calls == 2  # one refresh for eight callers
    stats = cache.stats()
    assert stats.stale_served >= 8 and stats.refreshes == 1 and stats.refresh_errors == 0
    meta = cache.info("k").meta  # type: ignore[union-attr]
    assert meta["fresh_until"] > time.time() and 0.15 < meta["duration_s"] < 1


def test_with_no_value_at_all_callers_wait_for_one_computation(cache: Cache) -> None:
    factory = Counter()
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(cache.get_or_set("k", factory, ttl=TTL, stale=30))
        )
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1] * 6 and factory.calls == 1


def test_past_ttl_plus_stale_callers_wait_for_a_new_value(cache: Cache) -> None:
    factory = Counter(delay=0.1)
    cache.get_or_set("k", factory, ttl=0.2, stale=0.3)
    time.sleep(0.6)  # past ttl + stale: the stores dropped it
    value, seconds = timed(lambda: cache.get_or_set("k", factory, ttl=0.2, stale=0.3))
    assert value == 2 and seconds >= 0.1


def test_a_memoized_function_serves_stale_and_refreshes(cache: Cache) -> None:
    runs: list[int] = []

    @cache.memoize(ttl=TTL, stale=30)
    def square(x: int) -> tuple[int, int]:
        runs.append(x)
        time.sleep(0.2)
        return x * x, len(runs)

    assert square(3) == (9, 1)
    assert square(3) == (9, 1) and len(runs) == 1  # a hit
    time.sleep(TTL + 0.05)
    value, seconds = timed(lambda: square(3))
    assert value == (9, 1) and seconds < 0.1
    wait_for(lambda: square(3) == (9, 2))
    assert runs == [3, 3]
    assert square.cache.info(square.key(3)).meta["function"].endswith("square")  # type: ignore[union-attr]


def test_a_failing_refresh_serves_stale_then_the_value_expires(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    factory = Counter(delay=0.01)
    cache.get_or_set("k", factory, ttl=0.3, stale=1.2)
    factory.fail = True
    time.sleep(0.35)
    with caplog.at_level(logging.WARNING, logger="tiers"):
        assert cache.get_or_set("k", factory, ttl=0.3, stale=1.2) == 1
        wait_for(lambda: cache.stats().refresh_errors == 1)
        calls = factory.calls
        for _ in range(20):  # within the backoff (1 s): served stale, no new attempt
            assert cache.get_or_set("k", factory, ttl=0.3, stale=1.2) == 1
        assert factory.calls == calls
    assert any("refreshing 'k' failed" in r.getMessage() for r in caplog.records)
    time.sleep(1.3)  # past ttl + stale: gone, and the next caller computes (and fails)
    with pytest.raises(RuntimeError, match="origin is down"):
        cache.get_or_set("k", factory, ttl=0.3, stale=1.2)
    assert cache.get("k") is None
    factory.fail = False
    assert cache.get_or_set("k", factory, ttl=0.3, stale=1.2) == factory.calls


def test_a_refresh_waits_a_backoff_after_failing_then_tries_again(cache: Cache) -> None:
    factory = Counter(delay=0.0)
    cache.get_or_set("k", factory, ttl=0.2, stale=30)
    factory.fail = True
    time.sleep(0.25)
    cache.get_or_set("k", factory, ttl=0.2, stale=30)
    wait_for(lambda: cache.stats().refresh_errors == 1)
    factory.fail = False
    assert cache.get_or_set("k", factory, ttl=0.2, stale=30) == 1  # backing off
    time.sleep(1.05)  # the first backoff is 1 s
    cache.get_or_set("k", factory, ttl=0.2, stale=30)
    wait_for(lambda: cache.get("k") == 3)


def test_async_callers_get_the_stale_value_while_a_task_refreshes(cache: Cache) -> None:
    asyncio.run(_async_callers_get_the_stale_value(cache))


async def _async_callers_get_the_stale_value(cache: Cache) -> None:
    calls = 0

    async def factory() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return calls

    assert await cache.get_or_set_async("a", factory, ttl=TTL, stale=30) == 1
    await asyncio.sleep(TTL + 0.05)
    began = time.perf_counter()
    values = await asyncio.gather(
        *(cache.get_or_set_async("a", factory, ttl=TTL, stale=30) for _ in range(8))
    )
    assert values == [1] * 8 and time.perf_counter() - began < 0.1
    for _ in range(100):
        if await cache.get_or_set_async("a", factory, ttl=TTL, stale=30) == 2:
            break
        await asyncio.sleep(0.02)
    assert calls == 2 and await cache.get_async("a") == 2


def test_an_async_memoized_function_serves_stale(cache: Cache) -> None:
    asyncio.run(_an_async_memoized_function_serves_stale(cache))


async def _an_async_memoized_function_serves_stale(cache: Cache) -> None:
    runs = 0

    @cache.memoize(ttl=TTL, stale=30)
    async def fetch(url: str) -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.1)
        return f"{url}#{runs}"

    assert await fetch("u") == "u#1"
    await asyncio.sleep(TTL + 0.05)
    assert await fetch("u") == "u#1"
    for _ in range(100):
        if await fetch("u") == "u#2":
            break
        await asyncio.sleep(0.02)
    assert runs == 2


def test_a_value_written_without_freshness_is_not_refreshed(cache: Cache) -> None:
    cache.set("k", "old", ttl=0.3)
    factory = Counter(delay=0.0)
    assert cache.get_or_set("k", factory, ttl=0.3, stale=30) == "old"
    time.sleep(0.1)
    assert factory.calls == 0


# -- early= (XFetch) ---------------------------------------------------------------------


def test_xfetch_picks_a_refresh_with_the_papers_probability() -> None:
    """P(refresh at `gap` seconds before expiry) = exp(-gap / (duration * beta)): each of 5
    gaps drawn 4,000 times from a seeded generator lands within 4 standard deviations."""
    rng = random.Random(20261206)
    for beta in (1.0, 2.5):
        fresh = Freshness(stale=0.0, beta=beta)
        duration, until = 0.2, 1000.0
        meta = {"fresh_until": until, "duration_s": duration}
        for gap in (0.01, 0.1, 0.2, 0.5, 1.0):
            n = 4000
            hits = sum(fresh.due(meta, until - gap, rng) for _ in range(n))
            p = math.exp(-gap / (duration * beta))
            sigma = math.sqrt(n * p * (1 - p)) or 1.0
            assert abs(hits - n * p) <= 4 * sigma, (beta, gap, hits, n * p)
        assert fresh.due(meta, until, rng)  # expired: always
        assert not Freshness(stale=5.0, beta=0.0).due(meta, until - 0.001, rng)


def test_xfetch_refresh_times_follow_their_distribution() -> None:
    """A key read every 10 ms: when is it first refreshed? The empirical distribution of
    2,000 seeded runs matches the one the formula gives (largest CDF gap < 0.04)."""
    rng = random.Random(7)
    fresh = Freshness(stale=0.0, beta=1.0)
    duration, until, step = 0.1, 100.0, 0.01
    meta = {"fresh_until": until, "duration_s": duration}
    checks = [until - 1.0 + i * step for i in range(101)]
    firsts = []
    for _ in range(2000):
        firsts.append(next(t for t in checks if fresh.due(meta, t, rng)))
    survive = 1.0
    worst = 0.0
    for t in checks:
        survive *= 1 - math.exp(-(until - t) / duration)
        expected = 1 - survive
        observed = sum(f <= t + 1e-9 for f in firsts) / len(firsts)
        worst = max(worst, abs(expected - observed))
    assert worst < 0.04
    assert max(firsts) <= until  # at expiry at the latest
    survive, expected_mean = 1.0, 0.0
    for t in checks:
        p = math.exp(-(until - t) / duration)
        expected_mean += survive * p * (until - t)
        survive *= 1 - p
    mean_gap = sum(until - f for f in firsts) / len(firsts)
    assert abs(mean_gap - expected_mean) < 0.02, (mean_gap, expected_mean)


def test_early_refreshes_a_hot_key_before_it_expires_on_a_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = Cache(MemoryStore(), DiskStore(tmp_path / "d"))
    install_clock(cache, clock)
    cache._rng = random.Random(3)
    computed: list[float] = []

    def factory() -> float:
        computed.append(clock.time())
        time.sleep(0.05)  # a recompute of about 50 ms, measured and stored as a float
        return clock.time()

    with cache:
        first = cache.get_or_set("k", factory, ttl=10, early=True)
        assert 0.04 < cache.info("k").meta["duration_s"] < 0.5  # type: ignore[union-attr]
        triggered_at = None
        while clock.time() < first + 10:
            clock.advance(0.01)
            assert cache.get_or_set("k", factory, ttl=10, early=True) == first
            if cache._refreshes.running():  # a background refresh started: the clock waits
                triggered_at = clock.time()
                break
        assert triggered_at is not None and triggered_at < first + 10  # before expiry
        assert first + 10 - triggered_at < 2.0  # and not long before (duration ~0.05 s)
        wait_for(lambda: len(computed) == 2)
        assert computed[1] == triggered_at
        wait_for(lambda: cache.get("k") != first)


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"stale": 5}, ValueError, "stale= needs a ttl"),
        ({"early": True}, ValueError, "early= needs a ttl"),
        ({"ttl": 5, "stale": -1}, ValueError, "stale must be positive"),
        ({"ttl": 5, "stale": "5"}, TypeError, "stale must be seconds"),
        ({"ttl": 5, "early": "yes"}, TypeError, "early must be True, False or a positive beta"),
        ({"ttl": 5, "early": -2.0}, ValueError, "early must be True, False or a positive beta"),
        ({"ttl": 5, "early": math.nan}, ValueError, "early must be"),
    ],
)
def test_bad_freshness_options_are_one_clear_error(
    tmp_path: Path, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with Cache(MemoryStore(), ttl=None) as cache:
        with pytest.raises(error, match=message):
            cache.get_or_set("k", lambda: 1, **options)
        with pytest.raises(error, match=message):
            cache.memoize(**options)(lambda: 1)
        assert cache.get("k") is None  # nothing written


def test_depends_without_a_code_version_is_refused() -> None:
    refused = pytest.raises(ValueError, match='depends= is used only with version="code"')
    with Cache(MemoryStore()) as cache, refused:
        cache.memoize(depends=(len,))(lambda: 1)


# -- explain, entries, clear on every kind of tier -----------------------------------------


@pytest.fixture(params=["memory+disk", "redis", "s3"])
def any_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cache]:
    kind = request.param
    if kind == "memory+disk":
        made = Cache(MemoryStore(), DiskStore(tmp_path / "d"))
    elif kind == "redis":
        made = Cache(MemoryStore(), request.getfixturevalue("redis_url"))
    else:
        s3 = request.getfixturevalue("moto_s3")
        store = tiers.ObjectStore(f"s3://{s3.new_bucket()}/c", **s3.store_options())
        made = Cache(MemoryStore(), store)
    with made:
        yield made


def test_explain_says_what_a_call_would_do_and_why(any_cache: Cache) -> None:
    @any_cache.memoize(ttl=0.6, stale=30, name="lab.simulate")
    def simulate(model: str, steps: int = 10) -> str:
        return f"{model}:{steps}"

    told = simulate.explain("ising")
    assert told.outcome == "miss" and "no tier holds an entry" in told.reason
    simulate("ising")
    told = simulate.explain("ising", steps=10)  # the same call: defaults bound
    assert told.outcome == "hit" and told.tier == 0 and told.age_s is not None
    assert "fresh for" in told.reason and told.info is not None
    time.sleep(0.65)
    told = simulate.explain("ising")
    assert told.outcome == "stale" and told.stale_for_s is not None and told.stale_for_s > 0
    assert "recomputes it in the background" in str(told)
    any_cache._tiers[0].store.clear()  # the slower tier answers
    assert simulate.explain("ising").tier == 1

    @any_cache.memoize(ttl=60, name="lab.simulate", version=2)
    def simulate_v2(model: str, steps: int = 10) -> str:
        return model

    told = simulate_v2.explain("ising")
    assert told.outcome == "miss" and "another version" in told.reason and told.found
    assert told.found[0].meta["args"] == "simulate(model='ising', steps=10)"  # type: ignore[index]


def test_explain_names_an_expired_entry_still_stored(tmp_path: Path) -> None:
    with Cache(DiskStore(tmp_path / "d")) as cache:

        @cache.memoize(ttl=0.2)
        def f(x: int) -> int:
            return x

        f(1)
        time.sleep(0.3)
        told = f.explain(1)
        assert told.outcome == "miss" and "expired" in told.reason and told.found


def test_entries_and_clear_reach_every_tier(any_cache: Cache) -> None:
    @any_cache.memoize(ttl=60, name="lab.f", version=1)
    def f(x: int) -> int:
        return x

    @any_cache.memoize(ttl=60, name="lab.f", version=2)
    def f2(x: int) -> int:
        return -x

    @any_cache.memoize(ttl=60, name="lab.g")
    def g(x: int) -> int:
        return x

    for x in range(3):
        f(x), f2(x), g(x)
    listed = list(f.entries())
    assert len(listed) == 3 and all(e.key.startswith("lab.f@1/") for e in listed)
    assert {e.meta["args"] for e in listed} == {f"f(x={x})" for x in range(3)}  # type: ignore[index]
    assert len(list(f.entries(all_versions=True))) == 6
    assert f.clear() == 3
    assert list(f.entries()) == [] and len(list(f2.entries())) == 3
    assert f2.clear(all_versions=True) == 3
    assert list(f2.entries(all_versions=True)) == [] and len(list(g.entries())) == 3
    assert g(1) == 1 and any_cache.get(g.key(1)) == 1  # another function's entries stay
    with pytest.raises(TypeError, match="all_versions must be True or False"):
        f.clear(all_versions="yes")  # type: ignore[arg-type]


def test_a_memoized_function_whose_refresh_fails_serves_stale_from_the_fast_path(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    failing = [False]
    runs: list[int] = []

    @cache.memoize(ttl=0.3, stale=1.5)
    def load(x: int) -> int:
        runs.append(x)
        if failing[0]:
            raise RuntimeError("the origin is down")
        return len(runs)

    assert load(1) == 1
    failing[0] = True
    time.sleep(0.35)
    with caplog.at_level(logging.WARNING, logger="tiers"):
        for _ in range(50):  # stale hits on the fast path; one refresh tried, then a backoff
            assert load(1) == 1
        wait_for(lambda: cache.stats().refresh_errors == 1)
        for _ in range(50):
            assert load(1) == 1
    assert len(runs) == 2 and load.__tiers_memo__.hits >= 99
    assert cache.stats().stale_served >= 100
    logged = [r.getMessage() for r in caplog.records]
    assert any("refreshing" in m and "failed" in m for m in logged)
    failing[0] = False
    time.sleep(1.05)  # the backoff (1 s) has passed: the next stale hit refreshes it
    load(1)
    wait_for(lambda: load(1) == 3)
    time.sleep(0.35)
    failing[0] = True
    time.sleep(1.6)  # past ttl + stale: gone; the caller computes, and sees the error
    with pytest.raises(RuntimeError, match="origin is down"):
        load(1)
