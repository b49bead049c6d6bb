"""Code run in child processes by the FolderStore tests (values: see `tests._disk_workers`)."""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from tests._disk_workers import SIZES, check_value, entry, make_value
from tiers import Cache, FolderStore, MemoryStore


def writer_forever(path: str, keys: int, ready_fd: int) -> None:
    """Write and delete random keys until killed (signals readiness on `ready_fd`)."""
    store = FolderStore(path)
    rng = random.Random(os.getpid())
    os.write(ready_fd, b"1")
    seq = 0
    while True:
        seq += 1
        key = f"k{rng.randrange(keys)}"
        if rng.random() < 0.1:
            store.delete(key)
        else:
            store.set(key, entry(make_value(key, seq, rng.choice(SIZES))))


def die_inside_commit(path: str, key: str, body: bytes) -> None:
    """Overwrite `key`, then be killed -9 right after the commit, before the old data file
    is removed: the folder keeps a file a later opener must clean up."""
    import signal

    from tiers._stores._folder import _entry_dir

    def killed(_fd: int, _data: str) -> int:
        os.kill(os.getpid(), signal.SIGKILL)
        return 0

    store = FolderStore(path)  # opened first: opening may clean folders itself
    _entry_dir.remove_others = killed  # type: ignore[assignment]
    store.set(key, entry(body))


def hammer(path: str, writer: int, threads: int, ops: int, keys: int, errors_path: str) -> None:
    """Threads mixing set/get/delete on shared keys; every problem goes to `errors_path`."""
    store = FolderStore(path)
    problems: list[str] = []

    def work(thread: int) -> None:
        rng = random.Random(writer * 1000 + thread)
        for seq in range(ops):
            key = f"k{rng.randrange(keys)}"
            try:
                roll = rng.random()
                if roll < 0.45:
                    size = rng.choice((50, 900, 5_000, 40_000, 120_000))
                    store.set(key, entry(make_value(key, writer * 10**6 + seq, size)))
                elif roll < 0.9:
                    got = store.get(key)
                    if got is not None:
                        check_value(key, got.value)
                        assert got.header == b"H", "foreign header"
                else:
                    store.delete(key)
            except Exception:
                problems.append(traceback.format_exc())

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    store.close()
    Path(errors_path).write_text("\n".join(problems) or f"ok {threads * ops}")


def single_flight(path: str, counter: str, out: str, barrier: Any, threads: int) -> None:
    """Threads of one process calling get_or_set on a cold key (the factory logs each run)."""
    cache = Cache(MemoryStore(), FolderStore(path))

    def factory() -> dict[str, Any]:
        fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        time.sleep(0.3)
        return {"by": os.getpid()}

    results: list[Any] = [None] * threads
    local = threading.Barrier(threads)

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


if __name__ == "__main__":
    if sys.argv[1] == "hammer":
        hammer(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
               int(sys.argv[6]), sys.argv[7])  # fmt: skip
