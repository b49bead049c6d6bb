"""Disk scale: `get` time at 1k entries against a big store (target: at most 1.3 times,
docs/benchmarks.md#targets), and the `tiers ls --limit 20` and `tiers stats` commands on the
big store (targets: 1 s and 2 s, start-up of a new process included).

The big store holds 100,000 entries by default, 1,000,000 with ``--scale-1m``. Both sizes are
populated with 1 KiB values by a plain `set` loop (its time is printed), then read at random
keys across the whole store. diskcache gets the same treatment, for context (with its size
limit lifted so that it keeps every entry, as DiskStore does without `max_size`).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._harness import (
    KIB,
    Row,
    Settings,
    Target,
    check_hits,
    get_loop,
    measure,
    progress,
    scratch,
    slowdown,
)
from .disk import open_one

SMALL = 1_000
VALUE_POOL = 256  # distinct 1 KiB values, cycled while populating


def _key(i: int) -> str:
    return f"key-{i:07d}"


def _populate(cache: Any, count: int, pool: list[bytes], label: str) -> None:
    start = time.perf_counter()
    set_ = cache.set
    for i in range(count):
        set_(_key(i), pool[i % VALUE_POOL])
    seconds = time.perf_counter() - start
    rate = count / seconds
    progress(f"populate {label}: {count:,} x 1 KiB in {seconds:.1f} s ({rate:,.0f} sets/s)")


def get_at_scale(settings: Settings) -> list[Row]:
    """Time per `get` hit at `SMALL` entries and at the big size, for tiers and diskcache."""
    big = 1_000_000 if settings.scale_1m else settings.count(100_000, 10_000)
    if not settings.scale_1m:
        progress(f"disk scale: big store = {big:,} entries (use --scale-1m for 1,000,000)")
    pool = [os.urandom(KIB) for _ in range(VALUE_POOL)]
    gets = settings.count(50_000, 2_000)
    rng = random.Random(2)
    lookups = {n: [_key(rng.randrange(n)) for _ in range(gets)] for n in (SMALL, big)}
    with scratch() as root:
        caches: dict[str, Any] = {}
        closers: list[Callable[[], None]] = []
        try:
            for lib in ("tiers", "diskcache"):
                for n in (SMALL, big):
                    cache, close = open_one(lib, root / f"{lib}-{n}", size_limit=2**50)
                    caches[f"{lib}@{n}"] = cache
                    closers.append(close)
                    _populate(cache, n, pool, f"{lib} @ {n:,}")
                    expected = {_key(i): pool[i % VALUE_POOL] for i in range(0, n, n // 20)}
                    check_hits(cache.get, expected, f"{lib}@{n}")
            cases = {
                name: get_loop(cache.get, lookups[int(name.split("@")[1])])
                for name, cache in caches.items()
            }
            ops = measure(cases, gets, settings)
            commands = _cli_at_scale(root / f"tiers-{big}", big)
        finally:
            for close in closers:
                close()
    label = f"{big // 1000:,}k" if big < 1_000_000 else "1M"
    what = f"disk scale: get @ {label} vs @ 1k"
    note = "" if settings.scale_1m else f"big = {big:,} entries, not 1M (use --scale-1m)"
    rows = []
    for lib, target in (("tiers", Target("<=", 1.3)), ("diskcache", None)):
        at_big, at_small, spread = ops.pair(f"{lib}@{big}", f"{lib}@{SMALL}")
        subject, baseline = (f"{lib} get @ {label}", at_big), (f"{lib} get @ 1k", at_small)
        rows.append(slowdown(what, subject, baseline, target, spread=spread, note=note))
    for command, (seconds, budget) in commands.items():
        rows.append(
            slowdown(
                f"tiers CLI @ {label} entries: whole command (new process) vs {budget:g} s",
                (f"tiers {command}", 1 / seconds),
                (f"{budget:g} s budget", 1 / budget),
                Target("<=", 1.0),
                note=note,
            )
        )
    return rows


CLI_BUDGETS = {"ls --limit 20": 1.0, "stats": 2.0}
"""Seconds the whole command may take on a 1M-entry DiskStore (start-up included)."""


def _cli_at_scale(path: Path, count: int) -> dict[str, tuple[float, float]]:
    """Best of 3 wall times of each `tiers` command in `CLI_BUDGETS`, run as a new process."""
    tiers_command = [sys.executable, "-m", "tiers._cli"]
    found: dict[str, tuple[float, float]] = {}
    for command, budget in CLI_BUDGETS.items():
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            proc = subprocess.run(
                [*tiers_command, *command.split(), str(path), "--format", "json"],
                capture_output=True, text=True, check=False, timeout=600,
            )  # fmt: skip
            best = min(best, time.perf_counter() - start)
            if proc.returncode != 0:
                raise RuntimeError(f"tiers {command} failed: {proc.stderr.strip()}")
        listed = json.loads(proc.stdout)
        if command == "stats" and listed["stores"][0]["entries"] != count:
            raise RuntimeError(f"tiers stats counted {listed['stores'][0]['entries']} of {count}")
        if command.startswith("ls") and len(listed["entries"]) != 20:
            raise RuntimeError(f"tiers {command} listed {len(listed['entries'])} entries")
        progress(f"tiers {command} @ {count:,}: {best:.2f} s (budget {budget:g} s)")
        found[command] = (best, budget)
    return found
