"""A cache's calls, added to the persistent usage counters of the stores that keep them.

A `Tier` counts this process's hits, misses, sets, deletes and errors. A store with
`SupportsUsage` (DiskStore, FolderStore, RedisStore) keeps totals across processes, which
``tiers stats`` shows; each cache adds what its tiers counted since it last did when it
closes, and, for a cache never closed, when it is collected or its process exits. Nothing is
added on the hot path. A store that fails to take the counts loses them (logged), never the
caller's call.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

from .._stores._protocol import SupportsUsage, Usage, implements
from ._tier import Tier

log = logging.getLogger("tiers")

_FIELDS = ("hits", "misses", "sets", "deletes", "errors")


class UsageReport:
    """What each counting tier has reported so far, and the reporting of the rest."""

    __slots__ = ("__weakref__", "_sent", "_tiers")

    def __init__(self, tiers: Sequence[Tier]) -> None:
        self._tiers = [t for t in tiers if implements(t.store, SupportsUsage)]
        self._sent = {t.index: (0, 0, 0, 0, 0) for t in self._tiers}

    def __bool__(self) -> bool:
        return bool(self._tiers)

    def _pending(self) -> list[tuple[Tier, Usage]]:
        out = []
        for tier in self._tiers:
            now = tuple(getattr(tier, name) for name in _FIELDS)
            sent = self._sent[tier.index]
            delta = Usage(*(a - b for a, b in zip(now, sent, strict=True)))
            if delta:
                out.append((tier, delta))
                self._sent[tier.index] = now
        return out

    def flush(self) -> None:
        for tier, delta in self._pending():
            try:
                tier.store.add_usage(_stamped(tier, delta))
            except Exception as exc:  # counters must never fail a close
                log.debug("tiers: usage counters of %s not saved: %r", tier.name, exc)

    async def flush_async(self) -> None:
        for tier, delta in self._pending():
            try:
                await tier.store.add_usage_async(_stamped(tier, delta))
            except Exception as exc:
                log.debug("tiers: usage counters of %s not saved: %r", tier.name, exc)


def _stamped(tier: Tier, delta: Usage) -> Usage:
    return Usage(
        delta.hits, delta.misses, delta.sets, delta.deletes, delta.errors,
        since=tier.store.clock.time(),
    )  # fmt: skip


def report_on_exit(owner: Any, report: UsageReport) -> weakref.finalize[Any, Any] | None:
    """Flush `report` when `owner` is collected or at exit (None if nothing counts)."""
    if not report:
        return None
    return weakref.finalize(owner, report.flush)


def uncounted(cache: Any) -> Any:
    """`cache`, its calls never added to its stores' usage counters (what ``tiers bench``
    uses, so that measuring a store leaves its hit ratio alone)."""
    finalizer = cache._usage_at_exit
    if finalizer is not None:
        finalizer.detach()
    cache._usage = UsageReport(())
    cache._usage_at_exit = None
    return cache
