"""Task functions run on Dask workers by tests/test_dask.py (importable by the workers)."""

from __future__ import annotations

import os
import time

import tiers.dask

COMPUTE_SECONDS = 0.3


def record(log: str, key: int) -> None:
    """Append one line per computation (O_APPEND: whole lines, whatever the process)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{key} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def expensive(key: int, log: str) -> int:
    time.sleep(COMPUTE_SECONDS)
    record(log, key)
    return key * key


def with_get_or_set(i: int, log: str) -> int:
    key = i % 10
    return int(tiers.dask.worker_cache().get_or_set(("square", key), lambda: expensive(key, log)))


@tiers.dask.memoize(name="tests.square")
def memoized_square(key: int, log: str) -> int:
    return expensive(key, log)


def with_memoize(i: int, log: str) -> int:
    return int(memoized_square(i % 10, log))
