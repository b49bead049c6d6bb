"""``tiers demo``: an expensive value computed once, then served from memory and from disk.

The parent process computes the value with `Cache.get_or_set` on the default stack (memory over
disk), reads it again from memory, then starts a new Python process (``demo --child``) that
opens the same disk store and reports, as JSON, which tier answered and the value's hash.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tiers

from .._types import TierStats
from ._errors import CLIError

T = TypeVar("T")

LIMIT = 1_000_000
KEY = f"tiers-demo:primes-below-{LIMIT}"
CHILD_TIMEOUT = 120.0


def primes_below(n: int) -> list[int]:
    """The primes below `n` by trial division: deterministic, pure Python, deliberately slow."""
    found: list[int] = []
    for candidate in range(2, n):
        for p in found:
            if p * p > candidate:
                found.append(candidate)
                break
            if candidate % p == 0:
                break
        else:
            found.append(candidate)
    return found


@dataclass(frozen=True)
class ChildReport:
    """What the new process saw: which tier answered, whether it computed, how fast."""

    answered: int | None  # tier whose hit counter moved during the read
    computed: bool  # whether the factory ran
    checksum: str
    seconds: float  # the get_or_set call alone
    wall_seconds: float  # the whole process: start-up, import, open, read (parent's clock)
    tiers: tuple[TierStats, ...]


@dataclass(frozen=True)
class DemoResult:
    """Everything the demo measured in the parent process, plus the child's report."""

    removed_earlier: bool  # an entry of an earlier run (--dir) was deleted to start cold
    count: int
    largest: int
    checksum: str
    compute_seconds: float  # the factory alone
    first_seconds: float  # the first get_or_set: lookup, compute, store in both tiers
    memory_seconds: float  # the second get_or_set
    memory_answered: int | None
    info: tiers.EntryInfo | None
    stats: tiers.Stats
    child: ChildReport


def prepare_dir(directory: str | None) -> tuple[Path, bool]:
    """The store directory (absolute) and whether it is a new temporary one."""
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="tiers-demo-")), True
    return Path(directory).expanduser().absolute(), False


@contextmanager
def open_cache(directory: Path) -> Iterator[tiers.Cache]:
    """The default stack over `directory`: a 64 MB memory tier over a disk store."""
    memory = tiers.MemoryStore(max_size="64MB")
    disk = tiers.DiskStore(directory)
    try:
        with tiers.Cache(memory, disk) as cache:
            yield cache
    finally:
        disk.close()
        memory.close()


def run(cache: tiers.Cache, directory: Path) -> DemoResult:
    """Run the demo on `cache`, opened with `open_cache(directory)`."""
    timings: dict[str, float] = {}

    def compute() -> list[int]:
        started = time.perf_counter()
        try:
            return primes_below(LIMIT)
        finally:
            timings["compute"] = time.perf_counter() - started

    removed_earlier = cache.delete(KEY)
    value, first = _timed(lambda: cache.get_or_set(KEY, compute))
    before = cache.stats()
    again, second = _timed(lambda: cache.get_or_set(KEY, compute))
    after = cache.stats()
    info = cache.info(KEY)
    child = run_child(directory)
    return DemoResult(
        removed_earlier=removed_earlier,
        count=len(value),
        largest=value[-1],
        checksum=tiers.hash_key(again),
        compute_seconds=timings.get("compute", 0.0),
        first_seconds=first,
        memory_seconds=second,
        memory_answered=_answered(before.tiers, after.tiers),
        info=info,
        stats=after,
        child=child,
    )


def run_child(directory: Path) -> ChildReport:
    """Start ``tiers demo --child`` in a new interpreter and read its report."""
    command = [sys.executable, "-m", "tiers._cli", "demo", "--child", "--dir", str(directory)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise CLIError(f"the new process did not finish in {CHILD_TIMEOUT:.0f} s") from None
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["no message"]
        raise CLIError(f"the new process failed (exit status {proc.returncode}): {lines[-1]}")
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise CLIError(f"the new process printed no report: {proc.stdout[:80]!r}") from None
    data["tiers"] = tuple(TierStats(**t) for t in data["tiers"])
    return ChildReport(wall_seconds=wall, **data)


def child(directory: Path) -> dict[str, Any]:
    """The new process's side: open the store, read the key, report as a JSON-able dict."""
    computed = False

    def compute() -> list[int]:
        nonlocal computed
        computed = True
        return primes_below(LIMIT)

    with open_cache(directory) as cache:
        before = cache.stats()
        value, seconds = _timed(lambda: cache.get_or_set(KEY, compute))
        after = cache.stats()
    return {
        "answered": _answered(before.tiers, after.tiers),
        "computed": computed,
        "checksum": tiers.hash_key(value),
        "seconds": seconds,
        "tiers": after.as_dict()["tiers"],
    }


def check(result: DemoResult) -> str | None:
    """Why the run does not show what it should (None when it does)."""
    child = result.child
    if child.computed:
        return "the new process computed the value again instead of reading it from disk"
    if child.answered != 1:
        return f"the new process was answered by tier {child.answered}, not the disk tier (1)"
    if child.checksum != result.checksum:
        return "the value read in the new process differs from the one computed"
    if result.memory_answered != 0:
        return f"the second call was answered by tier {result.memory_answered}, not memory (0)"
    return None


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def _answered(before: tuple[TierStats, ...], after: tuple[TierStats, ...]) -> int | None:
    """The tier whose hit counter moved between two snapshots, if exactly one did."""
    moved = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if a.hits > b.hits]
    return moved[0] if len(moved) == 1 else None
