# Generated from _async/tiering.py by scripts/unasync.py: do not edit by hand.
"""Blocking twin of ``_async/tiering.py`` (generated; the docstring is there)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._codec import Rejected
from ..._stores import Entry
from ..._stores._generations import new_stamp
from ..._stores._protocol import UNCHANGED
from ..._stores._writer import writing
from ..._types import MISSING
from .._coherence import LOCAL
from .._policy import Policy
from .._tier import Fence, Tier


class SyncTiering(Policy):
    """Lookup, promotion and write-through over the tiers."""

    def _lookup(
        self, k: str, *, counted: bool = True, found: list[Entry] | None = None
    ) -> Any:
        """The value of stored key `k` or MISSING; promotes what slower tiers return.

        `counted=False` for the repeated looks of a caller waiting for another's computation:
        their misses are not new misses. `found`: the entry that answered is appended to it.
        """
        epochs: dict[int, int] | None = None
        for tier in self._tiers:
            if tier.suspect:  # it may have missed invalidations: not read at all (and a copy
                epochs = self._epoch_before_copy(tier, k, epochs)  # put in once it is back
                continue  # must not miss one either)
            if tier.breaker.open_until and not tier.breaker.allow():
                continue
            if tier.stale and k in tier.stale:  # its copy may predate a write: a miss here
                self._drop(tier, k)
                continue
            if tier.witness is not None:
                epochs = self._witnessed(tier, k, epochs)
            try:
                entry = tier.store.get(k)
            except Exception as exc:
                self._failed(tier, exc, "get")
                continue
            if tier.breaker.failures:
                tier.breaker.success()  # a miss is an answer too: the failures were not consecutive
            value = self._answer(tier, k, entry, epochs, counted, found)
            if value is not MISSING:
                return value
            epochs = self._epoch_before_copy(tier, k, epochs)  # a slower tier may promote
        return MISSING

    def _lookup_many(self, stored: list[str]) -> dict[str, Any]:
        """{stored key: value} of the keys some tier has: `_lookup_async` for many keys, each
        tier asked for all its misses at once (in one call where its store takes batches)."""
        found: dict[str, Any] = {}
        remaining = list(stored)
        epochs: dict[str, dict[int, int] | None] = dict.fromkeys(stored)
        for tier in self._tiers:
            if not remaining:
                break
            if not tier.breaker.allow() or tier.suspect:
                continue
            asked = [k for k in remaining if not (tier.stale and k in tier.stale)]
            if tier.witness is not None:
                for k in asked:
                    epochs[k] = self._witnessed(tier, k, epochs[k])
            try:
                if tier.can.batch:
                    entries = tier.store.get_many(asked)
                else:
                    entries = [tier.store.get(k) for k in asked]
            except Exception as exc:
                self._failed(tier, exc, "get")
                continue
            if tier.breaker.failures:
                tier.breaker.success()
            for k, entry in zip(asked, entries, strict=True):
                value = self._answer(tier, k, entry, epochs[k])
                if value is MISSING:
                    epochs[k] = self._epoch_before_copy(tier, k, epochs[k])
                else:
                    found[k] = value
            remaining = [k for k in remaining if k not in found]
        return found

    def _answer(
        self, tier: Tier, k: str, entry: Entry | None, epochs: dict[int, int] | None,
        counted: bool = True, found: list[Entry] | None = None,
    ) -> Any:  # fmt: skip
        """The value `tier` answered for `k` (`entry`, appended to `found`), copied into the
        faster tiers under `epochs`; MISSING if it has none live (a copy due for revalidation
        is revalidated first) or none that may be used (removed unless foreign, counted)."""
        if entry is None:
            if tier.revalidating:
                value = self._revalidate(tier, k, found)
                if value is not MISSING:
                    return value
            tier.misses += counted
            return MISSING
        try:
            value = self._decode(tier, k, entry)
        except Rejected as exc:
            self._refuse(tier, k, exc)
            return MISSING
        tier.hits += 1
        if found is not None:
            found.append(entry)
        if tier.index:
            self._promote(tier, k, entry, value, epochs)
        return value

    def _revalidate(self, tier: Tier, k: str, found: list[Entry] | None = None) -> Any:
        """The value of `tier`'s copy of `k` that is due for revalidation, once its guardian
        says it is unchanged (without sending it where the store can); the new value if it
        changed; MISSING if it is gone, or cannot be asked (the copy is then not served)."""
        copy = tier.store.due_copy(k)
        source = tier.guardian
        if copy is None or source is None or source.suspect or not source.breaker.allow():
            return MISSING
        epoch = tier.store.epoch(k) if tier.can.epoch else None
        try:
            if source.can.revalidate and copy.version is not None:
                answer = source.store.revalidate(k, copy.version)
            else:
                answer = source.store.get(k)
        except Exception as exc:
            self._failed(source, exc, "revalidate")
            return MISSING
        if answer is UNCHANGED:
            tier.store.renew(k, copy, self._max_age)
            tier.hits += 1
            if found is not None:
                found.append(copy)
            return copy.value
        if answer is None:
            self._drop(tier, k)
            return MISSING
        try:
            value = self._decode(source, k, answer)
        except Rejected as exc:
            self._refuse(source, k, exc)
            self._drop(tier, k)
            return MISSING
        source.hits += 1
        if found is not None:
            found.append(answer)
        self._promote(
            source, k, answer, value, None if epoch is None else {tier.index: epoch}
        )
        return value

    def _peek(self, k: str) -> tuple[Tier, Entry] | None:
        """The first tier holding `k` live and its entry, read without the value if it can."""
        for tier in self._tiers:
            if not tier.breaker.allow() or (tier.stale and k in tier.stale):
                continue
            try:
                if tier.can.info:
                    entry = tier.store.info(k)
                else:
                    entry = tier.store.get(k)
            except Exception as exc:
                self._failed(tier, exc, "look up")
                continue
            if entry is not None:
                return tier, entry
        return None

    def _promote(
        self, source: Tier, k: str, entry: Entry, value: Any, epochs: dict[int, int] | None
    ) -> None:
        """Copy an entry `source` returned into the faster tiers, slowest first (each copy
        conditional on the key being unchanged since the look began, where its tier can)."""
        live, shared, private = self._promotion(source, k, entry, value)
        stamps = {i: e for i, e in (epochs or {}).items() if self._tiers[i].kind == LOCAL}
        for tier in reversed(self._tiers[: source.index]):
            if not tier.breaker.allow() or tier.suspect:
                continue
            copy = self._for_tier(tier, live, shared, private)
            try:
                epoch = (epochs or {}).get(tier.index)
                self._put_copy(tier, k, copy, epoch, stamps, source)
            except Exception as exc:  # a failed copy costs a later miss, never the read
                tier.errors += 1
                tier.breaker.failure(exc, "copy a value up")
            else:
                tier.stale.discard(k)

    def _put_copy(
        self, tier: Tier, k: str, copy: Entry, epoch: int | None, stamps: dict[int, int],
        source: Tier | None,
    ) -> bool:  # fmt: skip
        """Write `copy` of `k` (from `source`, None for the caller's own write) into `tier`,
        guarded as its guardian requires (see _coherence). `stamps`: the generation each LOCAL
        tier was written or read under, by tier index; this write's is added."""
        copy, guard, due = self._copy_terms(tier, k, copy, stamps, source)
        if source is not None and epoch is not None and tier.can.copy_in and not tier.watched:
            stored: bool = tier.store.copy_in(k, copy, epoch, guard, due)
        elif tier.can.guard and (guard is not None or due is not None):
            stored = tier.store.set(k, copy, epoch, guard, due)
        elif tier.watched:  # (the copies above take the stamp it writes)
            written = new_stamp()
            stored = tier.store.set(k, copy, epoch, written)
            if stored:
                stamps[tier.index] = written
        elif tier.can.epoch:
            stored = tier.store.set(k, copy, epoch)
        else:
            stored = tier.store.set(k, copy)
        return stored

    def _store(
        self, items: list[tuple[str, Any]], expires_at: float | None, tags: tuple[str, ...],
        meta: dict[str, Any] | None, fence: Fence | None = None,
    ) -> None:  # fmt: skip
        """Write (stored key, value) pairs to every tier, slowest first, each tier in one batch
        when its store can. Every value is encoded before anything is written. With a
        `fence` (one computed item), its lock's tier is written first and only while the
        lease is current; if it is not, nothing is written."""
        with writing(self._writer):  # (its announcements name this cache)
            forms = [(k, *self._entries(k, value, expires_at, tags, meta)) for k, value in items]
            encoded = [
                (k, live, private if shared is None else shared)
                for k, live, shared, private in forms
            ]
            epochs = self._epochs_before_write([k for k, _value in items])
            stamps: dict[str, dict[int, int]] = {}
            written = False
            for tier in self._write_order(fence):
                if self._bypassed(tier, [k for k, _live, _encoded in encoded]):
                    continue
                batch = [
                    (k, self._for_tier(tier, live, shared, private))
                    for k, live, shared, private in forms
                ]
                try:
                    if fence is not None and tier is fence.tier:
                        if not self._write_fenced(fence, batch[0], stamps):
                            return
                    else:
                        self._write(tier, batch, epochs, stamps)
                except Exception as exc:
                    self._write_failed(tier, batch, written, stamps)
                    self._failed(tier, exc, "set")
                    continue
                written = True
                self._wrote(tier, encoded)

    def _update(
        self, tier: Tier, k: str, change: Callable[[Entry | None], Entry | None], action: str
    ) -> Entry | None:
        """`tier.store.update` of `k` (the counter tier's atomic step: `_counters`); what it
        wrote, after which the faster tiers drop their copies. What `change` raises for the
        caller (KeyError, TypeError) passes; any other error counts as the tier's."""
        with writing(self._writer):  # (its announcements name this cache)
            try:
                entry: Entry | None = tier.store.update(k, change)
            except (KeyError, TypeError):
                raise
            except Exception as exc:
                self._failed(tier, exc, action)
                raise
            if entry is not None:
                tier.sets += 1
                self._unbind(k)
                for above in self._tiers[: tier.index]:
                    self._drop(above, k)
            return entry

    def _bypassed(self, tier: Tier, keys: list[str]) -> bool:
        """True if a write of `keys` skips `tier`: its breaker is open (its copies are then
        never served until healed), or it is suspect (its copies go now)."""
        if not tier.breaker.allow():
            for k in keys:
                self._missed(tier, k)
            return True
        if tier.suspect:  # bypassed until its invalidations flow: its old copies go
            for k in keys:
                self._drop(tier, k)
            return True
        return False

    def _write_fenced(
        self, fence: Fence, item: tuple[str, Entry], stamps: dict[str, dict[int, int]]
    ) -> bool:
        """Write a computed entry to its lock's tier if the lease is still current; False,
        counted and logged, if it is not (nothing written)."""
        tier, (k, entry) = fence.tier, item
        stamped = stamps.setdefault(k, {})
        if not tier.can.fence:  # a store without fenced writes: check the lease, then write
            held = tier.store.renew_lock(fence.name, fence.token, fence.lease)
            if held:
                self._write(tier, [item], {}, stamps)
        elif tier.watched:  # (the copies above take the stamp it writes)
            stamped[tier.index] = tier.store.epoch(k)  # what they keep if this write fails
            written = new_stamp()
            held = tier.store.set_if_held(k, entry, fence.name, fence.token, written)
            if held:
                stamped[tier.index] = written
        else:
            held = tier.store.set_if_held(k, entry, fence.name, fence.token)
        if not held:
            self._lease_lost(fence, k)
        return bool(held)

    def _write_failed(
        self, tier: Tier, batch: list[tuple[str, Entry]], written: bool,
        stamps: dict[str, dict[int, int]],
    ) -> None:  # fmt: skip
        """`tier` failed to take `batch` (the caller then reports it)."""
        if written or not self._raise:
            # Other tiers hold (or will hold) the new values: this tier's old copies must not
            # be served later, nor, when raising now, the faster tiers' copies.
            for doomed in self._tiers[: tier.index + 1] if self._raise else (tier,):
                for k, _entry in batch:
                    self._drop(doomed, k)
        # Under "raise" with nothing written yet, every tier keeps its previous values, but for
        # the copies answering to this tier: it may yet apply the write (a reply lost). (Under
        # "degrade" the faster tiers take the new values next.)
        if self._raise:
            self._unsure(tier, [k for k, _entry in batch])
        if tier.watched:  # the copies above answer to what it holds now
            for k, _entry in batch:
                stamps.setdefault(k, {})[tier.index] = tier.store.epoch(k)

    def _unsure(
        self, tier: Tier, keys: list[str] | None = None, tag: str | None = None,
        prefix: str | None = None,
    ) -> None:  # fmt: skip
        """`tier` failed a change of `keys` (None: of everything under the prefix, or what has
        `tag`) that it may apply all the same (a timeout): the copies answering to it go, as
        the change's announcement would have taken them (this cache skips its own)."""
        for above in self._tiers[: tier.index]:
            if above.guardian is not tier:
                continue
            try:
                if keys is not None:
                    for k in keys:
                        above.store.delete(k)
                elif tag is not None and above.can.evict:
                    above.store.evict(tag, self._prefix)
                else:
                    above.store.clear(prefix or self._prefix)
            except Exception:  # it cannot be emptied: it is not read until a write heals it
                for k in keys or ():
                    self._missed(above, k)

    def _write(
        self, tier: Tier, batch: list[tuple[str, Entry]], epochs: dict[tuple[int, str], int],
        stamps: dict[str, dict[int, int]],
    ) -> None:  # fmt: skip
        """Write `batch` to `tier`: in one call when its store takes batches and its copies
        need no guard, else entry by entry (see `_put_copy_async`)."""
        if tier.watched:  # should this write fail, the copies above keep what it had
            for k, _entry in batch:
                stamps.setdefault(k, {})[tier.index] = tier.store.epoch(k)
        if len(batch) > 1 and tier.can.batch and tier.guardian is None and tier.kind != LOCAL:
            tier.store.set_many(batch)
            return
        for k, entry in batch:
            epoch = epochs.get((tier.index, k))
            self._put_copy(tier, k, entry, epoch, stamps.setdefault(k, {}), None)

    def _delete_stored(self, k: str) -> bool:
        with writing(self._writer):  # (its announcements name this cache)
            found = False
            for tier in reversed(self._tiers):
                if not tier.breaker.allow():
                    self._missed(tier, k)
                    continue
                try:
                    removed = tier.store.delete(k)
                except Exception as exc:
                    self._unsure(tier, [k])
                    self._failed(tier, exc, "delete")  # raises under "raise": the caller knows
                    self._missed(tier, k)
                    continue
                if tier.stale:
                    tier.stale.discard(k)
                if tier.breaker.failures:
                    tier.breaker.success()
                if removed:
                    tier.deletes += 1
                    found = found or not self._copy_of_local(tier)
            return found

    def _refuse(self, tier: Tier, k: str, exc: Rejected) -> None:
        """`tier`'s entry of `k` must not be used: counted, and removed unless it is intact
        but signed with another secret (see `_rejected`)."""
        if self._rejected(tier, k, exc):
            self._drop(tier, k)

    def _drop(self, tier: Tier, k: str) -> None:
        """Remove `k` from `tier` if it can; else remember that its copy must not be served."""
        try:
            tier.store.delete(k)
        except Exception:
            self._missed(tier, k)
        else:
            tier.stale.discard(k)
