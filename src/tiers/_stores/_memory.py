"""MemoryStore: an in-process LRU of live objects, bounded by bytes and/or items."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import replace
from typing import Any, ClassVar

from .. import _rules
from .._clock import SYSTEM_CLOCK, Clock
from .._units import parse_count, parse_size
from ._generations import Generations
from ._protocol import Entry, StoreCounters
from ._twins import inline, inline_iter

_STRIPES = 256
NEVER = math.inf  # the deadline of a slot that never expires (this object: `is NEVER` is cheap)


Guard = tuple[Generations, int, int]
"""(table, slot, stamp): a copy is served only while ``table.view[slot] == stamp``."""


class Slot:
    """What the store keeps per key. Read without the lock by the cache's fast paths (see
    `view`, `link`), hence the flat shape: `value`, `deadline` (when to stop serving it:
    its expiry, or earlier when it must be revalidated) and `gens`/`gslot`/`gstamp` (its
    guard) say whether a found slot may be served. Its `Entry` is made when first asked for:
    a bare value written by `putter` needs none until someone reads it through `get`."""

    __slots__ = (
        "_entry", "created_at", "deadline", "expires_at", "expiry", "gens", "gslot", "gstamp",
        "size", "tags", "touched", "value",
    )  # fmt: skip
    gslot: int  # (set with `gens`)
    gstamp: int

    def __init__(
        self, value: Any, created_at: float, expires_at: float | None, size: int,
        expiry: float | None,
    ) -> None:  # fmt: skip
        """A bare value's slot (see `putter`); `of` makes one for an entry."""
        self._entry: Entry | None = None
        self.value = value
        self.created_at = created_at
        self.expires_at = expires_at
        self.size = size
        self.tags: tuple[str, ...] = ()
        self.expiry = expiry  # monotonic, or None
        self.deadline = NEVER if expiry is None else expiry  # (a float: one comparison)
        self.gens: Generations | None = None  # (gslot and gstamp are set with it)
        self.touched = False  # hit without the lock since it was last considered for eviction

    @classmethod
    def of(
        cls, entry: Entry, expiry: float | None, guard: Guard | None = None,
        due: float | None = None,
    ) -> Slot:  # fmt: skip
        """The slot of `entry`, expiring at monotonic `expiry`; `guard`: served only while its
        table holds its stamp; `due`: revalidated from then on (if before `expiry`)."""
        slot = cls(entry.value, entry.created_at, entry.expires_at, entry.size, expiry)
        slot._entry = entry
        slot.tags = entry.tags
        if due is not None and (expiry is None or due < expiry):
            slot.deadline = due
        if guard is not None:
            slot.gens, slot.gslot, slot.gstamp = guard
        return slot

    @property
    def entry(self) -> Entry:
        entry = self._entry
        if entry is None:
            entry = self._entry = Entry(
                self.value, b"", self.created_at, self.expires_at, (), None, self.size
            )
        return entry

    def revalidates(self) -> bool:
        """Its deadline is a revalidation time (`due`), before its expiry."""
        return self.deadline != (NEVER if self.expiry is None else self.expiry)

    def live(self, now: float) -> bool:
        """Not expired, and not changed in the store its guard watches."""
        if not _rules.live(self.expiry, now):
            return False
        return self.gens is None or self.gens.view[self.gslot] == self.gstamp

    def unexpired(self, now: float) -> bool:
        """Not expired (removals count these: a slower tier's removal of the same key may
        already have made the guard say "changed")."""
        return _rules.live(self.expiry, now)

    def guard(self) -> Guard | None:
        return None if self.gens is None else (self.gens, self.gslot, self.gstamp)


class MemoryStore:
    """In-process LRU cache of live objects (no serialisation), thread-safe.

    `max_size` bounds the estimated bytes held (int or a string like ``"64MB"``), `max_items`
    the number of entries; either or both may be None. Expiry runs on a monotonic clock.
    Values are returned as stored: mutating a returned object mutates the cached one.

    A cache keeps its copies coherent with the tiers below through `set`'s `guard` (served
    only while a shared generation table says the key is unchanged) and `due` (revalidated
    after that many seconds: `due_copy`, `renew`).
    """

    holds_objects: ClassVar[bool] = True

    def __init__(self, *, max_size: int | str | None = None, max_items: int | None = None) -> None:
        self.max_size = parse_size(max_size, "max_size")
        self.max_items = parse_count(max_items, "max_items")
        self.clock = SYSTEM_CLOCK
        self._lock = threading.Lock()
        self._data: OrderedDict[str, Slot] = OrderedDict()
        # key under a prefix -> slot, per prefix a cache asked for (`view`); kept with `_data`
        self._views: dict[str, dict[str, Slot]] = {}
        self._tags: dict[str, set[str]] = {}
        self._links: dict[str, list[tuple[dict[Hashable, Slot], Hashable]]] = {}
        self._bytes = 0
        self._epochs = [0] * _STRIPES
        self._evictions = self._expirations = self._rejected = 0
        self.invalidated = 0  # copies found changed in the store their guard watches

    @property
    def clock(self) -> Clock:
        """Where expiry reads the time (replaceable: a `FakeClock` in tests)."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        self.monotonic = clock.monotonic  # (one lookup on the fast paths)

    def __repr__(self) -> str:
        limits = [
            f"{name}={value}"
            for name, value in (("max_size", self.max_size), ("max_items", self.max_items))
            if value
        ]
        return f"MemoryStore({', '.join(limits)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.max_size, self.max_items))

    # -- core ------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        with self._lock:
            slot = self._data.get(key)
            if slot is None:
                return None
            deadline = slot.deadline
            if deadline <= (now := self.clock.monotonic()):
                if slot.revalidates() and slot.unexpired(now):
                    return None  # due for revalidation: kept for `due_copy`
                self._drop(key, slot)
                self._expirations += 1
                return None
            gens = slot.gens
            if gens is not None and gens.view[slot.gslot] != slot.gstamp:
                self._drop(key, slot)
                self.invalidated += 1
                return None
            self._data.move_to_end(key)
            return slot.entry

    def set(
        self, key: str, entry: Entry, epoch: int | None = None, guard: Guard | None = None,
        due: float | None = None,
    ) -> bool:  # fmt: skip
        """Store the entry; False if refused: larger than `max_size`, or `epoch` given and the
        key written or deleted since `epoch(key)` returned it. `guard`: serve it only while
        the guard's table holds its stamp; `due`: seconds after which it must be revalidated
        (`get` misses it, `due_copy` returns it)."""
        _rules.finite_times(entry.created_at, entry.expires_at)
        deadline = self._deadline(entry.expires_at)
        revalidate = None if due is None else self.clock.monotonic() + due
        with self._lock:
            return self._put(key, entry, deadline, guard, revalidate, epoch)

    def copy_in(
        self, key: str, entry: Entry, epoch: int, guard: Guard | None = None,
        due: float | None = None,
    ) -> bool:  # fmt: skip
        """Store a copy of `key` read from a slower tier after `epoch(key)` returned `epoch`,
        if nothing changed the key since; else refuse it and leave what changed it in place.

        `set(..., epoch=e)` removes the key on a conflict, as a write must (its value may be
        older than the one in place); a reader's copy need not: what it finds was put by
        another reader, whose copy came from the slower tier too, or by a write, which
        replaces or removes the copy it races with once its own turn comes. So readers of one
        key at once leave the first one's copy rather than none. A subclass that overrides
        `set` gets `set` (and its conflict rule), as before."""
        if type(self).set is not MemoryStore.set:
            if guard is None and due is None:
                return self.set(key, entry, epoch)
            return self.set(key, entry, epoch, guard, due)
        _rules.finite_times(entry.created_at, entry.expires_at)
        deadline = self._deadline(entry.expires_at)
        revalidate = None if due is None else self.clock.monotonic() + due
        with self._lock:
            if self._epochs[hash(key) % _STRIPES] != epoch:
                return False
            return self._put(key, entry, deadline, guard, revalidate, None)

    async def copy_in_async(
        self, key: str, entry: Entry, epoch: int, guard: Guard | None = None,
        due: float | None = None,
    ) -> bool:  # fmt: skip
        return self.copy_in(key, entry, epoch, guard, due)

    def _put(
        self, key: str, entry: Entry, deadline: float | None, guard: Guard | None,
        revalidate: float | None, epoch: int | None,
    ) -> bool:  # fmt: skip
        """`set` with the lock held."""
        stripe = hash(key) % _STRIPES
        stale = epoch is not None and self._epochs[stripe] != epoch
        old = self._data.get(key)
        if old is not None:
            self._drop(key, old)  # (bumps the epoch)
        else:
            self._epochs[stripe] += 1
        if stale:
            return False  # written or deleted meanwhile: leave the key absent
        if self.max_size is not None and entry.size > self.max_size:
            self._rejected += 1
            return False
        slot = self._data[key] = Slot.of(entry, deadline, guard, revalidate)
        if self._views:
            self._index(key, slot)
        self._bytes += entry.size
        for tag in entry.tags:
            self._tags.setdefault(tag, set()).add(key)
        self._shrink()
        return True

    def view(self, prefix: str) -> dict[str, Slot]:
        """The slots of the keys under `prefix`, by the rest of their key, for readers that
        take no lock (dict reads are atomic): the store adds and removes them with `_data`,
        so a slot found is current but for its deadline and guard, which the reader checks
        (as `link`'s readers do), marking it `touched` for eviction's second chance. A cache
        reads its namespace through one; each costs a dict entry per key under `prefix`."""
        with self._lock:
            view = self._views.get(prefix)
            if view is None:
                start = len(prefix)
                view = {k[start:]: slot for k, slot in self._data.items() if k.startswith(prefix)}
                self._views[prefix] = view
            return view

    def putter(self, prefix: str) -> Callable[[str, Any, float, float | None, int], bool]:
        """``put(name, value, created_at, ttl, size)``: a `set` of a bare value as the key
        ``prefix + name``, with no tags, meta, epoch or guard and `ttl` finite seconds or None
        (the caller has checked them); False if larger than `max_size`. A function holding
        the store's parts in locals: the cache's fast `set` calls it once per write."""
        acquire, release = self._lock.acquire, self._lock.release
        place = self._placer(prefix)

        def put(name: str, value: Any, created_at: float, ttl: float | None, size: int) -> bool:
            if ttl is None:
                slot = Slot(value, created_at, None, size, None)
            else:
                slot = Slot(value, created_at, created_at + ttl, size, self.monotonic() + ttl)
            acquire()  # (not `with`, which costs twice as much)
            try:
                return place(prefix + name, name, slot)
            finally:
                release()

        return put

    def put_many(
        self, prefix: str, items: list[tuple[str, Any, int]], created_at: float,
        ttl: float | None,
    ) -> int:  # fmt: skip
        """The `putter` write of (name, value, size) triples (keys ``prefix + name``) under
        one lock; how many were kept."""
        if ttl is None:
            expires_at = expiry = None
        else:
            expires_at, expiry = created_at + ttl, self.monotonic() + ttl
        place = self._placer(prefix)
        kept = 0
        with self._lock:
            for name, value, size in items:
                kept += place(
                    prefix + name, name, Slot(value, created_at, expires_at, size, expiry)
                )
        return kept

    def _placer(self, prefix: str) -> Callable[[str, str, Slot], bool]:
        """What stores a slot as ``key = prefix + name``'s, most recently used, in place of
        any other, then keeps the bounds; False if the slot alone is over `max_size` (it is
        not kept). Lock held."""
        data, epochs, links, views = self._data, self._epochs, self._links, self._views
        move_to_end = data.move_to_end
        view = self.view(prefix) if prefix else {}

        def place(key: str, name: str, slot: Slot) -> bool:
            old = data.get(key)
            epochs[hash(key) % _STRIPES] += 1
            size = slot.size
            if old is None:
                data[key] = slot
                self._bytes += size
            elif old.tags or key in links:
                self._drop(key, old)  # (its tag memberships and aliases go)
                data[key] = slot
                self._bytes += size
            else:  # (the common overwrite)
                data[key] = slot
                move_to_end(key)
                self._bytes += size - old.size
            if len(views) == 1 and prefix in views:
                view[name] = slot
            elif views:
                self._index(key, slot)
            if self.max_size is None and (self.max_items is None or len(data) <= self.max_items):
                return True
            return self._shrink_or_refuse(key, size)

        return place

    def delete(self, key: str) -> bool:
        with self._lock:
            self._epochs[hash(key) % _STRIPES] += 1
            slot = self._data.get(key)
            if slot is None:
                return False
            self._drop(key, slot)
            return slot.unexpired(self.clock.monotonic())

    def clear(self, prefix: str = "") -> int:
        with self._lock:
            self._epochs[:] = [e + 1 for e in self._epochs]
            now = self.clock.monotonic()
            doomed = [key for key in self._data if key.startswith(prefix)]
            return sum(self._drop(key, self._data[key]).unexpired(now) for key in doomed)

    def stats(self) -> StoreCounters:
        with self._lock:
            return StoreCounters(
                evictions=self._evictions,
                expirations=self._expirations,
                rejected=self._rejected,
                items=len(self._data),
                bytes=self._bytes,
            )

    def close(self) -> None:
        """Nothing to release; the contents stay until the store is garbage-collected."""

    # -- capabilities ----------------------------------------------------------------------

    def epoch(self, key: str) -> int:
        with self._lock:
            return self._epochs[hash(key) % _STRIPES]

    def link(self, index: dict[Hashable, Slot], alias: Hashable, key: str) -> bool:
        """Make ``index[alias]`` the slot of `key` for as long as that slot is stored.

        Memoized functions keep such an index from their raw arguments to slots, and read it
        without taking the lock: the store removes the alias whenever the slot goes (deleted,
        replaced, evicted, expired, cleared), so a found slot is current but for its deadline.
        """
        with self._lock:
            slot = self._data.get(key)
            if slot is None or not slot.live(self.clock.monotonic()):
                return False
            index[alias] = slot
            self._links.setdefault(key, []).append((index, alias))
            return True

    def due_copy(self, key: str) -> Entry | None:
        """The entry of `key` if it is live but due for revalidation (see `set`'s `due`)."""
        with self._lock:
            slot = self._data.get(key)
            now = self.clock.monotonic()
            if slot is None or not slot.revalidates() or not slot.live(now):
                return None
            return slot.entry if slot.deadline <= now else None

    def renew(self, key: str, entry: Entry, due: float) -> bool:
        """`entry` (from `due_copy`) was found unchanged: serve it for `due` more seconds."""
        with self._lock:
            slot = self._data.get(key)
            if slot is None or slot.entry is not entry:
                return False
            until = self.clock.monotonic() + due
            slot.deadline = until if slot.expiry is None or until < slot.expiry else slot.expiry
            return True

    def info(self, key: str) -> Entry | None:
        entry = self.get(key)
        return None if entry is None else entry.without_value()

    def pop(self, key: str) -> Entry | None:
        with self._lock:
            self._epochs[hash(key) % _STRIPES] += 1
            slot = self._data.get(key)
            if slot is None:
                return None
            self._drop(key, slot)
            if not slot.live(self.clock.monotonic()):
                self._expirations += 1
                return None
            return slot.entry

    def update(self, key: str, change: Callable[[Entry | None], Entry | None]) -> Entry | None:
        """Replace the key's live entry by `change(entry)` under the store's lock (see
        `SupportsUpdate`): `change` runs once, holding it, so it must be quick."""
        with self._lock:
            slot = self._data.get(key)
            live = slot is not None and slot.live(self.clock.monotonic())
            new = change(slot.entry if slot is not None and live else None)
            if new is None:
                return None
            _rules.finite_times(new.created_at, new.expires_at)
            if not self._put(key, new, self._deadline(new.expires_at), None, None, None):
                return None  # refused: larger than max_size
            return new

    def touch(self, key: str, expires_at: float | None) -> bool:
        _rules.finite_times(None, expires_at)
        deadline = self._deadline(expires_at)
        with self._lock:
            slot = self._data.get(key)
            if slot is None or not slot.live(self.clock.monotonic()):
                return False
            # a new Entry and slot: the old ones may be held by readers and linked indexes
            self._drop(key, slot)
            due = slot.deadline if slot.revalidates() else None
            entry = replace(slot.entry, expires_at=expires_at)
            renewed = Slot.of(entry, deadline, slot.guard(), due)
            self._data[key] = renewed
            if self._views:
                self._index(key, renewed)
            self._bytes += slot.size
            for tag in slot.tags:
                self._tags.setdefault(tag, set()).add(key)
            return True

    def expire(self) -> int:
        now = self.clock.monotonic()
        with self._lock:
            doomed = [key for key, slot in self._data.items() if not slot.live(now)]
            expired = 0
            for key in doomed:
                expired += not self._drop(key, self._data[key]).unexpired(now)
            self._expirations += expired
            return expired

    def evict(self, tag: str, prefix: str = "") -> int:
        with self._lock:
            self._epochs[:] = [e + 1 for e in self._epochs]  # no copy in flight lands after it
            now = self.clock.monotonic()
            doomed = [key for key in self._tags.get(tag, ()) if key.startswith(prefix)]
            return sum(self._drop(key, self._data[key]).unexpired(now) for key in doomed)

    def keys(self, prefix: str = "", tag: str | None = None) -> Iterator[str]:
        now = self.clock.monotonic()
        with self._lock:
            source = list(self._tags.get(tag, ())) if tag is not None else list(self._data)
            snapshot = [(key, self._data[key]) for key in source]
        for key, slot in snapshot:
            if key.startswith(prefix) and slot.live(now):
                yield key

    def count(self, prefix: str = "") -> int:
        return sum(1 for _ in self.keys(prefix))

    def scan(self, prefix: str = "", tag: str | None = None) -> Iterator[tuple[str, Entry]]:
        """(key, entry without its value) of each entry held, expired ones included (a
        snapshot taken under the lock; the store records no reads: `accessed_at` is None)."""
        with self._lock:
            source = list(self._tags.get(tag, ())) if tag is not None else list(self._data)
            snapshot = [(key, self._data[key]) for key in source]
        for key, slot in snapshot:
            if key.startswith(prefix):
                yield key, slot.entry.without_value()

    # -- async twins: nothing here blocks, so they run inline (`_twins`) ---------------------

    get_async = inline(get)
    delete_async = inline(delete)
    clear_async = inline(clear)
    stats_async = inline(stats)
    close_async = inline(close)
    info_async = inline(info)
    pop_async = inline(pop)
    update_async = inline(update)
    touch_async = inline(touch)
    expire_async = inline(expire)
    evict_async = inline(evict)
    keys_async = inline_iter(keys)
    scan_async = inline_iter(scan)
    count_async = inline(count)

    async def set_async(
        self, key: str, entry: Entry, epoch: int | None = None, guard: Guard | None = None,
        due: float | None = None,
    ) -> bool:  # fmt: skip
        """Written out: a subclass overriding `set` may take only (key, entry, epoch), which
        is what it is given when there is no guard and no due time."""
        if guard is None and due is None:
            return self.set(key, entry, epoch)
        return self.set(key, entry, epoch, guard, due)

    # -- internals (lock held) ---------------------------------------------------------------

    def _deadline(self, expires_at: float | None) -> float | None:
        if expires_at is None:
            return None
        return self.clock.monotonic() + (expires_at - self.clock.time())

    def _drop(self, key: str, slot: Slot) -> Slot:
        """Remove `key` (its slot, tags, links and epoch) and return its slot."""
        del self._data[key]
        self._epochs[hash(key) % _STRIPES] += 1
        self._bytes -= slot.size
        for tag in slot.tags:
            members = self._tags.get(tag)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._tags[tag]
        for index, alias in self._links.pop(key, ()):
            if index.get(alias) is slot:
                del index[alias]
        if self._views:
            for prefix, view in self._views.items():
                if key.startswith(prefix) and view.get(rest := key[len(prefix) :]) is slot:
                    del view[rest]
        return slot

    def _index(self, key: str, slot: Slot) -> None:
        """`slot` is now `key`'s: so in every view whose prefix `key` has."""
        for prefix, view in self._views.items():
            if key.startswith(prefix):
                view[key[len(prefix) :]] = slot

    def _shrink_or_refuse(self, key: str, size: int) -> bool:
        """After a slot of `size` went in as `key`'s: False (and `key` gone) if larger than
        `max_size`; else shrink to the bounds."""
        if self.max_size is not None and size > self.max_size:
            self._drop(key, self._data[key])
            self._rejected += 1
            return False
        if (self.max_items is not None and len(self._data) > self.max_items) or (
            self.max_size is not None and self._bytes > self.max_size
        ):
            self._shrink()
        return True

    def _shrink(self) -> None:
        """Evict least recently used entries until both bounds hold. A slot hit through a link
        (which does not reorder, being lock-free) gets a second chance at the back."""
        while (self.max_items is not None and len(self._data) > self.max_items) or (
            self.max_size is not None and self._bytes > self.max_size
        ):
            key, slot = next(iter(self._data.items()))
            if slot.touched:
                slot.touched = False
                self._data.move_to_end(key)
                continue
            self._drop(key, slot)
            self._evictions += 1


def _rebuild(max_size: int | None, max_items: int | None) -> MemoryStore:
    return MemoryStore(max_size=max_size, max_items=max_items)
