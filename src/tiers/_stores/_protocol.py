"""The store protocol: a small core every store has, and optional capabilities.

A store maps ``str`` keys to `Entry` objects. Object stores (``holds_objects = True``) keep the
live value; byte stores keep an encoded ``header`` and ``value`` body produced by the cache's
codec. Expiry times are wall-clock epoch seconds; a store never returns an expired entry.

Core (every store): `Store`. Optional capabilities, detected with ``hasattr`` once, each a
sync method and its ``_async`` twin: `SupportsInfo`, `SupportsTouch`, `SupportsExpire`,
`SupportsTags`, `SupportsKeys`, `SupportsPop`, `SupportsMany`, `SupportsLocks`,
`SupportsRevalidate`. The cache
emulates what a store lacks where it can (``info`` through ``get``, ``pop`` through get +
delete, batches key by key).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

from .._clock import Clock


@dataclass(slots=True)
class Entry:
    """One entry as a store holds it.

    `value`: the live object (object stores) or the encoded body (byte stores).
    `header`: the codec header (byte stores), ``b""`` for live objects.
    `size`: bytes the entry accounts for in its store (an estimate for live objects).
    `version`: the store's token for these stored bytes where it has one (an object store's
    ETag), used to revalidate copies without transferring the value; None otherwise.
    """

    value: Any
    header: bytes = b""
    created_at: float = 0.0
    expires_at: float | None = None
    tags: tuple[str, ...] = ()
    meta: Mapping[str, Any] | None = None
    size: int = 0
    version: str | None = field(default=None, kw_only=True)

    def without_value(self) -> Entry:
        """A copy carrying metadata only (what ``info`` returns)."""
        return replace(self, value=None)


class Unchanged(enum.Enum):
    """The type of `UNCHANGED` (one member, so ``is UNCHANGED`` narrows types)."""

    UNCHANGED = "UNCHANGED"

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = Unchanged.UNCHANGED
"""What `SupportsRevalidate.revalidate` answers when the stored bytes are still the version
the caller holds: its copy (expiry included) is current, and no value was transferred."""


@dataclass(frozen=True, slots=True)
class StoreCounters:
    """What a store knows about itself: removals it made and its current contents."""

    evictions: int = 0
    expirations: int = 0
    rejected: int = 0
    items: int = 0
    bytes: int = 0


@runtime_checkable
class Store(Protocol):
    """The core every store implements."""

    holds_objects: ClassVar[bool]
    clock: Clock

    def get(self, key: str) -> Entry | None: ...
    def set(self, key: str, entry: Entry) -> bool:
        """Store the entry; False if the store refused it (too large), counted as rejected."""
        ...

    def delete(self, key: str) -> bool: ...
    def clear(self, prefix: str = "") -> int: ...
    def stats(self) -> StoreCounters: ...
    def close(self) -> None: ...
    async def get_async(self, key: str) -> Entry | None: ...
    async def set_async(self, key: str, entry: Entry) -> bool: ...
    async def delete_async(self, key: str) -> bool: ...
    async def clear_async(self, prefix: str = "") -> int: ...
    async def stats_async(self) -> StoreCounters: ...
    async def close_async(self) -> None: ...


class SupportsInfo(Protocol):
    def info(self, key: str) -> Entry | None:
        """The entry without its value (cheap for stores that keep values apart)."""
        ...

    async def info_async(self, key: str) -> Entry | None: ...


class SupportsTouch(Protocol):
    def touch(self, key: str, expires_at: float | None) -> bool: ...
    async def touch_async(self, key: str, expires_at: float | None) -> bool: ...


class SupportsExpire(Protocol):
    def expire(self) -> int: ...
    async def expire_async(self) -> int: ...


class SupportsTags(Protocol):
    def evict(self, tag: str, prefix: str = "") -> int: ...
    async def evict_async(self, tag: str, prefix: str = "") -> int: ...


class SupportsKeys(Protocol):
    def keys(self, prefix: str = "", tag: str | None = None) -> Iterator[str]:
        """Live keys starting with `prefix` (and carrying `tag`), in no set order."""
        ...

    def count(self, prefix: str = "") -> int: ...
    async def count_async(self, prefix: str = "") -> int: ...


class SupportsPop(Protocol):
    def pop(self, key: str) -> Entry | None:
        """Remove and return the entry atomically (one winner among concurrent callers)."""
        ...

    async def pop_async(self, key: str) -> Entry | None: ...


class SupportsMany(Protocol):
    """Batches (one round trip for many keys, for remote stores)."""

    def get_many(self, keys: list[str]) -> list[Entry | None]: ...
    def set_many(self, items: list[tuple[str, Entry]]) -> None: ...
    async def get_many_async(self, keys: list[str]) -> list[Entry | None]: ...
    async def set_many_async(self, items: list[tuple[str, Entry]]) -> None: ...


class SupportsLocks(Protocol):
    """Leased locks for single-flight across processes (and machines for shared stores)."""

    def acquire_lock(self, name: str, token: str, lease: float) -> bool: ...
    def renew_lock(self, name: str, token: str, lease: float) -> bool: ...
    def release_lock(self, name: str, token: str) -> bool: ...
    async def acquire_lock_async(self, name: str, token: str, lease: float) -> bool: ...
    async def renew_lock_async(self, name: str, token: str, lease: float) -> bool: ...
    async def release_lock_async(self, name: str, token: str) -> bool: ...
    def set_if_held(self, key: str, entry: Entry, name: str, token: str) -> bool:
        """Store `entry` only while `token` holds lock `name` with a current lease (on the
        store's clock); False, writing nothing, otherwise. Fenced: a holder that lost its
        lease can never overwrite what a successor wrote after taking the lock (checked in
        the same step as the write, or the write is conditional on the entry being unchanged
        since before the check)."""
        ...

    async def set_if_held_async(self, key: str, entry: Entry, name: str, token: str) -> bool: ...


class SupportsRevalidate(Protocol):
    """Conditional reads: is a copy of an entry, read with `Entry.version`, still current?"""

    def revalidate(self, key: str, version: str | None) -> Entry | Unchanged | None:
        """`UNCHANGED` if the key still holds the bytes `version` names (nothing transferred;
        the copy's expiry is the stored one, for the caller to check); else what ``get``
        returns (the new entry with its new version, or None). ``version=None``: ``get``."""
        ...

    async def revalidate_async(self, key: str, version: str | None) -> Entry | Unchanged | None: ...


class SupportsEpoch(Protocol):
    """Conditional writes for in-process tiers, so promotions never resurrect stale values.

    `epoch(key)` reads a counter that every write of that key bumps; ``set(key, entry,
    epoch=e)`` writes only if the counter still equals `e`, and otherwise removes the key.
    """

    def epoch(self, key: str) -> int: ...
    def set(self, key: str, entry: Entry, epoch: int | None = None) -> bool: ...
