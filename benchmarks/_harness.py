"""Timing and result rows shared by every comparison.

A *case* is a zero-argument callable that runs a fixed, bounded loop of `ops` operations.
`measure` warms every case up, then times each one `repeats` times with
`time.perf_counter_ns`, rotating the order every repeat so that drift (CPU frequency, page
cache, background writeback) falls on all cases alike, and keeps the best time of each.
"""

from __future__ import annotations

import cProfile
import gc
import io
import operator
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")
KIB = 1024
MIB = 1024 * KIB
INFO = "info"


@dataclass(frozen=True)
class Settings:
    """How hard to run: `quick` for a smoke run, `scale_1m` for the 1M-entry scale row."""

    quick: bool = False
    scale_1m: bool = False
    profile: bool = False

    @property
    def repeats(self) -> int:
        return 3 if self.quick else 7

    def count(self, full: int, quick: int) -> int:
        """`full` in a normal run, `quick` with --quick."""
        return quick if self.quick else full


@dataclass(frozen=True)
class Target:
    """A bound on a row's ratio, e.g. ``Target(">=", 2.0)``."""

    op: str
    value: float

    def met(self, ratio: float) -> bool:
        compare = {">": operator.gt, ">=": operator.ge, "<=": operator.le}[self.op]
        return bool(compare(ratio, self.value))

    def __str__(self) -> str:
        symbol = {">": ">", ">=": "≥", "<=": "≤"}[self.op]
        return f"{symbol} {self.value:g}x"


@dataclass(frozen=True)
class Row:
    """One line of the results table: a subject measured against a baseline."""

    comparison: str
    subject: str
    subject_ops: float
    baseline: str
    baseline_ops: float
    ratio: float
    meaning: str  # what the ratio is: "ops/s" (subject ÷ baseline) or "time/get" (big ÷ small)
    target: str  # "" for informational rows
    verdict: str  # PASS, MISS or info
    spread: float = 0.0  # noise: the larger of the two cases' (median time / best time - 1)
    other_load: float = 0.0  # CPUs other processes kept busy meanwhile (set by __main__)
    note: str = ""


class Measured(dict[str, float]):
    """Best ops/s per case, with each case's spread (median time / best time - 1)."""

    def __init__(self, ops: dict[str, float], spread: dict[str, float]) -> None:
        super().__init__(ops)
        self.spread = spread

    def pair(self, subject: str, baseline: str) -> tuple[float, float, float]:
        """(subject ops/s, baseline ops/s, the larger spread of the two)."""
        return self[subject], self[baseline], max(self.spread[subject], self.spread[baseline])


def speedup(
    comparison: str,
    subject: tuple[str, float],
    baseline: tuple[str, float],
    target: Target | None = None,
    *,
    spread: float = 0.0,
    note: str = "",
) -> Row:
    """A row whose ratio is subject ops/s ÷ baseline ops/s (higher is better)."""
    ratio = subject[1] / baseline[1]
    return _row(comparison, subject, baseline, ratio, "ops/s", target, spread, note)


def slowdown(
    comparison: str,
    subject: tuple[str, float],
    baseline: tuple[str, float],
    target: Target | None = None,
    *,
    spread: float = 0.0,
    note: str = "",
) -> Row:
    """A row whose ratio is subject time per op ÷ baseline time per op (lower is better)."""
    ratio = baseline[1] / subject[1]
    return _row(comparison, subject, baseline, ratio, "time/op", target, spread, note)


def _row(
    comparison: str,
    subject: tuple[str, float],
    baseline: tuple[str, float],
    ratio: float,
    meaning: str,
    target: Target | None,
    spread: float,
    note: str,
) -> Row:
    verdict = INFO if target is None else ("PASS" if target.met(ratio) else "MISS")
    return Row(
        comparison=comparison,
        subject=subject[0],
        subject_ops=subject[1],
        baseline=baseline[0],
        baseline_ops=baseline[1],
        ratio=ratio,
        meaning=meaning,
        target="" if target is None else str(target),
        verdict=verdict,
        spread=spread,
        note=note,
    )


# -- timing ------------------------------------------------------------------------------


def time_once(case: Callable[[], object]) -> int:
    """Nanoseconds one run of `case` takes, with the cyclic GC paused (as `timeit` does)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        case()
        return time.perf_counter_ns() - start
    finally:
        gc.enable()


def measure(
    cases: Mapping[str, Callable[[], object]],
    ops: int | Mapping[str, int],
    settings: Settings,
    *,
    repeats: int | None = None,
) -> Measured:
    """Best-of-`repeats` ops/s of each case; every case performs `ops` operations per run
    (or ``ops[name]``: slow peers may run a shorter loop than fast ones)."""
    names = list(cases)
    counts = ops if isinstance(ops, Mapping) else dict.fromkeys(names, ops)
    for name in names:  # warm-up: imports, page cache, lazily opened handles
        cases[name]()
    times: dict[str, list[int]] = {name: [] for name in names}
    for r in range(repeats or settings.repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_once(cases[name]))
    if settings.profile:
        for name in names:
            if name.startswith("tiers"):
                profile(name, cases[name])
    return Measured(
        {name: counts[name] * 1e9 / min(t) for name, t in times.items()},
        {name: spread_of(t) for name, t in times.items()},
    )


def spread_of(times: Sequence[float]) -> float:
    """How noisy repeated timings were: median / best - 1 (0.05 = the median was 5% slower)."""
    return statistics.median(times) / min(times) - 1


def profile(name: str, case: Callable[[], object]) -> None:
    """Print the 25 functions where one run of `case` spends the most own time (to stderr)."""
    profiler = cProfile.Profile()
    profiler.runcall(case)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    print(f"\n--- cProfile of {name} (one run) ---\n{out.getvalue()}", file=sys.stderr)


def progress(message: str) -> None:
    """A line on stderr while a comparison runs (populate times and the like)."""
    print(f"  {message}", file=sys.stderr, flush=True)


# -- loops ---------------------------------------------------------------------------------


def get_loop(get: Callable[[str], object], keys: Sequence[str]) -> Callable[[], None]:
    """A case calling ``get(key)`` for every key in `keys`."""

    def run() -> None:
        for key in keys:
            get(key)

    return run


def set_loop(
    set_: Callable[[str, bytes], object], pairs: Sequence[tuple[str, bytes]]
) -> Callable[[], None]:
    """A case calling ``set(key, value)`` for every pair in `pairs`."""

    def run() -> None:
        for key, value in pairs:
            set_(key, value)

    return run


def shuffled(population: Sequence[_T], count: int, seed: int = 1) -> list[_T]:
    """`count` items drawn from `population` in a fixed pseudo-random order."""
    rng = random.Random(seed)
    return [population[rng.randrange(len(population))] for _ in range(count)]


def check_hits(get: Callable[[str], Any], expected: Mapping[str, object], who: str) -> None:
    """Fail loudly if a case meant to measure hits would measure misses (or wrong values)."""
    for key, value in list(expected.items())[:20]:
        if get(key) != value:
            raise AssertionError(f"{who}: {key!r} is not a hit with the stored value")


def check_misses(get: Callable[[str], Any], keys: Sequence[str], who: str) -> None:
    """Fail loudly if a case meant to measure misses would measure hits."""
    for key in keys[:20]:
        if get(key) is not None:
            raise AssertionError(f"{who}: {key!r} is unexpectedly present")


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh temporary directory (under $TMPDIR, /tmp by default), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="tiers-bench-", ignore_cleanup_errors=True) as d:
        yield Path(d)
