"""Code run in spawned child processes by tests/test_object_store.py (importable by
reference, so it works with the ``spawn`` start method)."""

from __future__ import annotations

import os
import time
from typing import Any

from tiers import Cache
from tiers._stores._object import ObjectStore


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def get_or_set_shared(url: str, options: dict[str, Any], record: str, barrier: Any) -> None:
    """Call ``get_or_set`` of one cold key through an S3 tier; a computation takes 0.3 s and
    appends a line to `record`; every caller must get its value."""

    def compute() -> int:
        _append(record, f"computed by {os.getpid()}")
        time.sleep(0.3)
        return 42

    with Cache(ObjectStore(url, **options), serializer="json") as cache:
        barrier.wait(60)
        assert cache.get_or_set("shared", compute, ttl=600) == 42
