"""ObjectStore.revalidate: is a copy of an entry (read with its `Entry.version`, the object's
e_tag) still what the object holds? One conditional read (If-None-Match) that moves no value
when it is, the entry as it is now when it is not. On real S3 servers (moto, SeaweedFS) and
obstore's local and memory stores, each written by a second ObjectStore (another machine)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obstore.store
import pytest

from tiers._stores import Entry
from tiers._stores._object import ObjectStore
from tiers._stores._protocol import UNCHANGED
from tiers.errors import StoreError
from tiers.testing import FakeClock

from ._netfaults import FaultProxy, FaultyS3

MiB = 1024 * 1024
BACKENDS = ["moto", "seaweed", "local", "memory"]


@dataclass
class Pair:
    """Two ObjectStore objects over the same objects: `mine` holds copies, `other` writes."""

    mine: ObjectStore
    other: ObjectStore
    clock: FakeClock

    def path(self, key: str) -> str:
        """The object of `key`, as the obstore store underneath names it."""
        return self.mine._layout.entry(key)


def _s3_pair(server: Any) -> tuple[ObjectStore, ObjectStore]:
    url = f"s3://{server.new_bucket()}/cache"
    return ObjectStore(url, **server.store_options()), ObjectStore(url, **server.store_options())


@pytest.fixture(params=BACKENDS)
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    kind = request.param
    if kind in ("moto", "seaweed"):
        mine, other = _s3_pair(request.getfixturevalue(f"{kind}_s3"))
    elif kind == "local":
        url = f"file://{tmp_path}/objects"
        mine, other = ObjectStore(url, prefix="c"), ObjectStore(url, prefix="c")
    else:  # memory:// is private to a store object: two over one obstore MemoryStore
        shared = obstore.store.MemoryStore()
        mine, other = ObjectStore(shared, prefix="c"), ObjectStore(shared, prefix="c")
    clock = FakeClock(time.time())
    mine.clock = other.clock = clock
    yield Pair(mine, other, clock)
    mine.close()
    other.close()


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``call(store, "get", key)``: the method, or its ``_async`` twin run to completion."""

    def sync(store: ObjectStore, name: str, *args: Any) -> Any:
        return getattr(store, name)(*args)

    def in_loop(store: ObjectStore, name: str, *args: Any) -> Any:
        return asyncio.run(getattr(store, name + "_async")(*args))

    return sync if request.param == "sync" else in_loop


def _entry(body: bytes = b"value", expires_at: float | None = None) -> Entry:
    return Entry(body, b"hdr", 1.0, expires_at)


# -- versions from reads ---------------------------------------------------------------------


def test_reads_give_the_objects_e_tag(pair: Pair, call: Callable[..., Any]) -> None:
    pair.mine.set("k", _entry())
    got = call(pair.mine, "get", "k")
    assert got.version is not None and got.version.startswith('"')  # an e_tag, quoted
    assert got.version == pair.mine.store.head(pair.path("k"))["e_tag"]
    assert call(pair.mine, "info", "k").version == got.version
    assert [e.version for e in call(pair.mine, "get_many", ["k", "none"]) if e] == [got.version]
    assert call(pair.other, "get", "k").version == got.version  # any machine reads the same
    assert callable(pair.mine.revalidate) and callable(pair.mine.revalidate_async)


# -- revalidation ----------------------------------------------------------------------------


def test_unchanged_answers_unchanged(pair: Pair, call: Callable[..., Any]) -> None:
    pair.mine.set("k", _entry(expires_at=pair.clock.time() + 60))
    copy = call(pair.mine, "get", "k")
    before = pair.mine.stats()
    for _ in range(3):
        assert call(pair.mine, "revalidate", "k", copy.version) is UNCHANGED
    after = pair.mine.stats()
    assert (after.items, after.rejected, after.expirations) == (1, 0, 0) == (
        before.items, before.rejected, before.expirations
    )  # fmt: skip


def test_rewritten_by_another_store_gives_the_new_entry(
    pair: Pair, call: Callable[..., Any]
) -> None:
    pair.mine.set("k", _entry(b"first"))
    copy = call(pair.mine, "get", "k")
    pair.other.set("k", _entry(b"second"))
    new = call(pair.mine, "revalidate", "k", copy.version)
    assert new.value == b"second" and new.header == b"hdr"
    assert new.version not in (None, copy.version)
    assert call(pair.mine, "revalidate", "k", new.version) is UNCHANGED
    # a new expiry is a rewrite too (touch patches the record): the copy is stale
    later = pair.clock.time() + 300
    assert pair.other.touch("k", later)
    touched = call(pair.mine, "revalidate", "k", new.version)
    assert (touched.value, touched.expires_at) == (b"second", later)
    assert touched.version not in (new.version, copy.version)


def test_deleted_or_missing_is_none(pair: Pair, call: Callable[..., Any]) -> None:
    pair.mine.set("k", _entry())
    copy = call(pair.mine, "get", "k")
    assert pair.other.delete("k")
    assert call(pair.mine, "revalidate", "k", copy.version) is None
    assert call(pair.mine, "revalidate", "never", copy.version) is None
    assert call(pair.mine, "revalidate", "never", None) is None


def test_expired_is_none_removed_and_counted(pair: Pair, call: Callable[..., Any]) -> None:
    now = pair.clock.time()
    pair.mine.set("k", _entry(b"first", expires_at=now + 100))
    copy = call(pair.mine, "get", "k")
    # unchanged: the copy is the stored entry, its expiry for the caller to check
    pair.clock.advance(200)
    assert call(pair.mine, "revalidate", "k", copy.version) is UNCHANGED
    assert copy.expires_at == now + 100 < pair.clock.time()
    # rewritten by another machine with an expiry that has passed: a miss, removed
    pair.other.set("k", _entry(b"second", expires_at=now + 150))
    assert call(pair.mine, "revalidate", "k", copy.version) is None
    assert pair.mine.stats().expirations == 1
    assert pair.mine.store.list(pair.path("k")).collect() == []


def test_damaged_is_none_removed_and_counted(pair: Pair, call: Callable[..., Any]) -> None:
    pair.mine.set("k", _entry())
    copy = call(pair.mine, "get", "k")
    pair.mine.store.put(pair.path("k"), b"T1 not a record at all")
    assert call(pair.mine, "revalidate", "k", copy.version) is None
    assert pair.mine.stats().rejected == 1
    assert pair.mine.store.list(pair.path("k")).collect() == []


def test_no_version_is_a_get(pair: Pair, call: Callable[..., Any]) -> None:
    pair.mine.set("k", _entry(expires_at=pair.clock.time() + 60))
    assert call(pair.mine, "revalidate", "k", None) == call(pair.mine, "get", "k")


# -- what goes over the wire -----------------------------------------------------------------


class CountingProxy(FaultProxy):
    """The fault proxy (no faults), counting the reply bytes it forwards."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.replied = 0

    async def _write(self, link: Any, writer: Any, chunk: bytes, *, upstream: bool) -> bool:
        if not upstream:
            self.replied += len(chunk)
        return await super()._write(link, writer, chunk, upstream=upstream)


@pytest.fixture(params=["moto", "seaweed"])
def counted(request: pytest.FixtureRequest) -> Iterator[tuple[ObjectStore, CountingProxy]]:
    """An S3 store whose connections go through a `CountingProxy`."""
    server = request.getfixturevalue(f"{request.param}_s3")
    proxy = CountingProxy(int(server.endpoint.rsplit(":", 1)[1])).start()
    options = {**server.store_options(), "endpoint": f"http://127.0.0.1:{proxy.port}"}
    store = ObjectStore(f"s3://{server.new_bucket()}/big", **options)
    yield store, proxy
    store.close()
    proxy.stop()


def test_unchanged_moves_no_value(
    counted: tuple[ObjectStore, CountingProxy], call: Callable[..., Any]
) -> None:
    store, proxy = counted
    value = bytes(range(256)) * (5 * MiB // 256)
    store.set("big", _entry(value))

    def moved(name: str, *args: Any) -> tuple[Any, int]:
        before = proxy.replied
        found = call(store, name, *args)
        return found, proxy.replied - before

    copy, by_get = moved("get", "big")
    assert copy.value == value and by_get >= 5 * MiB
    answer, by_revalidate = moved("revalidate", "big", copy.version)
    assert answer is UNCHANGED
    assert by_revalidate < 64 * 1024, by_revalidate
    print(f"\n5 MiB value: get moved {by_get} bytes, an unchanged revalidation {by_revalidate}")


def test_a_store_ignoring_if_none_match_still_answers_unchanged() -> None:
    """moto with If-None-Match taken out of every request: the e_tag of the reply decides,
    and the value it sends is not read."""
    server = FaultyS3().start()
    middleware = server.middleware
    app = middleware.app

    statuses: list[str] = []

    def without_if_none_match(environ: dict[str, Any], start_response: Any) -> Any:
        environ.pop("HTTP_IF_NONE_MATCH", None)

        def noted(status: str, *args: Any) -> Any:
            statuses.append(status)
            return start_response(status, *args)

        return app(environ, noted)

    middleware.app = without_if_none_match
    url = f"s3://{server.new_bucket()}/deaf"
    mine, other = (ObjectStore(url, **server.store_options()) for _ in range(2))
    try:
        mine.set("k", _entry(b"first"))
        copy = mine.get("k")
        assert copy is not None
        del middleware.requests[:], statuses[:]
        assert mine.revalidate("k", copy.version) is UNCHANGED
        assert asyncio.run(mine.revalidate_async("k", copy.version)) is UNCHANGED
        assert [method for method, _path in middleware.requests] == ["GET", "GET"]
        assert [status[:3] for status in statuses] == ["200", "200"]  # the value, sent
        other.set("k", _entry(b"second"))
        new = mine.revalidate("k", copy.version)
        assert new is not UNCHANGED and new is not None and new.value == b"second"
    finally:
        mine.close()
        other.close()
        server.stop()


class _NoETagResult:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.meta = {**inner.meta, "e_tag": None}

    def buffer(self) -> Any:
        return self.inner.buffer()

    async def buffer_async(self) -> Any:
        return await self.inner.buffer_async()


class NoETags:
    """obstore's LocalStore through obspec's methods, its e_tags withheld (as from a store
    that has none); counts the requests that read no body (HEAD)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.heads = 0

    def _note(self, options: Any) -> None:
        assert not (options or {}).get("if_none_match")  # nothing to compare it with
        self.heads += bool((options or {}).get("head"))

    def get(self, path: str, *, options: Any = None) -> _NoETagResult:
        self._note(options)
        return _NoETagResult(self.inner.get(path, options=options))

    async def get_async(self, path: str, *, options: Any = None) -> _NoETagResult:
        self._note(options)
        return _NoETagResult(await self.inner.get_async(path, options=options))

    def __getattr__(self, name: str) -> Any:  # put, delete, list and their _async twins
        return getattr(self.inner, name)


def test_a_store_without_e_tags_revalidates_with_a_head(
    tmp_path: Path, call: Callable[..., Any]
) -> None:
    """The version is the last-modified time and size; an unchanged object costs one HEAD."""
    raw = NoETags(obstore.store.LocalStore(str(tmp_path), mkdir=True))
    store = ObjectStore(raw)
    store.set("k", _entry(b"first"))
    copy = call(store, "get", "k")
    meta = raw.inner.head(store._layout.entry("k"))
    assert copy.version == f"~modified:{meta['last_modified']}:size:{meta['size']}"
    assert call(store, "info", "k").version == copy.version
    assert call(store, "revalidate", "k", copy.version) is UNCHANGED
    assert raw.heads == 1
    store.set("k", _entry(b"second!"))
    new = call(store, "revalidate", "k", copy.version)
    assert new.value == b"second!" and new.version != copy.version
    assert raw.heads == 2
    store.close()


# -- deadlines and errors --------------------------------------------------------------------


def test_a_frozen_server_fails_within_the_timeout(moto_s3: Any, call: Callable[..., Any]) -> None:
    proxy = FaultProxy(int(moto_s3.endpoint.rsplit(":", 1)[1])).start()
    options = {**moto_s3.store_options(), "endpoint": f"http://127.0.0.1:{proxy.port}"}
    store = ObjectStore(f"s3://{moto_s3.new_bucket()}/frozen", timeout=0.5, **options)
    try:
        store.set("k", _entry())
        copy = call(store, "get", "k")
        proxy.set(blackhole=True)
        started = time.monotonic()
        with pytest.raises(StoreError, match="ObjectStore"):
            call(store, "revalidate", "k", copy.version)
        assert time.monotonic() - started < 2.0
    finally:
        store.close()
        proxy.stop()


def test_errors_become_store_errors(moto_s3: Any, call: Callable[..., Any]) -> None:
    store = ObjectStore("s3://no-such-bucket-here/x", **moto_s3.store_options())
    with pytest.raises(StoreError, match="bucket does not exist"):
        call(store, "revalidate", "k", '"abc"')
    store.close()
    with pytest.raises(StoreError, match="closed"):
        call(store, "revalidate", "k", '"abc"')
