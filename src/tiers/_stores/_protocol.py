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
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
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
    `accessed_at`: when the entry was last read, where the store records it (only `scan`
    fills it in); None when the store does not know.
    """

    value: Any
    header: bytes = b""
    created_at: float = 0.0
    expires_at: float | None = None
    tags: tuple[str, ...] = ()
    meta: Mapping[str, Any] | None = None
    size: int = 0
    version: str | None = field(default=None, kw_only=True)
    accessed_at: float | None = field(default=None, kw_only=True)

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


@dataclass(frozen=True, slots=True)
class Usage:
    """Counters a store keeps across processes and runs (`SupportsUsage`): the calls caches
    made on it, added when each cache closes or its process exits. `since`: epoch seconds of
    the first count after the store was created or its counters were last reset (None: never
    counted)."""

    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0
    since: float | None = None

    def __add__(self, other: Usage) -> Usage:
        starts = [t for t in (self.since, other.since) if t is not None]
        return Usage(
            hits=self.hits + other.hits, misses=self.misses + other.misses,
            sets=self.sets + other.sets, deletes=self.deletes + other.deletes,
            errors=self.errors + other.errors, since=min(starts) if starts else None,
        )  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.hits or self.misses or self.sets or self.deletes or self.errors)


DAMAGE_KINDS: Final = (
    "checksum", "truncated", "unreadable", "missing", "orphan", "temp", "index", "leftover",
)  # fmt: skip
"""What `SupportsVerify.verify` reports, each a `Damage.problem`:

- ``checksum``: an entry's bytes (record or value file) fail their checksum (a bit flip);
- ``truncated``: an entry's bytes are shorter than recorded, or a record is cut off;
- ``unreadable``: an entry, index page or metadata that cannot be parsed at all;
- ``missing``: an entry whose value file or object is gone;
- ``orphan``: a value file or object no entry refers to;
- ``temp``: a leftover temporary file of a write that never finished;
- ``index``: the store's index disagrees with its files (counts, totals, links);
- ``leftover``: not damage: bookkeeping the store cleans up lazily, such as a tag index
  member whose entry expired or was rewritten without the tag (Redis, object storage).
"""


@dataclass(frozen=True, slots=True)
class Damage:
    """One problem `SupportsVerify.verify` found.

    `problem`: one of `DAMAGE_KINDS`. `key`: the entry's key where known (None for orphans,
    temp files and index problems). `location`: where it is, relative to the store (a file
    name, an object name, a Redis key). `size`: bytes it takes. `detail`: one sentence.
    `fixed`: True when ``verify(fix=True)`` removed or repaired it.
    """

    problem: str
    key: str | None
    location: str
    size: int = 0
    detail: str = ""
    fixed: bool = False


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
class SupportsScan(Protocol):
    """Every entry present with its record head and no value, streamed: what ``tiers ls``,
    ``stats``, ``prune`` and ``copy`` walk. DiskStore, FolderStore, RedisStore and ObjectStore
    have it (reading record heads, never whole values); MemoryStore too. Memory stays bounded
    however many entries there are. A store whose scan gives `Entry.accessed_at` says so with
    a true ``records_access`` attribute (DiskStore; RedisStore unless its eviction policy is
    LFU); ``tiers prune --unused-for`` refuses a store without it rather than guess."""

    def scan(self, prefix: str = "", tag: str | None = None) -> Iterator[tuple[str, Entry]]:
        """``(key, entry)`` for every entry whose key starts with `prefix` (and carries
        `tag`), in no set order. Entries whose expiry has passed but which are still present
        are included (their `Entry.expires_at` says so). `Entry.value` is None; `header`,
        `created_at`, `expires_at`, `tags`, `meta` and `size` are filled in; `accessed_at`
        where the store records reads."""
        ...

    def scan_async(
        self, prefix: str = "", tag: str | None = None
    ) -> AsyncIterator[tuple[str, Entry]]: ...


@runtime_checkable
class SupportsUsage(Protocol):
    """Persistent usage counters (`Usage`): a cache adds its calls on the store to them when
    it closes or its process exits, so ``tiers stats`` can show hits and misses of every
    process that used the store. DiskStore, FolderStore and RedisStore have them; without
    it, a store's hits and misses are known only to each process while it runs."""

    def usage(self) -> Usage: ...
    def add_usage(self, usage: Usage) -> None: ...
    def reset_usage(self) -> None:
        """Zero the usage counters, and the store's own counters (evictions, expirations,
        rejected) where it keeps them."""
        ...

    async def usage_async(self) -> Usage: ...
    async def add_usage_async(self, usage: Usage) -> None: ...
    async def reset_usage_async(self) -> None: ...


@runtime_checkable
class SupportsVerify(Protocol):
    """A check of every stored byte (sync only): what ``tiers verify`` runs. DiskStore,
    FolderStore, RedisStore and ObjectStore have it."""

    def verify(self, fix: bool = False) -> Iterator[Damage]:
        """Read every entry and the store's own files; yield each `Damage` found. With
        `fix`, remove (or repair) each before yielding it, marked ``fixed=True``, so that a
        second ``verify()`` finds nothing. Never raises for damage; raises `StoreError` only
        when the store cannot be read at all."""
        ...


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
class SupportsUpdate(Protocol):
    """Read-modify-write of one key as one atomic step, for counters (`Cache.incr`). Every
    store of tiers has it: MemoryStore under its lock, DiskStore in one shard transaction,
    FolderStore under its lock, RedisStore by a compare-and-set script with retries,
    ObjectStore by conditional puts with retries (where its backend has them). A cache keeps
    counters only if its slowest tier has it."""

    def update(self, key: str, change: Callable[[Entry | None], Entry | None]) -> Entry | None:
        """Replace the live entry of `key` (None if absent or expired) by `change(entry)`,
        with no other write of the key landing in between, among every client of the store
        (threads, processes, and machines for a shared store). `change` returning None writes
        nothing. Returns what `change` returned for the write that landed.

        `change` may be called more than once (an optimistic store calls it again after a
        conflict), so it must depend on its argument only; an exception it raises propagates
        and nothing is written. The write is a normal one for coherence: it bumps what `set`
        bumps and announces what `set` announces."""
        ...

    async def update_async(
        self, key: str, change: Callable[[Entry | None], Entry | None]
    ) -> Entry | None: ...


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
