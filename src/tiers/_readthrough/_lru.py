"""A byte-bounded LRU of immutable values (callers hold the owner's lock)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """Least-recently-used entries within `max_size` bytes; values are never mutated.

    Eviction only drops references: a reader holding an evicted value keeps valid data.
    Not thread-safe by itself: the read-through store calls it under its lock.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.size = 0
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        """The value (now most recently used), or None."""
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: Hashable, value: V, nbytes: int) -> bool:
        """Admit a value unless it alone exceeds `max_size`; evict the oldest to make room."""
        if nbytes > self.max_size:
            return False
        self.pop(key)
        while self._entries and self.size + nbytes > self.max_size:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.size -= dropped
        self._entries[key] = (value, nbytes)
        self.size += nbytes
        return True

    def pop(self, key: Hashable) -> None:
        """Forget one entry if present."""
        found = self._entries.pop(key, None)
        if found is not None:
            self.size -= found[1]

    def ordered(self) -> list[Hashable]:
        """Keys, oldest first."""
        return list(self._entries)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self.size = 0
