"""A cache's state and the I/O-free parts of `Cache`: options, tiers, keys, entries, stats.

The layers above it: `_policy` (the rules tiering and single-flight follow), then the I/O in
``_async/`` (written once) and ``_sync/`` (generated from it by scripts/unasync.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from .._clock import SYSTEM_CLOCK, Clock
from .._codec import Codec, resolve_compressor, resolve_secret, resolve_serializer
from .._codec._documents import check_object
from .._flight import Flights
from .._hashing import hash_key
from .._paths import user_cache_dir
from .._rules import positive_seconds
from .._sizeof import estimate_size
from .._stores import Entry
from .._stores._url import tier_opener
from .._types import MISSING, EntryInfo, Stats, TierStats, _utc
from .._units import parse_ttl
from ..errors import (
    StoreError,
)
from . import _coherence as coherence_rules
from ._direct import install as install_fast_paths
from ._freshness import Freshness, Refreshes, default_rng
from ._options import CacheOptions, unexpected_options
from ._tier import Tier
from ._usage import UsageReport, report_on_exit

log = logging.getLogger("tiers")
Meta = dict[str, Any] | Callable[[float], dict[str, Any]] | None
"""An entry's meta, or (memoize) a callable making it from the computation's duration."""
_MAX_TAG = 256
DEFAULT_MEMORY_SIZE = "64MB"


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
        options = CacheOptions(
            ttl=ttl, serializer=serializer, compress=compress, namespace=namespace,
            secret=secret, on_tier_error=on_tier_error, lease=lease, coherence=coherence,
            max_age=max_age, name=name,
        )  # fmt: skip
        self._options = options
        self._ttl = parse_ttl(ttl)
        self._max_age = float(max_age)
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
        openers = [tier_opener(spec) for spec in tiers]  # every tier checked before any opens
        opened: list[tuple[Any, bool]] = []
        try:
            for opener in openers or [tier_opener(spec) for spec in _default_tiers()]:
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
        # the byte forms writes make: plain for private tiers, if the codec has one (decision
        # 0013), and the serializer's (signed pickle) for the others
        self._plain_bytes = self._codec.plain and any(
            t.private and not t.holds_objects for t in self._tiers
        )
        self._shared_bytes = any(not t.private and not t.holds_objects for t in self._tiers)
        # object tiers keep what the byte tiers would give back, so that the value read (and
        # what is refused) does not depend on the tier that answers: all but pickle
        self._normalizes = self._codec.name != "pickle" and any(
            t.holds_objects for t in self._tiers
        )
        lockers = [t for t in self._tiers if t.can.lock]
        self._lock_tier: Tier | None = lockers[-1] if lockers else None
        self._scan_tier = next((t for t in reversed(self._tiers) if t.can.keys), self._tiers[-1])
        self._flights = Flights()
        self._refreshes = Refreshes()  # background refreshes of stale= / early= values
        self._rng = default_rng()  # XFetch's draws
        self._stale_served = self._refreshed = self._refresh_errors = 0
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
        self._uninstall_fast_paths = install_fast_paths(self)  # type: ignore[arg-type]
        self._usage = UsageReport(self._tiers)
        self._usage_at_exit = report_on_exit(self, self._usage)

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
    ) -> tuple[Entry, Entry | None, Entry | None]:  # fmt: skip
        """(entry for object tiers, entry for shared byte tiers, entry for private byte
        tiers), each byte form made only if some tier takes it: for private tiers the plain
        form of a value that needs no pickle (decision 0013), else the serializer's, which
        shared tiers always get. Encoding errors raise here."""
        now = self._clock.time()
        shared: Entry | None = None
        private: Entry | None = None
        size = 0
        if self._needs_bytes or self._normalizes:
            plain = self._codec.encode_plain(value) if self._plain_bytes else None
            if plain is not None:
                header, body = plain
                size = len(header) + memoryview(body).nbytes
                private = Entry(body, header, now, expires_at, tags, meta, size)
            if plain is None or self._shared_bytes:
                header, body = self._codec.encode(key, value)
                nbytes = len(header) + memoryview(body).nbytes
                shared = Entry(body, header, now, expires_at, tags, meta, nbytes)
                if self._normalizes:
                    value = self._codec.decode(key, header, body)
                if private is None:
                    private, size = shared, nbytes
        else:
            size = estimate_size(value)
        return Entry(value, b"", now, expires_at, tags, meta, size), shared, private

    def _normalized(self, key: str, value: Any) -> Any:
        """`value` as every tier gives it back: what its encoding decodes to (a tuple in
        JSON is a list) for serializers that do not round-trip every object; else itself."""
        if self._codec.name == "pickle":
            return value
        header, body = self._codec.encode(key, value)
        return self._codec.decode(key, header, body)

    def _for_tier(
        self, tier: Tier, live: Entry, shared: Entry | None, private: Entry | None
    ) -> Entry:
        """Which of a write's entries (`_entries`) `tier` takes."""
        if tier.holds_objects:
            return live
        entry = private if tier.private else shared
        return live if entry is None else entry

    def _info(self, tier: Tier, key: str, entry: Entry) -> EntryInfo:
        return EntryInfo(
            key=key, size=entry.size, created_at=_utc(entry.created_at),
            expires_at=_utc(entry.expires_at) if entry.expires_at is not None else None,
            tags=tuple(entry.tags), meta=entry.meta, tier=tier.index, store=tier.name,
        )  # fmt: skip

    def _check_freshness(
        self, ttl: object, stale: object, early: object, call: str
    ) -> Freshness | None:
        """A call's `stale=`/`early=` options, which need a ttl (its own or the cache's)."""
        fresh = Freshness.check(stale, early)
        if fresh is not None:
            fresh.needs_ttl(self._ttl if ttl is MISSING else parse_ttl(ttl), call)
        return fresh

    def _check_lease(self, lease: object) -> float:
        """A call's `lease` in seconds (None: the cache's)."""
        return self._lease if lease is None else positive_seconds("lease", lease)

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
        return replace(
            Stats.from_tiers(hits, self._misses, tuple(per_tier)),
            stale_served=self._stale_served + sum(m.stale_hits for m in list(self._memos)),
            refreshes=self._refreshed,
            refresh_errors=self._refresh_errors,
        )  # fmt: skip

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


__all__ = ["MISSING", "CacheCore", "file_bytes", "write_temp_file"]
