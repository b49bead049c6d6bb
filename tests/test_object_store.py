"""ObjectStore against real S3 servers (moto, SeaweedFS), obstore's memory and local stores,
and an injected store: the conformance suite, URLs and bad input, names, tags, locks, the
cache on top, and single-flight across processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import obstore.store
import pytest
from hypothesis import HealthCheck, settings

from tiers import Cache, MemoryStore, memoize
from tiers._stores import Entry, Store
from tiers._stores._object import ObjectStore
from tiers.errors import ConfigError, StoreError
from tiers.testing import FakeClock, StoreTests

from . import _object_workers as workers
from ._origin import TracingStore
from ._servers import CREDENTIALS, REGION, free_port
from ._store_media import ObjectMedium
from .test_store_state_machines import StoreMachine

MiB = 1024 * 1024

SETTINGS_S3 = settings(
    max_examples=15,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TestMemoryObjectStore(ObjectMedium, StoreTests):
    persistent = False  # memory:// is private to each store object

    def make_store(self, tmp_path: Path) -> Store:
        store = ObjectStore("memory://")
        self.objects = store._store  # obstore's MemoryStore: the only way in
        return store


class TestLocalObjectStore(ObjectMedium, StoreTests):
    def make_store(self, tmp_path: Path) -> Store:
        self.objects = obstore.store.LocalStore(tmp_path / "objects", mkdir=True)
        return ObjectStore(f"file://{tmp_path}/objects", prefix="cache")


class TestMotoObjectStore(ObjectMedium, StoreTests):
    @pytest.fixture(autouse=True)
    def _server(self, moto_s3: Any) -> None:
        self.server = moto_s3

    def make_store(self, tmp_path: Path) -> Store:
        url = f"s3://{self.server.new_bucket()}/cache"
        self.objects = obstore.store.from_url(url, **self.server.store_options())
        return ObjectStore(url, **self.server.store_options())


class TestSeaweedObjectStore(ObjectMedium, StoreTests):
    @pytest.fixture(autouse=True)
    def _server(self, seaweed_s3: Any) -> None:
        self.server = seaweed_s3

    def make_store(self, tmp_path: Path) -> Store:
        bucket = self.server.new_bucket()
        self.objects = obstore.store.from_url(f"s3://{bucket}", **self.server.store_options())
        return ObjectStore(f"s3://{bucket}", prefix="p/q", **self.server.store_options())


class TestInjectedObjectStore(ObjectMedium, StoreTests):
    """An obstore store object made by the caller (an S3Store pickles: persistent)."""

    @pytest.fixture(autouse=True)
    def _server(self, moto_s3: Any) -> None:
        self.server = moto_s3

    def make_store(self, tmp_path: Path) -> Store:
        options = self.server.store_options()
        bucket = self.server.new_bucket()
        self.objects = obstore.store.from_url(f"s3://{bucket}", **options)
        s3 = obstore.store.from_url(f"s3://{bucket}", **options, retry_config={"max_retries": 0})
        return ObjectStore(s3, prefix="injected")


# -- helpers ---------------------------------------------------------------------------------


def _s3(server: Any) -> Any:
    return boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION, **CREDENTIALS)


def _objects(server: Any, bucket: str) -> list[str]:
    """Every object name in `bucket`, seen through boto3 (not through the store)."""
    pages = _s3(server).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


def _entry(body: bytes = b"v", **fields: Any) -> Entry:
    return Entry(body, b"hdr", 1.0, **fields)


@pytest.fixture
def bucket(moto_s3: Any) -> str:
    return str(moto_s3.new_bucket())


@pytest.fixture
def s3_store(moto_s3: Any, bucket: str) -> Iterator[ObjectStore]:
    store = ObjectStore(f"s3://{bucket}/cache", **moto_s3.store_options())
    yield store
    store.close()


# -- URLs, options and bad input -------------------------------------------------------------


def test_query_options_configure_the_store_and_prefixes_combine(moto_s3: Any) -> None:
    """Options in the URL's query work like keyword options; URL path and prefix= nest."""
    bucket = moto_s3.new_bucket()
    url = (
        f"s3://{bucket}/from-url?endpoint={moto_s3.endpoint}&region=us-east-1"
        "&access_key_id=test&secret_access_key=test&allow_http=true&timeout=2"
    )
    store = ObjectStore(url, prefix="/and/prefix/")
    try:
        assert store.timeout == 2.0
        store.set("ab", _entry())
        assert _objects(moto_s3, bucket) == ["from-url/and/prefix/e/6162_"]
        assert store.get("ab") is not None
        copy = pickle.loads(pickle.dumps(store))
        assert copy.get("ab") is not None
        assert "secret" not in repr(store)
        copy.close()
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "options", "kind"),
    [
        ("s3://bucket/p", {"region": "eu-west-1"}, "S3Store"),
        ("s3a://bucket/p", {}, "S3Store"),
        ("gs://bucket/p", {}, "GCSStore"),
        ("az://container/p", {"account_name": "acct"}, "AzureStore"),
        ("azure://container/p", {"account_name": "acct"}, "AzureStore"),
        ("abfs://container@acct.dfs.core.windows.net/p", {}, "AzureStore"),
        ("memory://", {}, "MemoryStore"),
    ],
)
def test_every_url_form_opens_lazily_and_pickles(url: str, options: Any, kind: str) -> None:
    """Making a store from any supported URL requests nothing; a copy has the same config."""
    store = ObjectStore(url, prefix="x", timeout=3, **options)
    assert type(store.store).__name__ == kind
    copy = pickle.loads(pickle.dumps(store))
    assert (repr(copy), copy.timeout, copy.prefix) == (repr(store), 3.0, "x")
    assert ObjectStore(url + "?prefix=y&timeout=0.5", **options).prefix == "y"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://bucket/x", "not an object store URL"),
        ("s3://", "names no bucket"),
        ("s3:///path", "names no bucket"),
        ("s3://bucket?bogus_option=1", "cannot open"),
        ("s3://bucket?region=a&region=b", "given twice"),
        ("s3://bucket?timeout=soon", "timeout"),
        ("s3://bucket?timeout=-1", "timeout"),
        ("memory://?bogus=1", "cannot open"),
    ],
)
def test_bad_urls_and_options_are_one_sentence_config_errors(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        ObjectStore(url)
    assert "\n" not in str(caught.value)


def test_bad_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="URL or an obspec store"):
        ObjectStore(42)
    with pytest.raises(TypeError, match="prefix must be a str"):
        ObjectStore("memory://", prefix=b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="options with a URL"):
        ObjectStore(obstore.store.MemoryStore(), region="x")
    with pytest.raises(ConfigError, match="timeout"):
        ObjectStore("memory://", timeout=0)


def test_an_unpicklable_injected_store_says_so_on_pickle() -> None:
    store = ObjectStore(obstore.store.MemoryStore())
    store.set("k", _entry())
    assert store.get("k") is not None
    with pytest.raises(TypeError, match=r"cannot pickle .*give ObjectStore a URL"):
        pickle.dumps(store)


@pytest.mark.parametrize("server", ["moto_s3", "seaweed_s3"])
def test_a_missing_bucket_is_a_store_error_saying_so(server: str, request: Any) -> None:
    s3 = request.getfixturevalue(server)
    store = ObjectStore("s3://no-such-bucket-here/x", **s3.store_options())
    with pytest.raises(StoreError, match="the bucket does not exist") as caught:
        store.get("k")
    assert "\n" not in str(caught.value)
    assert caught.value.__cause__ is not None
    store.close()


def test_an_unreachable_endpoint_fails_the_first_call_naming_it(moto_s3: Any) -> None:
    """Construction asks nothing; a refused connection and a server that never answers fail
    the first call with a StoreError naming the endpoint, within the timeout."""
    dead = f"http://127.0.0.1:{free_port()}"
    store = ObjectStore("s3://bucket", endpoint=dead, region="us-east-1", allow_http=True)
    with pytest.raises(StoreError, match=re.escape(dead)):
        store.get("k")
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        options = {**moto_s3.store_options(), "endpoint": endpoint}
        slow = ObjectStore("s3://bucket", timeout=0.5, **options)
        started = time.monotonic()
        with pytest.raises(StoreError, match=re.escape(endpoint)):
            slow.set("k", _entry())
        assert time.monotonic() - started < 0.5 * 1.1 + 0.25  # (scheduling on a loaded machine)


def test_file_urls_keep_entries_in_the_directory(tmp_path: Path) -> None:
    store = ObjectStore(f"file://{tmp_path}/objects")
    store.set("a/b", _entry())
    assert store.directory == tmp_path / "objects"
    assert [p.name for p in (tmp_path / "objects" / "e").iterdir()] == ["612f62_"]
    assert not hasattr(store, "acquire_lock")  # LocalStore has no conditional puts
    assert store.touch("a/b", time.time() + 60) is True  # an unconditional rewrite there
    assert store.get("a/b") is not None


# -- layout: names, long keys, prefixes, tag markers, damage ---------------------------------


def test_long_keys_get_short_names_and_prefixes_still_select(
    s3_store: ObjectStore, moto_s3: Any, bucket: str
) -> None:
    """Keys of 10 000 characters sharing long prefixes: names stay < 1024 bytes, prefixes
    of any length select exactly, clear(prefix) too."""
    base = "k" * 5000
    keys = [base, base + "a", base + "b" * 5000, "k" * 399, "k" * 400, "k" * 401, "other"]
    for key in keys:
        s3_store.set(key, _entry(key[-3:].encode()))
    names = _objects(moto_s3, bucket)
    assert len(names) == len(keys)
    assert max(len(name.encode()) for name in names) < 1024
    assert all(part and part not in (".", "..") for n in names for part in n.split("/"))
    assert sorted(s3_store.keys(base)) == sorted(keys[:3])
    assert sorted(s3_store.keys("k" * 400)) == sorted(k for k in keys if k.startswith("k" * 400))
    assert sorted(s3_store.keys(base + "b")) == [base + "b" * 5000]
    assert s3_store.count("k" * 401) == 4
    assert s3_store.clear(base + "a") == 1
    assert s3_store.get(base) is not None
    assert s3_store.clear("k") == 5
    assert list(s3_store.keys()) == ["other"]


def test_tag_markers_are_written_first_and_stale_ones_cleaned_by_evict(
    s3_store: ObjectStore, moto_s3: Any, bucket: str
) -> None:
    s3_store.set("ab", _entry(tags=("red",)))
    assert _objects(moto_s3, bucket) == ["cache/e/6162_", "cache/t/726564_/6162_"]
    s3_store.set("ab", _entry())  # the tag is gone; the marker stays (stale)
    assert list(s3_store.keys(tag="red")) == []
    assert s3_store.evict("red") == 0
    assert _objects(moto_s3, bucket) == ["cache/e/6162_"]
    s3_store.set("ab", _entry(tags=("t" * 300,)))  # long tags: a digest folder
    assert len(_objects(moto_s3, bucket)) == 2
    assert s3_store.evict("t" * 300) == 1
    assert _objects(moto_s3, bucket) == []


def test_a_damaged_record_is_a_miss_removed_and_counted(
    s3_store: ObjectStore, moto_s3: Any, bucket: str
) -> None:
    s3_store.set("k", _entry())
    _s3(moto_s3).put_object(Bucket=bucket, Key="cache/e/6b_", Body=b"T1 not a record")
    assert s3_store.get("k") is None
    assert _objects(moto_s3, bucket) == []
    assert s3_store.stats().rejected == 1
    s3_store.set("k", _entry())
    other = "cache/e/" + "6a_"  # "j"'s name, holding "k"'s record: never served as "j"
    _s3(moto_s3).copy_object(Bucket=bucket, Key=other, CopySource=f"{bucket}/cache/e/6b_")
    assert s3_store.get("j") is None
    assert s3_store.get("k") is not None


def test_get_many_and_set_many_sync_and_async(s3_store: ObjectStore) -> None:
    clock = FakeClock()
    s3_store.clock = clock
    items = [(f"k{i}", _entry(b"%d" % i, tags=("t",))) for i in range(20)]
    s3_store.set_many(items)
    s3_store.set("short", _entry(expires_at=clock.time() + 1))
    clock.advance(2)
    got = s3_store.get_many(["k3", "missing", "short", "k19"])
    assert [None if e is None else e.value for e in got] == [b"3", None, None, b"19"]

    async def scenario() -> list[Entry | None]:
        await s3_store.set_many_async([("a", _entry(b"A")), ("b", _entry(b"B"))])
        return await s3_store.get_many_async(["a", "b", "k0", "nope"])

    found = asyncio.run(scenario())
    assert [None if e is None else e.value for e in found] == [b"A", b"B", b"0", None]
    assert s3_store.evict("t") == 20


# -- what is downloaded ----------------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_info_delete_and_scans_never_download_values(
    moto_s3: Any, bucket: str, use_async: bool
) -> None:
    """info, delete, keys, count, evict, expire and clear read each record's first bytes
    (a second ranged read when a long key or meta goes past them), never its value."""
    origin = TracingStore(obstore.store.S3Store(bucket, **moto_s3.store_options()))
    store = ObjectStore(origin, prefix="big")
    clock = FakeClock()
    store.clock = clock
    body = bytes(2 * MiB)
    long_key = "k" * 6000  # its record's head is longer than the first ranged read
    keys = ["a", "b", "c", "d", long_key]
    for i, key in enumerate(keys):
        expires = clock.time() + 5 if key == "d" else None
        store.set(key, Entry(body, b"hdr", clock.time(), expires, ("t",) if i % 2 else (),
                             {"i": i}))  # fmt: skip
    origin.reset()

    async def run_async() -> tuple[Any, ...]:
        info = await store.info_async(long_key)
        deleted = await store.delete_async("a")
        count = await store.count_async()
        evicted = await store.evict_async("t")
        clock.advance(10)
        expired = await store.expire_async()
        return info, deleted, count, evicted, expired, await store.clear_async()

    def run_sync() -> tuple[Any, ...]:
        info = store.info(long_key)
        deleted = store.delete("a")
        count = store.count()
        evicted = store.evict("t")
        clock.advance(10)
        expired = store.expire()
        return info, deleted, count, evicted, expired, store.clear()

    assert sorted(store.keys()) == sorted(keys)
    assert sorted(store.keys(tag="t")) == ["b", "d"]
    info, deleted, count, evicted, expired, cleared = (
        asyncio.run(run_async()) if use_async else run_sync()
    )
    assert info is not None and info.value is None
    assert (info.size, info.header, info.meta, info.tags) == (len(body) + 3, b"hdr", {"i": 4}, ())
    assert (deleted, count, evicted, expired, cleared) == (True, 4, 2, 0, 2)
    assert origin.requests["get"] >= 10
    assert origin.bytes_fetched < len(body) // 10, "a value was downloaded"
    store.close()


# -- locks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["moto_s3", "seaweed_s3"])
def test_racing_acquirers_get_one_lock(server: str, request: Any) -> None:
    """Eight threads (each with its own store object) race for a free lock and for one
    whose lease ran out: exactly one wins each time."""
    s3 = request.getfixturevalue(server)
    bucket = s3.new_bucket()
    stores = [ObjectStore(f"s3://{bucket}", **s3.store_options()) for _ in range(8)]
    try:
        for lease_over in (False, True):
            if lease_over:
                assert stores[0].acquire_lock("L", "first", 0.2)
                time.sleep(0.3)
            barrier = threading.Barrier(8)

            def race(n: int, barrier: threading.Barrier = barrier) -> bool | str:
                barrier.wait()
                try:
                    return bool(stores[n].acquire_lock("L", f"t{n}", 30))
                except StoreError as exc:  # reported below
                    return str(exc)

            with ThreadPoolExecutor(8) as pool:
                won = list(pool.map(race, range(8)))
            assert won.count(True) == 1, won
            winner = won.index(True)
            assert stores[0].release_lock("L", f"t{winner}") is True
    finally:
        for store in stores:
            store.close()


def test_a_late_release_never_frees_a_successors_lock(s3_store: ObjectStore) -> None:
    """A holds; its lease ends (fake clock); B takes over; A's renew and release fail and
    B still holds."""
    clock = FakeClock()
    s3_store.clock = clock
    assert s3_store.acquire_lock("job", "A", 10) is True
    clock.advance(11)
    assert s3_store.acquire_lock("job", "B", 10) is True
    assert s3_store.release_lock("job", "A") is False
    assert s3_store.renew_lock("job", "A", 10) is False
    assert s3_store.acquire_lock("job", "C", 10) is False
    assert s3_store.renew_lock("job", "B", 10) is True
    assert s3_store.release_lock("job", "B") is True


def test_locks_on_memory_urls() -> None:
    clock = FakeClock()
    store = ObjectStore("memory://")
    store.clock = clock
    assert store.acquire_lock("L", "a", 5) is True
    assert store.acquire_lock("L", "b", 5) is False
    clock.advance(6)
    assert store.acquire_lock("L", "b", 5) is True
    assert store.release_lock("L", "a") is False


# -- the cache on top ------------------------------------------------------------------------


def test_memory_over_s3_memoize_like_core_aws_cache_s3_based(moto_s3: Any, bucket: str) -> None:
    """Memory L1 over an S3 L2 with a TTL: one computation, the value shared through the
    bucket, and an expired object deleted by the read that finds it."""
    options = moto_s3.store_options()
    calls: list[int] = []

    def square(x: int) -> int:
        calls.append(x)
        return x * x

    first = memoize(
        MemoryStore(max_items=128), ObjectStore(f"s3://{bucket}/cache/", **options), ttl=3600
    )(square)
    assert (first(3), first(3)) == (9, 9)
    assert calls == [3]
    assert len([n for n in _objects(moto_s3, bucket) if "/e/" in n]) == 1
    key = first.key(3)
    later = ObjectStore(f"s3://{bucket}/cache/", **options)
    with Cache(MemoryStore(max_items=128), later, ttl=3600) as other:
        assert other.get(key) == 9  # another process: served from S3
        other.clear()
        assert [n for n in _objects(moto_s3, bucket) if "/e/" in n] == []
    first.cache.clear()
    assert (first(4), calls) == (16, [3, 4])
    later = ObjectStore(f"s3://{bucket}/cache/", **options)
    later.clock = FakeClock(start=time.time() + 3601)  # an hour later
    with Cache(MemoryStore(max_items=128), later, ttl=3600) as other:
        assert other.get(first.key(4)) is None
    assert [n for n in _objects(moto_s3, bucket) if "/e/" in n] == []  # deleted on read
    first.cache.close()


def test_a_cache_takes_an_s3_url_with_its_options_in_the_query(moto_s3: Any, bucket: str) -> None:
    """``Cache("s3://bucket/prefix?endpoint=…")``: configured from one string, and pickled."""
    url = (
        f"s3://{bucket}/cache?endpoint={moto_s3.endpoint}&region={REGION}&allow_http=true"
        f"&access_key_id=test&secret_access_key=test&timeout=2"
    )
    with Cache(MemoryStore(), url, ttl=60, serializer="json") as cache:
        cache.set("a", 1)
        assert _objects(moto_s3, bucket) == ["cache/e/3a61_"]  # ":a": the cache's key
        copy = pickle.loads(pickle.dumps(cache))
        assert copy.get("a") == 1
        copy.close()


def test_single_flight_across_processes_through_s3(
    moto_s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Four spawned processes call get_or_set on one cold key: one computation."""
    spawn = multiprocessing.get_context("spawn")
    record = tmp_path / "computations"
    barrier = spawn.Barrier(4)
    args = (f"s3://{bucket}/cache", moto_s3.store_options(), str(record), barrier)
    children = [spawn.Process(target=workers.get_or_set_shared, args=args) for _ in range(4)]
    for child in children:
        child.start()
    try:
        for child in children:
            child.join(timeout=120)
        assert [child.exitcode for child in children] == [0, 0, 0, 0]
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
    assert len(record.read_text().splitlines()) == 1


# -- a state machine against a model ---------------------------------------------------------


@SETTINGS_S3
class MotoObjectStoreMachine(StoreMachine):
    server: Any = None

    def make_store(self) -> Any:
        bucket = self.server.new_bucket()
        return ObjectStore(f"s3://{bucket}/m", **self.server.store_options())


@pytest.fixture
def _machine_server(moto_s3: Any) -> None:
    MotoObjectStoreMachine.server = moto_s3


TestMotoObjectStoreMachine = pytest.mark.usefixtures("_machine_server")(
    MotoObjectStoreMachine.TestCase
)
