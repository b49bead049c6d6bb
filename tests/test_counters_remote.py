"""`Cache.incr` over shared stores: `RedisStore.update` (a compare-and-set script) and
`ObjectStore.update` (puts conditional on the e_tag read), atomic among processes, threads
and machines.

- what `update` promises, on a real redis-server, a Redis Cluster, obstore's memory store
  and S3 (moto): `change` returning None writes nothing, what it raises goes through as it
  is and writes nothing, a write landing between the read and the write is retried on, tags
  are indexed, the write announced (Redis) or given a new e_tag (S3);
- 4 processes x 8 threads incrementing one counter end at exactly their total, read by a
  fresh cache, every value handed out once (Redis 4 x 8 x 1000; the cluster and S3 fewer:
  S3's conditional puts take contending writers one at a time; ``--soak`` runs 4 x 8 x 1000
  on S3 too), with the conflicts the stores retried and the increments per second;
- a memory copy of a counter in one process is dropped when another process increments it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import obstore.store
import pytest

from tiers import Cache
from tiers._stores import Entry
from tiers._stores._object import ObjectStore
from tiers._stores._protocol import UNCHANGED
from tiers._stores._redis._invalidation import Invalidation

ROOT = Path(__file__).resolve().parent.parent
PROCESSES, THREADS = 4, 8


# -- the stores --------------------------------------------------------------------------------


def _cluster_url(cluster: Any) -> str:
    return str(cluster.url).replace("redis://", "redis+cluster://")


def _s3_spec(server: Any) -> dict[str, Any]:
    return {"s3": f"s3://{server.new_bucket()}/counters", "options": server.store_options()}


def _spec(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where a test's stores meet, as `tests._counter_remote_workers.open_store` takes it."""
    prefix = f"cnt-{uuid.uuid4().hex[:8]}:"
    if kind == "redis":
        return {"redis": request.getfixturevalue("redis_url"), "prefix": prefix}
    if kind == "cluster":
        return {"redis": _cluster_url(request.getfixturevalue("redis_cluster")), "prefix": prefix}
    return _s3_spec(request.getfixturevalue(f"{kind}_s3"))


def _open(spec: dict[str, Any]) -> Any:
    from tests._counter_remote_workers import open_store

    return open_store(spec)


@pytest.fixture(params=["redis", "cluster", "object-memory", "moto"])
def clients(request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """Makes store objects sharing one store, as clients on other machines do."""
    made: list[Any] = []
    if request.param == "object-memory":
        shared = obstore.store.MemoryStore()

        def make() -> Any:
            return ObjectStore(shared)

    else:
        spec = _spec(request.param, request)

        def make() -> Any:
            return _open(spec)

    def opened() -> Any:
        made.append(make())
        return made[-1]

    yield opened
    for store in made:
        store.close()


def _entry(value: bytes, *tags: str, ttl: float | None = None) -> Entry:
    now = time.time()
    return Entry(value, b"h", now, None if ttl is None else now + ttl, tags)


def _plus_one(entry: Entry | None) -> Entry:
    return _entry(b"1" if entry is None else b"%d" % (int(entry.value) + 1))


# -- what update promises ----------------------------------------------------------------------


def test_update_writes_what_change_returns_and_nothing_else(clients: Callable[[], Any]) -> None:
    store, other = clients(), clients()
    assert store.update("k", lambda entry: None) is None  # absent, and nothing to write
    assert other.get("k") is None
    written = store.update("k", lambda entry: _entry(b"1", "t"))
    assert written is not None and written.value == b"1"
    assert other.get("k").value == b"1"
    assert list(other.keys(tag="t")) == ["k"]
    seen: list[Entry | None] = []

    def unchanged(entry: Entry | None) -> None:
        seen.append(entry)

    assert store.update("k", unchanged) is None
    assert [e.value for e in seen if e is not None] == [b"1"]
    assert other.get("k").value == b"1"
    assert store.update("k", _plus_one).value == b"2"
    assert asyncio.run(store.update_async("k", _plus_one)).value == b"3"
    assert other.get("k").value == b"3"


@pytest.mark.parametrize("kind", [KeyError, TypeError, ZeroDivisionError, OSError])
def test_what_change_raises_goes_through_unchanged_and_writes_nothing(
    clients: Callable[[], Any], kind: type[Exception]
) -> None:
    """The very exception, not a StoreError (which the stores make of redis-py's and OS
    errors: OSError from `change` is not the store's), and not chained to anything."""
    store, other = clients(), clients()
    store.set("k", _entry(b"7"))
    errors: list[Exception] = []

    def failing(entry: Entry | None) -> Entry:
        errors.append(kind("from change"))
        raise errors[-1]

    with pytest.raises(kind) as raised:
        store.update("k", failing)
    assert raised.value is errors[-1] and raised.value.__context__ is None
    with pytest.raises(kind) as raised_async:
        asyncio.run(store.update_async("k", failing))
    assert raised_async.value is errors[-1] and raised_async.value.__context__ is None
    assert other.get("k").value == b"7"
    assert store.conflicts == 0


def test_an_expired_entry_is_absent_to_change(clients: Callable[[], Any]) -> None:
    store = clients()
    store.set("k", replace(_entry(b"9"), expires_at=time.time() - 1))
    seen: list[Entry | None] = []

    def change(entry: Entry | None) -> Entry:
        seen.append(entry)
        return _plus_one(entry)

    assert store.update("k", change).value == b"1"
    assert seen == [None]


def test_a_write_between_the_read_and_the_write_is_retried_on(
    clients: Callable[[], Any],
) -> None:
    """Another client writes the key after `update` read it (from inside `change`'s first
    call): the update's write must not land on it; `change` runs again on what that client
    wrote."""
    store, other = clients(), clients()
    store.set("k", _entry(b"0"))
    seen: list[bytes | None] = []

    def change(entry: Entry | None) -> Entry:
        seen.append(None if entry is None else entry.value)
        if len(seen) == 1:
            other.set("k", _entry(b"5"))
        return _plus_one(entry)

    assert store.update("k", change).value == b"6"
    assert seen == [b"0", b"5"]
    assert other.get("k").value == b"6"
    assert store.conflicts == 1


def test_a_key_created_between_the_read_and_the_write_is_not_overwritten(
    clients: Callable[[], Any],
) -> None:
    store, other = clients(), clients()
    calls: list[Entry | None] = []

    def change(entry: Entry | None) -> Entry:
        calls.append(entry)
        if len(calls) == 1:
            other.set("k", _entry(b"40"))
        return _plus_one(entry)

    assert store.update("k", change).value == b"41"
    assert calls[0] is None and calls[1] is not None
    assert other.get("k").value == b"41"


@pytest.mark.parametrize("where", ["redis", "cluster"])
def test_a_redis_update_is_announced_as_a_set_is(
    where: str, request: pytest.FixtureRequest
) -> None:
    spec = _spec(where, request)
    writer, listener = _open(spec), _open(spec)
    heard: list[Any] = []
    watch = listener.watch(heard.append)
    try:
        deadline = time.monotonic() + 10
        while not any(event.kind == "back" for event in heard):
            assert time.monotonic() < deadline, heard
            time.sleep(0.01)
        writer.update("k", lambda entry: _entry(b"1", "t"))
        announced = Invalidation("keys", ("k",), origin=writer.origin)
        while announced not in heard:
            assert time.monotonic() < deadline, heard
            time.sleep(0.01)
        assert list(listener.keys(tag="t")) == ["k"]
    finally:
        watch.close()
        writer.close()
        listener.close()


def test_an_object_update_gives_the_entry_its_new_e_tag(moto_s3: Any) -> None:
    spec = _s3_spec(moto_s3)
    store, other = _open(spec), _open(spec)
    first = store.update("k", _plus_one)
    assert first.version and other.revalidate("k", first.version) is UNCHANGED
    second = other.update("k", _plus_one)
    assert second.version != first.version
    assert store.revalidate("k", first.version).value == b"2"


def test_async_increments_of_two_caches_are_all_counted(clients: Callable[[], Any]) -> None:
    """Two caches (two clients of the store), 4 coroutines each, 10 `incr_async` a
    coroutine: 80, every value handed out once."""

    async def run() -> list[int]:
        caches = [Cache(clients()), Cache(clients())]

        async def bump(cache: Cache) -> list[int]:
            return [await cache.incr_async("n") for _ in range(10)]

        counted = await asyncio.gather(*(bump(cache) for cache in caches for _ in range(4)))
        assert await caches[0].get_async("n") == 80
        for cache in caches:
            await cache.close_async()
        return sorted(value for values in counted for value in values)

    assert asyncio.run(run()) == list(range(1, 81))


# -- no increment lost: processes x threads ----------------------------------------------------


def _spawn(command: str, spec: dict[str, Any]) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests._counter_remote_workers", command, json.dumps(spec)]
    return subprocess.Popen(
        argv, cwd=ROOT, env=dict(os.environ), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _line(child: subprocess.Popen[str]) -> dict[str, Any]:
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        _out, err = child.communicate(timeout=10)
        pytest.fail(f"a worker ended without answering: {err[-3000:]}")
    return dict(json.loads(line))


def _count(spec: dict[str, Any], increments: int, *, budget: float) -> dict[str, Any]:
    """`PROCESSES` x `THREADS` workers each calling ``incr("hits")`` `increments` times,
    started together; checks the total, read by a fresh cache, and that every value from 1
    to it was handed out exactly once. Returns the numbers to report."""
    store = _open(spec)
    with Cache(store) as cache:  # (the signing secret made before the children read it)
        assert cache.get("hits") is None
    store.close()
    spec = {**spec, "key": "hits", "threads": THREADS, "increments": increments}
    children = [_spawn("count", spec) for _ in range(PROCESSES)]
    try:
        for child in children:
            assert _line(child) == {"ready": True}
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            out, err = child.communicate(timeout=budget)
            assert child.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate(timeout=10)
    total = PROCESSES * THREADS * increments
    assert [r["errors"] for r in results] == [[]] * PROCESSES
    store = _open(spec)
    with Cache(store) as fresh:
        assert fresh.get("hits") == total
    store.close()
    seen = sorted(value for r in results for value in r["seen"])
    assert seen == list(range(1, total + 1)), "a value was handed out twice: an increment lost"
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "increments": total,
        "seconds": round(seconds, 2),
        "per_second": round(total / seconds),
        "conflicts": sum(r["conflicts"] for r in results),
        "slowest_ms": round(max(r["slowest"] for r in results) * 1000, 1),
    }


def _report(where: str, found: dict[str, Any], record_property: Any) -> None:
    for name, value in found.items():
        record_property(f"{where}_{name}", value)
    print(
        f"\n{where}: {PROCESSES} processes x {THREADS} threads, {found['increments']} "
        f"increments in {found['seconds']} s ({found['per_second']}/s), "
        f"{found['conflicts']} conflicts retried, slowest increment {found['slowest_ms']} ms"
    )


def test_no_increment_is_lost_on_redis(redis_url: str, record_property: Any) -> None:
    spec = {"redis": redis_url, "prefix": "cnt:"}
    _report("redis", _count(spec, 1000, budget=120), record_property)


def test_no_increment_is_lost_on_a_redis_cluster(redis_cluster: Any, record_property: Any) -> None:
    spec = {"redis": _cluster_url(redis_cluster), "prefix": f"cnt-{uuid.uuid4().hex[:8]}:"}
    _report("redis-cluster", _count(spec, 100, budget=120), record_property)


@pytest.mark.parametrize(("kind", "increments"), [("moto", 25), ("seaweed", 50)])
def test_no_increment_is_lost_on_s3(
    kind: str, increments: int, request: pytest.FixtureRequest, record_property: Any
) -> None:
    """Fewer increments on moto: its server runs in this process, in Python (~100/s)."""
    spec = _s3_spec(request.getfixturevalue(f"{kind}_s3"))
    _report(f"s3-{kind}", _count(spec, increments, budget=120), record_property)


@pytest.mark.soak
@pytest.mark.timeout(3600)  # moto: ~100 increments/s
@pytest.mark.parametrize("kind", ["moto", "seaweed"])
def test_no_increment_is_lost_on_s3_soak(
    kind: str, request: pytest.FixtureRequest, record_property: Any
) -> None:
    spec = _s3_spec(request.getfixturevalue(f"{kind}_s3"))
    _report(f"s3-{kind}-soak", _count(spec, 1000, budget=3600), record_property)


# -- a memory copy in another process ----------------------------------------------------------


def _ask(child: subprocess.Popen[str], **command: Any) -> dict[str, Any]:
    assert child.stdin is not None
    child.stdin.write(json.dumps(command) + "\n")
    child.stdin.flush()
    return _line(child)


def test_a_memory_copy_of_a_counter_goes_when_another_process_increments_it(
    redis_url: str, record_property: Any
) -> None:
    """A (memory over Redis) reads the counter, so its memory tier holds a copy; B (another
    process, same tiers) increments it; A's reads give the new value as soon as B's
    announcement arrives, never a value older than the copy. 20 rounds."""
    spec = {"redis": redis_url, "prefix": "cnt:", "key": "visits"}
    reader, writer = _spawn("serve", spec), _spawn("serve", spec)
    lags: list[float] = []
    try:
        assert _line(reader) == {"ready": True} and _line(writer) == {"ready": True}
        assert _ask(writer, do="incr") == {"value": 1}
        for expected in range(2, 22):
            # A copy is refused while an announcement may still be on its way (the first
            # round's increment can arrive during A's first read): A keeps one soon after.
            began = time.monotonic()
            while not (again := _ask(reader, do="get"))["held"]:
                assert again["value"] == expected - 1, again
                assert time.monotonic() - began < 2.0, "the memory tier never kept a copy"
            assert again == {"value": expected - 1, "held": True, "kept": True}, again
            assert _ask(writer, do="incr") == {"value": expected}
            began = time.monotonic()
            while (found := _ask(reader, do="get"))["value"] != expected:
                assert found["value"] == expected - 1
                assert time.monotonic() - began < 2.0, "the memory copy outlived the increment"
            lags.append(time.monotonic() - began)
        assert _ask(reader, do="close") == {"closed": True}
        assert _ask(writer, do="close") == {"closed": True}
        for child in (reader, writer):
            _out, err = child.communicate(timeout=10)
            assert child.returncode == 0, err[-3000:]
    finally:
        for child in (reader, writer):
            if child.poll() is None:
                child.kill()
                child.communicate(timeout=10)
    record_property("memory_copy_lag_max_ms", round(max(lags) * 1000, 2))
    print(f"\nmemory copy of a counter dropped within {max(lags) * 1000:.1f} ms (20 rounds)")
