"""Striped locks that queue a process's own updates of one key (`SupportsUpdate`).

RedisStore and ObjectStore update optimistically: read, compute, write only if nobody wrote
in between, else again. Threads of one process updating one key would mostly beat each
other (each holds the GIL between its read and its write), so they take turns here first
and race only other processes. One lock per stripe of keys, for threads; one per stripe
and event loop, for coroutines.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

STRIPES = 64


class Stripes:
    """`STRIPES` locks, a key always getting the same one."""

    __slots__ = ("_guard", "_loops", "_threads")

    def __init__(self) -> None:
        self._threads = tuple(threading.Lock() for _ in range(STRIPES))
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[asyncio.Lock, ...]]
        self._loops = weakref.WeakKeyDictionary()
        self._guard = threading.Lock()

    def of(self, key: str) -> threading.Lock:
        """The lock threads take to update `key`."""
        return self._threads[hash(key) % STRIPES]

    def of_async(self, key: str) -> asyncio.Lock:
        """The lock coroutines of the running loop take to update `key`."""
        loop = asyncio.get_running_loop()
        locks = self._loops.get(loop)
        if locks is None:
            with self._guard:
                locks = self._loops.setdefault(loop, tuple(asyncio.Lock() for _ in range(STRIPES)))
        return locks[hash(key) % STRIPES]
