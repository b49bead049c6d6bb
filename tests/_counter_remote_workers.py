"""Child processes of tests/test_counters_remote.py, run as
``python -m tests._counter_remote_workers <command> '<json spec>'``:

- ``count``: a `Cache` over the spec's store; prints ``{"ready": true}``, waits for a line
  on stdin (the go, sent to every child at once), then runs `threads` threads each calling
  ``cache.incr(key)`` `increments` times, and prints what it saw: every value `incr`
  returned, the store's update conflicts, start and end times (``perf_counter``: one
  monotonic clock for every process of the host), the slowest increment and any error;
- ``serve``: a ``Cache(MemoryStore(), <store>)`` driven by JSON commands, one a line on
  stdin, each answered by one JSON line on stdout (see `_serve`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from typing import Any

from tests._tiers import store_of
from tiers import Cache, MemoryStore
from tiers._stores._object import ObjectStore
from tiers._stores._redis import RedisStore

perf = time.perf_counter


def open_store(spec: dict[str, Any]) -> Any:
    """The store the spec names: ``{"redis": url, "prefix": ...}`` (a ``redis+cluster://``
    URL for a cluster) or ``{"s3": url, "options": {...}}``."""
    if "redis" in spec:  # a generous timeout: these tests count, they do not time calls
        # (a new cluster client's first call finds the nodes too: over 0.5 s once, loaded)
        return RedisStore(spec["redis"], prefix=spec["prefix"], timeout=5.0)
    return ObjectStore(spec["s3"], **spec["options"])


def _reply(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def count(spec: dict[str, Any]) -> dict[str, Any]:
    store = open_store(spec)
    cache = Cache(store)
    try:
        cache.get("warm-up")  # connected, the server's clock measured: not in the timing
        _reply({"ready": True})
        sys.stdin.readline()
        seen: list[int] = []
        slowest = [0.0]
        errors: list[str] = []
        lock = threading.Lock()

        def work() -> None:
            mine: list[int] = []
            worst = 0.0
            try:
                for _ in range(spec["increments"]):
                    began = perf()
                    mine.append(cache.incr(spec["key"]))
                    worst = max(worst, perf() - began)
            except Exception:
                errors.append(traceback.format_exc())
            with lock:
                seen.extend(mine)
                slowest[0] = max(slowest[0], worst)

        threads = [threading.Thread(target=work) for _ in range(spec["threads"])]
        start = perf()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        end = perf()
        return {"seen": seen, "conflicts": store.conflicts, "start": start, "end": end,
                "slowest": slowest[0], "errors": errors}  # fmt: skip
    finally:
        cache.close()
        store.close()


def _serve(spec: dict[str, Any]) -> None:
    """Commands: ``{"do": "get"}`` → the value (None if absent) and whether the memory tier
    held a copy before (``held``) and after (``kept``); ``{"do": "incr"}`` → the new value;
    ``{"do": "close"}`` ends."""
    store = open_store(spec)
    cache = Cache(MemoryStore(), store)
    key = spec["key"]

    def held() -> bool:
        return cache._key(key) in store_of(cache)._data

    _reply({"ready": True})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["do"] == "get":
                before = held()
                _reply({"value": cache.get(key), "held": before, "kept": held()})
            elif command["do"] == "incr":
                _reply({"value": cache.incr(key)})
            else:
                _reply({"closed": True})
                return
    finally:
        cache.close()
        store.close()


if __name__ == "__main__":
    what, job = sys.argv[1], json.loads(sys.argv[2])
    if what == "count":
        _reply(count(job))
    else:
        _serve(job)
