"""``tiers bench``: get-hit, get-miss and set latency (p50, p99) and throughput of stores,
measured through a `tiers.Cache` with the raw serializer, each measurement bounded in time.

Every (store, size, op) is one row, a *cell*. A cell first warms up (not counted), then times
each operation alone with `time.perf_counter_ns` for about ``--seconds``: at least `MIN_OPS`,
at most `MAX_OPS`. Entries go under a namespace of their own, ``tiers-bench/<random>``, written
with a one-hour TTL (so that any a killed run leaves behind expire) and removed at the end, also
on error or Ctrl-C; a given store's other entries are never touched. Sets overwrite a pool of at
most `POOL_BYTES` (or one value, if larger), removed before the next size, so a run never grows
a store (or memory) by more than that.
"""

from __future__ import annotations

import argparse
import math
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tiers

from .._cache._usage import uncounted
from .._stores._url import tier_opener
from .._units import parse_size
from ..errors import ConfigError
from ._errors import USAGE, CLIError
from ._output import Column, Output
from ._stores import open_store

DEFAULT_SIZES = "1KB,64KB,1MB,10MB"
DEFAULT_SECONDS = 0.5
MAX_SECONDS = 600.0
MAX_VALUE = 1_000_000_000
"""Largest value size ``--sizes`` takes (1 GB)."""
MIN_OPS = 5
MAX_OPS = 100_000
WARMUP_SHARE = 0.1
"""Of ``--seconds``, spent warming up a cell (at most `WARMUP_OPS` operations, at least one)."""
WARMUP_OPS = 1000
POOL_BYTES = 64_000_000
"""Bytes of values a cell's sets cycle over: 1000 keys of 1 KB, 6 of 10 MB, one of 1 GB."""
POOL_KEYS = 1000
MISS_KEYS = 1000
TTL = 3600.0
OPS = ("set", "get-hit", "get-miss")
"""In the order measured: sets fill the keys the hits read."""
SERIALIZER = "raw"

COLUMNS = [
    Column("store"),
    Column("size", "bytes"),
    Column("op"),
    Column("p50", "seconds"),
    Column("p99", "seconds"),
    Column("ops_per_s", "count", "ops/s"),
    Column("mb_per_s", "count", "MB/s"),
]


def register(commands: Any, common: Any) -> None:
    """Add ``tiers bench`` to the `commands` subparsers."""
    parser = commands.add_parser(
        "bench",
        parents=[common.store, common.output],
        help="measure get and set latency and throughput of stores, by value size",
        description=(
            "Measure get-hit, get-miss and set latency (p50, p99) and throughput through a "
            "tiers.Cache with the raw serializer (random bytes values), for each STORE and value "
            "size. Without STORE: a MemoryStore, a DiskStore and a FolderStore in a new temporary "
            "directory, removed afterwards. Entries go under a namespace of their own "
            "(tiers-bench/<random>, one-hour TTL) and are removed at the end, also on error or "
            "Ctrl-C; the store's other entries are not touched."
        ),
    )
    parser.add_argument(
        "stores", nargs="*", metavar="STORE", help="stores to measure (default: see above)"
    )
    parser.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        metavar="SIZES",
        help=f"value sizes, comma-separated, at most 1GB each (default: {DEFAULT_SIZES})",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        metavar="S",
        help=(
            f"time per store, size and operation, after a warm-up (default: {DEFAULT_SECONDS}; "
            f"at least {MIN_OPS} and at most {MAX_OPS:,} operations)"
        ),
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help='also draw the results as a chart into FILE (.png, .svg or .pdf; needs "tiers[plot]")',
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    """``tiers bench``: measure, print one row per (store, size, op), draw the chart if asked."""
    sizes = parse_sizes(args.sizes)
    seconds = check_seconds(args.seconds)
    chart = None
    if args.plot is not None:
        from . import _plot

        chart = _plot.target(args.plot)  # before measuring: a missing matplotlib fails now
    with ExitStack() as stack:
        stores = _stores(args.stores, stack)
        cells = len(stores) * len(sizes) * len(OPS)
        with out.progress("bench", total=cells) as advance:
            rows = [
                row
                for label, store in stores
                for row in measure(label, store, sizes, seconds, args.secret, advance, out)
            ]
    out.line(
        f'values: random bytes through tiers.Cache(serializer="{SERIALIZER}"); latency of each '
        f"operation, about {seconds:g} s per row after a warm-up"
    )
    out.rows(COLUMNS, rows, document={"command": "bench", "serializer": SERIALIZER})
    if chart is not None:
        from . import _plot

        _plot.write(chart, rows)
        out.line(f"chart written to {chart}")
    return 0


# -- arguments ------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    """The distinct sizes of ``--sizes``, smallest first; `CLIError` (usage) if one is bad."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise CLIError("--sizes is empty: give value sizes like 1KB,64KB,1MB", USAGE)
    sizes: set[int] = set()
    for item in items:
        if not item:
            raise CLIError(f"--sizes {text!r} has an empty item: write e.g. 1KB,64KB,1MB", USAGE)
        try:
            size = parse_size(item, "--sizes")
        except ConfigError as exc:
            raise CLIError(str(exc), USAGE) from None
        if not size:
            raise CLIError(f"--sizes {item!r} is zero bytes: a value needs at least 1 byte", USAGE)
        if size > MAX_VALUE:
            raise CLIError(
                f"--sizes {item!r} is more than 1GB, the largest value bench takes", USAGE
            )
        sizes.add(size)
    return sorted(sizes)


def check_seconds(seconds: float) -> float:
    """``--seconds``, or `CLIError` (usage) unless it is in (0, `MAX_SECONDS`]."""
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise CLIError(
            f"--seconds must be more than 0 and at most {MAX_SECONDS:g}, e.g. 0.5 "
            f"(got {seconds:g})",
            USAGE,
        )
    return seconds


def label(spec: str) -> str:
    """How a STORE is named in the output: a path as given; a URL without its password or
    query (where credentials may be)."""
    if "://" not in spec:
        return spec
    parts = urlsplit(spec)
    host = parts.netloc.rpartition("@")
    user = host[0].partition(":")[0]
    netloc = f"{user}@{host[2]}" if user else host[2]
    return f"{parts.scheme}://{netloc}{parts.path}"


# -- stores -----------------------------------------------------------------------------------


def _stores(specs: Sequence[str], stack: ExitStack) -> list[tuple[str, Any]]:
    """(label, store) for each STORE, or the default three in a temporary directory; each is
    closed (and the directory removed) when `stack` closes."""
    if specs:
        opened = []
        for spec in specs:
            store = _open(spec)
            stack.callback(store.close)
            opened.append((label(spec), store))
        return opened
    root = Path(tempfile.mkdtemp(prefix="tiers-bench-"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    defaults: list[Any] = [
        tiers.MemoryStore(),
        tiers.DiskStore(root / "disk"),
        tiers.FolderStore(root / "folder"),
    ]
    for store in defaults:
        stack.callback(store.close)
    return [(type(store).__name__, store) for store in defaults]


def _open(spec: str) -> Any:
    """The store a STORE argument names, as every command opens it; ``memory://`` too, which
    they refuse: a store of this process is just what a bench of memory means."""
    if spec.lower().startswith("memory:"):
        return tier_opener(spec)()[0]
    return open_store(spec)


# -- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """The latencies (ns) of one operation on one store at one value size."""

    store: str
    size: int
    op: str
    latencies: list[int]

    def row(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        spent = sum(ordered) / 1e9
        ops = len(ordered) / spent if spent > 0 else math.inf
        moved = None if self.op == "get-miss" else ops * self.size / 1e6
        return {
            "store": self.store,
            "size": self.size,
            "op": self.op,
            "p50": percentile(ordered, 50) / 1e9,
            "p99": percentile(ordered, 99) / 1e9,
            "ops_per_s": round(ops) if math.isfinite(ops) else None,
            "mb_per_s": None if moved is None or not math.isfinite(moved) else _sig(moved),
        }


def percentile(ordered: Sequence[int], p: float) -> int:
    """The `p`-th percentile of sorted samples, nearest rank."""
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def _sig(x: float) -> float | int:
    """`x` to 4 significant digits: an int from 1000 up (no ``.0`` in tables)."""
    rounded = float(f"{x:.4g}")
    return round(rounded) if rounded >= 1000 else rounded


def measure(
    name: str,
    store: Any,
    sizes: Sequence[int],
    seconds: float,
    secret: str | None,
    advance: Callable[[int], None],
    out: Output,
) -> Iterator[dict[str, Any]]:
    """The rows of one store: each size, each op in `OPS`; its bench entries removed after."""
    with _bench_cache(store, secret, out) as cache:
        for size in sizes:
            value = secrets.token_bytes(size)
            pool = [f"{size}/{i}" for i in range(max(1, min(POOL_KEYS, POOL_BYTES // size)))]
            sets, _ = timed(cache.set, [(key, value) for key in pool], seconds)
            yield Cell(name, size, "set", sets.latencies).row()
            advance(1)
            written = pool[: min(len(pool), sets.calls)]
            hits, missed = timed(cache.get, [(key,) for key in written], seconds)
            if missed:
                timed_hits = len(hits.latencies)
                out.note(
                    f"tiers bench: {name}: {missed} of {timed_hits} get-hits of {size} bytes "
                    "found no entry (does the store evict them?); they are timed as they are"
                )
            yield Cell(name, size, "get-hit", hits.latencies).row()
            advance(1)
            absent = [(f"{size}/miss/{i}",) for i in range(MISS_KEYS)]
            misses, _ = timed(cache.get, absent, seconds)
            yield Cell(name, size, "get-miss", misses.latencies).row()
            advance(1)
            cache.clear()  # this size's entries, before the next size writes its own


@contextmanager
def _bench_cache(store: Any, secret: str | None, out: Output) -> Iterator[tiers.Cache]:
    """A cache over `store` in a namespace of its own, all of whose entries are removed when
    the block ends, however it ends."""
    namespace = f"tiers-bench/{secrets.token_hex(6)}"
    cache = tiers.Cache(
        store,
        serializer=SERIALIZER,
        secret=secret,
        namespace=namespace,
        ttl=TTL,
        on_tier_error="raise",  # a failing store is an error, not a fast miss
    )
    uncounted(cache)  # measuring a store must not move its hit ratio (tiers stats)
    try:
        yield cache
    finally:
        try:
            cache.clear()
        except Exception as exc:  # the store failed: say what is left where, keep the error
            out.note(
                f"tiers bench: could not remove the bench entries under {namespace!r}:* "
                f"({type(exc).__name__}: {exc}); they expire within an hour"
            )
        cache.close()


@dataclass(frozen=True)
class Timing:
    latencies: list[int]
    calls: int
    """Including the warm-up."""


def timed(
    call: Callable[..., Any], argsets: Sequence[tuple[Any, ...]], seconds: float
) -> tuple[Timing, int]:
    """(`Timing`, how many timed calls returned None) of `call` with each of `argsets` in
    turn: a warm-up first, then each call timed alone for about `seconds`."""
    clock = time.perf_counter_ns
    count = len(argsets)
    calls = 0
    warm_until = clock() + int(seconds * WARMUP_SHARE * 1e9)
    while True:
        call(*argsets[calls % count])
        calls += 1
        if calls >= WARMUP_OPS or clock() >= warm_until:
            break
    latencies: list[int] = []
    nones = 0
    end = clock() + int(seconds * 1e9)
    while True:
        args = argsets[calls % count]
        start = clock()
        got = call(*args)
        stop = clock()
        latencies.append(stop - start)
        calls += 1
        if got is None:
            nones += 1
        done = len(latencies)
        if done >= MAX_OPS or (done >= MIN_OPS and stop >= end):
            return Timing(latencies, calls), nones
