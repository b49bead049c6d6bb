"""Configuration and the I/O-free parts of `Cache`: key building, validation, entries, errors.

The I/O methods live in `_async_ops.py` (written once) and `_sync_ops.py` (generated from it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from .._clock import SYSTEM_CLOCK, Clock
from .._codec import Codec, Rejected, resolve_compressor, resolve_secret, resolve_serializer
from .._codec._documents import check_object
from .._flight import Flights
from .._hashing import hash_key
from .._paths import user_cache_dir
from .._sizeof import estimate_size
from .._stores import Entry, MemoryStore
from .._stores._memory import Guard
from .._stores._url import plan_tier
from .._types import MISSING, EntryInfo, Stats, TierStats, _utc
from .._units import parse_ttl
from ..errors import (
    ConfigError,
    StoreError,
    StoreFullError,
    StorePermissionError,
    TierUnavailableError,
)
from . import _coherence as coherence_rules
from ._breaker import Breaker
from ._coherence import LOCAL

log = logging.getLogger("tiers")
Meta = dict[str, Any] | Callable[[float], dict[str, Any]] | None
"""An entry's meta, or (memoize) a callable making it from the computation's duration."""
_POLICIES = ("degrade", "raise")
_MAX_TAG = 256
_STALE_MAX = 100_000
DEFAULT_MEMORY_SIZE = "64MB"


class Tier:
    """One store in a cache, with what the cache knows about it: capabilities, counters."""

    __slots__ = (
        "batches",
        "breaker",
        "capped",
        "deletes",
        "direct",
        "epochs",
        "errors",
        "evicts",
        "expires",
        "fences",
        "foreign",
        "guardian",
        "guards",
        "hits",
        "holds_objects",
        "index",
        "infos",
        "kind",
        "lock_fallbacks",
        "locks",
        "lost_leases",
        "misses",
        "name",
        "owned",
        "pops",
        "rejected",
        "revalidates",
        "revalidating",
        "sets",
        "stale",
        "store",
        "store_links",
        "suspect",
        "touches",
        "watched",
        "witness",
    )  # fmt: skip

    def __init__(self, index: int, store: Any, owned: bool) -> None:
        self.index = index
        self.store = store
        self.owned = owned
        self.name = repr(store)
        self.holds_objects = bool(store.holds_objects)
        self.epochs = self.has("epoch")
        self.locks = self.has("acquire_lock")
        self.fences = self.has("set_if_held")  # a lock holder's write checked against its lease
        self.infos, self.pops, self.touches = self.has("info"), self.has("pop"), self.has("touch")
        self.expires, self.evicts = self.has("expire"), self.has("evict")
        self.store_links = self.has("link")  # a memory store memoize's fast path can index
        self.batches = self.has("get_many") and self.has("set_many")
        # coherence (see _coherence): the slower tier this one's copies answer to, what kind
        # of guardian this one is, whether its copies take guards, and whether it can tell
        # an unchanged entry without sending it
        self.guardian: Tier | None = None
        self.kind: str | None = None
        self.guards = self.has("due_copy")
        self.revalidates = self.has("revalidate")
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

    def has(self, capability: str) -> bool:
        return callable(getattr(self.store, capability, None))


_LASTING = (StorePermissionError, ConfigError)  # lock failures that waiting does not cure

_RENAMED = {
    "expire": "ttl", "timeout": "ttl", "default_timeout": "ttl", "expire_after": "ttl",
    "tag": "tags", "maxsize": "max_items= of a MemoryStore tier",
    "size_limit": "max_size= of a DiskStore tier",
}  # fmt: skip
"""Options of other caching libraries, and what tiers calls them."""


def unexpected_options(call: str, unexpected: Mapping[str, object]) -> str:
    """The one-sentence TypeError message for keyword arguments `call` does not take."""
    name = next(iter(unexpected))
    hint = _RENAMED.get(name)
    use = f"; use {hint}" if hint is None or "=" in hint else f"; use {hint}="
    return f"{call} got an unexpected keyword argument {name!r}" + (use if hint else "")


@dataclass(frozen=True, slots=True)
class Fence:
    """A computation holding lock `name` of `tier` as `token`: its result is stored only
    while the lease is current (a holder that lost it never overwrites a successor)."""

    tier: Tier
    name: str
    token: str
    lease: float
    since: float  # time.monotonic() when the lock was taken


class CacheCore:
    """State shared by the sync and async operations of a `Cache`."""

    def __init__(
        self,
        *tiers: object,
        ttl: float | timedelta | None = None,
        serializer: object = "pickle",
        compress: str | None = None,
        namespace: str = "",
        secret: str | bytes | None = None,
        on_tier_error: str = "degrade",
        lease: float = 30.0,
        coherence: str = "auto",
        max_age: float = coherence_rules.DEFAULT_MAX_AGE,
        name: str | None = None,
        **unexpected: NoReturn,
    ) -> None:
        if unexpected:
            raise TypeError(unexpected_options("Cache()", unexpected))
        self._ttl = parse_ttl(ttl)
        self._max_age = coherence_rules.check(coherence, max_age)
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, not {type(namespace).__qualname__!r}")
        if ":" in namespace:
            raise ConfigError(f"namespace must not contain ':' (got {namespace!r})")
        if name is not None and (not isinstance(name, str) or not name.isprintable() or not name):
            raise ConfigError(f"name must be a non-empty printable str, not {name!r}")
        if on_tier_error not in _POLICIES:
            raise ConfigError(f"on_tier_error must be 'degrade' or 'raise', not {on_tier_error!r}")
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
            raise ConfigError(f"lease must be a positive number of seconds, not {lease!r}")
        if secret is not None:
            resolve_secret(secret)  # a bad secret is reported now, not at the first write
        self._options = {
            "ttl": ttl, "serializer": serializer, "compress": compress, "namespace": namespace,
            "secret": secret, "on_tier_error": on_tier_error, "lease": lease,
            "coherence": coherence, "max_age": max_age, "name": name,
        }  # fmt: skip
        self._name = name or namespace or "default"
        self._codec = Codec(
            resolve_serializer(serializer),
            resolve_compressor(compress),
            lambda: resolve_secret(secret),
        )
        self._namespace = namespace
        self._prefix = namespace + ":"
        self._raise = on_tier_error == "raise"
        self._lease = float(lease)
        self._clock: Clock = SYSTEM_CLOCK
        openers = [plan_tier(spec) for spec in tiers]  # every tier checked before any opens
        opened: list[tuple[Any, bool]] = []
        try:
            for opener in openers or [plan_tier(spec) for spec in _default_tiers()]:
                opened.append(opener())
        except BaseException:
            for store, owned in opened:
                if owned:
                    store.close()
            raise
        self._tiers = [Tier(i, store, owned) for i, (store, owned) in enumerate(opened)]
        coherence_rules.assign(self._tiers, coherence)
        self._channels: list[coherence_rules.Channel] = []
        self._needs_bytes = any(not t.holds_objects for t in self._tiers)
        # object tiers keep what the byte tiers would give back, so that the value read (and
        # what is refused) does not depend on the tier that answers: all but pickle
        self._normalizes = self._codec.name != "pickle" and any(
            t.holds_objects for t in self._tiers
        )
        lockers = [t for t in self._tiers if t.locks]
        self._lock_tier: Tier | None = lockers[-1] if lockers else None
        self._scan_tier = next((t for t in reversed(self._tiers) if t.has("keys")), self._tiers[-1])
        self._flights = Flights()
        self._memos: weakref.WeakSet[Any] = weakref.WeakSet()  # memoized functions (stats)
        self._memo_hits = 0  # fast-path hits of memoized functions that are gone
        self._binds: dict[str, weakref.finalize[Any, Any]] = {}
        self._binds_lock = threading.Lock()
        self._misses = 0
        self._closed = False
        self._origin = os.urandom(16)  # names this cache's writes in Redis invalidations
        self._open_channels()
        # the id its writes announce under, when it listens to announcements (else None)
        self._writer: bytes | None = self._origin if self._channels else None

    def _open_channels(self) -> None:
        """Listen to the invalidations of each PUSH tier that guards faster ones."""
        for tier in self._tiers:
            if tier.kind == coherence_rules.PUSH and any(t.guardian is tier for t in self._tiers):
                try:
                    self._channels.append(coherence_rules.Channel(self, tier))
                except Exception as exc:  # the tiers above stay bypassed: slower, never stale
                    log.warning("cannot listen to invalidations from %s (%s); the "
                                "tiers above it are bypassed", tier.name, exc)  # fmt: skip

    def _close_channels(self) -> None:
        for channel in self._channels:
            with contextlib.suppress(Exception):
                channel.close()
        self._channels.clear()

    # -- keys, times, validation --------------------------------------------------------------

    def _key(self, key: object) -> str:
        """The stored key: namespace + ':' + the key (non-str keys by their content hash)."""
        if self._closed:
            self._check_open()
        if type(key) is str:
            return self._prefix + key
        if isinstance(key, str):
            return self._prefix + str(key)
        return self._prefix + hash_key(key)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")

    def _user_key(self, stored: str) -> str:
        return stored[len(self._prefix) :]

    def _expires_at(self, ttl: object) -> float | None:
        seconds = self._ttl if ttl is MISSING else parse_ttl(ttl)
        return None if seconds is None else self._clock.time() + seconds

    @staticmethod
    def _check_tags(tags: object) -> tuple[str, ...]:
        if isinstance(tags, str):
            tags = (tags,)
        if not isinstance(tags, Iterable):
            raise TypeError(f"tags must be a tuple of strings, not {type(tags).__qualname__!r}")
        out = tuple(tags)
        for tag in out:
            if not isinstance(tag, str):
                raise TypeError(f"each tag must be a str, not {type(tag).__qualname__!r}")
            if not tag or "\0" in tag or len(tag.encode("utf-8", "surrogatepass")) > _MAX_TAG:
                raise ValueError(f"a tag must be 1-{_MAX_TAG} bytes without NUL, got {tag!r}")
        return tuple(dict.fromkeys(out))

    @staticmethod
    def _check_meta(meta: object) -> dict[str, Any] | None:
        if meta is None:
            return None
        if not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a dict of JSON values, not {type(meta).__qualname__!r}")
        try:
            copied: dict[str, Any] = json.loads(json.dumps(meta, allow_nan=False))
            check_object(copied)  # what every store can read back (nesting, huge ints)
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(f"meta must be JSON-serialisable: {exc}") from exc
        return copied

    @staticmethod
    def _check_bind(bind: object) -> None:
        if bind is not None:
            try:
                weakref.ref(bind)
            except TypeError:
                raise TypeError(
                    f"bind must be an object that supports weak references, "
                    f"not {type(bind).__qualname__!r}"
                ) from None

    # -- entries ----------------------------------------------------------------------------

    def _entries(
        self, key: str, value: Any, expires_at: float | None, tags: tuple[str, ...],
        meta: dict[str, Any] | None,
    ) -> tuple[Entry, Entry | None]:  # fmt: skip
        """(entry for object tiers, entry for byte tiers); encoding errors raise here."""
        now = self._clock.time()
        encoded: Entry | None = None
        size = 0
        if self._needs_bytes or self._normalizes:
            header, body = self._codec.encode(key, value)
            size = len(header) + memoryview(body).nbytes
            encoded = Entry(body, header, now, expires_at, tags, meta, size)
            if self._normalizes:
                value = self._codec.decode(key, header, body)
        else:
            size = estimate_size(value)
        return Entry(value, b"", now, expires_at, tags, meta, size), encoded

    def _normalized(self, key: str, value: Any) -> Any:
        """`value` as every tier gives it back: what its encoding decodes to (a tuple in
        JSON is a list) for serializers that do not round-trip every object; else itself."""
        if self._codec.name == "pickle":
            return value
        header, body = self._codec.encode(key, value)
        return self._codec.decode(key, header, body)

    def _for_tier(self, tier: Tier, live: Entry, encoded: Entry | None) -> Entry:
        return live if tier.holds_objects or encoded is None else encoded

    def _decode(self, tier: Tier, key: str, entry: Entry) -> Any:
        """The value of an entry a tier returned; `Rejected` if it must not be used."""
        if tier.holds_objects:
            return entry.value
        return self._codec.decode(key, entry.header, entry.value)

    def _promotion(self, source: Tier, key: str, entry: Entry, value: Any) -> tuple[Entry, Entry]:
        """(object entry, byte entry) to copy `entry` into faster tiers, keeping its expiry."""
        live = Entry(value, b"", entry.created_at, entry.expires_at, entry.tags, entry.meta,
                     entry.size, version=entry.version)  # fmt: skip
        if not source.holds_objects:
            return live, entry
        if not self._needs_bytes:
            return live, live
        header, body = self._codec.encode(key, value)
        encoded = Entry(body, header, entry.created_at, entry.expires_at, entry.tags, entry.meta,
                        len(header) + memoryview(body).nbytes)  # fmt: skip
        return live, encoded

    def _info(self, tier: Tier, key: str, entry: Entry) -> EntryInfo:
        return EntryInfo(
            key=key, size=entry.size, created_at=_utc(entry.created_at),
            expires_at=_utc(entry.expires_at) if entry.expires_at is not None else None,
            tags=tuple(entry.tags), meta=entry.meta, tier=tier.index, store=tier.name,
        )  # fmt: skip

    # -- errors -----------------------------------------------------------------------------

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

    # -- coherence (see _coherence) ----------------------------------------------------------

    def _copy_terms(
        self, tier: Tier, k: str, copy: Entry, stamps: dict[int, int], source: Tier | None
    ) -> tuple[Entry, Guard | None, float | None]:
        """(copy, guard, due): how a copy of `k` from `source` (None: the caller's own write)
        goes into `tier`, as its guardian requires."""
        guardian = tier.guardian
        guard = due = None
        if guardian is not None:
            if guardian.kind == LOCAL and tier.guards:
                stamp = stamps.get(guardian.index)
                if stamp is None and source is None:  # the caller's write skipped a resting
                    stamp = guardian.store.epoch(k)  # guardian: its copy answers to it as is
                guard = coherence_rules.local_guard(guardian, k, stamp)
            elif guardian.kind == coherence_rules.PULL:
                if source not in (None, guardian) and copy.version is not None:
                    copy = replace(copy, version=None)  # an ETag only of the guardian's own
                if tier.guards:
                    due = self._max_age
        if tier.capped:  # a copy of what an object store below holds: kept max_age at most
            until = self._clock.time() + self._max_age
            if copy.expires_at is None or copy.expires_at > until:
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

    @staticmethod
    def _witnessed_many(tier: Tier, keys: list[str], epochs: dict[int, dict[str, int]]) -> None:
        witness = tier.witness
        if witness is not None:
            by_key = epochs.setdefault(witness.index, {})
            for k in keys:
                by_key.setdefault(k, witness.store.epoch(k))

    def _epoch_before_copy(
        self, tier: Tier, k: str, epochs: dict[int, int] | None
    ) -> dict[int, int] | None:
        """After `tier` missed (or was skipped): its epoch, where it keeps them, so that a copy
        from a slower tier is only stored if the key did not change meanwhile."""
        if not tier.epochs or tier is self._tiers[-1]:
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

    def _check_lease(self, lease: object) -> float:
        if lease is None:
            return self._lease
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
            raise ValueError(f"lease must be a positive number of seconds, not {lease!r}")
        return float(lease)

    @staticmethod
    def _check_getfile(delete: object, suffix: object, directory: object) -> None:
        if not isinstance(delete, bool):
            raise TypeError(f"delete must be True or False, not {delete!r}")
        if not isinstance(suffix, str):
            raise TypeError(f"suffix must be a str, not {type(suffix).__qualname__!r}")
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise TypeError(
                f"directory must be a path or None, not {type(directory).__qualname__!r}"
            )

    # -- stats ------------------------------------------------------------------------------

    def _stats(self, counters: list[Any]) -> Stats:
        per_tier = []
        for tier, store_counts in zip(self._tiers, counters, strict=True):
            rejected = tier.rejected + store_counts.rejected
            per_tier.append(
                TierStats(
                    store=tier.name, hits=tier.hits, misses=tier.misses, sets=tier.sets,
                    deletes=tier.deletes, evictions=store_counts.evictions,
                    expirations=store_counts.expirations, rejected=rejected, errors=tier.errors,
                    items=store_counts.items, bytes=store_counts.bytes,
                    lock_fallbacks=tier.lock_fallbacks, lost_leases=tier.lost_leases,
                    foreign=tier.foreign,
                )
            )  # fmt: skip
        # memoize's memory-tier fast path
        fast = self._memo_hits + sum(memo.hits for memo in list(self._memos))
        if fast:
            per_tier[0] = replace(per_tier[0], hits=per_tier[0].hits + fast)
        hits = sum(t.hits for t in per_tier)
        return Stats.from_tiers(hits, self._misses, tuple(per_tier))

    # -- bind -------------------------------------------------------------------------------

    def _bind(self, key: str, bind: object) -> None:
        """Delete `key` when `bind` is garbage-collected (replacing an earlier binding)."""
        with self._binds_lock:
            old = self._binds.pop(key, None)
            if old is not None:
                old.detach()
            if bind is not None:
                self._binds[key] = weakref.finalize(bind, _delete_bound, weakref.ref(self), key)

    def _unbind(self, key: str) -> None:
        if self._binds:
            self._bind(key, None)

    def _unlink_memos(self) -> None:
        """On close: memoized functions stop answering from the memory tier's slots (their
        calls raise, as every other call of a closed cache does)."""
        for memo in list(self._memos):
            memo.index.clear()

    def _unbind_all(self) -> None:
        with self._binds_lock:
            binds, self._binds = self._binds, {}
        for finalizer in binds.values():
            finalizer.detach()


def _delete_bound(cache_ref: weakref.ref[Any], key: str) -> None:
    cache = cache_ref()
    if cache is None or cache._closed:
        return
    with cache._binds_lock:
        cache._binds.pop(key, None)
    try:
        cache._delete_stored(key)
    except Exception:  # a finalizer must not raise; the entry expires with its TTL
        log.warning("could not delete bound entry %r", key)


def file_bytes(key: object, value: object) -> bytes:
    """The bytes `getfile` writes: bytes as they are, str as UTF-8, anything else refused."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(
        f"getfile needs a bytes or str value, but {key!r} holds {type(value).__qualname__!r}"
    )


def write_temp_file(data: bytes, suffix: str, directory: str | os.PathLike[str] | None) -> Path:
    """A new file (0600, in `directory` or the temp dir) holding `data`."""
    fd, name = tempfile.mkstemp(prefix="tiers-", suffix=suffix, dir=directory)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    os.close(fd)
    return Path(name)


def _default_tiers() -> tuple[object, ...]:
    """Specs of the default stack (opened, and so closed, by the cache)."""
    return (f"memory://?max_size={DEFAULT_MEMORY_SIZE}", user_cache_dir() / "default")


__all__ = ["MISSING", "CacheCore", "Tier", "file_bytes", "write_temp_file"]
