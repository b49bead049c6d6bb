"""Child processes of tests/test_object_distributed.py, run as
``python -m tests._object_distributed_workers '<json>'`` — under ``faketime`` to skew their
wall clock. Prints one JSON line (what it saw); logging goes to stderr."""

from __future__ import annotations

import json
import logging
import os
import select
import sys
import time
from typing import Any

from tiers import Cache
from tiers._stores import Entry
from tiers._stores._object import ObjectStore


def _sleep(seconds: float) -> None:
    """`time.sleep` without clock_nanosleep, which fails (EINVAL) under libfaketime."""
    select.select([], [], [], max(0.0, seconds))


if "FAKETIME" in os.environ:
    time.sleep = _sleep  # type: ignore[assignment]


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _offset(store: ObjectStore) -> float | None:
    server = getattr(store, "server_time", None)
    return None if server is None else float(server.offset)


def run(job: dict[str, Any]) -> dict[str, Any]:
    store = ObjectStore(job["url"], **job["options"])
    try:
        if job["do"] == "set":
            ttl = float(job["ttl"])
            store.set(job["key"], Entry(b"v", b"h", time.time(), time.time() + ttl))
            return {"offset": _offset(store), "local": time.time()}
        if job["do"] == "get_or_set":
            record = job["record"]

            def compute() -> str:
                _append(record, f"start {os.getpid()}")
                time.sleep(float(job["work"]))
                return "computed"

            with Cache(store, serializer="json") as cache:
                _append(record, f"ready {os.getpid()}")
                value = cache.get_or_set(job["key"], compute, ttl=600, lease=float(job["lease"]))
            return {"value": value, "offset": _offset(store)}
        raise ValueError(job["do"])
    finally:
        store.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)
