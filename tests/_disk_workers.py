"""Code run in child processes by the DiskStore guarantee tests.

Values are self-describing: ``make_value(key, seq, size)`` starts with a header naming the key,
the write's sequence number and the size, and the rest is derived from them, so a reader can
tell a right value from a torn, stale-but-whole, or foreign one.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import threading
import time
import traceback
from pathlib import Path

from tiers import DiskStore
from tiers._stores import Entry

HEADER_SIZE = 64
SIZES = (10, 100, 1_000, 20_000, 40_000, 300_000, 2_000_000)


def make_value(key: str, seq: int, size: int) -> bytes:
    head = f"{key}|{seq}|{size}|".encode().ljust(HEADER_SIZE, b".")
    block = hashlib.sha256(head).digest() * 2  # 64 bytes, unique per write
    body = (block * (size // 64 + 1))[: max(0, size - HEADER_SIZE)]
    return (head + body)[: max(size, HEADER_SIZE)]


def check_value(key: str, value: bytes) -> tuple[int, int]:
    """(seq, size) of a well-formed value written for `key`; AssertionError otherwise."""
    head = value[:HEADER_SIZE].rstrip(b".").decode()
    owner, seq, size, _ = head.split("|")
    assert owner == key, f"value of {owner!r} returned for {key!r}"
    assert value == make_value(key, int(seq), int(size)), f"garbled value for {key!r}"
    return int(seq), int(size)


def entry(value: bytes) -> Entry:
    return Entry(value, b"H", time.time(), None, ("t",), {"n": len(value)}, len(value))


def writer_forever(path: str, keys: int, ready_fd: int) -> None:
    """Write and delete random keys until killed (signals readiness on `ready_fd`)."""
    store = DiskStore(path)
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


def hammer(path: str, writer: int, threads: int, ops: int, keys: int, errors_path: str) -> None:
    """Threads mixing set/get/delete on shared keys; every problem goes to `errors_path`."""
    store = DiskStore(path)
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


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "hammer":
        hammer(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
               int(sys.argv[6]), sys.argv[7])  # fmt: skip
