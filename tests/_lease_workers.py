"""A lock holder for tests/test_leases.py, run as its own process:

    python -m tests._lease_workers '<json spec>'

It opens a cache on one tier, calls ``get_or_set`` with a factory that touches ``started``
(once it holds the lock and computes) and then sleeps or holds the GIL, and prints a JSON line
with what it returned and its lock counters. Its warnings go to stderr.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from tiers import Cache, ObjectStore

_CATASTROPHIC = re.compile(r"(a+)+$")  # backtracks 2^n steps on "a" * n + "b", GIL held


def open_cache(spec: dict[str, Any]) -> Cache:
    """The one-tier cache a spec names: {"kind": "disk"|"redis"|"s3", "target", "options"}."""
    if spec["kind"] == "s3":
        tier: Any = ObjectStore(spec["target"], **spec["options"])
    else:
        tier = spec["target"]
    return Cache(tier, serializer="json")


def gil_holder(seconds: float) -> Any:
    """A computation that holds the GIL for about `seconds` (no other thread runs)."""
    started = time.perf_counter()
    _CATASTROPHIC.match("a" * 20 + "b")
    unit = max(time.perf_counter() - started, 1e-6)
    n = 20 + max(0, math.ceil(math.log2(seconds / unit)))
    return lambda: _CATASTROPHIC.match("a" * n + "b")


def main(spec: dict[str, Any]) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    started = Path(spec["started"])
    kind, seconds = spec["compute"]
    hog = gil_holder(seconds) if kind == "gil" else None

    def factory() -> str:
        started.touch()
        if hog is not None:
            hog()
        else:
            time.sleep(seconds)
        return str(spec["value"])

    with open_cache(spec) as cache:
        began = time.monotonic()
        value = cache.get_or_set(spec["key"], factory, lease=spec["lease"])
        stats = cache.stats().tiers[-1]
        print(
            json.dumps(
                {
                    "value": value,
                    "seconds": time.monotonic() - began,
                    "lost_leases": stats.lost_leases,
                    "lock_fallbacks": stats.lock_fallbacks,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
