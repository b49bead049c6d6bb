"""Code run in child processes by tests/test_counters_local.py (importable by reference, so
it works with the ``spawn`` start method).

Each worker opens its own cache on the shared store, counts with `Cache.incr` (threads or
coroutines) or answers the parent's requests, and reports back in a JSON file or a pipe.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

from tiers import Cache, DiskStore, FolderStore, MemoryStore

KINDS = ("disk", "folder", "memory+disk")
COUNTER = "hits"


def open_cache(kind: str, path: str) -> Cache:
    """A cache of `kind` on the shared store at `path`: the store alone, or a memory tier
    over a DiskStore (the default stack)."""
    if kind == "disk":
        return Cache(DiskStore(path))
    if kind == "folder":
        return Cache(FolderStore(path))
    if kind == "memory+disk":
        return Cache(MemoryStore(), DiskStore(path))
    raise ValueError(f"unknown kind {kind!r}")


def closed(cache: Cache) -> None:
    """Close the cache and its stores."""
    cache.close()
    for tier in cache._tiers:
        tier.store.close()


def report(out: str, values: list[int], seconds: float, errors: list[str]) -> None:
    Path(out).write_text(json.dumps({"values": values, "seconds": seconds, "errors": errors}))


def count(kind: str, path: str, barrier: Any, threads: int, increments: int, out: str) -> None:
    """Once every process is ready (`barrier`), `threads` threads each `incr` the counter
    `increments` times; the values `incr` returned, the seconds it took and any errors
    go to `out`."""
    cache = open_cache(kind, path)
    returned: list[list[int]] = [[] for _ in range(threads)]
    errors: list[str] = []

    def work(mine: list[int]) -> None:
        try:
            for _ in range(increments):
                mine.append(cache.incr(COUNTER))
        except BaseException as exc:  # reported to the parent
            errors.append(repr(exc))

    try:
        workers = [threading.Thread(target=work, args=(mine,)) for mine in returned]
        barrier.wait(timeout=120)
        start = time.perf_counter()
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        seconds = time.perf_counter() - start
    finally:
        closed(cache)
    report(out, [value for mine in returned for value in mine], seconds, errors)


def count_async(
    kind: str, path: str, barrier: Any, coroutines: int, increments: int, out: str
) -> None:
    """`count` with `incr_async`, from `coroutines` coroutines of one event loop."""
    cache = open_cache(kind, path)
    errors: list[str] = []

    async def work() -> list[int]:
        mine = []
        for _ in range(increments):
            mine.append(await cache.incr_async(COUNTER))
        return mine

    async def crowd() -> list[list[int]]:
        return await asyncio.gather(*(work() for _ in range(coroutines)))

    returned: list[list[int]] = []
    try:
        barrier.wait(timeout=120)
        start = time.perf_counter()
        try:
            returned = asyncio.run(crowd())
        except BaseException as exc:  # reported to the parent
            errors.append(repr(exc))
        seconds = time.perf_counter() - start
    finally:
        closed(cache)
    report(out, [value for mine in returned for value in mine], seconds, errors)


def serve(kind: str, path: str, conn: Any) -> None:
    """Answer the parent's requests on `conn` until it sends "stop": "incr" (the new value)
    and "get" (the counter as this process's cache reads it, its memory tier first)."""
    cache = open_cache(kind, path)
    try:
        while True:
            request = conn.recv()
            if request == "stop":
                return
            conn.send(cache.incr(COUNTER) if request == "incr" else cache.get(COUNTER))
    finally:
        closed(cache)
