"""Code run in child processes by tests/test_memoize_processes.py (importable by reference, so
it works with the ``spawn`` start method).

Every computation appends one line to a record file opened with ``O_APPEND`` (atomic for
small writes, across processes), so the parent can count computations and see who ran them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tiers
from tiers import Cache, DiskStore, MemoryStore

STORE_KINDS = ("disk", "folder")
APIS = ("get_or_set", "memoize")


def open_store(kind: str, path: str) -> Any:
    """The shared store of `kind` at `path`."""
    if kind == "disk":
        return DiskStore(path)
    folder_store = getattr(tiers, "FolderStore", None)
    if folder_store is None:  # the parent skips this kind; a child should never get here
        raise RuntimeError("tiers.FolderStore does not exist yet")
    return folder_store(path)


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def caller(
    cache: Cache, api: str, body: Callable[[int], Any], *, lease: float | None = None
) -> Callable[[], Any]:
    """A no-argument call of one shared cold key through `api`: ``get_or_set`` of the key
    "shared", or a memoized function named "shared" called with 21."""
    if api == "get_or_set":
        return lambda: cache.get_or_set("shared", lambda: body(21), ttl=600, lease=lease)
    memoized = cache.memoize(name="shared", ttl=600, lease=lease)(body)
    return lambda: memoized(21)


def crowd(
    kind: str, api: str, store: str, record: str, out: str, barrier: Any, threads: int
) -> None:
    """One of several processes, each with `threads` threads, calling one cold key at once."""
    cache = Cache(MemoryStore(), open_store(kind, store))

    def compute(x: int) -> dict[str, Any]:
        append_line(record, f"{os.getpid()} {threading.get_ident()}")
        time.sleep(0.3)
        return {"value": x * 2, "by": os.getpid()}

    call = caller(cache, api, compute)
    local = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def run(i: int) -> None:
        local.wait(timeout=60)
        try:
            results[i] = call()
        except BaseException as exc:  # reported to the parent, which fails the test
            results[i] = f"{type(exc).__name__}: {exc}"

    barrier.wait(timeout=60)
    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    Path(out).write_text(json.dumps(results))


def hold(kind: str, api: str, store: str, record: str, started: str) -> None:
    """Take the key's lease (1 s, renewed while alive) and compute for far too long: the
    parent kills this process with SIGKILL in the middle."""
    cache = Cache(MemoryStore(), open_store(kind, store))

    def compute(x: int) -> str:
        append_line(record, f"{os.getpid()} holder {time.time():.3f}")
        Path(started).touch()
        time.sleep(120)
        return "from the holder"

    caller(cache, api, compute, lease=1.0)()


def take_over(
    kind: str, api: str, store: str, record: str, started: str, waiting: str, out: str
) -> None:
    """Once the holder computes, call the same key; write what came back and when."""
    deadline = time.monotonic() + 60
    while not Path(started).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the holder never started computing")
        time.sleep(0.01)
    cache = Cache(MemoryStore(), open_store(kind, store))

    def compute(x: int) -> dict[str, Any]:
        append_line(record, f"{os.getpid()} taker {time.time():.3f}")
        return {"value": x * 2, "by": os.getpid()}

    call = caller(cache, api, compute, lease=1.0)
    Path(waiting).touch()
    value = call()
    Path(out).write_text(json.dumps({"value": value, "returned_at": time.time()}))
