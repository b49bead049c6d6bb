"""`Tier`: one store in a cache, with what the cache knows about it.

A tier's *capabilities* (`tier.can`) are found once, when the cache opens, by checking its store
against the store protocols (`tiers._stores._protocol.implements`: every method of the protocol
found as a call finds it, so proxy stores count too); the cache emulates what a store lacks
where it can (``info`` through ``get``, ``pop`` through get + delete, batches key by key). A
tier's *state* (bypassed, stale keys, breaker) and *counters* (hits, misses...) change as the
cache runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .._stores import MemoryStore
from .._stores import _protocol as protocol
from .._stores._protocol import implements
from ._breaker import Breaker


class _SupportsLinks(Protocol):
    """(MemoryStore.) Slots that memoize's fast path can index (see _memoize)."""

    def link(self, index: Any, alias: Any, key: str) -> bool: ...


class _ListsKeys(Protocol):
    """`SupportsKeys` without ``keys_async``, which a store may lack: the cache then scans in
    a worker thread."""

    def keys(self, prefix: str = "", tag: str | None = None) -> Any: ...
    def count(self, prefix: str = "") -> int: ...


class _SupportsGuards(Protocol):
    """(MemoryStore.) Copies that carry a guard or a revalidation time (see _coherence)."""

    def due_copy(self, key: str) -> Any: ...
    def renew(self, key: str, entry: Any, due: float) -> bool: ...


class _SupportsCopyIn(Protocol):
    """(MemoryStore.) A reader's copy that loses a race without removing the winner's."""

    def copy_in(self, key: str, entry: Any, epoch: int, guard: Any, due: Any) -> bool: ...
    async def copy_in_async(
        self, key: str, entry: Any, epoch: int, guard: Any, due: Any
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a tier's store can do beyond the core protocol, each True or False."""

    info: bool
    pop: bool
    update: bool  # read-modify-write in one atomic step (counters)
    touch: bool
    expire: bool
    evict: bool
    keys: bool
    batch: bool
    lock: bool
    fence: bool  # a lock holder's write checked against its lease (set_if_held)
    epoch: bool  # conditional writes by a per-key counter (in-process tiers)
    revalidate: bool  # tells an unchanged entry without sending it
    link: bool  # memoize's fast path can index its slots
    guard: bool  # its copies take guards / revalidation times
    copy_in: bool  # a reader's copy that loses a race leaves the winner's in place

    @classmethod
    def of(cls, store: object) -> Capabilities:
        p = protocol
        return cls(
            info=implements(store, p.SupportsInfo),
            pop=implements(store, p.SupportsPop),
            update=implements(store, p.SupportsUpdate),
            touch=implements(store, p.SupportsTouch),
            expire=implements(store, p.SupportsExpire),
            evict=implements(store, p.SupportsTags),
            keys=implements(store, _ListsKeys),
            batch=implements(store, p.SupportsMany),
            lock=implements(store, p.SupportsLocks),
            fence=implements(store, p.SupportsFencedWrites),
            epoch=implements(store, p.SupportsEpoch),
            revalidate=implements(store, p.SupportsRevalidate),
            link=implements(store, _SupportsLinks),
            guard=implements(store, _SupportsGuards),
            copy_in=implements(store, _SupportsCopyIn),
        )


class Tier:
    """One store in a cache: its capabilities (`can`), state and counters."""

    __slots__ = (
        "breaker",
        "can",
        "capped",
        "deletes",
        "direct",
        "errors",
        "foreign",
        "guardian",
        "hits",
        "holds_objects",
        "index",
        "kind",
        "lock_fallbacks",
        "lost_leases",
        "misses",
        "name",
        "owned",
        "private",
        "rejected",
        "revalidating",
        "sets",
        "stale",
        "store",
        "suspect",
        "watched",
        "witness",
    )  # fmt: skip

    def __init__(self, index: int, store: Any, owned: bool) -> None:
        self.index = index
        self.store = store
        self.owned = owned
        self.name = repr(store)
        self.holds_objects = bool(store.holds_objects)
        self.private = _private(store)
        self.can = Capabilities.of(store)
        # coherence (see _coherence): the slower tier this one's copies answer to, and what
        # kind of guardian this one is
        self.guardian: Tier | None = None
        self.kind: str | None = None
        self.suspect = False  # its guardian's invalidations may have been lost: bypassed
        self.witness: Tier | None = None  # the LOCAL tier whose generation a read here takes
        self.watched = False  # a LOCAL tier guarding faster ones: writes to it carry stamps
        self.revalidating = False  # its copies are revalidated with its (PULL) guardian
        self.direct = type(store) is MemoryStore  # a hit here is read first, in place
        self.capped = False  # its copies expire after max_age (an object store is below)
        self.breaker = Breaker(f"tier {index} ({self.name})")
        # keys whose write or delete this tier missed while failing: its copy may be stale, so
        # reads skip it there until a delete or a write succeeds (this process only)
        self.stale: set[str] = set()
        self.hits = self.misses = self.sets = self.deletes = self.errors = self.rejected = 0
        self.lock_fallbacks = self.lost_leases = self.foreign = 0


def _private(store: object) -> bool:
    """Whether only this user can have written what `store` holds (`private = True` on its
    class, as DiskStore declares, or a property of its class saying so for this store, as
    FolderStore's does): the cache then keeps values that need no pickle there unsigned
    (docs/decisions/0013-plain-values-on-private-stores.md). Read from the class, not through
    a proxy's ``__getattr__``: a wrapper is private only if it says so itself."""
    declared = getattr(type(store), "private", False)
    if isinstance(declared, property):
        declared = getattr(store, "private", False)
    return declared is True


@dataclass(frozen=True, slots=True)
class Fence:
    """A computation holding lock `name` of `tier` as `token`: its result is stored only
    while the lease is current (a holder that lost it never overwrites a successor)."""

    tier: Tier
    name: str
    token: str
    lease: float
    since: float  # time.monotonic() when the lock was taken
