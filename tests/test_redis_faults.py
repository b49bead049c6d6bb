"""RedisStore under network faults (a proxy, `tests/_netfaults.py`) and server-side failures
(out of memory, eviction, a read-only replica, Sentinel failover, cluster slot migration).

What must hold: every call ends within its `timeout` (times 1.1, plus scheduling) as a whole —
not per socket read — and fails as a `StoreError` with the cause attached; no call ever
returns a wrong or torn value; a ``Cache(MemoryStore(), redis)`` in "degrade" mode keeps
serving its memory tier and its `get` never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from tests._netfaults import FaultProxy
from tests._tiers import tier_of
from tiers import Cache, MemoryStore
from tiers._stores import Entry
from tiers._stores._redis import RedisStore
from tiers.errors import ConfigError, StoreError

TIMEOUT = 0.3
BOUND = TIMEOUT * 1.1 + 0.25  # the budget, 10 %, and scheduling on a loaded 2-core machine

VALUES = {key: key.encode() * 4 + bytes([i]) * 1024 for i, key in enumerate("abcdx")}


@pytest.fixture
def proxy(redis_server: Any) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's redis-server; stopped (threads joined) after."""
    proxy = FaultProxy(redis_server.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def prefix() -> str:
    return f"f{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def direct(redis_server: Any, prefix: str) -> Iterator[RedisStore]:
    """The same entries, reached without the proxy: to seed and to check."""
    store = RedisStore(redis_server.url, prefix=prefix, timeout=5)
    yield store
    store.clear()
    store.close()


@pytest.fixture
def store(proxy: FaultProxy, prefix: str) -> Iterator[RedisStore]:
    store = RedisStore(proxy.url, prefix=prefix, timeout=TIMEOUT)
    yield store
    store.close()


def _entry(key: str) -> Entry:
    return Entry(VALUES[key], tags=("t",))


def _seed(direct: RedisStore) -> None:
    direct.clear()
    for key in VALUES:
        direct.set(key, _entry(key))
    for name in ("L1", "L2", "L3"):
        direct.release_lock(name, "tok")
    assert direct.acquire_lock("L2", "tok", 30) and direct.acquire_lock("L3", "tok", 30)


# -- the operations, each with what a right answer is ---------------------------------------


@dataclass
class Op:
    name: str
    sync: Callable[[RedisStore], Any]
    asynchronous: Callable[[RedisStore], Awaitable[Any]]
    right: Callable[[Any], bool]


def _value(entry: Entry | None) -> bytes | None:
    return None if entry is None else entry.value


async def _keys_async(store: RedisStore) -> list[str]:
    return await asyncio.to_thread(lambda: sorted(store.keys(tag="t")))


OPS = [
    Op("get", lambda s: s.get("a"), lambda s: s.get_async("a"),
       lambda r: r is not None and r.value == VALUES["a"]),
    Op("get_many", lambda s: s.get_many(["a", "b", "nope"]),
       lambda s: s.get_many_async(["a", "b", "nope"]),
       lambda r: [_value(e) for e in r] == [VALUES["a"], VALUES["b"], None]),
    Op("info", lambda s: s.info("b"), lambda s: s.info_async("b"),
       lambda r: r is not None and r.value is None and r.size == len(VALUES["b"])
       and r.tags == ("t",)),
    Op("set", lambda s: s.set("n", Entry(b"N" * 2048, tags=("t",))),
       lambda s: s.set_async("n", Entry(b"N" * 2048, tags=("t",))), lambda r: r is True),
    Op("set_many", lambda s: s.set_many([("m1", Entry(b"1", tags=("t",))), ("m2", Entry(b"2"))]),
       lambda s: s.set_many_async([("m1", Entry(b"1", tags=("t",))), ("m2", Entry(b"2"))]),
       lambda r: r is None),
    Op("delete", lambda s: s.delete("c"), lambda s: s.delete_async("c"), lambda r: r is True),
    Op("pop", lambda s: s.pop("d"), lambda s: s.pop_async("d"),
       lambda r: r is not None and r.value == VALUES["d"]),
    Op("acquire_lock", lambda s: s.acquire_lock("L1", "tok", 5),
       lambda s: s.acquire_lock_async("L1", "tok", 5), lambda r: r is True),
    Op("renew_lock", lambda s: s.renew_lock("L2", "tok", 5),
       lambda s: s.renew_lock_async("L2", "tok", 5), lambda r: r is True),
    Op("release_lock", lambda s: s.release_lock("L3", "tok"),
       lambda s: s.release_lock_async("L3", "tok"), lambda r: r is True),
    Op("keys", lambda s: sorted(s.keys(tag="t")), _keys_async,
       lambda r: {"a", "b"} <= set(r) <= {*VALUES, "n", "m1"}),
    Op("clear", lambda s: s.clear("x"), lambda s: s.clear_async("x"), lambda r: r == 1),
]  # fmt: skip


@dataclass
class Outcome:
    op: Op
    elapsed: float
    result: Any = None
    error: BaseException | None = None


def _timed(op: Op, store: RedisStore) -> Outcome:
    started = time.monotonic()
    try:
        result = op.sync(store)
    except Exception as exc:
        return Outcome(op, time.monotonic() - started, error=exc)
    return Outcome(op, time.monotonic() - started, result)


async def _timed_async(op: Op, store: RedisStore) -> Outcome:
    started = time.monotonic()
    try:
        result = await op.asynchronous(store)
    except Exception as exc:
        return Outcome(op, time.monotonic() - started, error=exc)
    return Outcome(op, time.monotonic() - started, result)


def _run_all(store: RedisStore, mode: str) -> list[Outcome]:
    """Every operation at once (threads or tasks): each is timed on its own."""
    if mode == "sync":
        with ThreadPoolExecutor(len(OPS)) as pool:
            return list(pool.map(lambda op: _timed(op, store), OPS))

    async def scenario() -> list[Outcome]:
        try:
            return list(await asyncio.gather(*(_timed_async(op, store) for op in OPS)))
        finally:
            await store.close_async()

    return asyncio.run(scenario())


def _check(outcomes: list[Outcome], where: str) -> dict[str, str]:
    """Each call bounded, right or a StoreError with its cause; what each did, by name."""
    seen = {}
    for out in outcomes:
        name = f"{where} {out.op.name}"
        assert out.elapsed <= BOUND, f"{name} took {out.elapsed:.3f} s"
        if out.error is None:
            assert out.op.right(out.result), f"{name} returned {out.result!r}"
            seen[out.op.name] = "ok"
        else:
            assert isinstance(out.error, StoreError), f"{name} raised {out.error!r}"
            assert out.error.__cause__ is not None, f"{name}: {out.error} has no cause"
            seen[out.op.name] = "error"
    return seen


def _consistent(direct: RedisStore) -> None:
    """After the faults: what is stored is whole, and every tagged entry is indexed. (Entries
    first, then the index: a write given up on may still land meanwhile, record and index
    at once (a transaction).)"""
    expected = [*VALUES.items(), ("n", b"N" * 2048), ("m1", b"1")]
    found = {key: direct.get(key) for key, _value in expected}
    tagged = set(direct.keys(tag="t"))
    for key, value in expected:
        if found[key] is not None:
            assert _value(found[key]) == value, key
            assert key in tagged, f"{key} is stored without its tag index"


FAULTS = {
    "latency over the timeout": {"latency": 0.6},
    "latency under the timeout": {"latency": 0.015},
    "bandwidth 4 KB/s": {"bandwidth": 4000},
    "reset": {"reset": True},
    "blackhole": {"blackhole": True},
    "half-open": {"half_open": True},
    "drip 1 byte / 0.15 s": {"drip": (1, 0.15)},
    "close after 9 reply bytes": {"close_after": 9},
}
STALLS = {"latency over the timeout", "blackhole", "half-open", "drip 1 byte / 0.15 s"}
ALL_FAIL = {"latency over the timeout", "reset", "blackhole", "half-open",
            "drip 1 byte / 0.15 s"}  # fmt: skip


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_call_is_bounded_and_never_wrong_under_each_fault(
    fault: str, mode: str, proxy: FaultProxy, store: RedisStore, direct: RedisStore
) -> None:
    _seed(direct)
    assert store.get("a") is not None  # a pooled connection, opened before the fault
    proxy.set(**FAULTS[fault])
    seen = _run_all(store, mode)
    outcomes = _check(seen, f"{fault} ({mode})")
    if fault in ALL_FAIL:
        assert set(outcomes.values()) == {"error"}, outcomes
    if fault in STALLS:  # the fault holds a call (it does not just close): the budget ends it
        get = next(out for out in seen if out.op.name == "get")
        assert get.elapsed >= TIMEOUT * 0.9, f"{fault}: get failed in {get.elapsed:.3f} s"
    if fault == "latency under the timeout":
        assert set(outcomes.values()) == {"ok"}, outcomes
    proxy.set(reset=True)  # what a call gave up on and is still on its way never lands
    proxy.clear()
    _consistent(direct)


def test_a_dripped_reply_no_longer_holds_a_call_past_its_timeout(
    proxy: FaultProxy, store: RedisStore, direct: RedisStore
) -> None:
    """The reported failure: one byte every 0.3 s held a 0.5 s call for 1.7 s (and a 1 KiB
    value for minutes); now the whole call, connect included, is bounded."""
    _seed(direct)
    slow = RedisStore(proxy.url, prefix=direct.prefix, timeout=0.5)
    try:
        assert slow.get("a") is not None
        proxy.set(drip=(1, 0.3))
        for call in (lambda: slow.get("a"), lambda: asyncio.run(slow.get_async("a"))):
            started = time.monotonic()
            with pytest.raises(StoreError, match=r"127\.0\.0\.1"):
                call()
            assert time.monotonic() - started <= 0.5 * 1.1 + 0.25
        fresh = RedisStore(proxy.url, prefix=direct.prefix, timeout=0.5)  # connect + handshake
        started = time.monotonic()
        with pytest.raises(StoreError):
            fresh.get("a")
        assert time.monotonic() - started <= 0.5 * 1.1 + 0.25
        fresh.close()
    finally:
        slow.close()


# -- a reply that arrives after its call gave up is never taken for another's -----------------


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("fault", ["latency", "blackhole", "drip"])
def test_a_late_reply_is_never_read_as_the_next_calls(
    fault: str, mode: str, proxy: FaultProxy, store: RedisStore, direct: RedisStore
) -> None:
    """A call times out with its reply still on the way; the fault ends; the next calls on
    the same store (other keys, batches, scripts) get their own answers, not the late one."""
    _seed(direct)
    faults = {"latency": {"latency": 0.45}, "blackhole": {"blackhole": True},
              "drip": {"drip": (64, 0.2)}}[fault]  # fmt: skip

    def checks(get: Callable[[str], Any], many: Callable[[list[str]], Any],
               info: Callable[[str], Any]) -> None:  # fmt: skip
        for key in "bcd":
            assert _value(get(key)) == VALUES[key]
        assert [_value(e) for e in many(["x", "a"])] == [VALUES["x"], VALUES["a"]]
        found = info("b")
        assert found is not None and found.size == len(VALUES["b"])

    if mode == "sync":
        assert store.get("a") is not None
        proxy.set(**faults)
        for call in (lambda: store.get("a"), lambda: store.get_many(["a", "b"]),
                     lambda: store.info("a")):  # fmt: skip
            with pytest.raises(StoreError):
                call()
        proxy.clear()
        checks(store.get, store.get_many, store.info)
        return

    async def scenario() -> None:
        assert await store.get_async("a") is not None
        proxy.set(**faults)
        for call in (lambda: store.get_async("a"), lambda: store.get_many_async(["a", "b"]),
                     lambda: store.info_async("a")):  # fmt: skip
            with pytest.raises(StoreError):
                await call()
        proxy.clear()
        values = {key: await store.get_async(key) for key in "bcd"}
        many = await store.get_many_async(["x", "a"])
        info = await store.info_async("b")
        await store.close_async()
        checks(values.__getitem__, lambda _keys: many, lambda _key: info)

    asyncio.run(scenario())


RESENT = [
    ("pop", lambda s: s.pop("d"), lambda s: s.pop_async("d"),
     lambda r: r is not None and r.value == VALUES["d"]),
    ("delete", lambda s: s.delete("c"), lambda s: s.delete_async("c"), lambda r: r is True),
    ("release_lock", lambda s: s.release_lock("L3", "tok"),
     lambda s: s.release_lock_async("L3", "tok"), lambda r: r is True),
]  # fmt: skip


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("op", RESENT, ids=[op[0] for op in RESENT])
def test_a_reply_lost_on_its_way_back_is_an_error_not_a_resend(
    op: Any, mode: str, proxy: FaultProxy, store: RedisStore, direct: RedisStore
) -> None:
    """The server ran the command and the connection died before the reply came back: the
    call fails. Sent again on a new connection, a pop would answer "nothing there" for the
    entry it removed (and a delete or a release False for what it did)."""
    _seed(direct)
    _name, sync, asynchronous, right = op

    async def scenario() -> Any:
        try:
            assert await store.get_async("a") is not None
            proxy.cut_open()
            return await asynchronous(store)
        finally:
            await store.close_async()

    def call() -> Any:
        if mode == "async":
            return asyncio.run(scenario())
        assert store.get("a") is not None
        proxy.cut_open()
        return sync(store)

    try:
        result = call()
    except StoreError as exc:
        message = str(exc).lower()
        assert "closed" in message or "connection" in message, exc  # noqa: PT017
    else:
        assert right(result), result


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_chaos_no_wrong_value_while_faults_come_and_go(
    mode: str, proxy: FaultProxy, store: RedisStore, direct: RedisStore
) -> None:
    """Reads and writes of self-describing values while a random fault is switched every
    ~50 ms for 2.5 s: every value read is the one last written to its key (or a miss), every
    failure a StoreError, every call bounded."""
    keys = [f"k{i}" for i in range(20)]
    for key in keys:
        direct.set(key, Entry(f"{key}=0".encode()))
    stop = threading.Event()
    wrong: list[str] = []
    counts = {"ok": 0, "error": 0, "slow": 0}
    written: dict[str, int] = dict.fromkeys(keys, 0)
    lock = threading.Lock()

    def judge(key: str, entry: Entry | None, elapsed: float) -> None:
        """Right: this key's value, one that was written (not another key's, not torn)."""
        with lock:
            counts["slow"] += elapsed > BOUND
            counts["ok"] += 1
            if entry is None:
                return
            name, _, number = entry.value.decode().partition("=")
            if name != key or not 0 <= int(number) <= written[key]:
                wrong.append(f"{key}: {entry.value!r}")

    def sync_worker(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():  # ends when the switcher is done
            key = rng.choice(keys)
            started = time.monotonic()
            try:
                if rng.random() < 0.3:
                    with lock:
                        written[key] += 1
                        version = written[key]
                    store.set(key, Entry(f"{key}={version}".encode()))
                    continue
                judge(key, store.get(key), time.monotonic() - started)
            except StoreError:
                with lock:
                    counts["error"] += 1
                    counts["slow"] += time.monotonic() - started > BOUND

    async def async_worker(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            key = rng.choice(keys)
            started = time.monotonic()
            try:
                if rng.random() < 0.3:
                    with lock:
                        written[key] += 1
                        version = written[key]
                    await store.set_async(key, Entry(f"{key}={version}".encode()))
                    continue
                got = await store.get_async(key)
                judge(key, got, time.monotonic() - started)
            except StoreError:
                with lock:
                    counts["error"] += 1
                    counts["slow"] += time.monotonic() - started > BOUND

    def switcher() -> None:
        rng = random.Random(7)
        choices = [{"latency": 0.4}, {"drip": (16, 0.1)}, {"close_after": 20}, {"reset": True},
                   {"blackhole": True}, {}, {}, {"latency": 0.01}]  # fmt: skip
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            proxy.clear()
            proxy.set(**rng.choice(choices))
            time.sleep(0.05)
        proxy.clear()
        stop.set()

    if mode == "sync":
        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(sync_worker, seed) for seed in range(4)]
            futures.append(pool.submit(switcher))
            for future in futures:
                future.result()
    else:

        async def scenario() -> None:
            switching = asyncio.get_running_loop().run_in_executor(None, switcher)
            await asyncio.gather(*(async_worker(seed) for seed in range(4)), switching)
            await store.close_async()

        asyncio.run(scenario())
    assert wrong == [], wrong[:5]
    assert counts["slow"] == 0, counts
    assert counts["ok"] > 20 and counts["error"] > 5, counts


# -- the cache over memory and Redis keeps serving ------------------------------------------


@pytest.mark.parametrize("fault", ["blackhole", "drip", "reset", "half-open"])
def test_degrade_keeps_serving_memory_and_get_never_raises(
    fault: str, proxy: FaultProxy, store: RedisStore
) -> None:
    faults = {"blackhole": {"blackhole": True}, "drip": {"drip": (1, 0.2)},
              "reset": {"reset": True}, "half-open": {"half_open": True}}[fault]  # fmt: skip
    # coherence="none": copies kept until they expire (by default they are not served once
    # the invalidation channel is lost: tests/test_redis_outages.py)
    cache = Cache(MemoryStore(), store, secret="s" * 32, coherence="none")
    try:
        hot = {f"hot{i}": i for i in range(20)}
        for key, value in hot.items():
            cache.set(key, value)
        proxy.set(**faults)
        started = time.monotonic()
        assert {key: cache.get(key) for key in hot} == hot
        assert time.monotonic() - started < 0.1  # memory hits never wait for Redis
        for i in range(4):  # misses: the Redis tier fails, is skipped, then rests
            started = time.monotonic()
            assert cache.get(f"cold{i}") is None
            assert time.monotonic() - started <= BOUND

        async def more() -> list[Any]:
            found = [await cache.get_async(key) for key in ("hot1", "cold9")]
            await cache.set_async("new2", "v2")
            found.append(await cache.get_async("new2"))
            return found

        assert asyncio.run(more()) == [1, None, "v2"]
        cache.set("new", "value")
        assert cache.get("new") == "value"
        assert cache.stats().tiers[1].errors >= 1
    finally:
        proxy.clear()
        cache.close()


# -- the server refuses, evicts, is a replica, fails over --------------------------------------


def _raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def _big(key: str, size: int = 20_000) -> Entry:
    return Entry((key + "=").encode() * (size // (len(key) + 1)), tags=("t", "u"))


def _whole(entry: Entry | None, key: str) -> bool:
    """`entry` is `key`'s value as `_big` made it, not a torn or foreign one."""
    return entry is not None and entry.value == _big(key).value


TAGS = tuple(f"t{i}" for i in range(20))


def _tagged(key: str) -> Entry:
    """A small entry with many tags: its SET fits in memory where the SADDs after it may not
    (redis-py sends them in one pipeline; without a transaction the SET stayed, unindexed)."""
    return Entry((key + "=").encode() * 20, tags=TAGS)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_out_of_memory_a_write_is_whole_and_indexed_or_a_clear_error(
    redis_process: Any, mode: str
) -> None:
    """maxmemory + noeviction: a refused write is a StoreError saying so and leaves nothing;
    a write reported stored is whole and in every tag's index, so evict finds it. Reads,
    deletes and evictions go on working while the server is full."""
    raw = _raw(redis_process.url)
    raw.config_set("maxmemory", "3mb")
    raw.config_set("maxmemory-policy", "noeviction")
    store = RedisStore(redis_process.url, timeout=5)
    stored: list[str] = []
    refused: list[str] = []

    def record(key: str, error: StoreError | None) -> None:
        if error is None:
            stored.append(key)
        else:
            assert "maxmemory" in str(error) or "OOM" in str(error), error
            refused.append(key)

    async def fill_async() -> None:
        for i in range(4000):  # refusals come at about 1500
            try:
                assert await store.set_async(f"k{i}", _tagged(f"k{i}")) is True
                record(f"k{i}", None)
            except StoreError as exc:
                record(f"k{i}", exc)
                if len(refused) >= 10:
                    break
        await store.close_async()

    try:
        if mode == "async":
            asyncio.run(fill_async())
        for i in range(4000 if mode == "sync" else 0):
            try:
                assert store.set(f"k{i}", _tagged(f"k{i}")) is True
                record(f"k{i}", None)
            except StoreError as exc:
                record(f"k{i}", exc)
                if len(refused) >= 10:
                    break
        assert len(refused) >= 10 and len(stored) > 100
        with pytest.raises(StoreError, match=r"maxmemory|OOM"):
            store.set_many([(f"many{i}", _tagged(f"many{i}")) for i in range(100)])
        with pytest.raises(StoreError, match=r"maxmemory|OOM"):
            store.acquire_lock("L", "tok", 5)
        values = [_value(e) for e in store.get_many(stored + refused)]
        assert values[: len(stored)] == [_tagged(key).value for key in stored]
        assert values[len(stored) :] == [None] * len(refused)  # nothing left by a refusal
        assert store.get_many([f"many{i}" for i in range(100)]) == [None] * 100
        for tag in TAGS:
            assert set(store.keys(tag=tag)) == set(stored), tag
        assert store.delete(stored[0]) is True
        assert store.evict("t7") == len(stored) - 1
        assert store.count() == 0
    finally:
        store.close()
        raw.close()


def test_allkeys_lru_evictions_are_misses_never_errors_or_wrong_values(
    redis_process: Any,
) -> None:
    """Redis drops entries (and maybe tag sets) on its own: reads of what went are misses,
    nothing raises, nothing wrong is served. (A lost tag set is another issue's.)"""
    raw = _raw(redis_process.url)
    raw.config_set("maxmemory", "3mb")
    raw.config_set("maxmemory-policy", "allkeys-lru")
    store = RedisStore(redis_process.url, timeout=5)
    keys = [f"k{i}" for i in range(300)]
    try:
        for key in keys:  # 6 MB into 3 MB
            assert store.set(key, _big(key)) is True
        found = [store.get(key) for key in keys]
        hits = [key for key, entry in zip(keys, found, strict=True) if entry is not None]
        assert all(_whole(entry, key) for key, entry in zip(keys, found, strict=True) if entry)
        assert 20 < len(hits) < len(keys)  # some kept, some evicted by Redis
        many = asyncio.run(store.get_many_async(keys))
        assert all(e is None or _whole(e, k) for k, e in zip(keys, many, strict=True))
        assert set(store.keys(tag="t")) <= set(keys)
        assert store.count() <= len(hits)
        infos = [store.info(key) for key in keys[:50]]
        assert all(
            i is None or i.size == len(_big(k).value) for k, i in zip(keys, infos, strict=False)
        )
        store.evict("t")
        store.expire()
        store.clear()
        assert store.count() == 0
    finally:
        store.close()
        raw.close()


@pytest.fixture
def replica(redis_process: Any, tmp_path: Any) -> Iterator[Any]:
    """A second redis-server replicating `redis_process`, in sync; killed after the test."""
    from tests._servers import RedisServer

    with _raw(redis_process.url) as source:  # no 5 s wait for more replicas to sync at once
        source.config_set("repl-diskless-sync-delay", "0")
    server = RedisServer(tmp_path / "replica").start()
    try:
        with _raw(server.url) as raw:
            raw.execute_command("REPLICAOF", "127.0.0.1", str(redis_process.port))
            _until(lambda: raw.info("replication").get("master_link_status") == "up", 20,
                   "the replica's sync")  # fmt: skip
        yield server
    finally:
        server.kill()


def test_a_store_on_a_read_only_replica_reads_and_refuses_writes_clearly(
    redis_process: Any, replica: Any
) -> None:
    primary = RedisStore(redis_process.url, timeout=5)
    store = RedisStore(replica.url, timeout=TIMEOUT)
    cache = Cache(MemoryStore(), store, secret="s" * 32, serializer="raw")
    writer = Cache(primary, secret="s" * 32, serializer="raw")
    try:
        primary.set("a", _big("a"))
        primary.set("b", _big("b"))
        writer.set("e", b"through the cache")
        _raw(redis_process.url).wait(1, 5000)
        assert _whole(store.get("a"), "a")
        assert [_whole(e, k) for k, e in zip("ab", store.get_many(["a", "b"]), strict=True)] == [
            True
        ] * 2
        assert store.info("a") is not None
        assert _whole(asyncio.run(store.get_async("b")), "b")
        assert set(store.keys(tag="t")) == {"a", "b"}
        assert store.count() == 3
        writes = {
            "set": lambda: store.set("c", _big("c")),
            "set untagged": lambda: store.set("c", Entry(b"v")),
            "set_many": lambda: store.set_many([("c", _big("c"))]),
            "delete": lambda: store.delete("a"),
            "pop": lambda: store.pop("a"),
            "touch": lambda: store.touch("a", None),
            "acquire_lock": lambda: store.acquire_lock("L", "tok", 5),
            "clear": store.clear,
            "async set": lambda: asyncio.run(store.set_async("c", _big("c"))),
        }
        for name, write in writes.items():
            with pytest.raises(StoreError, match=r"read only replica") as caught:
                write()
            assert isinstance(caught.value.__cause__, redis.exceptions.ReadOnlyError), name
        assert store.get("c") is None and _whole(store.get("a"), "a")
        assert cache.get("e") == b"through the cache"  # read from the replica
        deadline = time.monotonic() + 5  # the memory tier serves once invalidations flow
        while tier_of(cache).suspect and time.monotonic() < deadline:
            time.sleep(0.01)
        cache.set("d", b"memory keeps it")  # the Redis tier refuses, the memory tier takes it
        assert cache.get("d") == b"memory keeps it"
    finally:
        cache.close()
        writer.close()
        primary.close()


# -- a cluster of our own: refused writes across slots, slots moving under load ---------------


@pytest.fixture(scope="module")
def small_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """Three cluster-mode primaries, no replicas (quicker to start than the 6-node one), for
    this module: the tests that change it put it back (memory limit, slot owners)."""
    import shutil
    import subprocess

    from tests._servers import RedisServer, ServerMissing

    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")
    tmp_path = tmp_path_factory.mktemp("cluster")
    nodes: list[Any] = []
    try:  # every node started is killed, whatever fails after it
        for i in range(3):
            nodes.append(RedisServer(tmp_path / f"n{i}", cluster=True).start())
        subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        _until(lambda: all(_raw(n.url).cluster("info")["cluster_state"] == "ok" for n in nodes),
               30, "the cluster coming up")  # fmt: skip
        yield nodes
    except ServerMissing as exc:
        pytest.skip(str(exc))
    finally:
        for node in nodes:
            node.kill()


def _cluster_url(nodes: list[Any]) -> str:
    return nodes[0].url.replace("redis://", "redis+cluster://")


def _owner(nodes: list[Any], redis_key: bytes) -> Any:
    """The node serving `redis_key`'s slot."""
    slot = redis.cluster.key_slot(redis_key)
    for node in nodes:
        for start, end, *_rest in _raw(node.url).execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end and _rest[0][1] == node.port:
                return node
    raise AssertionError(f"no node owns slot {slot}")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_cluster_refusing_a_tag_write_leaves_no_unindexed_record(
    small_cluster: list[Any], mode: str
) -> None:
    """On a cluster the record and its tag set live on different nodes, so no transaction
    spans them: when the tag's node refuses (out of memory), the record is removed again."""
    store = RedisStore(_cluster_url(small_cluster), timeout=5)
    key, tag = next(
        (f"k{i}", f"g{j}")
        for i in range(100)
        for j in range(100)
        if _owner(small_cluster, store._keys.entry(f"k{i}"))
        is not _owner(small_cluster, store._keys.tag(f"g{j}"))
    )
    full = _raw(_owner(small_cluster, store._keys.tag(tag)).url)
    full.config_set("maxmemory-policy", "noeviction")
    full.config_set("maxmemory", "1")  # every write there is refused
    try:
        entry = Entry(b"value", tags=(tag,))
        with pytest.raises(StoreError, match=r"maxmemory|OOM"):
            if mode == "sync":
                store.set(key, entry)
            else:
                asyncio.run(store.set_async(key, entry))
        assert store.get(key) is None
        assert store.set(key, Entry(b"untagged")) is True  # the record's node still takes it
        assert _value(store.get(key)) == b"untagged"
    finally:
        full.config_set("maxmemory", "0")
        store.close()


def _migrate(nodes: list[Any], slot: int, source: Any, target: Any, step: Callable[[], None]
             ) -> None:  # fmt: skip
    """Move `slot` from `source` to `target` key by key (MIGRATING/IMPORTING, MIGRATE, then
    SETSLOT NODE on the target, the source, the rest: the order Redis documents, else the
    two bounce clients between them); `step()` runs between keys, while the slot is half
    moved."""
    src, dst = _raw(source.url), _raw(target.url)
    src_id = src.execute_command("CLUSTER", "MYID").decode()
    dst_id = dst.execute_command("CLUSTER", "MYID").decode()
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    for _ in range(1000):  # a few dozen keys: ends long before
        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 2)
        if not keys:
            break
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        step()
    for node in sorted(nodes, key=lambda n: (n is not target, n is not source)):
        _raw(node.url).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_slot_migration_under_load_no_error_no_wrong_read(
    small_cluster: list[Any], mode: str
) -> None:
    """A slot moves to another node and back (ASK while it moves, MOVED after) while one
    worker sets, reads, deletes and locks its keys: every read is what the worker last
    wrote (it is the only writer), and no call fails."""
    url = _cluster_url(small_cluster)
    keys = [f"{{m}}{i}" for i in range(30)]  # all in the slot of "m"
    store = RedisStore(url, prefix=f"{mode}:", timeout=5)
    slot = redis.cluster.key_slot(store._keys.entry(keys[0]))
    model: dict[str, bytes | None] = dict.fromkeys(keys)
    problems: list[str] = []
    done = threading.Event()
    progress = threading.Semaphore(0)
    counts = {"calls": 0}

    def check(what: str, got: Any, want: Any) -> None:
        counts["calls"] += 1
        if got != want:
            problems.append(f"{what}: {got!r} != {want!r}")

    async def one_round(rng: random.Random, version: int) -> None:
        key = rng.choice(keys)
        action = rng.random()
        if action < 0.35:
            value = f"{key}={version}".encode()
            check("set", await _maybe(store.set, store.set_async, mode, key,
                                      Entry(value, tags=("t",))), True)  # fmt: skip
            model[key] = value
        elif action < 0.45:
            check("delete", await _maybe(store.delete, store.delete_async, mode, key),
                  model[key] is not None)  # fmt: skip
            model[key] = None
        elif action < 0.55:
            trio = rng.sample(keys, 3)
            got = await _maybe(store.get_many, store.get_many_async, mode, trio)
            check("get_many", [_value(e) for e in got], [model[k] for k in trio])
        elif action < 0.6:
            name = f"{{m}}lock{version}"
            check("lock", (await _maybe(store.acquire_lock, store.acquire_lock_async, mode,
                                        name, "tok", 5),
                           await _maybe(store.release_lock, store.release_lock_async, mode,
                                        name, "tok")), (True, True))  # fmt: skip
        else:
            check("get", _value(await _maybe(store.get, store.get_async, mode, key)), model[key])

    async def worker() -> None:
        rng = random.Random(3)
        version = 0
        while not done.is_set():  # until both migrations are over
            version += 1
            try:
                await one_round(rng, version)
            except StoreError as exc:
                problems.append(f"error: {exc}")
            progress.release()
        if mode == "async":
            await store.close_async()

    def step() -> None:  # let the worker make a few calls against the half-moved slot
        for _ in range(3):
            assert progress.acquire(timeout=10), "the worker stalled"

    source = _owner(small_cluster, store._keys.entry(keys[0]))
    target = next(n for n in small_cluster if n is not source)
    thread = threading.Thread(target=lambda: asyncio.run(worker()))
    thread.start()
    try:
        for _ in range(10):  # the slot holds keys before it moves
            step()
        _migrate(small_cluster, slot, source, target, step)
        for _ in range(10):
            step()
        _migrate(small_cluster, slot, target, source, step)
        for _ in range(10):
            step()
    finally:
        done.set()
        thread.join(30)
        store.close()
    assert not thread.is_alive()
    assert problems == [], problems[:5]
    assert counts["calls"] > 50, counts
    redirected = {name: sum(_raw(node.url).info("errorstats").get(f"errorstat_{name}", {})
                            .get("count", 0) for node in (source, target))
                  for name in ("ASK", "MOVED")}  # fmt: skip
    assert redirected["ASK"] > 0 and redirected["MOVED"] > 0, redirected


async def _maybe(sync: Callable[..., Any], asynchronous: Callable[..., Any], mode: str,
                 *args: Any) -> Any:  # fmt: skip
    """Call the sync or the async form."""
    return sync(*args) if mode == "sync" else await asynchronous(*args)


class _Sentinel:
    """``redis-server --sentinel`` (Debian's redis-sentinel is this same binary) watching one
    primary, quorum 1, declaring it down after 300 ms; stopped by its PID."""

    def __init__(self, directory: Any, primary_port: int) -> None:
        import shutil

        from tests._servers import ServerMissing, free_port

        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerMissing("redis-server is not installed")
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.primary_port = primary_port
        self.proc: Any = None

    def start(self) -> _Sentinel:
        import subprocess

        from tests._servers import wait_for_port

        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\ndir {self.directory}\n"
            f"sentinel monitor main 127.0.0.1 {self.primary_port} 1\n"
            "sentinel down-after-milliseconds main 300\n"
            "sentinel failover-timeout main 3000\n"
        )
        self.proc = subprocess.Popen(
            [self.binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, proc=self.proc)
        except BaseException:
            self.kill()
            raise
        return self

    def primary(self) -> int:
        """The primary's port once a failover has ended (what clients are told)."""
        with redis.Redis(port=self.port, socket_timeout=5) as raw:
            return int(raw.sentinel_master("main")["port"])

    def replicas(self) -> int:
        with redis.Redis(port=self.port, socket_timeout=5) as raw:
            return len(raw.execute_command("SENTINEL", "replicas", "main"))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {seconds} s"
        time.sleep(0.05)


def test_sentinel_failover_every_store_fails_clearly_then_serves_the_new_primary(
    redis_process: Any, replica: Any, tmp_path: Any
) -> None:
    """Sentinel promotes the replica when the primary dies. A store on the old primary's
    URL fails fast (StoreError); one on the replica's URL reads all along, refuses writes
    (READONLY) until the promotion, then writes; one on a ``redis+sentinel://`` URL follows
    the primary, failing only while there is none. None serves a wrong value."""
    sentinel = _Sentinel(tmp_path / "sentinel", redis_process.port)
    stores: list[RedisStore] = []
    try:
        sentinel.start()
        old, new, via = stores[:] = [
            RedisStore(redis_process.url, timeout=TIMEOUT),
            RedisStore(replica.url, timeout=TIMEOUT),
            RedisStore(f"redis+sentinel://127.0.0.1:{sentinel.port}/main", timeout=TIMEOUT),
        ]
        assert via.set("k", Entry(b"v1", tags=("t",))) is True
        assert _value(old.get("k")) == b"v1"  # the Sentinel named the primary
        _raw(redis_process.url).wait(1, 5000)
        _until(lambda: sentinel.replicas() == 1, 15, "the sentinel finding the replica")
        assert _value(new.get("k")) == b"v1"
        with pytest.raises(StoreError, match=r"read only replica"):
            new.set("k", Entry(b"v2"))
        redis_process.kill()
        for store in (old, via):
            started = time.monotonic()
            with pytest.raises(StoreError):
                store.get("k")
            assert time.monotonic() - started <= BOUND
        _until(lambda: sentinel.primary() == replica.port, 20, "the failover")
        _until(lambda: _raw(replica.url).info("replication")["role"] == "master", 10, "promotion")
        assert _value(new.get("k")) == b"v1"  # what was replicated is kept
        assert new.set("k", Entry(b"v2", tags=("t",))) is True
        assert _value(via.get("k")) == b"v2"  # the Sentinel store found the new primary
        assert via.set("j", Entry(b"w")) is True
        assert _value(asyncio.run(via.get_async("j"))) == b"w"
        assert _value(asyncio.run(new.get_async("k"))) == b"v2"
        assert list(new.keys(tag="t")) == ["k"]
        with pytest.raises(StoreError, match=str(redis_process.port)):
            old.get("k")
    finally:
        for store in stores:
            store.close()
        sentinel.kill()


def test_sentinel_urls_are_checked_when_made_and_pickle_as_configuration() -> None:
    import pickle

    store = RedisStore("redis+sentinel://:pw@h1:26379,h2:26380/main/2?prefix=p:&timeout=1")
    assert store._target.nodes == (("h1", 26379), ("h2", 26380))
    assert store._target.service == "main" and store._target.options["db"] == 2
    assert store._target.options["password"] == "pw" and store.prefix == "p:"  # noqa: S105
    assert "'main' via Sentinel h1:26379, h2:26380" in repr(store)
    copy = pickle.loads(pickle.dumps(store))
    assert copy._target == store._target and copy.timeout == 1.0
    for bad in ("redis+sentinel://h1:26379", "redis+sentinel://h1/main",
                "redis+sentinel://h1:1,:2/main", "redis+sentinel://h1:1/main/db/x"):  # fmt: skip
        with pytest.raises(ConfigError, match=r"Sentinel|service"):
            RedisStore(bad)
    with pytest.raises(ConfigError) as caught:
        RedisStore("redis+sentinel://:secret@h/m")
    assert "secret" not in str(caught.value)
    import redis.sentinel

    client = redis.sentinel.Sentinel([("127.0.0.1", 26400)]).master_for("main", db=3)
    injected = RedisStore(client)  # a Sentinel-managed client: its twins ask the same Sentinels
    assert injected._target.service == "main" and injected._target.nodes == (("127.0.0.1", 26400),)
    assert injected._target.options["db"] == 3
    injected.close()
    client.close()


# -- the mechanism, without a server ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "tls-style proxy"])
def test_a_socket_kept_to_the_deadline_fails_a_drip_by_it(kind: str) -> None:
    """The sockets the store's connections read from (`FastSocket` for TCP and Unix, the
    `DeadlineSocket` proxy around a TLS one): a peer sending one byte every 50 ms is cut off
    when the call's time is up, however many reads it takes; with no deadline the socket's
    own per-read timeout holds."""
    import socket

    from tiers._stores._redis._deadline import DEADLINE, DeadlineSocket, _fast

    ours, peer = socket.socketpair()
    ours.settimeout(0.2)
    sock: Any = _fast(ours, 0.2) if kind == "plain" else DeadlineSocket(ours, 0.2)
    stop = threading.Event()

    def drip() -> None:
        for _ in range(200):  # 10 s at most; stopped long before
            if stop.wait(0.05):
                return
            with contextlib.suppress(OSError):
                peer.send(b"x")

    dripper = threading.Thread(target=drip)
    dripper.start()
    token = DEADLINE.set(time.monotonic() + 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            for _ in range(100):  # 5 s of drips: the deadline ends it at 0.3 s
                assert sock.recv(16)
        assert 0.25 <= time.monotonic() - started <= 0.3 + 0.1
    finally:
        DEADLINE.reset(token)
        stop.set()
        dripper.join(5)
        peer.close()
        sock.close()
    assert not dripper.is_alive()


def test_rediss_cluster_urls_use_tls_to_every_node() -> None:
    """``rediss+cluster://`` used to lose its TLS on the way (the connection class was
    dropped and ``ssl`` never set): the nodes were spoken to in clear text."""
    import redis.asyncio.connection

    from tiers._stores._redis import _clients

    target, _prefix, _timeout = _clients.parse_url("rediss+cluster://127.0.0.1:7000")
    client = _clients.build_async(target, 1.0)
    try:
        kind = client.connection_kwargs["connection_class"]
        assert issubclass(kind, redis.asyncio.connection.SSLConnection)
    finally:
        asyncio.run(client.aclose())
