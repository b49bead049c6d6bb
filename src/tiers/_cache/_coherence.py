"""How the copies a faster tier holds stay true to the tiers below it (docs/coherence.md).

A tier's copies answer to its *guardian*: the nearest slower tier that other processes or
machines can write (a memory store is nobody's guardian: only this process writes it). What
kind of store the guardian is decides how its writes reach the copies above it:

- ``LOCAL`` (DiskStore, FolderStore: processes of one host): the store stamps the key in a
  generation table in shared memory on each change; a memory copy carries the stamp it was
  read or written under and is served only while the table still holds it.
- ``PUSH`` (RedisStore): the store's invalidation channel names the keys other processes
  changed and the cache deletes them from the faster tiers; while the channel is down the
  faster tiers are bypassed ("suspect"), and emptied when it is back.
- ``PULL`` (any other shared store; an ObjectStore revalidates by ETag): a memory copy is
  revalidated after `max_age` seconds; a byte-tier copy expires after `max_age`.

``coherence="pull"`` treats push stores as pull ones (no channel, no listener thread);
``coherence="none"`` keeps copies until they expire, for data immutable by construction.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from .._rules import positive_seconds
from .._stores._generations import NEVER
from .._stores._memory import Guard
from ..errors import ConfigError

if TYPE_CHECKING:
    from ._tier import Tier

log = logging.getLogger("tiers")

MODES = ("auto", "pull", "none")
LOCAL, PUSH, PULL = "local", "push", "pull"
DEFAULT_MAX_AGE = 60.0


def check(mode: object, max_age: object) -> float:
    """Validate the options; the max_age in seconds."""
    if mode not in MODES:
        raise ConfigError(f"coherence must be 'auto', 'pull' or 'none', not {mode!r}")
    return positive_seconds("max_age", max_age)


def kind(store: Any, mode: str) -> str | None:
    """What guards the copies of a store's entries held above it (None: nobody else writes
    the store, as with a memory store)."""
    if store.holds_objects:
        return None
    if callable(getattr(store, "generation_slot", None)):
        return LOCAL
    if mode == "auto" and callable(getattr(store, "watch", None)):
        return PUSH
    return PULL


def assign(tiers: list[Tier], mode: str) -> None:
    """Give each tier its guardian (None with coherence="none", or with nothing below)."""
    for tier in tiers:
        tier.kind = kind(tier.store, mode)
    if mode == "none":
        return
    for tier in tiers:
        below = (t for t in tiers[tier.index + 1 :] if t.kind is not None)
        tier.guardian = next(below, None)
    for tier in tiers:
        tier.watched = tier.kind == LOCAL and any(t.guardian is tier for t in tiers)
    for tier in tiers[1:]:  # what a read of this tier may be copied up under
        if tier.kind == LOCAL:
            tier.witness = tier
        elif tier.kind is None and tier.guardian is not None and tier.guardian.kind == LOCAL:
            tier.witness = tier.guardian
    for tier in tiers:
        tier.revalidating = (
            tier.can.guard and tier.guardian is not None and tier.guardian.kind == PULL
        )
        kinds_below = {t.kind for t in tiers[tier.index + 1 :]}
        tier.capped = PULL in kinds_below and not tier.revalidating


def local_guard(tier: Tier, key: str, stamp: int | None) -> Guard:
    """The guard of a copy of `key` whose guardian is the LOCAL tier `tier`, written or read
    under `stamp` (None: unknown, so the copy is never served)."""
    store = tier.store
    return (store.generations, store.generation_slot(key), NEVER if stamp is None else stamp)


class Channel:
    """The invalidation channel of a PUSH tier, applied to the tiers above it."""

    def __init__(self, cache: Any, tier: Tier) -> None:
        self.tier = tier
        self.above = [t for t in cache._tiers[: tier.index] if t.guardian is tier]
        self._cache = weakref.ref(cache)
        self._prefix = cache._prefix
        self._own: bytes = cache._origin  # this cache's own writes need no message
        for t in self.above:
            t.suspect = True  # until the channel says it listens ("back")
        self.watch: Any = None
        self.watch = tier.store.watch(self._event)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()

    def _event(self, event: Any) -> None:
        """(The listener's thread.) Apply one event; a failure drops everything above."""
        if event.origin == self._own and event.kind in ("keys", "prefix"):
            return
        try:
            handler = getattr(self, f"_on_{event.kind}", None)
            if handler is None:  # an event of a newer kind: assume the worst
                self._on_lost(event)
                self._on_back(event)
            else:
                handler(event)
        except Exception as exc:
            log.warning("invalidation from %s failed (%s): dropping copies",
                        self.tier.name, exc)  # fmt: skip
            self._suspend()
            if self.watch is not None and self.watch.connected:
                self._resume()

    def _on_keys(self, event: Any) -> None:
        keys = [k for k in event.keys if k.startswith(self._prefix)]
        for t in self.above:
            for k in keys:
                t.store.delete(k)

    def _on_prefix(self, event: Any) -> None:
        """Everything under a prefix changed (a clear), or what has a tag (an evict)."""
        prefix = event.prefix
        if not (prefix.startswith(self._prefix) or self._prefix.startswith(prefix)):
            return
        narrower = prefix if len(prefix) > len(self._prefix) else self._prefix
        for t in self.above:
            if event.tag is not None and t.can.evict:
                t.store.evict(event.tag, narrower)
            else:
                t.store.clear(narrower)

    def _on_lost(self, _event: Any) -> None:
        self._suspend()

    def _on_back(self, _event: Any) -> None:
        self._resume()

    def _suspend(self) -> None:
        for t in self.above:
            t.suspect = True
            self._empty(t)

    def _resume(self) -> None:
        """Empty the tiers above (what changed while nobody listened is unknown), then serve
        them again; a tier that cannot be emptied stays suspect."""
        for t in self.above:
            if self._empty(t):
                t.suspect = False

    def _empty(self, tier: Tier) -> bool:
        try:
            tier.store.clear(self._prefix)
        except Exception as exc:
            log.warning("cannot empty %s after invalidations were lost: %s",
                        tier.name, exc)  # fmt: skip
            return False
        return True
