"""Child processes of tests/test_redis_distributed.py, run as
``[faketime -f +60s] python -m tests._redis_distributed_workers <command> <json>``: each
prints one JSON line on stdout (its result) and logs WARNINGs to stderr."""

from __future__ import annotations

import json
import logging
import os
import select
import sys
import time
from typing import Any


def _sleep(seconds: float) -> None:
    select.select([], [], [], max(0.0, seconds))


# libfaketime with FAKETIME_DONT_FAKE_MONOTONIC=1 makes time.sleep fail (EINVAL: Python
# sleeps with clock_nanosleep on CLOCK_MONOTONIC, TIMER_ABSTIME); select's timeout works.
# Replaced before tiers is imported, so its ``from time import ...`` get this one too.
time.sleep = _sleep

from tiers import Cache  # noqa: E402
from tiers._stores._redis import RedisStore  # noqa: E402


def set_value(url: str, key: str, value: str, ttl: float) -> dict[str, Any]:
    """``Cache(url).set(key, value, ttl=ttl)``; when it returned (monotonic, which faketime
    leaves alone) and the offset the store measured."""
    store = RedisStore(url)
    cache = Cache(store)
    try:
        cache.set(key, value, ttl=ttl)
        return {"done": time.monotonic(), "offset": _offset(store)}
    finally:
        cache.close()
        store.close()


def compute(
    url: str, key: str, lease: float, work: float, log: str, start: float
) -> dict[str, Any]:
    """At monotonic time `start`, ``Cache(url).get_or_set(key, factory, lease=lease)``; the
    factory appends a line to `log` and works `work` seconds."""

    def factory() -> str:
        with open(log, "a") as file:
            file.write(f"{os.getpid()}\n")
        time.sleep(work)
        return f"computed by {os.getpid()}"

    store = RedisStore(url, timeout=2)
    cache = Cache(store)
    try:
        time.sleep(max(0.0, start - time.monotonic()))
        value = cache.get_or_set(key, factory, lease=lease)
        return {"value": value, "offset": _offset(store)}
    finally:
        cache.close()
        store.close()


def _offset(store: RedisStore) -> float | None:
    """The offset the store measured (None from a store that measures none)."""
    measured = getattr(store, "_time", None)
    return None if measured is None else float(measured.offset)


COMMANDS = {"set": set_value, "compute": compute}


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    command, arguments = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(COMMANDS[command](**arguments)), flush=True)


if __name__ == "__main__":
    main()
