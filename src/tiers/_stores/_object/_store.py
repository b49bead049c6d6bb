"""ObjectStore: a byte store over object storage (S3, GCS, Azure, local, memory) via obstore,
or over any obspec store. See docs/object-storage.md.

The logic of every operation is written once, as a plan yielding requests (`_plans`,
`_locks`); `_run` carries them out with obstore's blocking calls, `_run_async` with its
native coroutines. Requests a plan makes together (`Many`) run concurrently.

`timeout` bounds a whole call, not each request: obstore's client bounds one request (connect
to last body byte), and a call of several (a tagged set, a lock, a delete) runs its later
requests on the pool, waited for only as long as the call has left. The O(n) calls (clear,
keys, count, expire, evict, stats) bound each request instead.

Time is the object store's (`ServerTime`, measured by `_probe` before the first operation and
every few minutes on the system clock): record expiry and lock deadlines are written and
judged on the server's clock, so machines with skewed clocks agree (see `_plans`, `_locks`).
A store given another clock (a test's `FakeClock`) is not measured: it runs on that clock
as it is (offset 0), so fake-clock tests keep exact expiry times.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from time import monotonic
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

from ..._clock import SYSTEM_CLOCK, Clock
from ..._plans import run as drive
from ..._plans import run_async as drive_async
from ..._rules import positive_seconds
from ...errors import StoreError
from .._protocol import Damage, Entry, StoreCounters, Unchanged
from .._server_time import ServerTime
from .._stripes import Stripes
from . import _locks, _plans, _probe, _scan, _verify
from ._backend import Backend, check_store, is_local, open_url, split_url
from ._paths import Layout
from ._requests import Delete, Get, List, Many, Page, Pause, Plan, Put, Request

T = TypeVar("T")
_CONCURRENCY = 16
_LATE = (TimeoutError, asyncio.TimeoutError, FutureTimeout)  # one class from Python 3.11

if sys.version_info >= (3, 11):

    async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
        async with asyncio.timeout(seconds):
            return await awaitable

else:

    async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, seconds)


class ObjectStore:
    """A store keeping one object per entry in object storage.

    `url_or_store`: ``s3://bucket/prefix``, ``gs://…``, ``az://…`` (and the other Azure forms
    obstore takes), ``file:///abs/dir``, ``memory://`` — query options and `store_options` are
    obstore's options for that store (the query's ``timeout`` and ``prefix`` are ours, and win)
    — or an obstore / obspec store object. `prefix`: a path under the URL's (or the store's)
    to keep everything in. `timeout`: seconds a call may take, all its requests together
    (none is retried; the O(n) calls bound each request), so an unreachable, frozen or
    dripping server fails a call within it. Nothing is requested before the first operation.

    No usage counters (`SupportsUsage`): object storage has no atomic increment, and adding
    to one shared count is a read and a put conditional on it, which every other process's
    put makes fail: processes closing together would retry in rounds, each costing two
    requests, and obstore's local store has no conditional put at all. Hits and misses stay
    with each process (`Cache.stats`).
    """

    holds_objects: ClassVar[bool] = False

    def __init__(
        self, url_or_store: object, *, prefix: str = "", timeout: float = 5.0,
        **store_options: Any,
    ) -> None:  # fmt: skip
        self._url: str | None = None
        self._options: dict[str, Any] = {}
        if isinstance(url_or_store, str):
            base, query = split_url(url_or_store)
            timeout = _seconds(query.pop("timeout", timeout))
            prefix = query.pop("prefix", prefix)
            self._url, self._options = base, {**query, **store_options}
            self._store = open_url(base, self._options, timeout)
        else:
            check_store(url_or_store)
            if store_options:
                raise TypeError("ObjectStore takes store options with a URL, not with a store")
            self._store = url_or_store
        if not isinstance(prefix, str):
            raise TypeError(f"ObjectStore prefix must be a str, not {type(prefix).__qualname__!r}")
        self.timeout = _seconds(timeout)
        self.prefix = prefix
        self._layout = Layout(prefix.strip("/"))
        self._conditional = not is_local(self._store)
        self._backend = Backend(self._store, repr(self))
        self._tally = _plans.Tally()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False
        self._time = ServerTime(repr(self), SYSTEM_CLOCK)
        if self._conditional:
            self._offer_locks()
            self._offer_update()

    @property
    def clock(self) -> Clock:
        """The local clock; expiry and leases are judged on the server's (see the module)."""
        return self._time.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._time.clock = clock  # (a test's clock is used as it is, never measured)

    @property
    def server_time(self) -> ServerTime:
        """This store's view of the object store's clock (its measured offset)."""
        return self._time

    def _timed(self, make: Callable[[ServerTime], Plan[T]]) -> Plan[T]:
        """The plan `make` gives for the server's time, measured first if it is due."""
        server = self._time
        if server.due():
            yield from _probe.measure(self._layout, server, self.timeout)
        return (yield from make(server))

    def __repr__(self) -> str:
        where = self._url if self._url is not None else type(self._store).__name__
        extra = "".join(
            f", {name}={value!r}" for name, value in self._options.items() if "endpoint" in name
        )
        prefix = f", prefix={self.prefix!r}" if self.prefix else ""
        return f"ObjectStore({where!r}{prefix}{extra})"

    def __reduce__(self) -> tuple[Any, ...]:
        if self._url is not None:
            return (_reopen, (self._url, self.prefix, self.timeout, self._options))
        try:
            pickle.dumps(self._store)
        except Exception as exc:
            raise TypeError(
                f"cannot pickle {self!r}: its {type(self._store).__name__} cannot be pickled "
                "(give ObjectStore a URL to make it picklable)"
            ) from exc
        return (_reopen, (self._store, self.prefix, self.timeout, {}))

    @property
    def store(self) -> Any:
        """The obstore / obspec store underneath."""
        return self._store

    @property
    def directory(self) -> Path | None:
        """For a ``file://`` URL, the directory of the store (entries under `prefix` in it)."""
        if self._url is None or not self._url.startswith("file:"):
            return None
        return Path(unquote(urlsplit(self._url).path))

    # -- running plans ----------------------------------------------------------------------

    def _run(self, plan: Plan[T], *, paged: bool = False) -> T:
        """Carry out `plan` within `timeout` (each request within it, if `paged`)."""
        self._check_open()
        if paged:
            return drive(plan, lambda request: self._perform(request, None, inline=True))
        deadline = monotonic() + self.timeout
        first = True

        def perform(request: Request) -> Any:
            nonlocal first
            inline, first = first, False
            return self._perform(request, deadline, inline=inline)

        try:
            return drive(plan, perform)
        except _LATE as exc:
            raise self._late() from exc

    def _late(self) -> StoreError:
        return StoreError(f"{self!r}: no reply within the {self.timeout} s timeout")

    def _perform(self, request: Request, deadline: float | None, *, inline: bool) -> Any:
        """One request, or several at once. `inline`: here, bounded by the client's own
        timeout (a call's first); else on the pool, waited for until `deadline` (it ends by
        the client's timeout anyway)."""
        if isinstance(request, Pause):
            time.sleep(request.seconds)
            return None
        requests = request.requests if isinstance(request, Many) else (request,)
        if inline and len(requests) <= 1:
            found = [self._backend.call(one) for one in requests]
        else:
            left = None if deadline is None else _left(deadline)
            found = list(self._pooled().map(self._backend.call, requests, timeout=left))
        return found if isinstance(request, Many) else found[0]

    def _pooled(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(8, thread_name_prefix="tiers-object-store")
            return self._pool

    async def _run_async(self, plan: Plan[T], *, paged: bool = False) -> T:
        """Carry out `plan` within `timeout` (each request within it, if `paged`): a request
        cut off is cancelled, which aborts it."""
        self._check_open()
        if paged:
            return await drive_async(plan, self._perform_async)
        try:
            return await _within(self.timeout, drive_async(plan, self._perform_async))
        except _LATE as exc:
            raise self._late() from exc

    async def _perform_async(self, request: Request) -> Any:
        if isinstance(request, Pause):
            await asyncio.sleep(request.seconds)
            return None
        if isinstance(request, Many):
            return await self._many_async(request)
        return await self._backend.call_async(request)

    async def _many_async(self, many: Many) -> list[Any]:
        limit = asyncio.Semaphore(_CONCURRENCY)

        async def one(request: Get | Put | Delete | List | Page) -> Any:
            async with limit:
                return await self._backend.call_async(request)

        return list(await asyncio.gather(*(one(request) for request in many.requests)))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")

    # -- core -------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self._run(self._timed(lambda t: _plans.get(self._layout, key, t, self._tally)))

    def set(self, key: str, entry: Entry) -> bool:
        return self._run(self._timed(lambda t: _plans.set_(self._layout, key, entry, t)))

    def delete(self, key: str) -> bool:
        return self._run(self._timed(lambda t: _plans.delete(self._layout, key, t, self._tally)))

    def clear(self, prefix: str = "") -> int:
        return self._run(self._clear(prefix), paged=True)

    def _clear(self, prefix: str) -> Plan[int]:
        return self._timed(
            lambda t: _plans.clear(self._layout, prefix, t, self._tally, self._conditional)
        )

    def stats(self) -> StoreCounters:
        """Counters of this store object; items and bytes from a listing (O(n))."""
        return self._run(_plans.stats(self._layout, self._tally), paged=True)

    def close(self) -> None:
        self._closed = True
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    async def get_async(self, key: str) -> Entry | None:
        return await self._run_async(
            self._timed(lambda t: _plans.get(self._layout, key, t, self._tally))
        )

    async def set_async(self, key: str, entry: Entry) -> bool:
        return await self._run_async(
            self._timed(lambda t: _plans.set_(self._layout, key, entry, t))
        )

    async def delete_async(self, key: str) -> bool:
        return await self._run_async(
            self._timed(lambda t: _plans.delete(self._layout, key, t, self._tally))
        )

    async def clear_async(self, prefix: str = "") -> int:
        return await self._run_async(self._clear(prefix), paged=True)

    async def stats_async(self) -> StoreCounters:
        return await self._run_async(_plans.stats(self._layout, self._tally), paged=True)

    async def close_async(self) -> None:
        self.close()

    # -- capabilities -----------------------------------------------------------------------

    def info(self, key: str) -> Entry | None:
        """The entry without its value: a ranged read of the record's first bytes."""
        return self._run(self._timed(lambda t: _plans.info(self._layout, key, t, self._tally)))

    def revalidate(self, key: str, version: str | None) -> Entry | Unchanged | None:
        """`UNCHANGED` if the entry's object still has `version` (a copy's `Entry.version`):
        one conditional read (If-None-Match) that transfers no value. Else what `get`
        returns: the entry as it is now (with its new version), or None (gone, expired,
        damaged). `UNCHANGED` says nothing of expiry: the copy's `expires_at` is the stored
        one (rewriting it changes the version), for the caller to check."""
        return self._run(self._revalidate(key, version))

    def _revalidate(self, key: str, version: str | None) -> Plan[Entry | Unchanged | None]:
        return self._timed(lambda t: _plans.revalidate(self._layout, key, version, t, self._tally))

    def touch(self, key: str, expires_at: float | None) -> bool:
        return self._run(self._touch(key, expires_at))

    def _touch(self, key: str, expires_at: float | None) -> Plan[bool]:
        return self._timed(
            lambda t: _plans.touch(self._layout, key, expires_at, t, self._tally, self._conditional)
        )

    def expire(self) -> int:
        return self._run(self._expire(), paged=True)

    def _expire(self) -> Plan[int]:
        return self._timed(lambda t: _plans.expire(self._layout, t, self._tally, self._conditional))

    def evict(self, tag: str, prefix: str = "") -> int:
        return self._run(self._evict(tag, prefix), paged=True)

    def _evict(self, tag: str, prefix: str) -> Plan[int]:
        return self._timed(lambda t: _plans.evict(self._layout, tag, prefix, t))

    def keys(self, prefix: str = "", tag: str | None = None) -> Iterator[str]:
        """Live keys (a listing, then one read per entry: O(n) requests)."""
        return iter(self._run(self._keys(prefix, tag), paged=True))

    async def keys_async(self, prefix: str = "", tag: str | None = None) -> AsyncIterator[str]:
        for key in await self._run_async(self._keys(prefix, tag), paged=True):
            yield key

    def _keys(self, prefix: str, tag: str | None) -> Plan[list[str]]:
        return self._timed(lambda t: _plans.keys(self._layout, prefix, tag, t, self._tally))

    def scan(self, prefix: str = "", tag: str | None = None) -> Iterator[tuple[str, Entry]]:
        """Every entry present under `prefix` (carrying `tag`), expired ones included, with
        its metadata and no value: a listing page by page (1000 objects), each record's
        first bytes by a ranged read (`_scan`), never its value. `Entry.accessed_at` is None
        (object storage does not record reads)."""
        walk = _scan.Walk(self._layout, prefix, tag)
        while not walk.done:
            yield from self._run(self._timed(walk.page), paged=True)

    async def scan_async(
        self, prefix: str = "", tag: str | None = None
    ) -> AsyncIterator[tuple[str, Entry]]:
        walk = _scan.Walk(self._layout, prefix, tag)
        while not walk.done:
            for item in await self._run_async(self._timed(walk.page), paged=True):
                yield item

    def verify(self, fix: bool = False) -> Iterator[Damage]:
        """Read every record in full and check the tag markers and the locks folder
        (`_verify`); with `fix`, remove or repair each damage before yielding it. Records
        have no checksum: a bit flipped inside a value that still parses is not found here."""
        check = _verify.Check(self._layout, fix)
        while not check.done:
            yield from self._run(self._timed(check.page), paged=True)

    def count(self, prefix: str = "") -> int:
        return len(self._run(self._keys(prefix, None), paged=True))

    def get_many(self, keys: list[str]) -> list[Entry | None]:
        return self._run(self._timed(lambda t: _plans.get_many(self._layout, keys, t, self._tally)))

    def set_many(self, items: list[tuple[str, Entry]]) -> None:
        self._run(self._timed(lambda t: _plans.set_many(self._layout, items, t)))

    async def info_async(self, key: str) -> Entry | None:
        return await self._run_async(
            self._timed(lambda t: _plans.info(self._layout, key, t, self._tally))
        )

    async def revalidate_async(self, key: str, version: str | None) -> Entry | Unchanged | None:
        return await self._run_async(self._revalidate(key, version))

    async def touch_async(self, key: str, expires_at: float | None) -> bool:
        return await self._run_async(self._touch(key, expires_at))

    async def expire_async(self) -> int:
        return await self._run_async(self._expire(), paged=True)

    async def evict_async(self, tag: str, prefix: str = "") -> int:
        return await self._run_async(self._evict(tag, prefix), paged=True)

    async def count_async(self, prefix: str = "") -> int:
        return len(await self._run_async(self._keys(prefix, None), paged=True))

    async def get_many_async(self, keys: list[str]) -> list[Entry | None]:
        return await self._run_async(
            self._timed(lambda t: _plans.get_many(self._layout, keys, t, self._tally))
        )

    async def set_many_async(self, items: list[tuple[str, Entry]]) -> None:
        await self._run_async(self._timed(lambda t: _plans.set_many(self._layout, items, t)))

    # -- updates: only where the store has conditional puts (not obstore's LocalStore) -------

    # Set on the object (`_offer_update`) only where there are conditional puts, as the locks.
    update: Callable[[str, Callable[[Entry | None], Entry | None]], Entry | None]
    """Replace the live entry of a key by ``change(entry)`` atomically among every client of
    the store (`SupportsUpdate`): a read, then a put conditional on the e_tag read (create-
    only if there was none); one that fails its condition lost a race, and the update starts
    again after a jittered wait (up to 100 attempts; `conflicts` counts the retries). Each
    request is bounded by the client's timeout, as in the O(n) calls. Threads (coroutines)
    of this store object updating one key take turns (`Stripes`): they race only other
    clients. The write is a put like `set`'s: a new e_tag, tag markers indexed."""
    update_async: Callable[
        [str, Callable[[Entry | None], Entry | None]], Coroutine[Any, Any, Entry | None]
    ]

    def _offer_update(self) -> None:
        self._turns = Stripes()
        self.update, self.update_async = self._update, self._update_async

    def _updating(self, key: str, change: Callable[[Entry | None], Entry | None]
                  ) -> Plan[Entry | None]:  # fmt: skip
        return self._timed(
            lambda t: _plans.update(self._layout, key, change, t, self._tally, repr(self))
        )

    def _update(self, key: str, change: Callable[[Entry | None], Entry | None]) -> Entry | None:
        with self._turns.of(key):  # this object's threads take turns: they race others only
            return self._run(self._updating(key, change), paged=True)

    async def _update_async(
        self, key: str, change: Callable[[Entry | None], Entry | None]
    ) -> Entry | None:
        async with self._turns.of_async(key):
            return await self._run_async(self._updating(key, change), paged=True)

    @property
    def conflicts(self) -> int:
        """Attempts of `update` by this store object that lost a race (another client wrote
        the key between its read and its put) and were retried."""
        return self._tally.conflicts

    # -- locks: only where the store has conditional puts (not obstore's LocalStore) ---------

    # Set on the object (`_offer_locks`) only where there are locks, so that a store without
    # them has no such attribute: ``hasattr`` and ``isinstance(store, SupportsLocks)`` say so
    # (a property raising AttributeError would still make `isinstance` say yes).
    acquire_lock: Callable[[str, str, float], bool]
    renew_lock: Callable[[str, str, float], bool]
    release_lock: Callable[[str, str], bool]
    acquire_lock_async: Callable[[str, str, float], Coroutine[Any, Any, bool]]
    renew_lock_async: Callable[[str, str, float], Coroutine[Any, Any, bool]]
    release_lock_async: Callable[[str, str], Coroutine[Any, Any, bool]]
    set_if_held: Callable[[str, Entry, str, str], bool]
    """Store an entry only while a token holds a lock with a running lease (fenced: see
    `SupportsFencedWrites` and `_plans.set_if_held`)."""
    set_if_held_async: Callable[[str, Entry, str, str], Coroutine[Any, Any, bool]]

    def _offer_locks(self) -> None:
        self.acquire_lock, self.acquire_lock_async = self._acquire_lock, self._acquire_lock_async
        self.renew_lock, self.renew_lock_async = self._renew_lock, self._renew_lock_async
        self.release_lock, self.release_lock_async = self._release_lock, self._release_lock_async
        self.set_if_held, self.set_if_held_async = self._set_if_held, self._set_if_held_async

    def _acquire(self, name: str, token: str, lease: float) -> Plan[bool]:
        return self._timed(lambda t: _locks.acquire(self._layout, name, token, lease, t.now()))

    def _renew(self, name: str, token: str, lease: float) -> Plan[bool]:
        return self._timed(lambda t: _locks.renew(self._layout, name, token, lease, t.now()))

    def _fenced(self, key: str, entry: Entry, name: str, token: str) -> Plan[bool]:
        return self._timed(lambda t: _plans.set_if_held(self._layout, key, entry, name, token, t))

    def _acquire_lock(self, name: str, token: str, lease: float) -> bool:
        return self._run(self._acquire(name, token, lease))

    def _renew_lock(self, name: str, token: str, lease: float) -> bool:
        return self._run(self._renew(name, token, lease))

    def _release_lock(self, name: str, token: str) -> bool:
        return self._run(_locks.release(self._layout, name, token))

    def _set_if_held(self, key: str, entry: Entry, name: str, token: str) -> bool:
        return self._run(self._fenced(key, entry, name, token))

    async def _acquire_lock_async(self, name: str, token: str, lease: float) -> bool:
        return await self._run_async(self._acquire(name, token, lease))

    async def _renew_lock_async(self, name: str, token: str, lease: float) -> bool:
        return await self._run_async(self._renew(name, token, lease))

    async def _release_lock_async(self, name: str, token: str) -> bool:
        return await self._run_async(_locks.release(self._layout, name, token))

    async def _set_if_held_async(self, key: str, entry: Entry, name: str, token: str) -> bool:
        return await self._run_async(self._fenced(key, entry, name, token))


def _left(deadline: float) -> float:
    """Seconds until `deadline`; a `TimeoutError` if it has passed."""
    left = deadline - monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _seconds(value: object) -> float:
    """A positive timeout in seconds (a number, or a numeric string from a URL)."""
    return positive_seconds("ObjectStore timeout", value, text=True)


def _reopen(
    url_or_store: object, prefix: str, timeout: float, options: Mapping[str, Any]
) -> ObjectStore:
    return ObjectStore(url_or_store, prefix=prefix, timeout=timeout, **options)
