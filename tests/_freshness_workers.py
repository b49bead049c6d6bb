"""Code run in child processes by tests/test_freshness_processes.py (importable by reference,
so it works with the ``spawn`` start method).

Each child opens ``Cache(MemoryStore(), <shared tier>)`` (a DiskStore path, a Redis URL or an
S3 bucket on moto) and calls one key, "fresh", with ``stale=`` or ``early=``. Every computation
appends a ``start`` line, then a ``done`` line, to a record file opened with ``O_APPEND``
(atomic for small writes, across processes): the parent counts computations and sees who ran
them when. A value is ``{"gen": n, "by": pid}``, n the number of ``start`` lines so far.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tiers import Cache, MemoryStore, ObjectStore

KINDS = ("disk", "redis", "s3")
KEY = "fresh"
POLL = 0.05  # seconds between the calls of a caller waiting for a refresh to land


@dataclass(frozen=True)
class Job:
    """What a caller calls and how: the shared tier (`spec`: {"kind", "target", "options"}),
    the API, the freshness options, and the computation (`work` seconds, or `hang`)."""

    spec: dict[str, Any]
    record: str
    api: str = "get_or_set"
    ttl: float = 1.0
    stale: float | None = 30.0
    early: bool | float = False
    lease: float = 5.0
    work: float = 0.4
    role: str = "child"
    hang: bool = False  # the computation never ends (its process is killed)
    fail_flag: str | None = None  # while this file exists, the computation raises


class RefreshRefused(RuntimeError):
    """The computation's error while the fail flag is up."""


def shared_tier(spec: dict[str, Any]) -> Any:
    """The shared tier a spec names (a store, a path or a URL for `Cache`)."""
    if spec["kind"] == "s3":
        return ObjectStore(spec["target"], **spec["options"])
    return spec["target"]


def open_cache(spec: dict[str, Any]) -> Cache:
    """The realistic stack: a memory tier over the shared tier."""
    return Cache(MemoryStore(), shared_tier(spec))


def open_reader(spec: dict[str, Any]) -> Cache:
    """The shared tier alone (no memory tier to go stale): what every process will see."""
    return Cache(shared_tier(spec))


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    return path.read_text().splitlines() if path.exists() else []


def finished(record: str | Path, gen: int) -> bool:
    """Whether the computation of generation `gen` has returned."""
    return sum(1 for line in read_lines(record) if line.startswith("done ")) >= gen


def computations(record: str | Path) -> list[tuple[str, str, int, float]]:
    """The record's lines as (event, role, pid, wall time)."""
    rows = []
    for line in read_lines(record):
        event, role, pid, at = line.split()
        rows.append((event, role, int(pid), float(at)))
    return rows


def _begin(job: Job) -> dict[str, Any]:
    if job.fail_flag is not None and os.path.exists(job.fail_flag):
        append_line(job.record, f"fail {job.role} {os.getpid()} {time.time():.3f}")
        raise RefreshRefused("the fail flag is up")
    append_line(job.record, f"start {job.role} {os.getpid()} {time.time():.3f}")
    gen = sum(1 for line in read_lines(job.record) if line.startswith("start "))
    return {"gen": gen, "by": os.getpid()}


def _end(job: Job) -> None:
    append_line(job.record, f"done {job.role} {os.getpid()} {time.time():.3f}")


def compute(job: Job) -> dict[str, Any]:
    value = _begin(job)
    time.sleep(3600 if job.hang else job.work)
    _end(job)
    return value


async def compute_async(job: Job) -> dict[str, Any]:
    value = _begin(job)
    await asyncio.sleep(job.work)
    _end(job)
    return value


_MEMOIZED: dict[str, Job] = {}  # what `generation` computes, set by `caller` in this process


def generation(x: int) -> dict[str, Any]:
    """The memoized function (memoized by each process in `caller`)."""
    return compute(_MEMOIZED["job"])


def _options(job: Job) -> dict[str, Any]:
    return {"ttl": job.ttl, "stale": job.stale, "early": job.early, "lease": job.lease}


def caller(cache: Cache, job: Job) -> Callable[[], Any]:
    """A no-argument call of the key: ``get_or_set("fresh", ...)`` or the memoized
    `generation` named "fresh" called with 1."""
    if job.api == "get_or_set":
        return lambda: cache.get_or_set(KEY, lambda: compute(job), **_options(job))
    _MEMOIZED["job"] = job
    memoized = cache.memoize(name=KEY, **_options(job))(generation)
    return lambda: memoized(1)


def async_caller(cache: Cache, job: Job) -> Callable[[], Awaitable[Any]]:
    return lambda: cache.get_or_set_async(KEY, lambda: compute_async(job), **_options(job))


def stored_key(cache: Cache, api: str) -> str:
    """The key `caller` uses, as `cache.get` takes it."""
    return KEY if api == "get_or_set" else cache.memoize(name=KEY)(generation).key(1)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    value = call()
    return value, time.perf_counter() - began


def _stats(cache: Cache) -> dict[str, int]:
    s = cache.stats()
    return {"stale_served": s.stale_served, "refreshes": s.refreshes,
            "refresh_errors": s.refresh_errors}  # fmt: skip


# -- (1) rounds of expiries: processes x threads ----------------------------------------------


def crowd(job: Job, barrier: Any, threads: int, rounds: int, out: str) -> None:
    """`threads` threads, each: wait (ready), wait (primed), one warm call; then per round r,
    wait (the value is stale), one timed call, and calls every POLL s until generation r + 1
    lands. Writes {"calls": [[thread, round, gen, seconds]], "landed": [[thread, round,
    gens seen, seconds]], "errors", "stats"} to `out`."""
    cache = open_cache(job.spec)
    call = caller(cache, job)
    calls: list[list[Any]] = []
    landed: list[list[Any]] = []
    errors: list[str] = []

    def run(i: int) -> None:
        try:
            barrier.wait(60)  # every caller is ready: the parent primes the key
            barrier.wait(60)  # primed
            value, seconds = timed(call)
            calls.append([i, 0, value["gen"], seconds])
            for r in range(1, rounds + 1):
                barrier.wait(60)  # the value is stale now
                value, seconds = timed(call)
                calls.append([i, r, value["gen"], seconds])
                landed.append([i, r, *poll(call, r + 1)])
        except BaseException as exc:  # reported to the parent, which fails the test
            errors.append(f"thread {i}: {type(exc).__name__}: {exc}")
            barrier.abort()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    result = {"calls": calls, "landed": landed, "errors": errors, "stats": _stats(cache)}
    cache.close()
    Path(out).write_text(json.dumps(result))


def poll(call: Callable[[], Any], gen: int, timeout: float = 10.0) -> tuple[list[int], float]:
    """Call until generation `gen` comes back: (the generations seen, seconds it took)."""
    began = time.perf_counter()
    seen: list[int] = []
    while time.perf_counter() - began < timeout:
        got = call()["gen"]
        if not seen or seen[-1] != got:
            seen.append(got)
        if got >= gen:
            break
        time.sleep(POLL)
    return seen, time.perf_counter() - began


# -- (2) a refresher killed with SIGKILL, and its successor -----------------------------------


def wait_for_file(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.005)


def refresh_and_hang(job: Job, go: str, out: str) -> None:
    """Once `go` exists, call the (stale) key: the value comes back at once and a background
    refresh starts whose computation never ends. Then idle until killed."""
    cache = open_cache(job.spec)
    call = caller(cache, replace(job, hang=True))
    wait_for_file(go)
    value, seconds = timed(call)
    Path(out).write_text(json.dumps({"value": value, "seconds": seconds}))
    time.sleep(120)  # the parent kills this process (SIGKILL) while it refreshes


def keep_calling(job: Job, go: str, out: str, timeout: float = 20.0) -> None:
    """Once `go` exists, call every 50 ms until this process's own value comes back (then
    once more). Writes {"calls": [[wall time, value, seconds]], "stats"} to `out`."""
    cache = open_cache(job.spec)
    call = caller(cache, job)
    wait_for_file(go)
    calls: list[list[Any]] = []
    deadline = time.monotonic() + timeout
    mine = 0
    while mine < 2 and time.monotonic() < deadline:
        at = time.time()
        value, seconds = timed(call)
        calls.append([at, value, seconds])
        mine += value["by"] == os.getpid()
        time.sleep(0.05)
    Path(out).write_text(json.dumps({"calls": calls, "stats": _stats(cache)}))
    cache.close()


# -- (4) rounds of expiries: processes x coroutines -------------------------------------------


def crowd_async(job: Job, barrier: Any, coroutines: int, rounds: int, out: str) -> None:
    """`crowd` with coroutines calling ``get_or_set_async`` (an async computation): the
    process waits at the barrier (in a thread), then its coroutines call at once."""
    asyncio.run(_crowd_async(job, barrier, coroutines, rounds, out))


async def _crowd_async(job: Job, barrier: Any, coroutines: int, rounds: int, out: str) -> None:
    cache = open_cache(job.spec)
    call = async_caller(cache, job)
    calls: list[list[Any]] = []
    landed: list[list[Any]] = []

    async def one(i: int, r: int) -> None:
        began = time.perf_counter()
        value = await call()
        calls.append([i, r, value["gen"], time.perf_counter() - began])

    async def until(i: int, r: int) -> None:
        began = time.perf_counter()
        seen: list[int] = []
        while time.perf_counter() - began < 10:
            got = (await call())["gen"]
            if not seen or seen[-1] != got:
                seen.append(got)
            if got > r:
                break
            await asyncio.sleep(POLL)
        landed.append([i, r, seen, time.perf_counter() - began])

    try:
        await asyncio.to_thread(barrier.wait, 60)  # ready: the parent primes the key
        await asyncio.to_thread(barrier.wait, 60)  # primed
        await asyncio.gather(*(one(i, 0) for i in range(coroutines)))
        for r in range(1, rounds + 1):
            await asyncio.to_thread(barrier.wait, 60)  # the value is stale now
            await asyncio.gather(*(one(i, r) for i in range(coroutines)))
            await asyncio.gather(*(until(i, r) for i in range(coroutines)))
        errors: list[str] = []
    except BaseException as exc:
        errors = [f"{type(exc).__name__}: {exc}"]
        barrier.abort()
    result = {"calls": calls, "landed": landed, "errors": errors, "stats": _stats(cache)}
    await cache.close_async()
    Path(out).write_text(json.dumps(result))


# -- (5) early refreshes (XFetch) under dense calls -------------------------------------------


def hammer(job: Job, barrier: Any, threads: int, seconds: float, out: str) -> None:
    """`threads` threads call every 10 ms for `seconds` once the key is primed. Writes
    {"slowest", "slow": [[wall time, seconds]] of calls over 0.1 s, "calls", "gens", "errors",
    "stats"} to `out`."""
    cache = open_cache(job.spec)
    call = caller(cache, job)
    slow: list[list[float]] = []
    slowest = [0.0]
    count = [0]
    gens: set[int] = set()
    errors: list[str] = []

    def run(i: int) -> None:
        try:
            barrier.wait(60)  # ready: the parent primes the key
            barrier.wait(60)  # primed
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                at = time.time()
                value, took = timed(call)
                count[0] += 1
                gens.add(value["gen"])
                slowest[0] = max(slowest[0], took)
                if took > 0.1:
                    slow.append([at, took])
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(f"thread {i}: {type(exc).__name__}: {exc}")
            barrier.abort()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    result = {"slowest": slowest[0], "slow": slow, "calls": count[0], "gens": sorted(gens),
              "errors": errors, "stats": _stats(cache)}  # fmt: skip
    cache.close()
    Path(out).write_text(json.dumps(result))
