"""The store protocol: a small core every store has, and optional capabilities.

A store maps ``str`` keys to `Entry` objects. Object stores (``holds_objects = True``) keep the
live value; byte stores keep an encoded ``header`` and ``value`` body produced by the cache's
codec. Expiry times are wall-clock epoch seconds; a store never returns an expired entry.

Core (every store): `Store`. Optional capabilities, each its methods and their ``_async``
twins: `SupportsInfo`, `SupportsTouch`, `SupportsExpire`, `SupportsTags`, `SupportsKeys`,
`SupportsPop`, `SupportsMany`, `SupportsLocks`, `SupportsFencedWrites`, `SupportsRevalidate`,
and `SupportsEpoch` (sync only). A cache checks each of its stores against them with
``isinstance`` once, when it opens (``tiers._cache._tier.Capabilities``), and emulates what a
store lacks where it can (each protocol says how).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import AsyncIterator, Iterator, Mapping
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


@runtime_checkable
class SupportsInfo(Protocol):
    """An entry's metadata without its value (what ``Cache.has`` and ``Cache.info`` need),
    cheap where values are kept apart. Every store of tiers but NullStore has it; for a store
    without it, the cache reads the whole entry with ``get``."""

    def info(self, key: str) -> Entry | None:
        """The entry without its value (cheap for stores that keep values apart)."""
        ...

    async def info_async(self, key: str) -> Entry | None: ...


@runtime_checkable
class SupportsTouch(Protocol):
    """A new expiry for an entry in place, without rewriting its value. Every store of tiers
    but NullStore has it; for a store without it, the cache reads the entry and writes it
    back with the new expiry."""

    def touch(self, key: str, expires_at: float | None) -> bool: ...
    async def touch_async(self, key: str, expires_at: float | None) -> bool: ...


@runtime_checkable
class SupportsExpire(Protocol):
    """Removal of the entries whose expiry has passed (they are never returned, but may still
    take room); how many went. Every store of tiers but NullStore has it; ``Cache.expire``
    skips a store without it, which reclaims expired entries on its own or never."""

    def expire(self) -> int: ...
    async def expire_async(self) -> int: ...


@runtime_checkable
class SupportsTags(Protocol):
    """Removal of every entry carrying a tag (under a key prefix); how many were live. Every
    store of tiers but NullStore has it; ``Cache.evict`` skips a store without it (its
    tagged entries stay), and a change announced by tag clears such a tier's copies instead."""

    def evict(self, tag: str, prefix: str = "") -> int: ...
    async def evict_async(self, tag: str, prefix: str = "") -> int: ...


@runtime_checkable
class SupportsKeys(Protocol):
    """Listing and counting the live keys (under a prefix, with a tag). Every store of tiers
    but NullStore has it, ``keys_async`` included (an async iterator; the blocking stores
    scan in a worker thread). A cache lists its keys (``keys``, ``len``, iteration) from its
    last tier that has them, and has none to list when no tier does."""

    def keys(self, prefix: str = "", tag: str | None = None) -> Iterator[str]:
        """Live keys starting with `prefix` (and carrying `tag`), in no set order."""
        ...

    def keys_async(self, prefix: str = "", tag: str | None = None) -> AsyncIterator[str]:
        """`keys`, for ``async for`` (an async generator: ``async def`` with ``yield``)."""
        ...

    def count(self, prefix: str = "") -> int: ...
    async def count_async(self, prefix: str = "") -> int: ...


@runtime_checkable
class SupportsPop(Protocol):
    """Remove-and-return in one step, so that of the processes popping one key of a shared
    store, one gets the value. MemoryStore, DiskStore, FolderStore and RedisStore have it;
    for a store without it, the cache reads the entry, then deletes it (two callers may both
    get the value)."""

    def pop(self, key: str) -> Entry | None:
        """Remove and return the entry atomically (one winner among concurrent callers)."""
        ...

    async def pop_async(self, key: str) -> Entry | None: ...


@runtime_checkable
class SupportsMany(Protocol):
    """Batches: many keys read or written in one round trip. RedisStore and ObjectStore have
    them; for a store without them, the cache goes key by key."""

    def get_many(self, keys: list[str]) -> list[Entry | None]: ...
    def set_many(self, items: list[tuple[str, Entry]]) -> None: ...
    async def get_many_async(self, keys: list[str]) -> list[Entry | None]: ...
    async def set_many_async(self, items: list[tuple[str, Entry]]) -> None: ...


@runtime_checkable
class SupportsLocks(Protocol):
    """Leased locks, so that one caller computes a missing value while the others wait
    (single-flight) across processes, and across machines for a shared store. DiskStore,
    FolderStore, RedisStore and ObjectStore have them (ObjectStore where its backend has
    conditional puts); a cache takes its locks in its last tier that has them, and without
    one its single-flight stops at the process."""

    def acquire_lock(self, name: str, token: str, lease: float) -> bool: ...
    def renew_lock(self, name: str, token: str, lease: float) -> bool: ...
    def release_lock(self, name: str, token: str) -> bool: ...
    async def acquire_lock_async(self, name: str, token: str, lease: float) -> bool: ...
    async def renew_lock_async(self, name: str, token: str, lease: float) -> bool: ...
    async def release_lock_async(self, name: str, token: str) -> bool: ...


@runtime_checkable
class SupportsFencedWrites(Protocol):
    """Writes fenced by a lock's lease: a computed value is stored only while its computer
    still holds the lock. Every store of tiers with `SupportsLocks` has them; a cache whose
    lock store lacks them checks the lease, then writes: a holder that lost its lease in
    between may overwrite its successor's value."""

    def set_if_held(self, key: str, entry: Entry, name: str, token: str) -> bool:
        """Store `entry` only while `token` holds lock `name` with a current lease (on the
        store's clock); False, writing nothing, otherwise. Fenced: a holder that lost its
        lease can never overwrite what a successor wrote after taking the lock (checked in
        the same step as the write, or the write is conditional on the entry being unchanged
        since before the check)."""
        ...

    async def set_if_held_async(self, key: str, entry: Entry, name: str, token: str) -> bool: ...


@runtime_checkable
class SupportsRevalidate(Protocol):
    """Conditional reads: is a copy of an entry, read with its `Entry.version`, still
    current? (answered without sending the value again). ObjectStore has them (an ETag and
    If-None-Match); a cache re-reads a due copy from a store without them in full."""

    def revalidate(self, key: str, version: str | None) -> Entry | Unchanged | None:
        """`UNCHANGED` if the key still holds the bytes `version` names (nothing transferred;
        the copy's expiry is the stored one, for the caller to check); else what ``get``
        returns (the new entry with its new version, or None). ``version=None``: ``get``."""
        ...

    async def revalidate_async(self, key: str, version: str | None) -> Entry | Unchanged | None: ...


@runtime_checkable
class SupportsEpoch(Protocol):
    """Conditional writes for the tiers of one host, so that a copy promoted from a slower
    tier never lands after a newer write or delete of its key (resurrecting a stale value).

    `epoch(key)` reads a counter that every write of that key bumps; ``set(key, entry,
    epoch=e)`` writes only if the counter still equals `e`, and otherwise removes the key.
    MemoryStore, DiskStore and FolderStore have them; the cache writes a copy into a store
    without them unconditionally.
    """

    def epoch(self, key: str) -> int: ...
    def set(self, key: str, entry: Entry, epoch: int | None = None) -> bool: ...


def implements(store: object, protocol: type) -> bool:
    """Whether `store` has every method of `protocol`, found as a call finds it
    (``callable(getattr(store, name, None))``). ``isinstance`` against a runtime protocol
    differs for stores that make their methods dynamically: from Python 3.12 it looks names
    up statically, missing what a proxy's ``__getattr__`` gives."""
    return all(callable(getattr(store, name, None)) for name in _methods(protocol))


@functools.cache
def _methods(protocol: type) -> tuple[str, ...]:
    return tuple(
        name
        for name, value in vars(protocol).items()
        if callable(value) and not (name.startswith("__") and name.endswith("__"))
    )
