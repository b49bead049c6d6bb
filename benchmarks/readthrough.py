"""`tiers.CachingReadableStore` against obspec-utils' `CachingReadableStore` (targets:
docs/benchmarks.md#targets).

The origin is obstore's MemoryStore behind `tests._origin.TracingStore`, which adds a fixed
latency per request and counts requests and body bytes, so both classes see the same origin.
Three rows: wall time of 8 threads missing 8 distinct paths (200 ms per request), origin requests
for 8 coroutines missing one path, and bytes fetched for a 16 B range of a 64 MiB object.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from ._harness import MIB, Row, Settings, progress

LATENCY = 0.2
THREADS = 8


def _origin(objects: dict[str, bytes], latency: float) -> Any:
    from obstore.store import MemoryStore

    from tests._origin import TracingStore

    traced = TracingStore(MemoryStore(), latency=latency)
    for path, data in objects.items():
        traced.store.put(path, data)
    return traced


def _classes() -> dict[str, Any]:
    from obspec_utils.wrappers import CachingReadableStore as Theirs

    from tiers import CachingReadableStore as Ours

    return {"tiers": Ours, "obspec-utils": Theirs}


def _row(comparison: str, ours: float, theirs: float, meaning: str, target: str, met: bool,
         note: str) -> Row:  # fmt: skip
    return Row(
        comparison=comparison, subject="tiers CachingReadableStore", subject_ops=ours,
        baseline="obspec-utils CachingReadableStore", baseline_ops=theirs,
        ratio=theirs / ours if ours else float("inf"), meaning=meaning, target=target,
        verdict="PASS" if met else "MISS", note=note,
    )  # fmt: skip


def _distinct_misses_once(cls: Any) -> float:
    objects = {f"obj-{i}": bytes([i]) * 4096 for i in range(THREADS)}
    store = cls(_origin(objects, LATENCY))
    with ThreadPoolExecutor(THREADS) as pool:
        began = time.perf_counter()
        list(pool.map(lambda i: store.get_range(f"obj-{i}", start=0, end=16), range(THREADS)))
        return time.perf_counter() - began


def distinct_misses(settings: Settings) -> list[Row]:
    """8 threads each missing its own path at 200 ms origin latency: best wall time."""
    seconds = {}
    for name, cls in _classes().items():
        progress(f"readthrough distinct misses: {name}")
        seconds[name] = min(_distinct_misses_once(cls) for _ in range(settings.count(5, 2)))
    ours, theirs = seconds["tiers"], seconds["obspec-utils"]
    note = f"batches/s; wall time: tiers {ours:.3f} s, obspec-utils {theirs:.3f} s"
    row = _row("readthrough-8-distinct-misses", 1 / ours, 1 / theirs, "faster", "≤ 0.3 s",
               ours <= 0.3, note)  # fmt: skip
    return [replace(row, ratio=theirs / ours)]


def _one_path_requests(cls: Any) -> int:
    traced = _origin({"shared": b"s" * 4096}, 0.05)
    store = cls(traced)

    async def readers() -> None:
        await asyncio.gather(
            *(store.get_range_async("shared", start=i, end=i + 8) for i in range(THREADS))
        )

    asyncio.run(readers())
    return int(traced.data_requests())


def one_path_coroutines(settings: Settings) -> list[Row]:
    """8 coroutines missing the same path at once: origin data requests (1 is single-flight)."""
    del settings
    counts = {name: _one_path_requests(cls) for name, cls in _classes().items()}
    ours, theirs = counts["tiers"], counts["obspec-utils"]
    note = f"origin requests: tiers {ours}, obspec-utils {theirs} (counts, not ops/s)"
    return [_row("readthrough-8-coroutines-1-path", ours, theirs, "fewer requests", "1 request",
                 ours == 1, note)]  # fmt: skip


def _range_bytes(cls: Any, data: bytes, **options: Any) -> int:
    traced = _origin({"huge": data}, 0.0)
    store = cls(traced, 256 * MIB, **options)
    assert (
        bytes(store.get_range("huge", start=40 * MIB + 3, length=16)) == data[40 * MIB + 3 :][:16]
    )
    return int(traced.bytes_fetched)


def block_range(settings: Settings) -> list[Row]:
    """A 16 B range of a 64 MiB object, `block_size=4 MiB`: bytes fetched from the origin."""
    del settings
    data = bytes(range(256)) * (64 * MIB // 256)
    ours = _range_bytes(_classes()["tiers"], data, block_size=4 * MIB)
    theirs = _range_bytes(_classes()["obspec-utils"], data)
    note = f"bytes fetched: tiers {ours / MIB:g} MiB, obspec-utils {theirs / MIB:g} MiB"
    return [_row("readthrough-16b-of-64mib", ours, theirs, "fewer bytes", "≤ 1 block (4 MiB)",
                 ours <= 4 * MIB, note)]  # fmt: skip
