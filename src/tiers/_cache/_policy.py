"""What the cache decides, without I/O, as reads and writes go through its tiers: what a
tier's answer means, what a copy carries, how failures, refused entries and lost leases are
counted and reported. The I/O that follows these rules is in ``_async/tiering.py`` (reads fall
through the tiers, writes go to all) and ``_async/single_flight.py`` (one computation per key).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from .._codec import Rejected
from .._rules import live
from .._stores import Entry
from .._stores._memory import Guard
from ..errors import ConfigError, StoreFullError, StorePermissionError, TierUnavailableError
from . import _coherence as coherence_rules
from ._coherence import LOCAL
from ._core import CacheCore
from ._tier import Fence, Tier

log = logging.getLogger("tiers")
_LASTING = (StorePermissionError, ConfigError)  # lock failures that waiting does not cure
_STALE_MAX = 100_000


class Policy(CacheCore):
    """The I/O-free rules of tiering and single-flight (a mixin of the operations)."""

    def _decode(self, tier: Tier, key: str, entry: Entry) -> Any:
        """The value of an entry a tier returned; `Rejected` if it must not be used (a plain
        entry is used only from a private tier: decision 0013)."""
        if tier.holds_objects:
            return entry.value
        return self._codec.decode(key, entry.header, entry.value, tier.private)

    def _promotion(
        self, source: Tier, key: str, entry: Entry, value: Any
    ) -> tuple[Entry, Entry | None, Entry | None]:
        """(object entry, shared byte entry, private byte entry) to copy `entry` into the
        faster tiers, keeping its expiry (see `_for_tier`). A byte entry is copied as it was
        read where it may go, else encoded anew, once, only if a tier above takes it: a plain
        entry is signed before it goes to a tier that is not private, and a signed one made
        plain for a private tier when its value needs no pickle (decision 0013)."""
        live = Entry(value, b"", entry.created_at, entry.expires_at, entry.tags, entry.meta,
                     entry.size, version=entry.version)  # fmt: skip
        shared: Entry | None = None
        private: Entry | None = None
        if not source.holds_objects:
            if self._codec.is_plain(entry.header):
                private = entry
            else:
                shared = entry
        above = [t for t in self._tiers[: source.index] if not t.holds_objects]
        if private is None and any(t.private for t in above):
            plain = self._codec.encode_plain(value) if self._plain_bytes else None
            if plain is not None:
                private = _copy_of(entry, *plain)
        if shared is None and (any(not t.private for t in above) or (private is None and above)):
            shared = _copy_of(entry, *self._codec.encode(key, value))
        return live, shared, private if private is not None else shared

    def _failed(self, tier: Tier, exc: Exception, action: str) -> None:
        """A tier raised: count it; re-raise under "raise", else let the breaker decide."""
        tier.errors += 1
        if self._raise:
            if isinstance(exc, StoreFullError):
                raise exc
            raise TierUnavailableError(
                f"tier {tier.index} ({tier.name}) failed to {action}: {type(exc).__name__}: {exc}",
                tier=tier.index,
            ) from exc
        tier.breaker.failure(exc, action)

    def _lock_failed(self, tier: Tier, exc: Exception, failing_for: float, lease: float) -> bool:
        """Taking a lock of `tier` raised: count it; True once it has failed for a whole
        `lease`, or at once for an error that waiting does not cure (permissions,
        configuration): the caller then computes without the lock. Raises under "raise"."""
        self._failed(tier, exc, "take a lock")
        if failing_for < lease and not isinstance(exc, _LASTING):
            return False
        tier.lock_fallbacks += 1
        log.warning(
            "%s could not give a single-flight lock for %.1f s (%s); computing without "
            "it", tier.name, failing_for, type(exc).__name__,
        )  # fmt: skip
        return True

    def _lease_lost(self, fence: Fence, k: str) -> None:
        """A result was not stored: its lock's lease had ended (counted and logged)."""
        fence.tier.lost_leases += 1
        log.warning(
            "the value computed for %r in %.1f s was not stored in %s: the lease of its "
            "lock (%.1f s) ended first, so another caller may have taken over; a lease must "
            "outlast the longest stretch the computation holds the GIL or the process pauses",
            self._user_key(k)[:200], time.monotonic() - fence.since, fence.tier.name,
            fence.lease,
        )  # fmt: skip

    def _refresh_failed(self, k: str, exc: Exception) -> None:
        """A background refresh of `k` raised: counted and logged; the stale value stays."""
        self._refresh_errors += 1
        if self._closed:
            return
        log.warning(
            "refreshing %r failed (%s: %s); its stale value is served until it expires, "
            "and this process tries again after a backoff", self._user_key(k)[:200],
            type(exc).__name__, exc,
        )  # fmt: skip

    def _renewed(self, fence: Fence, k: str, held: bool) -> bool:
        """What a renewal of `fence`'s lease answered (logged when lost)."""
        if not held:
            log.warning(
                "lost the lock of %r on %s after %.1f s of computing (lease %.1f s); "
                "the result will not be stored", self._user_key(k)[:200], fence.tier.name,
                time.monotonic() - fence.since, fence.lease,
            )  # fmt: skip
        return held

    def _missed(self, tier: Tier, key: str) -> None:
        """`tier` missed a write or delete of `key`: never serve its copy until it is healed.
        (Under "raise" the caller was told instead, and the tier keeps being asked.)"""
        if self._raise:
            return
        if len(tier.stale) < _STALE_MAX:
            tier.stale.add(key)
        elif len(tier.stale) == _STALE_MAX:
            tier.stale.add(key)
            log.warning(
                "%s missed over %d writes while failing; it may serve stale values "
                "for the others once it answers again", tier.name, _STALE_MAX,
            )  # fmt: skip

    def _wrote(self, tier: Tier, encoded: list[tuple[str, Entry, Entry | None]]) -> None:
        """`tier` took a write of these (key, object entry, byte entry) triples."""
        tier.sets += len(encoded)
        if tier.stale:
            tier.stale.difference_update(k for k, _live, _enc in encoded)
        if tier.breaker.failures:
            tier.breaker.success()
        if tier.kind == coherence_rules.PULL:  # copies above revalidate with what it answered
            for _k, live, enc in encoded:
                if enc is not None and enc.version is not None:
                    live.version = enc.version

    def _copy_terms(
        self, tier: Tier, k: str, copy: Entry, stamps: dict[int, int], source: Tier | None
    ) -> tuple[Entry, Guard | None, float | None]:
        """(copy, guard, due): how a copy of `k` from `source` (None: the caller's own write)
        goes into `tier`, as its guardian requires."""
        guardian = tier.guardian
        guard = due = None
        if guardian is not None:
            if guardian.kind == LOCAL and tier.can.guard:
                stamp = stamps.get(guardian.index)
                if stamp is None and source is None:  # the caller's write skipped a resting
                    stamp = guardian.store.epoch(k)  # guardian: its copy answers to it as is
                guard = coherence_rules.local_guard(guardian, k, stamp)
            elif guardian.kind == coherence_rules.PULL:
                if source not in (None, guardian) and copy.version is not None:
                    copy = replace(copy, version=None)  # an ETag only of the guardian's own
                if tier.can.guard:
                    due = self._max_age
        if tier.capped:  # a copy of what an object store below holds: kept max_age at most
            until = self._clock.time() + self._max_age
            if live(copy.expires_at, until):  # it would outlive the cap
                copy = replace(copy, expires_at=until)
        return copy, guard, due

    @staticmethod
    def _copy_of_local(tier: Tier) -> bool:
        """Its copies answer to a LOCAL tier, whose answer counts for removals (the copies
        may be ones the guard already refuses: another process removed the key)."""
        guardian = tier.guardian
        return guardian is not None and guardian.kind == LOCAL and guardian.breaker.allow()

    @staticmethod
    def _witnessed(tier: Tier, k: str, epochs: dict[int, int] | None) -> dict[int, int]:
        """Before reading `tier`: the generation that copies of what it returns will carry."""
        epochs = {} if epochs is None else epochs
        if tier.witness is not None:
            epochs.setdefault(tier.witness.index, tier.witness.store.epoch(k))
        return epochs

    def _epoch_before_copy(
        self, tier: Tier, k: str, epochs: dict[int, int] | None
    ) -> dict[int, int] | None:
        """After `tier` missed (or was skipped): its epoch, where it keeps them, so that a copy
        from a slower tier is only stored if the key did not change meanwhile."""
        if not tier.can.epoch or tier is self._tiers[-1]:
            return epochs
        epochs = {} if epochs is None else epochs
        epochs.setdefault(tier.index, tier.store.epoch(k))
        return epochs

    def _rejected(self, tier: Tier, key: str, exc: Rejected) -> bool:
        """Count an entry that must not be used; whether to remove it: not when it was
        signed with another secret (a process misconfigured must not delete the entries of
        those configured right: a miss, counted in `foreign`, and said once per tier)."""
        if exc.foreign_key:
            tier.foreign += 1
            if tier.foreign == 1:
                log.warning(
                    "%s holds entries signed with another secret (first: %r); they read as "
                    "misses and are left in place: give every process the same TIERS_SECRET",
                    tier.name, self._user_key(key)[:200],
                )  # fmt: skip
            return False
        tier.rejected += 1
        log.debug("%s rejected %r: %s", tier.name, key, exc)
        return True

    def _write_order(self, fence: Fence | None) -> list[Tier]:
        """The tiers a write goes to, slowest first; a fenced write's lock tier before all
        (if its lease has ended, nothing is written anywhere)."""
        order = list(reversed(self._tiers))
        if fence is not None:
            order.remove(fence.tier)
            order.insert(0, fence.tier)
        return order

    def _epochs_before_write(self, keys: list[str]) -> dict[tuple[int, str], int]:
        """{(tier index, key): epoch} of the in-process object tiers above the last, read
        before a write begins: a copy of the new value goes in only if nothing changed the
        key meanwhile."""
        last = len(self._tiers) - 1
        return {
            (t.index, k): t.store.epoch(k)
            for t in self._tiers if t.can.epoch and t.holds_objects and t.index < last
            for k in keys
        }  # fmt: skip


def _copy_of(entry: Entry, header: bytes, body: Any) -> Entry:
    """`entry` (its times, tags and meta) holding another encoding of its value."""
    size = len(header) + memoryview(body).nbytes
    return Entry(body, header, entry.created_at, entry.expires_at, entry.tags, entry.meta, size)
