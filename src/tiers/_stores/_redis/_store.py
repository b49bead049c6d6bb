"""RedisStore: entries in Redis (or a Redis Cluster) with native TTL, tags and leased locks.

Each entry is one string, ``_wire.pack(entry)``, at ``<prefix>e:<key>``: a read is one plain
GET. Expiry is decided by the record's ``expires_at`` on the server's clock (each process
converts with the offset it measures, `.._server_time`); the server's TTL (that plus `_slack`)
only reclaims memory. Tags are an index of sets that may hold stale
members; readers check the record. Every write announces what it changed on the store's
invalidation channel, which `watch` listens to (`_invalidation`). See docs/redis.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from time import monotonic
from typing import Any, ClassVar, Literal, TypeVar

from ..._clock import SYSTEM_CLOCK, Clock
from ..._plans import run, run_async
from ...errors import StoreError
from .. import _wire
from .._protocol import Damage, Entry, StoreCounters, Usage
from .._server_time import ServerTime
from .._stripes import Stripes
from . import _clients, _usage
from . import _scripts as lua
from ._deadline import DEADLINE, budget
from ._errors import scrub
from ._invalidation import Invalidation, Watch, channel
from ._keys import KeySpace
from ._ops import ChangeFailed, Operations
from ._perform import perform, perform_async
from ._plans import Plan
from ._records import read
from ._scan import Walk
from ._verify import Check

T = TypeVar("T")
_DEFAULT_URL = "redis://127.0.0.1:6379/0"
_LATE = (TimeoutError, asyncio.TimeoutError)  # one class from Python 3.11
_start, _end = DEADLINE.set, DEADLINE.reset
_unpack = _wire.unpack


class RedisStore:
    """A byte store in Redis: shared by every process and machine that reaches the server.

    `url_or_client`: a ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
    ``rediss+cluster://`` or ``redis+sentinel://`` URL (query options ``prefix`` and
    ``timeout`` are read here, the rest go to redis-py), or a redis-py client, sync or
    asyncio, single, cluster or Sentinel-managed. Nothing connects until the first call.
    `timeout` is each call's budget, connect included (not a per-read timeout): a server
    that is down, frozen or dripping its reply fails the call within it, as a `StoreError`.
    The O(n) calls (clear, keys, count, expire, evict, stats, a large set_many) get it once
    more for each further 1000 keys they go through.

    Every write (set, set_many, update, delete, pop, touch, evict, clear; not expire, whose
    copies expire by themselves) publishes what it changed on the channel ``<prefix>i``, for
    the `watch` of other processes; `origin` tells them apart.
    """

    holds_objects: ClassVar[bool] = False
    records_access: ClassVar[bool] = True
    """`scan` gives `Entry.accessed_at` from the key's idle time (None under an LFU eviction
    policy); any read counts, walks of tiers' own (scan, verify) included."""

    def __init__(
        self,
        url_or_client: object = _DEFAULT_URL,
        *,
        prefix: str = "tiers:",
        timeout: float = 0.5,
    ) -> None:
        redis = _clients.redis_module()
        self._errors = (redis.exceptions.RedisError, redis.cluster.RedisClusterException, OSError)
        self._injected_sync: Any = None
        self._injected_async: Any = None
        if isinstance(url_or_client, str):
            target, url_prefix, url_timeout = _clients.parse_url(url_or_client)
            prefix = prefix if url_prefix is None else url_prefix
            timeout = timeout if url_timeout is None else url_timeout
        else:
            target = _clients.from_client(url_or_client)
            is_async = type(url_or_client).__module__.startswith("redis.asyncio")
            if is_async:
                self._injected_async = url_or_client
            else:
                self._injected_sync = url_or_client
        if not isinstance(prefix, str):
            raise TypeError(f"RedisStore prefix must be a str, not {type(prefix).__qualname__!r}")
        self._setup(target, prefix, _clients.check_timeout(timeout), 1.0)

    def _setup(self, target: _clients.Target, prefix: str, timeout: float, slack: float) -> None:
        self._target = target
        self.prefix = prefix
        self.timeout = timeout
        self._keys = KeySpace(prefix)
        self._entries = self._keys.entries
        refused = _clients.redis_module().exceptions.ResponseError
        self._ops = Operations(self._keys, slack, refused, cluster=target.cluster)
        self._ops.where = target.where
        self._time = self._ops.time = ServerTime(f"Redis at {target.where}", SYSTEM_CLOCK)
        self.origin = os.urandom(16)
        """This store object's id in the messages it publishes (see `watch`)."""
        self._channel = channel(prefix, target)
        self._ops.channel, self._ops.origin = self._channel, self.origin
        self._watches: list[Watch] = []
        self._sync: Any = self._injected_sync
        self._async: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._expirations = 0
        self._turns = Stripes()

    @property
    def clock(self) -> Clock:
        """This process's clock, which callers' expiry times are on. Records and leases are
        on the server's: the offset between the two is measured with ``TIME`` before the
        first call and every 5 minutes (never on another clock than the system's: a fake
        test clock is taken as the server's and ages entries as it advances)."""
        return self._time.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._time.clock = clock

    @property
    def _publish(self) -> bool:
        """Whether writes are announced (False only to measure what announcing costs)."""
        return self._ops.channel is not None

    @_publish.setter
    def _publish(self, on: bool) -> None:
        self._ops.channel = self._channel if on else None

    @property
    def _slack(self) -> float:
        """Seconds the server keeps a record past its expiry (clock skew, fake clocks)."""
        return self._ops.slack

    @_slack.setter
    def _slack(self, seconds: float) -> None:
        self._ops.slack = float(seconds)

    @classmethod
    def _restore(
        cls,
        target: _clients.Target,
        prefix: str,
        timeout: float,
        slack: float,
        publish: bool = True,
    ) -> RedisStore:
        store = cls.__new__(cls)
        redis = _clients.redis_module()
        store._errors = (redis.exceptions.RedisError, redis.cluster.RedisClusterException, OSError)
        store._injected_sync = store._injected_async = None
        store._setup(target, prefix, timeout, slack)
        store._publish = publish
        return store

    def __reduce__(self) -> tuple[Any, ...]:
        """Configuration only: a copy reconnects to the same server, prefix and timeout (with
        an origin of its own; no watch)."""
        config = (self._target, self.prefix, self.timeout, self._slack, self._publish)
        return (RedisStore._restore, config)

    def __repr__(self) -> str:
        kind = "cluster " if self._target.cluster else ""
        return f"RedisStore({kind}{self._target.where}, prefix={self.prefix!r})"

    # -- plumbing -------------------------------------------------------------------------

    def _failure(self, action: str, exc: BaseException | str) -> StoreError:
        """The error to raise: it names the server, the action and the error's kind only —
        redis-py's text may quote the command, values included, so it is replaced in every
        redis-py exception of the chain (`_errors`), which stays as the cause."""
        kind = exc if isinstance(exc, str) else scrub(exc)
        return StoreError(f"Redis at {self._target.where} failed to {action}: {kind}")

    def _late(self, action: str) -> StoreError:
        return self._failure(action, f"no reply within the {self.timeout} s timeout")

    def _client(self) -> Any:
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = _clients.build_sync(self._target, self.timeout)
                client = self._sync
        return client

    def _run(self, plan: Callable[[float], Plan[T]], action: str, *, paged: bool = False) -> T:
        """Run ``plan(now)`` — now on the server's clock, measured first when due — by the
        deadline (extended per further page of work if `paged`)."""
        token = DEADLINE.set(monotonic() + self.timeout)
        try:
            client = self._client()
            if self._time.due():
                self._measure(client)
            steps = perform(client, self._target.cluster, self._extend if paged else None)
            return run(plan(self._time.now()), steps)
        except self._errors as exc:
            raise self._failure(action, exc) from exc
        finally:
            DEADLINE.reset(token)

    def _measure(self, client: Any) -> None:
        """Read the server's clock (when `ServerTime` says it is due)."""
        run(self._ops.measure(), perform(client, self._target.cluster))

    async def _measure_async(self, client: Any) -> None:
        await run_async(self._ops.measure(), perform_async(client, self._target.cluster))

    def _extend(self) -> None:
        DEADLINE.set((DEADLINE.get() or monotonic()) + self.timeout)

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is not None:
            return found[0]
        client, owned = self._injected_async, False
        if client is None or any(c is client for c, _ in self._async.values()):
            client, owned = _clients.build_async(self._target, self.timeout), True
        guard = loop.create_task(_close_with_loop(client)) if owned else None
        self._async[loop] = (client, guard)
        return client

    def _timed(self, client: Any) -> bool:
        """Whether calls on `client` need a timer: its connections are not ours (a cluster
        makes its own; an injected client's are the caller's), so the deadline is unseen."""
        return self._target.cluster or client is self._injected_async

    async def _run_async(
        self, plan: Callable[[float], Plan[T]], action: str, *, paged: bool = False
    ) -> T:
        """Run ``plan(now)`` — now on the server's clock, measured first when due — by the
        deadline (extended per further page of work if `paged`)."""
        token = DEADLINE.set(monotonic() + self.timeout)
        try:
            client, cluster = self._async_client(), self._target.cluster
            if not self._timed(client):
                if self._time.due():
                    await self._measure_async(client)
                steps = perform_async(client, cluster, self._extend if paged else None)
                return await run_async(plan(self._time.now()), steps)
            async with budget(self.timeout) as timer:

                def both() -> None:
                    self._extend()
                    timer.reschedule(DEADLINE.get())

                if self._time.due():
                    await self._measure_async(client)
                steps = perform_async(client, cluster, both if paged else None)
                return await run_async(plan(self._time.now()), steps)
        except _LATE as exc:
            raise self._late(action) from exc
        except self._errors as exc:
            raise self._failure(action, exc) from exc
        finally:
            DEADLINE.reset(token)

    def _read(self, data: bytes | None) -> Entry | Literal[False] | None:
        """The live entry; None for a miss; False for a damaged record (to remove)."""
        if data is None:
            return None
        try:
            return self._time.local(read(data, self._time.now()))
        except _wire.DamagedRecord:
            self._ops.damaged()
            return False

    # -- core -----------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """One GET, by the deadline; a damaged record reads as a miss and is removed (if
        the server lets us: a read-only replica does not). `_read`, written out: this is
        the path every cache miss above takes, so it is not a plan, which would double the
        time spent in Python (about 2.4 → 5 µs a call here, 3 → 5.5 µs for `get_async`)."""
        redis_key = self._entries + key.encode("utf-8", "surrogatepass")
        token = _start(monotonic() + self.timeout)
        try:
            client = self._sync or self._client()
            if self._time.due():
                self._measure(client)
            data = client.get(redis_key)
            if data is None:
                return None
            try:
                entry = _unpack(data)[0]
            except _wire.DamagedRecord:
                self._ops.damaged()
                with contextlib.suppress(*self._errors):
                    client.delete(redis_key)
                return None
        except self._errors as exc:
            raise self._failure("get", exc) from exc
        finally:
            _end(token)
        expires = entry.expires_at
        if expires is not None and expires <= self._time.now():
            return None
        return self._time.local(entry)

    async def get_async(self, key: str) -> Entry | None:
        redis_key = self._entries + key.encode("utf-8", "surrogatepass")
        token = _start(monotonic() + self.timeout)
        try:
            client = self._async_client()
            if self._timed(client):
                async with budget(self.timeout):
                    if self._time.due():
                        await self._measure_async(client)
                    return await self._fetch_async(client, redis_key)
            if self._time.due():
                await self._measure_async(client)
            data = await client.get(redis_key)  # _fetch_async, written out
            if data is None:
                return None
            try:
                entry = _unpack(data)[0]
            except _wire.DamagedRecord:
                self._ops.damaged()
                with contextlib.suppress(*self._errors):
                    await client.delete(redis_key)
                return None
        except _LATE as exc:
            raise self._late("get") from exc
        except self._errors as exc:
            raise self._failure("get", exc) from exc
        finally:
            _end(token)
        expires = entry.expires_at
        if expires is not None and expires <= self._time.now():
            return None
        return self._time.local(entry)

    async def _fetch_async(self, client: Any, redis_key: bytes) -> Entry | None:
        found = self._read(await client.get(redis_key))
        if found is False:
            with contextlib.suppress(*self._errors):
                await client.delete(redis_key)
            return None
        return found

    def set(self, key: str, entry: Entry) -> bool:
        return self._run(lambda now: self._ops.set(key, entry, now), "set")

    async def set_async(self, key: str, entry: Entry) -> bool:
        return await self._run_async(lambda now: self._ops.set(key, entry, now), "set")

    def update(self, key: str, change: Callable[[Entry | None], Entry | None]) -> Entry | None:
        """Replace the live entry of `key` by ``change(entry)`` atomically among every client
        of the server (`SupportsUpdate`): a GET, then a script writing only if the record is
        still the one read, else answering the record there now, computed on again (at once
        the first time, then after jittered waits and a new GET; up to 100 attempts, each by
        the deadline; `conflicts` counts the retries). Threads (coroutines) of this store
        object updating one key take turns (`Stripes`): they race only other clients. The
        write is indexed and announced as `set`'s. One key, one slot: the same on a cluster.
        What `change` raises goes through as it is (never a `StoreError`)."""
        with self._turns.of(key):
            try:
                return self._run(
                    lambda now: self._ops.update(key, change, now), "update", paged=True
                )
            except ChangeFailed as failed:
                error = failed.error
        raise error  # as `change` raised it (out of the except: its context stays its own)

    async def update_async(
        self, key: str, change: Callable[[Entry | None], Entry | None]
    ) -> Entry | None:
        async with self._turns.of_async(key):
            try:
                return await self._run_async(
                    lambda now: self._ops.update(key, change, now), "update", paged=True
                )
            except ChangeFailed as failed:
                error = failed.error
        raise error

    @property
    def conflicts(self) -> int:
        """Attempts of `update` by this store object that lost a race (another client wrote
        the key between its read and its write) and were retried."""
        return self._ops.conflicts

    def delete(self, key: str) -> bool:
        return self._run(lambda now: self._ops.delete(key, now), "delete")

    async def delete_async(self, key: str) -> bool:
        return await self._run_async(lambda now: self._ops.delete(key, now), "delete")

    def clear(self, prefix: str = "") -> int:
        """Remove the entries under `prefix` (a SCAN: O(n)); how many were live."""
        return self._run(lambda now: self._ops.clear(prefix, now), "clear", paged=True)

    async def clear_async(self, prefix: str = "") -> int:
        return await self._run_async(lambda now: self._ops.clear(prefix, now), "clear", paged=True)

    def stats(self) -> StoreCounters:
        """Items and bytes by a full SCAN (O(n)); Redis does its own evicting, not counted."""
        items, size = self._run(lambda _now: self._ops.sizes(), "read stats", paged=True)
        return StoreCounters(
            expirations=self._expirations, rejected=self._ops.rejected, items=items, bytes=size
        )

    async def stats_async(self) -> StoreCounters:
        items, size = await self._run_async(
            lambda _now: self._ops.sizes(), "read stats", paged=True
        )
        return StoreCounters(
            expirations=self._expirations, rejected=self._ops.rejected, items=items, bytes=size
        )

    def watch(self, on_change: Callable[[Invalidation], object]) -> Watch:
        """Listen to the writes of every store on this server (or cluster) and prefix, this
        one's included (`Invalidation.origin` is `origin`): a daemon thread with a connection
        of its own calls ``on_change(event)`` for each — quickly, please; what it raises is
        logged. The thread health-checks its connection and reconnects, reporting "lost" as
        soon as the channel is suspected (a dropped connection at once, a silent one within
        1.5 s) and "back" once subscribed again; the first subscription reports "back" too.
        `close()` the watch, or the store, to stop it."""
        watch = Watch(self._target, self.timeout, self._channel, on_change)
        with self._lock:
            self._watches = [w for w in self._watches if not w.closed] + [watch]
        return watch

    def close(self) -> None:
        """Close the clients this store made (an injected client stays open) and its watches."""
        with self._lock:
            client, self._sync = self._sync, self._injected_sync
            clients = list(self._async.items())
            self._async.clear()
            watches, self._watches = self._watches, []
        for watch in watches:
            watch.close()
        if client is not None and client is not self._injected_sync:
            _close_sync(client)
        for loop, (_client, guard) in clients:
            if guard is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(guard.cancel)

    async def close_async(self) -> None:
        found = self._async.pop(asyncio.get_running_loop(), None)
        if found is not None and found[1] is not None:
            found[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await found[1]
        self.close()

    # -- capabilities ---------------------------------------------------------------------

    def info(self, key: str) -> Entry | None:
        return self._run(lambda now: self._ops.info(key, now), "get")

    async def info_async(self, key: str) -> Entry | None:
        return await self._run_async(lambda now: self._ops.info(key, now), "get")

    def pop(self, key: str) -> Entry | None:
        return self._run(lambda now: self._ops.pop(key, now), "pop")

    async def pop_async(self, key: str) -> Entry | None:
        return await self._run_async(lambda now: self._ops.pop(key, now), "pop")

    def touch(self, key: str, expires_at: float | None) -> bool:
        return self._run(lambda now: self._ops.touch(key, expires_at, now), "touch")

    async def touch_async(self, key: str, expires_at: float | None) -> bool:
        return await self._run_async(lambda now: self._ops.touch(key, expires_at, now), "touch")

    def expire(self) -> int:
        """Remove the entries whose expiry passed (a SCAN: O(n)); how many."""
        removed = self._run(self._ops.expire, "expire", paged=True)
        self._expirations += removed
        return removed

    async def expire_async(self) -> int:
        removed = await self._run_async(self._ops.expire, "expire", paged=True)
        self._expirations += removed
        return removed

    def evict(self, tag: str, prefix: str = "") -> int:
        return self._run(lambda now: self._ops.evict(tag, prefix, now), "evict", paged=True)

    async def evict_async(self, tag: str, prefix: str = "") -> int:
        return await self._run_async(
            lambda now: self._ops.evict(tag, prefix, now), "evict", paged=True
        )

    def keys(self, prefix: str = "", tag: str | None = None) -> Iterator[str]:
        """Live keys under `prefix` (carrying `tag`): a SCAN, or the tag's set, checked."""
        return iter(
            self._run(lambda now: self._ops.keys_of(prefix, tag, now), "list keys", paged=True)
        )

    async def keys_async(self, prefix: str = "", tag: str | None = None) -> AsyncIterator[str]:
        for key in await self._run_async(
            lambda now: self._ops.keys_of(prefix, tag, now), "list keys", paged=True
        ):
            yield key

    def scan(self, prefix: str = "", tag: str | None = None) -> Iterator[tuple[str, Entry]]:
        """Every entry present under `prefix` (carrying `tag`), expired ones included, with
        its metadata and no value: pages of 500 keys, each one SCAN step and one pipeline
        reading the records' heads, never their bodies (`_scan`). `Entry.accessed_at` is
        the key's last access by anyone, this store's own walks included (Redis's idle
        time); None under an LFU ``maxmemory-policy``. Each page is a call by the deadline."""
        walk = Walk(self._ops, prefix, tag)
        while not walk.done:
            yield from self._run(walk.page, "scan", paged=True)

    async def scan_async(
        self, prefix: str = "", tag: str | None = None
    ) -> AsyncIterator[tuple[str, Entry]]:
        walk = Walk(self._ops, prefix, tag)
        while not walk.done:
            for item in await self._run_async(walk.page, "scan", paged=True):
                yield item

    def count(self, prefix: str = "") -> int:
        return self._run(lambda now: self._ops.count(prefix, now), "count", paged=True)

    async def count_async(self, prefix: str = "") -> int:
        return await self._run_async(lambda now: self._ops.count(prefix, now), "count", paged=True)

    def get_many(self, keys: list[str]) -> list[Entry | None]:
        """One MGET (split by slot on a cluster)."""
        return self._run(lambda now: self._ops.get_many(keys, now), "get")

    async def get_many_async(self, keys: list[str]) -> list[Entry | None]:
        return await self._run_async(lambda now: self._ops.get_many(keys, now), "get")

    def set_many(self, items: list[tuple[str, Entry]]) -> None:
        """One pipeline (no transaction)."""
        self._run(lambda now: self._ops.set_many(items, now), "set", paged=True)

    async def set_many_async(self, items: list[tuple[str, Entry]]) -> None:
        await self._run_async(lambda now: self._ops.set_many(items, now), "set", paged=True)

    # -- usage and verify -----------------------------------------------------------------

    def usage(self) -> Usage:
        """The usage counters every process added (one hash, ``<prefix>u``)."""
        return self._run(lambda _now: _usage.read(self._keys, self._time), "read usage")

    async def usage_async(self) -> Usage:
        return await self._run_async(lambda _now: _usage.read(self._keys, self._time), "read usage")

    def add_usage(self, usage: Usage) -> None:
        """Add `usage` to the counters, atomically (one script)."""
        self._run(lambda now: _usage.add(self._keys, usage, now, self._time), "add usage")

    async def add_usage_async(self, usage: Usage) -> None:
        await self._run_async(
            lambda now: _usage.add(self._keys, usage, now, self._time), "add usage"
        )

    def reset_usage(self) -> None:
        """Zero the usage counters, and this store object's expirations and rejected (Redis
        keeps no others: its evictions are unseen)."""
        self._run(lambda _now: _usage.reset(self._keys), "reset usage")
        self._reset_counters()

    async def reset_usage_async(self) -> None:
        await self._run_async(lambda _now: _usage.reset(self._keys), "reset usage")
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._expirations = 0
        self._ops.forget_damage()

    def verify(self, fix: bool = False) -> Iterator[Damage]:
        """Read every record in full and check the tag sets, locks and usage counters
        (`_verify`); with `fix`, remove or repair each damage before yielding it. Records
        have no checksum: a bit flipped inside a value that still parses is not found here.
        Each page is a call by the deadline."""
        check = Check(self._ops, fix)
        while not check.done:
            yield from self._run(check.page, "verify", paged=True)

    # -- locks ----------------------------------------------------------------------------

    def acquire_lock(self, name: str, token: str, lease: float) -> bool:
        return self._run(
            lambda now: self._ops.lock(lua.ACQUIRE, name, token, lease, now), "acquire a lock"
        )

    def renew_lock(self, name: str, token: str, lease: float) -> bool:
        return self._run(
            lambda now: self._ops.lock(lua.RENEW, name, token, lease, now), "renew a lock"
        )

    def release_lock(self, name: str, token: str) -> bool:
        return self._run(lambda now: self._ops.release(name, token, now), "release a lock")

    async def acquire_lock_async(self, name: str, token: str, lease: float) -> bool:
        return await self._run_async(
            lambda now: self._ops.lock(lua.ACQUIRE, name, token, lease, now), "acquire a lock"
        )

    async def renew_lock_async(self, name: str, token: str, lease: float) -> bool:
        return await self._run_async(
            lambda now: self._ops.lock(lua.RENEW, name, token, lease, now), "renew a lock"
        )

    async def release_lock_async(self, name: str, token: str) -> bool:
        return await self._run_async(
            lambda now: self._ops.release(name, token, now), "release a lock"
        )

    def set_if_held(self, key: str, entry: Entry, name: str, token: str) -> bool:
        """`set`, fenced: only while `token` holds lock `name` with a current lease (on the
        server's clock); False, writing nothing, otherwise. One script on a single server;
        on a cluster, three steps that never overwrite a successor's write (`Operations`)."""
        return self._run(
            lambda now: self._ops.set_if_held(key, entry, name, token, now), "set (fenced)"
        )

    async def set_if_held_async(self, key: str, entry: Entry, name: str, token: str) -> bool:
        return await self._run_async(
            lambda now: self._ops.set_if_held(key, entry, name, token, now), "set (fenced)"
        )


async def _close_with_loop(client: Any) -> None:
    """Wait until cancelled (by `close` or the loop shutting down), then close `client`."""
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
            pool = getattr(client, "connection_pool", None)
            if pool is not None:
                await pool.disconnect()
            for sentinel in _sentinels(pool):
                await sentinel.aclose()


def _close_sync(client: Any) -> None:
    with contextlib.suppress(Exception):
        client.close()
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()
        for sentinel in _sentinels(pool):
            sentinel.close()


def _sentinels(pool: Any) -> list[Any]:
    """The clients a Sentinel-managed pool asks for its primary (to close with it)."""
    manager = getattr(pool, "sentinel_manager", None)
    return list(getattr(manager, "sentinels", ()))
