"""Memoize's freshness options, ``stale=`` and ``early=`` (src/tiers/_cache/_freshness.py).

- ``expiry``: 8 threads call one memoized function (one hot key, ttl=1 s, a 200 ms body:
  ``time.sleep(0.2)``) on the default-like stack `Cache(MemoryStore, DiskStore)` for 4 s
  from its fill, which spans 3 expiries, each thread pausing 10-30 ms (uniform, seeded)
  between calls. Every call's latency (``perf_counter`` around it) goes into one distribution
  per variant: no option (all callers wait for the recompute at each expiry), ``stale=30``
  and ``early=True`` (one caller refreshes in the background), and two baselines with
  ttl=3600, which never expire during the run: the plain hit (no options: the memory tier
  fast path) and the hit of a function with ``stale=30`` (the same fast path, plus its
  freshness check). The pause makes the calls a latency measurement, not a contest for the GIL, and
  is long enough for the one call per thread that waits at each expiry to be over 1% of the
  calls (3 in ~170): with a 1 ms pause it would be 3 in ~3,000 (0.1%), which no p99 sees.
- ``hit_path``: single-thread hits on the memory tier of a function without these options
  (the generated fast path) against `functools.lru_cache`, with the target of memoize.py's
  ``memoize-memory`` row (at most 3x its time), and what ``stale=`` or ``early=`` (a freshness
  check, and XFetch's draw, on the fast path) costs a hit, measured the way memoize.py
  measures its rows.

Standalone: ``python -m benchmarks.freshness [--quick]`` prints the table.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ._harness import Row, Settings, Target, progress, scratch, shuffled, slowdown
from .memoize import ITEMS, KEYS, TIERS, Case, _measure, _versus, plus_one

THREADS = 8
TTL = 1.0
RECOMPUTE = 0.2  # seconds the memoized body sleeps
STALE = 30
LONG_TTL = 3600  # the baselines: never expire during the run
PAUSE = (0.010, 0.030)  # seconds between one thread's calls (uniform)
ARG = 7
TARGET = Target("<=", 2)  # p99 within 2x of the plain hit's p99

HIT, FRESH_HIT, PLAIN, STALE_30, EARLY = "hit", "fresh hit", "no option", "stale", "early"
VARIANTS: dict[str, dict[str, Any]] = {
    HIT: {"ttl": LONG_TTL},
    FRESH_HIT: {"ttl": LONG_TTL, "stale": STALE},
    PLAIN: {"ttl": TTL},
    STALE_30: {"ttl": TTL, "stale": STALE},
    EARLY: {"ttl": TTL, "early": True},
}
LABELS = {
    HIT: f"plain hit, ttl={LONG_TTL} (fast path)",
    FRESH_HIT: f"hit, ttl={LONG_TTL}, stale={STALE}",
    PLAIN: f"ttl={TTL:g}, no option",
    STALE_30: f"ttl={TTL:g}, stale={STALE}",
    EARLY: f"ttl={TTL:g}, early=True",
}


@dataclass(frozen=True)
class Run:
    """The latencies (seconds, sorted) of every call of one variant, and what it computed."""

    latencies: list[float]
    recomputed: int  # body runs after the fill
    stale_served: int
    refreshes: int

    def quantile(self, q: float) -> float:
        return self.latencies[min(len(self.latencies) - 1, int(len(self.latencies) * q))]

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    def describe(self) -> str:
        waited = sum(1 for t in self.latencies if t >= RECOMPUTE / 2)
        return (
            f"p50 {_duration(self.quantile(0.5))}, p99 {_duration(self.p99)}, "
            f"p99.9 {_duration(self.quantile(0.999))}, max {_duration(self.latencies[-1])} "
            f"over {len(self.latencies):,} calls ({waited} took ≥ {RECOMPUTE / 2 * 1000:.0f} ms); "
            f"{self.recomputed} recomputations, {self.refreshes} in the background, "
            f"{self.stale_served} stale values served"
        )


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} µs"


def _slow_body(runs: list[float]) -> Callable[[int], int]:
    def recompute(x: int) -> int:
        runs.append(time.perf_counter())
        time.sleep(RECOMPUTE)
        return x + 1

    return recompute


def _caller(
    func: Callable[[int], int], deadline: float, seed: int, out: list[float], wrong: list[int]
) -> Callable[[], None]:
    """One thread: call `func` until `deadline`, recording each call's latency."""

    def run() -> None:
        rng = random.Random(seed)
        clock, sleep, low, high = time.perf_counter, time.sleep, *PAUSE
        sleep(rng.uniform(0, low))  # the threads start staggered, not in lockstep
        while True:
            began = clock()
            if began >= deadline:
                return
            value = func(ARG)
            out.append(clock() - began)
            if value != ARG + 1:
                wrong.append(value)
            sleep(rng.uniform(low, high))

    return run


@contextmanager
def _memoized(options: dict[str, Any]) -> Iterator[tuple[Any, Callable[[int], int], list[float]]]:
    """(cache, memoized 200 ms function, its body-run counter) on a fresh memory+disk stack."""
    import tiers

    with scratch() as root:
        cache = tiers.Cache(tiers.MemoryStore(), tiers.DiskStore(root))
        runs: list[float] = []  # when each run of the body began
        try:
            yield cache, cache.memoize(_slow_body(runs), **options), runs
        finally:
            for thread in threading.enumerate():  # background refreshes still running
                if thread.name == "tiers-refresh":
                    thread.join(10)
            cache.close()


def _run(options: dict[str, Any], seconds: float) -> Run:
    """`THREADS` threads calling a freshly filled function for `seconds` (from the fill)."""
    with _memoized(options) as (cache, func, runs):
        func(ARG)  # the fill: the entry's ttl counts from here
        deadline = time.perf_counter() + seconds
        filled = len(runs)
        outs: list[list[float]] = [[] for _ in range(THREADS)]
        wrong: list[int] = []
        threads = [
            threading.Thread(target=_caller(func, deadline, i, out, wrong))
            for i, out in enumerate(outs)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if wrong:
            raise AssertionError(f"{options}: {len(wrong)} calls returned a wrong value")
        stats = cache.stats()
        return Run(
            latencies=sorted(itertools.chain.from_iterable(outs)),
            recomputed=len(runs) - filled,
            stale_served=stats.stale_served,
            refreshes=stats.refreshes,
        )


def _p99(run: Run) -> float:
    """p99 as a rate (1 / p99), so that `slowdown`'s ratio is p99 ÷ the baseline's p99."""
    return 1 / run.p99


def expiry(settings: Settings) -> list[Row]:
    """p99 latency of 8 threads across ttl expiries: no option, stale=, early= vs a hit."""
    seconds = 2.5 if settings.quick else 4.0
    runs: dict[str, Run] = {}
    for name, options in VARIANTS.items():
        progress(f"{LABELS[name]}: {THREADS} threads for {seconds:g} s")
        runs[name] = _run(options, seconds)
    for name in (HIT, FRESH_HIT):
        if runs[name].recomputed:
            raise AssertionError(f"{LABELS[name]}: recomputed during the run (not all hits)")
    for name in (PLAIN, STALE_30, EARLY):
        if not runs[name].recomputed:
            raise AssertionError(f"{LABELS[name]}: never recomputed (no expiry in the run)")
    what = f"memoize, {THREADS} threads across expiries, 200 ms recompute: p99"
    baselines = "; ".join(f"{LABELS[n]}: {runs[n].describe()}" for n in (HIT, FRESH_HIT))

    def row(name: str, base: str, target: Target | None = None, note: str = "") -> Row:
        note = note or f"{LABELS[name]}: {runs[name].describe()}"
        return slowdown(what, (LABELS[name], _p99(runs[name])),
                        (LABELS[base], _p99(runs[base])), target, note=note)  # fmt: skip

    return [
        row(PLAIN, HIT),
        row(STALE_30, HIT, TARGET),
        row(EARLY, HIT, TARGET),
        row(STALE_30, FRESH_HIT),
        row(EARLY, FRESH_HIT),
        row(FRESH_HIT, HIT, note=f"the baselines, same stack, threads and pauses: {baselines}"),
    ]


def hit_path(settings: Settings) -> list[Row]:
    """Memory-tier hits of a function without stale=/early= and with (both on the fast path)."""
    import tiers

    calls = settings.count(200_000, 20_000)
    ints = shuffled(list(range(KEYS)), calls)

    def memo() -> Any:
        return tiers.Cache(tiers.MemoryStore(max_items=ITEMS)).memoize

    cases = {
        "tiers": Case(memo()(plus_one), ints, calls),
        "lru_cache": Case(functools.lru_cache(maxsize=ITEMS)(plus_one), ints, calls),
        "tiers ttl": Case(memo()(plus_one, ttl=LONG_TTL), ints, calls),
        "tiers stale": Case(memo()(plus_one, ttl=LONG_TTL, stale=STALE), ints, calls),
        "tiers early": Case(memo()(plus_one, ttl=LONG_TTL, early=True), ints, calls),
    }
    ops = _measure(cases, settings)
    for name in ("tiers", "tiers ttl", "tiers stale", "tiers early"):
        memoized: Any = cases[name].func  # each took the fast path:
        hits = memoized.__tiers_memo__.hits
        if hits == 0:
            raise AssertionError(f"{name}: no fast-path hits")
    what = "memoize hit, memory tier, f(x: int), without stale=/early="
    full = "memoize hit, memory tier, f(x: int), stale= / early= (freshness check)"
    plain = ("tiers ttl", f"{TIERS}(ttl={LONG_TTL})")
    return [
        _versus(what, ops, ("tiers", TIERS), ("lru_cache", "functools.lru_cache"), Target("<=", 3),
                time_ratio=True, note="the target and case of the memoize-memory row"),
        _versus(full, ops, ("tiers stale", f"{TIERS}(ttl={LONG_TTL}, stale={STALE})"),
                plain, time_ratio=True),
        _versus(full, ops, ("tiers early", f"{TIERS}(ttl={LONG_TTL}, early=True)"), plain,
                time_ratio=True),
    ]  # fmt: skip


def main() -> None:
    from ._report import text_table

    parser = argparse.ArgumentParser(prog="python -m benchmarks.freshness")
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    settings = Settings(quick=parser.parse_args().quick)
    print(text_table(hit_path(settings) + expiry(settings)))


if __name__ == "__main__":
    main()
