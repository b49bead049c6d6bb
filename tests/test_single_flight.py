"""`get_or_set` single-flight: one computation per cold key among threads, coroutines, event
loops and processes; exceptions reach every waiter; a dead lock holder loses its lease."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from tests._flights import count_waiters
from tiers import MISSING, Cache, DiskStore, MemoryStore

SPAWN = multiprocessing.get_context("spawn")  # fork + threads is unsafe; spawn is portable


class Counter:
    """Counts factory calls across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.n = 0

    def bump(self) -> None:
        with self._lock:
            self.n += 1


def build(stack: str, path: Path) -> Cache:
    if stack == "memory":
        return Cache(MemoryStore())
    return Cache(MemoryStore(), DiskStore(path))


@pytest.fixture(params=["memory", "memory+disk"])
def cache(request: pytest.FixtureRequest, store_dir: Path) -> Iterator[Cache]:
    c = build(str(request.param), store_dir)
    yield c
    c.close()


def run_threads(n: int, target: Callable[[], Any]) -> list[Any]:
    """Run `target` in `n` threads released together; return results (or exceptions)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = target()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a caller never returned"
    return results


# -- threads and coroutines --------------------------------------------------------------------


def test_threads_on_a_cold_key_compute_once(cache: Cache) -> None:
    counter = Counter()
    waiters = count_waiters(cache)

    def factory() -> dict[str, int]:
        counter.bump()
        waiters.wait_for(15)  # every other thread waits for this computation
        return {"answer": 42}

    results = run_threads(16, lambda: cache.get_or_set("cold", factory, ttl=60))
    assert counter.n == 1
    assert results == [{"answer": 42}] * 16
    assert cache.get("cold") == {"answer": 42}


def test_coroutines_on_a_cold_key_compute_once(cache: Cache) -> None:
    counter = Counter()
    waiters = count_waiters(cache)

    async def factory() -> str:
        counter.bump()
        await waiters.wait_for_async(15)
        return "value"

    async def main() -> list[Any]:
        return await asyncio.gather(*(cache.get_or_set_async("cold", factory) for _ in range(16)))

    assert asyncio.run(main()) == ["value"] * 16
    assert counter.n == 1
    assert cache.get("cold") == "value"


def test_two_event_loops_and_plain_threads_compute_once(cache: Cache) -> None:
    counter = Counter()
    barrier = threading.Barrier(2 + 4)
    results: list[Any] = []
    results_lock = threading.Lock()
    waiters = count_waiters(cache)

    def sync_factory() -> str:
        counter.bump()
        waiters.wait_for(2 * 4 + 4 - 1)  # every caller but this one
        return "shared"

    async def async_factory() -> str:
        counter.bump()
        await waiters.wait_for_async(2 * 4 + 4 - 1)
        return "shared"

    def record(values: list[Any]) -> None:
        with results_lock:
            results.extend(values)

    def loop_thread() -> None:
        async def main() -> list[Any]:
            return await asyncio.gather(
                *(cache.get_or_set_async("cold", async_factory) for _ in range(4)),
                return_exceptions=True,
            )

        barrier.wait(timeout=30)
        record(asyncio.run(main()))

    def plain_thread() -> None:
        barrier.wait(timeout=30)
        try:
            record([cache.get_or_set("cold", sync_factory)])
        except Exception as exc:
            record([exc])

    threads = [threading.Thread(target=loop_thread) for _ in range(2)]
    threads += [threading.Thread(target=plain_thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert results == ["shared"] * (2 * 4 + 4)
    assert counter.n == 1


def test_a_factory_exception_reaches_every_waiter_and_nothing_is_cached(cache: Cache) -> None:
    counter = Counter()

    class Boom(Exception):
        pass

    waiters = count_waiters(cache)

    def factory() -> int:
        counter.bump()
        waiters.wait_for(7)
        raise Boom("factory failed")

    results = run_threads(8, lambda: cache.get_or_set("cold", factory))
    assert counter.n == 1
    assert all(isinstance(r, Boom) and str(r) == "factory failed" for r in results), results
    assert cache.get("cold", MISSING) is MISSING
    assert not cache.has("cold")
    # The failed flight is over: the next caller computes afresh.
    assert cache.get_or_set("cold", lambda: "second try") == "second try"


def test_an_async_factory_exception_reaches_every_coroutine(cache: Cache) -> None:
    counter = Counter()
    waiters = count_waiters(cache)

    async def factory() -> int:
        counter.bump()
        await waiters.wait_for_async(7)
        raise ValueError("async failure")

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(cache.get_or_set_async("cold", factory) for _ in range(8)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert counter.n == 1
    assert all(isinstance(r, ValueError) and str(r) == "async failure" for r in results)
    assert cache.get("cold", MISSING) is MISSING


def test_cancelling_the_leader_does_not_cancel_the_waiters(cache: Cache) -> None:
    counter = Counter()
    waiting = count_waiters(cache)

    async def main() -> tuple[list[Any], asyncio.Task[Any]]:
        computing = asyncio.Event()

        async def factory() -> str:
            counter.bump()
            if counter.n == 1:  # the leader: computes until cancelled
                computing.set()
                await asyncio.Event().wait()
            return "value"

        leader = asyncio.create_task(cache.get_or_set_async("cold", factory))
        await computing.wait()
        waiters = [asyncio.create_task(cache.get_or_set_async("cold", factory)) for _ in range(4)]
        await waiting.wait_for_async(4)
        leader.cancel()
        return await asyncio.gather(*waiters, return_exceptions=True), leader

    results, leader = asyncio.run(main())
    assert leader.cancelled()
    assert results == ["value"] * 4, results
    assert counter.n == 2  # the cancelled computation, then one by a waiter that took over
    assert cache.get("cold") == "value"


def test_an_interrupted_leader_thread_hands_over_to_a_waiter(cache: Cache) -> None:
    class Interrupt(BaseException):  # like KeyboardInterrupt: not the waiters' failure
        pass

    started = threading.Event()
    counter = Counter()
    waiters = count_waiters(cache)

    def interrupted() -> str:
        counter.bump()
        started.set()
        waiters.wait_for(4)
        raise Interrupt

    def fine() -> str:
        counter.bump()
        return "value"

    outcome: dict[str, Any] = {}

    def lead() -> None:
        try:
            cache.get_or_set("cold", interrupted)
        except Interrupt as exc:
            outcome["leader"] = exc

    leader = threading.Thread(target=lead)
    leader.start()
    assert started.wait(10)
    waiters = run_threads(4, lambda: cache.get_or_set("cold", fine))
    leader.join(10)
    assert isinstance(outcome["leader"], Interrupt)
    assert waiters == ["value"] * 4
    assert counter.n == 2


def test_a_recursive_get_or_set_of_the_same_key_raises(cache: Cache) -> None:
    def factory() -> int:
        return int(cache.get_or_set("k", factory)) + 1

    with pytest.raises(RuntimeError, match=r"':k'.*called again") as caught:
        cache.get_or_set("k", factory)
    assert "\n" not in str(caught.value)
    assert cache.get("k", MISSING) is MISSING
    assert cache.get_or_set("k", lambda: 5) == 5  # the flight was cleaned up


def test_a_recursive_get_or_set_async_of_the_same_key_raises(cache: Cache) -> None:
    async def factory() -> int:
        return int(await cache.get_or_set_async("k", factory)) + 1

    with pytest.raises(RuntimeError, match="called again while computing"):
        asyncio.run(cache.get_or_set_async("k", factory))
    assert cache.get("k", MISSING) is MISSING


def test_a_blocking_get_or_set_behind_a_coroutine_of_its_thread_raises_not_hangs(
    cache: Cache,
) -> None:
    """Blocking on a flight led by a coroutine of this thread's loop would wait for ever (the
    loop cannot run while blocked): a clear error instead, and the coroutine still finishes."""

    async def main() -> int:
        computing, release = asyncio.Event(), asyncio.Event()

        async def slow() -> int:
            computing.set()
            await release.wait()
            return 7

        leader = asyncio.create_task(cache.get_or_set_async("k", slow))
        await computing.wait()  # the leader awaits its factory on this very loop
        with pytest.raises(RuntimeError, match="get_or_set_async"):
            cache.get_or_set("k", lambda: 0)
        release.set()
        return await leader

    assert asyncio.run(main()) == 7
    assert cache.get("k") == 7


def test_a_factory_may_ask_for_other_keys(cache: Cache) -> None:
    def outer() -> int:
        return int(cache.get_or_set("inner", lambda: 20)) + 1

    assert cache.get_or_set("outer", outer) == 21
    assert cache.get("inner") == 20


def test_distinct_keys_compute_in_parallel(cache: Cache) -> None:
    together = threading.Barrier(8)  # passed only if all eight computations run at once

    def factory() -> float:
        together.wait(timeout=10)
        return time.monotonic()

    start = time.monotonic()
    counter = iter(range(8))
    lock = threading.Lock()

    def call() -> Any:
        with lock:
            i = next(counter)
        return cache.get_or_set(f"key{i}", factory)

    run_threads(8, call)
    assert time.monotonic() - start < 0.3 * 4  # not one after another (the barrier: 10 s)


def test_two_caches_over_one_disk_store_compute_once(store_dir: Path) -> None:
    """Two Cache objects do not share in-process flights; the DiskStore lock joins them."""
    caches = [Cache(MemoryStore(), DiskStore(store_dir)) for _ in range(2)]
    counter = Counter()
    waiters = count_waiters(*caches)

    def factory() -> str:
        counter.bump()
        waiters.wait_for(16 - 2)  # all but the two leaders; the other one waits for the lock
        return "once"

    pick = iter(range(16))
    lock = threading.Lock()

    def call() -> Any:
        with lock:
            i = next(pick)
        return caches[i % 2].get_or_set("cold", factory)

    assert run_threads(16, call) == ["once"] * 16
    assert counter.n == 1


# -- processes ---------------------------------------------------------------------------------


def _append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _process_worker(
    store_dir: str, counter: str, out: str, barrier: Any, threads: int
) -> None:  # runs in a spawned process
    cache = Cache(MemoryStore(), DiskStore(store_dir))

    def factory() -> dict[str, Any]:
        _append_line(counter, f"{os.getpid()} {threading.get_ident()}")
        # other processes wait on the store's lock, which cannot be counted from here: a
        # computation this long lets most of them arrive (a late one finds the value stored)
        time.sleep(0.3)
        return {"value": 42, "by": os.getpid()}

    local = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def run(i: int) -> None:
        local.wait(timeout=60)
        results[i] = cache.get_or_set("cold", factory, ttl=600)

    barrier.wait(timeout=60)
    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    Path(out).write_text(json.dumps(results))


@contextlib.contextmanager
def processes(*procs: BaseProcess) -> Iterator[tuple[BaseProcess, ...]]:
    """Start the processes; whatever happens, none outlives the test."""
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)


@pytest.mark.slow
def test_processes_and_threads_on_a_cold_key_compute_once(tmp_path: Path) -> None:
    store_dir, counter = tmp_path / "store", tmp_path / "counter"
    DiskStore(store_dir).close()  # created up front: see test_processes_creating_one_store_...
    barrier = SPAWN.Barrier(4)
    outs = [tmp_path / f"out{i}.json" for i in range(4)]
    procs = [
        SPAWN.Process(
            target=_process_worker,
            args=(str(store_dir), str(counter), str(out), barrier, 8),
        )
        for out in outs
    ]
    with processes(*procs):
        for p in procs:
            p.join(timeout=90)
            assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    lines = counter.read_text().splitlines()
    assert len(lines) == 1, f"the factory ran {len(lines)} times: {lines}"
    leader = int(lines[0].split()[0])
    for out in outs:
        assert json.loads(out.read_text()) == [{"value": 42, "by": leader}] * 8
    assert Cache(DiskStore(store_dir)).get("cold") == {"value": 42, "by": leader}


def _open_stores(paths: list[str], barrier: Any, out: str) -> None:  # in a spawned process
    errors = []
    for path in paths:
        barrier.wait(timeout=60)
        try:
            DiskStore(path).close()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    Path(out).write_text(json.dumps(errors))


@pytest.mark.slow
def test_processes_creating_one_store_together_all_succeed(tmp_path: Path) -> None:
    """Workers starting at once all open the same new store directory (what the cross-process
    single-flight test above does, without creating the store first)."""
    paths = [str(tmp_path / f"store{i}") for i in range(6)]
    barrier = SPAWN.Barrier(4)
    outs = [tmp_path / f"errors{i}.json" for i in range(4)]
    procs = [SPAWN.Process(target=_open_stores, args=(paths, barrier, str(o))) for o in outs]
    with processes(*procs):
        for p in procs:
            p.join(timeout=90)
            assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    errors = [e for out in outs for e in json.loads(out.read_text())]
    assert not errors, (
        "STORE BUG (tiers/_stores/_disk/_layout.py open_layout): a process opening a new "
        "DiskStore directory while another process creates it is refused, because the "
        "creator's temporary marker file makes the directory look foreign: "
        f"{len(errors)} of {len(paths) * 4} opens failed, e.g. {errors[0]}"
    )


def _hold_flight(store_dir: str, started: str) -> None:  # runs in a spawned process
    cache = Cache(MemoryStore(), DiskStore(store_dir))

    def factory() -> str:
        Path(started).touch()
        time.sleep(30)
        return "child"

    cache.get_or_set("leased", factory, lease=1.0)


@pytest.mark.slow
def test_a_killed_lock_holder_loses_its_lease(tmp_path: Path) -> None:
    store_dir, started = tmp_path / "store", tmp_path / "started"
    child = SPAWN.Process(target=_hold_flight, args=(str(store_dir), str(started)))
    cache = Cache(MemoryStore(), DiskStore(store_dir))
    ran_here: list[float] = []
    result: list[Any] = []

    def factory() -> str:
        ran_here.append(time.monotonic())
        return "parent"

    waiter = threading.Thread(
        target=lambda: result.append(cache.get_or_set("leased", factory, lease=1.0))
    )
    with processes(child):
        deadline = time.monotonic() + 60
        while not started.exists():
            assert child.is_alive(), "the child died before computing"
            assert time.monotonic() < deadline, "the child never started its factory"
            time.sleep(0.02)
        waiter.start()
        time.sleep(2.0)  # twice the lease: a live holder keeps renewing it
        assert waiter.is_alive() and not ran_here, "the lease of a live holder expired"
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        killed = time.monotonic()
        child.join(timeout=10)
    waiter.join(timeout=20)
    assert not waiter.is_alive(), "get_or_set never took over the dead holder's lease"
    assert result == ["parent"]
    assert len(ran_here) == 1
    assert ran_here[0] - killed < 10
    start = time.monotonic()
    assert cache.get_or_set("leased", factory, lease=1.0) == "parent"
    assert time.monotonic() - start < 1 and len(ran_here) == 1
