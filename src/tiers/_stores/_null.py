"""NullStore: a tier that stores nothing, to switch caching off without changing code."""

from __future__ import annotations

from typing import Any, ClassVar

from .._clock import SYSTEM_CLOCK, Clock
from ._protocol import Entry, StoreCounters
from ._twins import inline


class NullStore:
    """Accepts every write and forgets it: every read is a miss, every delete finds nothing."""

    holds_objects: ClassVar[bool] = True

    def __init__(self) -> None:
        self.clock: Clock = SYSTEM_CLOCK

    def __repr__(self) -> str:
        return "NullStore()"

    def __reduce__(self) -> tuple[Any, ...]:
        return (NullStore, ())

    def get(self, key: str) -> Entry | None:
        return None

    def set(self, key: str, entry: Entry) -> bool:
        return True

    def delete(self, key: str) -> bool:
        return False

    def clear(self, prefix: str = "") -> int:
        return 0

    def stats(self) -> StoreCounters:
        return StoreCounters()

    def close(self) -> None:
        """Nothing to release."""

    get_async = inline(get)
    set_async = inline(set)
    delete_async = inline(delete)
    clear_async = inline(clear)
    stats_async = inline(stats)
    close_async = inline(close)
