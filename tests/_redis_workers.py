"""Code run in spawned processes by the RedisStore tests (each uses its own connections)."""

from __future__ import annotations

import os
import time
from typing import Any

from tiers import Cache, MemoryStore
from tiers._stores._redis import RedisStore


def single_flight(url: str, prefix: str, log: str, start_at: float) -> Any:
    """get_or_set one key through a Redis tier; the factory logs each computation."""

    def compute() -> str:
        with open(log, "a") as file:
            file.write(f"{os.getpid()}\n")
        time.sleep(0.3)
        return "computed"

    store = RedisStore(url, prefix=prefix)
    cache = Cache(MemoryStore(), store, secret="s" * 32)
    try:
        time.sleep(max(0.0, start_at - time.time()))  # start together
        return cache.get_or_set("shared", compute)
    finally:
        cache.close()
        store.close()


def read(url: str, prefix: str, key: str) -> Any:
    """The value at `key` for a cache signing with this process's TIERS_SECRET."""
    store = RedisStore(url, prefix=prefix)
    cache = Cache(store)
    try:
        return cache.get(key, "<miss>")
    finally:
        cache.close()
        store.close()
