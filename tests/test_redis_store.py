"""RedisStore against real servers: a single redis-server and a 6-node Redis Cluster."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import pickle
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests import _redis_workers as workers
from tests._servers import free_port
from tests._store_media import RedisMedium
from tests.test_store_state_machines import StoreMachine
from tiers import Cache, MemoryStore
from tiers._stores import Entry, Store, _wire
from tiers._stores._redis import RedisStore
from tiers.errors import ConfigError, StoreError
from tiers.testing import FakeClock, StoreTests
from tiers.testing._base import HOSTILE_KEYS


class TestRedisStore(RedisMedium, StoreTests):
    @pytest.fixture(autouse=True)
    def _server(self, redis_url: str) -> Iterator[None]:
        self.url = redis_url
        self.redis = redis.Redis.from_url(redis_url)
        yield
        self.redis.close()

    def make_store(self, tmp_path: Path) -> Store:
        return RedisStore(self.url, prefix=f"t{uuid.uuid4().hex[:8]}:")


# A new cluster client discovers six nodes within its first call's deadline: on a busy
# 2-core machine that can pass 0.5 s. Deadlines are tested in test_redis_faults/_outages;
# here a roomier one keeps the conformance tests about behaviour.
CLUSTER_TIMEOUT = 5.0


class TestRedisClusterStore(RedisMedium, StoreTests):
    @pytest.fixture(autouse=True)
    def _server(self, redis_cluster: Any) -> Iterator[None]:
        self.url = redis_cluster.url.replace("redis://", "redis+cluster://")
        self.redis = redis.cluster.RedisCluster.from_url(redis_cluster.url)
        yield
        self.redis.close()

    def make_store(self, tmp_path: Path) -> Store:
        return RedisStore(self.url, prefix=f"t{uuid.uuid4().hex[:8]}:", timeout=CLUSTER_TIMEOUT)


# -- injected clients ------------------------------------------------------------------------


class TestInjectedSyncClient(RedisMedium, StoreTests):
    """A redis.Redis the caller made: used as is, the asyncio twin built from its settings."""

    @pytest.fixture(autouse=True)
    def _client(self, redis_url: str) -> Iterator[None]:
        self.client = self.redis = redis.Redis.from_url(redis_url, socket_timeout=2)
        yield
        self.client.close()
        self.client.connection_pool.disconnect()

    def make_store(self, tmp_path: Path) -> Store:
        return RedisStore(self.client, prefix="injected:")


class TestInjectedClusterClient(RedisMedium, StoreTests):
    @pytest.fixture(autouse=True)
    def _client(self, redis_cluster: Any) -> Iterator[None]:
        self.client = self.redis = redis.cluster.RedisCluster.from_url(redis_cluster.url)
        yield
        self.client.close()

    def make_store(self, tmp_path: Path) -> Store:
        return RedisStore(self.client, prefix=f"i{uuid.uuid4().hex[:8]}:", timeout=CLUSTER_TIMEOUT)


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
def test_an_injected_asyncio_client_serves_async_and_sync_calls(
    redis_url: str, redis_cluster: Any, cluster: bool
) -> None:
    """The asyncio client serves its loop; sync calls and pickled copies use twins."""

    async def scenario() -> None:
        if cluster:
            client: Any = redis.asyncio.cluster.RedisCluster.from_url(redis_cluster.url)
        else:
            client = redis.asyncio.Redis.from_url(redis_url)
        store = RedisStore(client, prefix=f"a{uuid.uuid4().hex[:8]}:")
        try:
            assert await store.set_async("k", Entry(b"async", tags=("t",))) is True
            got = store.get("k")  # through the sync twin
            assert got is not None
            assert got.value == b"async"
            store.set("s", Entry(b"sync"))
            found = await store.get_many_async(["k", "s", "none"])
            assert [e and e.value for e in found] == [b"async", b"sync", None]
            copy = pickle.loads(pickle.dumps(store))
            try:
                assert copy.get("s") is not None
            finally:
                copy.close()
            assert await store.evict_async("t") == 1
        finally:
            await store.close_async()
            await client.aclose()

    asyncio.run(scenario())


def test_a_client_decoding_responses_is_refused(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ConfigError, match="decode_responses=False"):
            RedisStore(client)
    finally:
        client.close()


def test_a_pickled_store_carries_configuration_only(redis_url: str) -> None:
    store = RedisStore(redis_url + "?prefix=app:&timeout=2&health_check_interval=5")
    copy = pickle.loads(pickle.dumps(store))
    try:
        assert (copy.prefix, copy.timeout) == ("app:", 2.0)
        store.set("k", Entry(b"v"))
        got = copy.get("k")
        assert got is not None
        assert got.value == b"v"
        assert b"app:e:k" in _raw_keys(redis_url)
    finally:
        store.close()
        copy.close()


# -- URLs and bad input ----------------------------------------------------------------------


def _raw_keys(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return sorted(key for key in client.keys("*") if isinstance(key, bytes))
    finally:
        client.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:6379/0", "is not a Redis URL: use redis://"),
        ("redis://127.0.0.1:6379/zero", "the database must be a number"),
        ("redis://127.0.0.1:99999/0", "is not a valid Redis URL"),
        ("redis://127.0.0.1:6379/0?no_such_option=1", "an option redis-py does not take"),
        ("redis://127.0.0.1:6379/0?timeout=0", "positive number of seconds"),
        ("redis://127.0.0.1:6379/0?timeout=soon", "number of seconds"),
        ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
        ("redis:///0", "names no host"),
        ("unix://", "names no socket path"),
    ],
)
def test_bad_urls_are_config_errors_in_one_sentence(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        RedisStore(url)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "x", True, None])
def test_bad_timeouts_are_config_errors(timeout: Any) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        RedisStore(timeout=timeout)


def test_bad_argument_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="prefix must be a str"):
        RedisStore(prefix=b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"takes a URL or a redis\.Redis"):
        RedisStore(42)


def test_an_unreachable_host_fails_on_first_use_naming_it() -> None:
    """Construction never connects; the first call fails fast, naming host:port."""
    port = free_port()
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    try:
        start = time.monotonic()
        with pytest.raises(StoreError, match=f"127.0.0.1:{port}") as caught:
            store.get("k")
        assert time.monotonic() - start < 0.2 * 1.1 + 0.25  # (scheduling on a loaded machine)
        assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
    finally:
        store.close()
    cluster = RedisStore(f"redis+cluster://127.0.0.1:{port}", timeout=0.2)
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}"):
        cluster.get("k")
    cluster.close()


def test_url_and_unix_socket_forms(redis_server: Any, tmp_path: Path) -> None:
    """prefix and timeout come from the query; unix:// reaches a socket-only server."""
    store = RedisStore(redis_server.url + "?prefix=q:&timeout=1.5")
    assert (store.prefix, store.timeout) == ("q:", 1.5)
    assert "127.0.0.1" in repr(store)
    store.close()
    socket = tmp_path / "redis.sock"
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(socket), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        store = RedisStore(f"unix://{socket}?db=1")
        try:
            store.set("k", Entry(b"v"))
            got = store.get("k")
            assert got is not None
            assert got.value == b"v"
            assert asyncio.run(store.get_async("k")) is not None
        finally:
            store.close()
    finally:
        process.kill()
        process.wait()


# -- layout, server TTL, tags index, damage ----------------------------------------------------


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, prefix="p:")
    store.clock = FakeClock()
    yield store
    store.close()


def test_a_get_is_one_plain_get_of_the_packed_record(store: RedisStore, raw: redis.Redis) -> None:
    entry = Entry(b"body", b"hdr", 5.0, None, ("t",), {"m": 1}, 7)
    store.set("\ud800/k", entry)
    assert raw.get(b"p:e:\xed\xa0\x80/k") == _wire.pack(entry)
    assert raw.smembers(
        b"p:" + b"t:" + hashlib.blake2b(b"t", digest_size=16).hexdigest().encode()
    ) == {b"\xed\xa0\x80/k"}


def test_server_ttl_is_the_logical_expiry_plus_slack(store: RedisStore, raw: redis.Redis) -> None:
    """PX = remaining (on the store's clock, here 1970) + slack; far or no expiry: none."""
    now = store.clock.time()
    store.set("k", Entry(b"v", expires_at=now + 10))
    assert 10_900 <= raw.pttl(b"p:e:k") <= 11_000
    store._slack = 100
    store.set("k", Entry(b"v", expires_at=now + 10))
    assert 109_900 <= raw.pttl(b"p:e:k") <= 110_000
    assert store.touch("k", now + 1e15) is True
    assert raw.pttl(b"p:e:k") == -1
    assert store.touch("k", now + 5) is True
    assert 104_900 <= raw.pttl(b"p:e:k") <= 105_000
    assert store.touch("k", None) is True
    assert raw.pttl(b"p:e:k") == -1
    store.set("old", Entry(b"v", expires_at=now - 1))  # already expired: not written
    assert raw.exists(b"p:e:old") == 0


def test_the_tag_index_drops_stale_members_on_evict(store: RedisStore, raw: redis.Redis) -> None:
    """Overwrites without the tag and deletions leave stale members, never counted."""
    for key in ("a", "b", "c"):
        store.set(key, Entry(key.encode(), tags=("t",)))
    store.set("a", Entry(b"A"))  # no longer tagged
    store.delete("b")
    tag_set = store._keys.tag("t")
    assert raw.scard(tag_set) == 3
    assert sorted(store.keys(tag="t")) == ["c"]
    assert store.evict("t") == 1
    assert raw.scard(tag_set) == 0
    assert store.get("a") is not None


def test_glob_characters_in_prefixes_match_literally(redis_url: str) -> None:
    """Store prefixes and key prefixes with * ? [ ] \\ scan only what they name."""
    stores = [RedisStore(redis_url, prefix=p) for p in ("a*", "ab", "a?", "[a]", "\\")]
    try:
        for n, s in enumerate(stores):
            s.set("k*", Entry(b"%d" % n))
            s.set("k?x", Entry(b"%d" % n))
            s.set("k[", Entry(b"%d" % n))
        for s in stores:
            assert sorted(s.keys()) == ["k*", "k?x", "k["]
            assert sorted(s.keys("k?")) == ["k?x"]
            assert s.count("k[") == 1
        assert stores[0].clear("k*") == 1
        assert stores[0].clear() == 2
        assert [s.count() for s in stores] == [0, 3, 3, 3, 3]
    finally:
        for s in stores:
            s.close()


def test_a_damaged_record_is_a_miss_and_removed(store: RedisStore, raw: redis.Redis) -> None:
    store.set("k", Entry(b"v"))
    raw.set(b"p:e:k", b"T1 not a record")
    assert store.get("k") is None
    assert raw.exists(b"p:e:k") == 0
    raw.set(b"p:e:j", b"x")
    assert store.info("j") is None
    assert store.delete("j") is False
    assert store.touch("j", None) is False


# -- batches ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["single", "cluster"])
def test_get_many_and_set_many_take_hostile_keys_across_slots(
    where: str, redis_url: str, redis_cluster: Any
) -> None:
    url = redis_url if where == "single" else redis_cluster.url.replace("redis:", "redis+cluster:")
    store = RedisStore(url, prefix=f"m{uuid.uuid4().hex[:8]}:", timeout=CLUSTER_TIMEOUT)
    store.clock = clock = FakeClock()
    keys = [*HOSTILE_KEYS, *(f"k{i}" for i in range(300))]  # every slot's share
    try:
        items = [(k, Entry(b"%d" % i, expires_at=clock.time() + 5 if i % 7 == 0 else None))
                 for i, k in enumerate(keys)]  # fmt: skip
        store.set_many(items)
        got = store.get_many([*keys, "missing"])
        assert [e and e.value for e in got] == [b"%d" % i for i in range(len(keys))] + [None]
        clock.advance(10)
        got = asyncio.run(store.get_many_async(keys))
        assert [e is None for e in got] == [i % 7 == 0 for i in range(len(keys))]
        asyncio.run(store.set_many_async([(k, Entry(b"again")) for k in keys]))
        assert all(e is not None and e.value == b"again" for e in store.get_many(keys))
        assert store.get_many([]) == []
        assert store.clear() == len(keys)
    finally:
        store.close()


# -- locks -----------------------------------------------------------------------------------


def test_locks_release_only_with_their_token_and_lapse_in_real_time(redis_url: str) -> None:
    store = RedisStore(redis_url)
    try:
        assert store.acquire_lock("L", "a|b", 0.2) is True  # a token may hold the separator
        assert store.release_lock("L", "a") is False
        assert store.acquire_lock("L", "c", 0.2) is False
        assert store.renew_lock("L", "a|b", 0.2) is True
        time.sleep(0.25)
        assert store.renew_lock("L", "a|b", 0.2) is False  # lapsed: taking over is allowed
        assert store.acquire_lock("L", "c", 5) is True
        assert store.release_lock("L", "a|b") is False  # never the successor's lock
        assert store.release_lock("L", "c") is True
    finally:
        store.close()


# -- hypothesis state machine ----------------------------------------------------------------


MACHINE = settings(
    max_examples=15, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip


class RedisStoreMachine(StoreMachine):
    url = ""

    def make_store(self) -> Any:
        # a generous timeout: this checks what calls do, not how long (a loaded machine)
        store = RedisStore(self.url, prefix=f"h{uuid.uuid4().hex[:8]}:", timeout=5.0)
        store._slack = 3600  # fake expiries are 0.5 s; real time must not end them
        return store

    def teardown(self) -> None:
        self.store.clear()
        super().teardown()


def test_redis_store_state_machine(redis_url: str) -> None:
    RedisStoreMachine.url = redis_url
    run_state_machine_as_test(RedisStoreMachine, settings=MACHINE)


# -- through a Cache, and across processes -----------------------------------------------------


def test_a_cache_over_memory_and_redis(redis_url: str) -> None:
    """get/set/get_or_set/tags/evict/ttl through a memory tier over Redis."""
    store = RedisStore(redis_url, prefix="c:")
    cache = Cache(MemoryStore(), store, secret="s" * 32)
    other = Cache(store, secret="s" * 32)  # another process would see Redis only
    try:
        cache.set("a", {"x": 1}, tags=("t",))
        cache.set("b", [1, 2], tags=("t",), ttl=0.3)
        cache.set("c", None)
        assert other.get("a") == {"x": 1}
        assert other.get("c", "<miss>") is None
        assert cache.get_or_set("d", lambda: "made") == "made"
        assert other.get_or_set("d", lambda: "again") == "made"
        assert sorted(other.keys(tag="t")) == ["a", "b"]
        time.sleep(0.35)
        assert other.get("b") is None
        assert cache.get("b") is None
        assert cache.evict("t") >= 1
        assert other.get("a") is None
        assert asyncio.run(other.get_async("d")) == "made"
    finally:
        cache.close()
        other.close()
        store.close()


def test_get_or_set_computes_once_across_processes(redis_url: str, tmp_path: Path) -> None:
    """4 spawned processes ask for one cold key at once: one computation, one value."""
    log = tmp_path / "computations.log"
    log.touch()
    spawn = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # after every process has imported tiers
    with ProcessPoolExecutor(4, mp_context=spawn) as pool:
        futures = [
            pool.submit(workers.single_flight, redis_url, "sf:", str(log), start_at)
            for _ in range(4)
        ]
        results = [future.result(timeout=60) for future in futures]
    assert results == ["computed"] * 4
    assert len(log.read_text().split()) == 1


def test_signed_pickles_are_shared_by_processes_with_the_same_secret(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same TIERS_SECRET: the value; another secret: a miss, never an error or an unpickle."""
    monkeypatch.setenv("TIERS_SECRET", "shared-secret-" * 3)
    store = RedisStore(redis_url, prefix="sec:")
    cache = Cache(store)
    try:
        cache.set("k", {"a": [1, 2]})
    finally:
        cache.close()
        store.close()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        assert pool.submit(workers.read, redis_url, "sec:", "k").result(60) == {"a": [1, 2]}
    monkeypatch.setenv("TIERS_SECRET", "another-secret-" * 3)
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        assert pool.submit(workers.read, redis_url, "sec:", "k").result(60) == "<miss>"


def test_messages_never_show_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        RedisStore("redis://user:hunter2@127.0.0.1:6379/x")
    assert "hunter2" not in str(caught.value)
    assert "user:***@" in str(caught.value)
    port = free_port()
    store = RedisStore(f"redis://user:hunter2@127.0.0.1:{port}/0")
    try:
        with pytest.raises(StoreError) as failed:
            store.get("k")
        assert "hunter2" not in str(failed.value) + repr(store)
    finally:
        store.close()


@pytest.mark.parametrize("key", ["small", "k" * 6000], ids=["short-key", "long-key"])
def test_info_reads_the_record_head_not_the_value(redis_url: str, key: str) -> None:
    """`info` (and so `key in cache`) sends the record's first bytes, never a 4 MiB value:
    measured by the server's own count of bytes it sent."""
    store = RedisStore(redis_url, prefix="head:")
    admin = redis.Redis.from_url(redis_url)
    body = bytes(4 * 1024 * 1024)
    try:
        store.set(key, Entry(body, b"hdr", 5.0, None, ("t",), {"m": 1}))

        def sent() -> int:
            return int(admin.info("stats")["total_net_output_bytes"])

        before = sent()
        info = store.info(key)
        after = sent()
        assert info is not None and info.value is None
        assert (info.size, info.header, info.tags, info.meta) == (len(body) + 3, b"hdr", ("t",),
                                                                  {"m": 1})  # fmt: skip
        assert after - before < 64 * 1024
        assert store.info("absent") is None
    finally:
        store.close()
        admin.close()
