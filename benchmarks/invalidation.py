"""Pushed invalidation over Redis: what announcing a write costs the writer, and how soon
another process hears of it, on a ``redis-server`` of the run's own on loopback.

- ``set_cost``: `RedisStore.set` of 1 KiB (one script: SET, then PUBLISH) and 64 KiB (SET
  and PUBLISH in one transaction) against the same store with ``_publish = False`` (a bare
  SET): with nobody listening, then (1 KiB) while another process watches the channel;
- ``latency``: from the start of a `set` in another process to the `watch` callback here,
  p50 and p99 over 2,000 writes, paced (one write per ms) and in a burst. Both processes
  read ``time.perf_counter`` (CLOCK_MONOTONIC on Linux: one clock for the whole machine).

Standalone: ``python -m benchmarks.invalidation [--quick]`` prints the table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from ._harness import KIB, Row, Settings, Target, measure, progress, slowdown
from .remote import redis_server

TARGET_P99 = 0.050
"""The goal: another process drops its copy within 50 ms (p99) on loopback."""
PACE = 0.001


def _listen(url: str, stop: Any) -> None:
    """(Another process.) Watch the channel, doing nothing with what comes, until `stop`."""
    from tiers._stores._redis import RedisStore

    store = RedisStore(url, prefix="bench:")
    store.watch(lambda event: None)
    stop.wait(600)
    store.close()


def set_cost(settings: Settings) -> list[Row]:
    """`RedisStore.set` announcing the write vs not (``_publish = False``): with nobody
    listening (the writer's own cost), then with one watcher in another process (which wakes
    for every message: on a machine with few cores, it competes with the writer)."""
    from tiers._stores import Entry
    from tiers._stores._redis import RedisStore

    count = settings.count(10_000, 1_000)
    keys = [f"key-{i % 1000}" for i in range(count)]
    rows = []
    context = multiprocessing.get_context("spawn")
    with redis_server() as url:
        announcing = RedisStore(url, prefix="bench:")
        silent = RedisStore(url, prefix="bench:")
        silent._publish = False
        stop = context.Event()
        listener = context.Process(target=_listen, args=(url, stop), daemon=True)
        try:
            for size, watched in ((KIB, False), (64 * KIB, False), (KIB, True)):
                if watched:
                    listener.start()
                    time.sleep(1.0)  # subscribed
                entry = Entry(os.urandom(size))

                def loop(store: RedisStore, entry: Entry = entry) -> Callable[[], None]:
                    def run() -> None:
                        for key in keys:
                            store.set(key, entry)

                    return run

                cases = {"announcing": loop(announcing), "silent": loop(silent)}
                ops = measure(cases, count, settings)
                mine, bare, spread = ops.pair("announcing", "silent")
                how = "1 watcher in another process" if watched else "nobody listening"
                path = "one script" if size <= 16 * KIB else "SET + PUBLISH in MULTI"
                rows.append(slowdown(
                    f"Redis set {size // KIB} KiB announced ({how})",
                    ("tiers RedisStore.set", mine), ("same store, _publish=False", bare),
                    spread=spread, note=f"{path}",
                ))  # fmt: skip
        finally:
            announcing.close()
            silent.close()
            stop.set()
            if listener.is_alive():
                listener.join(10)
    return rows


def _write(url: str, count: int, pace: float, conn: Any) -> None:
    """(Another process.) Set `count` keys, one per `pace` seconds; send when each began."""
    from tiers._stores import Entry
    from tiers._stores._redis import RedisStore

    store = RedisStore(url, prefix="lat:")
    store._publish = False
    store.set("warm-up", Entry(b"v"))  # connected before the first timed write
    store._publish = True
    entry = Entry(os.urandom(KIB))
    began = {}
    for i in range(count):
        key = f"k{i}"
        began[key] = time.perf_counter()
        store.set(key, entry)
        if pace:
            until = began[key] + pace
            while time.perf_counter() < until:
                pass
    store.close()
    conn.send(began)


def _latencies(url: str, count: int, pace: float) -> list[float]:
    """Seconds from each write's start (another process) to its callback here, sorted."""
    from tiers._stores._redis import RedisStore

    store = RedisStore(url, prefix="lat:")
    heard: dict[str, float] = {}
    done = threading.Event()

    def on_change(event: Any) -> None:
        now = time.perf_counter()
        if event.kind == "keys":
            for key in event.keys:
                heard[key] = now
            if len(heard) >= count:
                done.set()

    watch = store.watch(on_change)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    try:
        while not watch.connected:
            time.sleep(0.01)
        writer = context.Process(target=_write, args=(url, count, pace, theirs), daemon=True)
        writer.start()
        began = ours.recv()
        writer.join(30)
        if not done.wait(30):
            raise AssertionError(f"heard {len(heard)} of {count} writes")
    finally:
        store.close()
    return sorted(heard[key] - began[key] for key in began)


def latency(settings: Settings) -> list[Row]:
    """p50/p99 from a write in another process to the callback here, paced and in a burst."""
    count = settings.count(2_000, 200)
    rows = []
    with redis_server() as url:
        for pace, how in ((PACE, "one write per ms"), (0.0, "burst")):
            progress(f"invalidation latency, {count} writes, {how}")
            found = _latencies(url, count, pace)
            p50, p99 = statistics.median(found), found[int(len(found) * 0.99)]
            note = (f"{how}: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
                    f"max {found[-1] * 1000:.2f} ms over {count} writes")  # fmt: skip
            what = f"Redis invalidation, other process ({how})"
            target = Target("<=", 1.0) if pace else None
            subject, goal = ("p99 write -> callback", 1 / p99), ("50 ms p99 goal", 1 / TARGET_P99)
            rows.append(slowdown(what, subject, goal, target, note=note))
    return rows


def main() -> None:
    from ._report import text_table

    parser = argparse.ArgumentParser(prog="python -m benchmarks.invalidation")
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    settings = Settings(quick=parser.parse_args().quick)
    print(text_table(set_cost(settings) + latency(settings)))


if __name__ == "__main__":
    main()
