"""Two processes writing one DiskStore: aggregate `set` throughput (target: at least 1.5 times
one process, docs/benchmarks.md#targets).

One run starts `workers` spawned processes; each opens the store, waits at a common barrier,
then overwrites its own keys with 1 KiB values and reports when it started and finished
(`time.perf_counter_ns`, CLOCK_MONOTONIC on Linux, so comparable across processes).
Aggregate ops/s = all sets ÷ (last finish - first start). The one-process baseline runs
through the same machinery. diskcache is measured the same way, for context.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from ._harness import (
    KIB,
    Measured,
    Row,
    Settings,
    Target,
    progress,
    scratch,
    speedup,
    spread_of,
)
from .disk import open_one

VALUE_POOL = 64


def _keys(worker: int, count: int) -> list[str]:
    return [f"w{worker}-{i:06d}" for i in range(count)]


def _write(lib: str, path: Path, worker: int, count: int, barrier: Barrier, out: Any) -> None:
    """Worker body: open, wait for the others, overwrite `count` keys, report (start, end)."""
    cache, close = open_one(lib, path)
    pool = [os.urandom(KIB) for _ in range(VALUE_POOL)]
    pairs = [(key, pool[i % VALUE_POOL]) for i, key in enumerate(_keys(worker, count))]
    set_ = cache.set
    barrier.wait(timeout=120)
    start = time.perf_counter_ns()
    for key, value in pairs:
        set_(key, value)
    end = time.perf_counter_ns()
    close()
    out.put((start, end))


def _run(lib: str, path: Path, workers: int, count: int) -> float:
    """Aggregate sets per second of `workers` processes writing `count` keys each."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_write, args=(lib, path, w, count, barrier, out)) for w in range(workers)
    ]
    for p in procs:
        p.start()
    spans: list[tuple[int, int]] = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise RuntimeError(f"{lib} writer exited with {p.exitcode}")
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    return workers * count * 1e9 / elapsed


def _prefill(lib: str, path: Path, count: int) -> None:
    """Create every key both workers write, so that every timed set is an overwrite."""
    cache, close = open_one(lib, path)
    value = bytes(KIB)
    for worker in (0, 1):
        for key in _keys(worker, count):
            cache.set(key, value)
    close()


def two_writers(settings: Settings) -> list[Row]:
    """Best-of-N aggregate throughput of 2 writers vs 1, runs interleaved."""
    count = settings.count(10_000, 1_000)
    repeats = settings.count(5, 2)
    ops: dict[str, float] = {}
    spreads: dict[str, float] = {}
    with scratch() as root:
        for lib in ("tiers", "diskcache"):
            path = root / lib
            _prefill(lib, path, count)
            rates: dict[int, list[float]] = {1: [], 2: []}
            for r in range(repeats):
                for workers in (1, 2) if r % 2 == 0 else (2, 1):
                    rates[workers].append(_run(lib, path, workers, count))
            best = {w: max(rs) for w, rs in rates.items()}
            progress(f"{lib}: 1 process {best[1]:,.0f} sets/s, 2 processes {best[2]:,.0f} sets/s")
            for w, rs in rates.items():
                ops[f"{lib}-{w}"] = best[w]
                spreads[f"{lib}-{w}"] = spread_of([1 / r for r in rs])
    measured = Measured(ops, spreads)
    rows = []
    for lib, target in (("tiers", Target(">=", 1.5)), ("diskcache", None)):
        two, one, spread = measured.pair(f"{lib}-2", f"{lib}-1")
        subject, baseline = (f"{lib} 2 processes (aggregate)", two), (f"{lib} 1 process", one)
        rows.append(
            speedup("disk set 1 KiB, 2 processes vs 1", subject, baseline, target, spread=spread)
        )
    return rows
