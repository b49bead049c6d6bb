"""ObjectStore under HTTP faults: moto's S3 behind a middleware (`tests/_netfaults.py`) that
answers chosen requests with 503 SlowDown, 500, a truncated body, a late or a dripped one.

What must hold: a call — all its requests together — ends within `timeout` (times 1.1, plus
scheduling) and fails as a `StoreError` with the cause attached; a truncated or dripped body
is an error or a miss, never part of a value; a ``Cache(MemoryStore(), s3)`` in "degrade"
mode keeps serving its memory tier and its `get` never raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests._netfaults import FaultyS3
from tiers import Cache, MemoryStore
from tiers._stores import Entry
from tiers._stores._object import ObjectStore
from tiers.errors import StoreError

TIMEOUT = 0.5
BOUND = TIMEOUT * 1.1 + 0.15  # the budget, 10 %, and scheduling on a loaded 2-core machine

VALUES = {key: key.encode() * 4 + bytes([i]) * 2048 for i, key in enumerate("abcdx")}


@pytest.fixture(scope="module")
def s3() -> Iterator[FaultyS3]:
    """moto's S3 app behind the fault middleware, for this module (its thread joined after)."""
    server = FaultyS3().start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3: FaultyS3) -> Iterator[str]:
    s3.heal()
    yield s3.new_bucket()
    s3.heal()


@pytest.fixture
def store(s3: FaultyS3, bucket: str) -> Iterator[ObjectStore]:
    store = ObjectStore(f"s3://{bucket}/c", timeout=TIMEOUT, **s3.store_options())
    yield store
    store.close()


def _seed(store: ObjectStore) -> None:
    for key, value in VALUES.items():
        store.set(key, Entry(value, tags=("t",)))
    assert store.acquire_lock("L2", "tok", 30) and store.acquire_lock("L3", "tok", 30)


def _value(entry: Entry | None) -> bytes | None:
    return None if entry is None else entry.value


@dataclass
class Op:
    name: str
    sync: Callable[[ObjectStore], Any]
    asynchronous: Callable[[ObjectStore], Awaitable[Any]]
    right: Callable[[Any], bool]


async def _keys_async(store: ObjectStore) -> list[str]:
    return await asyncio.to_thread(lambda: sorted(store.keys(tag="t")))


OPS = [
    Op("get", lambda s: s.get("a"), lambda s: s.get_async("a"),
       lambda r: _value(r) == VALUES["a"]),
    Op("get_many", lambda s: s.get_many(["a", "b", "nope"]),
       lambda s: s.get_many_async(["a", "b", "nope"]),
       lambda r: [_value(e) for e in r] == [VALUES["a"], VALUES["b"], None]),
    Op("info", lambda s: s.info("b"), lambda s: s.info_async("b"),
       lambda r: r is not None and r.value is None and r.tags == ("t",)),
    Op("set", lambda s: s.set("n", Entry(b"N" * 2048, tags=("t", "u"))),
       lambda s: s.set_async("n", Entry(b"N" * 2048, tags=("t", "u"))), lambda r: r is True),
    Op("set_many", lambda s: s.set_many([("m1", Entry(b"1", tags=("t",))), ("m2", Entry(b"2"))]),
       lambda s: s.set_many_async([("m1", Entry(b"1", tags=("t",))), ("m2", Entry(b"2"))]),
       lambda r: r is None),
    Op("delete", lambda s: s.delete("c"), lambda s: s.delete_async("c"), lambda r: r is True),
    Op("touch", lambda s: s.touch("d", None), lambda s: s.touch_async("d", None),
       lambda r: r is True),
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


def _timed(op: Op, store: ObjectStore) -> Outcome:
    started = time.monotonic()
    try:
        result = op.sync(store)
    except Exception as exc:
        return Outcome(op, time.monotonic() - started, error=exc)
    return Outcome(op, time.monotonic() - started, result)


async def _timed_async(op: Op, store: ObjectStore) -> Outcome:
    started = time.monotonic()
    try:
        result = await op.asynchronous(store)
    except Exception as exc:
        return Outcome(op, time.monotonic() - started, error=exc)
    return Outcome(op, time.monotonic() - started, result)


def _run_all(store: ObjectStore, mode: str) -> list[Outcome]:
    """Every operation at once (threads or tasks), each timed on its own."""
    if mode == "sync":
        with ThreadPoolExecutor(len(OPS)) as pool:
            return list(pool.map(lambda op: _timed(op, store), OPS))

    async def scenario() -> list[Outcome]:
        return list(await asyncio.gather(*(_timed_async(op, store) for op in OPS)))

    return asyncio.run(scenario())


def _check(outcomes: list[Outcome], where: str) -> dict[str, str]:
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


def _consistent(store: ObjectStore) -> None:
    """After the faults: what is stored is whole, and every tagged entry is indexed. (Entries
    first, then the index: a write given up on may still land meanwhile, record and index
    at once (markers before the record).)"""
    expected = [*VALUES.items(), ("n", b"N" * 2048), ("m1", b"1")]
    found = {key: store.get(key) for key, _value in expected}
    tagged = set(store.keys(tag="t"))
    for key, value in expected:
        if found[key] is not None:
            assert _value(found[key]) == value, key
            assert key in tagged, f"{key} is stored without its tag marker"


FAULTS: dict[str, list[dict[str, Any]]] = {
    "503 SlowDown on every request": [{"action": "slowdown"}],
    "500 on every request": [{"action": "error"}],
    "503 on the 2nd request of each kind": [
        {"action": "slowdown", "method": m, "nth": 2} for m in ("GET", "PUT", "DELETE")
    ],
    "truncated GET bodies": [{"action": "truncate", "method": "GET"}],
    "every reply 1 s late": [{"action": "slow", "delay": 1.0}],
    "PUTs 0.3 s late": [{"action": "slow", "method": "PUT", "delay": 0.3}],
    "GET bodies dripped": [{"action": "drip", "method": "GET", "delay": 0.01}],
}
ALL_FAIL = {"503 SlowDown on every request", "500 on every request", "every reply 1 s late"}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_call_is_bounded_and_never_wrong_under_each_fault(
    fault: str, mode: str, s3: FaultyS3, store: ObjectStore
) -> None:
    _seed(store)
    for rule in FAULTS[fault]:
        s3.fail(**rule)
    outcomes = _check(_run_all(store, mode), f"{fault} ({mode})")
    if fault in ALL_FAIL:
        assert set(outcomes.values()) == {"error"}, outcomes
    assert s3.middleware.spoiled, "the fault never fired"
    s3.heal()
    _consistent(store)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_call_of_several_requests_is_bounded_as_a_whole(
    mode: str, s3: FaultyS3, store: ObjectStore
) -> None:
    """Each PUT 0.3 s late, each within the 0.5 s the client allows one request: a tagged set
    (marker then record) or a lock takeover (PUT, GET, PUT) used to take 0.6-0.9 s; it now
    fails at 0.5 s, and whatever it wrote is whole and indexed."""
    assert store.acquire_lock("L", "old", 0.01)
    s3.fail("slow", method="PUT", delay=0.3)
    calls = {
        "tagged set": (store.set, store.set_async, "k", Entry(b"v" * 100, tags=("t",))),
        "lock takeover": (store.acquire_lock, store.acquire_lock_async, "L", "tok", 5),
        "set_many": (store.set_many, store.set_many_async,
                     [(f"m{i}", Entry(b"v", tags=("t",))) for i in range(20)]),
    }  # fmt: skip
    for name, (sync, asynchronous, *args) in calls.items():
        started = time.monotonic()
        with pytest.raises(StoreError, match="timeout"):
            if mode == "sync":
                sync(*args)
            else:
                asyncio.run(asynchronous(*args))
        elapsed = time.monotonic() - started
        assert TIMEOUT * 0.9 <= elapsed <= BOUND, f"{name} took {elapsed:.3f} s"
    s3.heal()
    s3.middleware.idle()  # the requests the calls gave up on are over too
    found = store.get("k")
    assert found is None or (found.value == b"v" * 100 and "k" in set(store.keys(tag="t")))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_truncated_or_dripped_body_is_never_part_of_a_value(
    mode: str, s3: FaultyS3, store: ObjectStore
) -> None:
    big = Entry(bytes(range(256)) * 64)  # 16 KiB
    store.set("big", big)
    store.set("small", Entry(b"s"))
    for action, extra in (("truncate", {}), ("drip", {"delay": 0.001})):
        rule = s3.fail(action, method="GET", path="/e/", **extra)
        reads: list[Callable[[], Any]] = [
            lambda: store.get("big"),
            lambda: store.get_many(["big", "small"]),
            lambda: store.info("big"),
        ]
        if mode == "async":
            reads = [
                lambda: asyncio.run(store.get_async("big")),
                lambda: asyncio.run(store.get_many_async(["big", "small"])),
                lambda: asyncio.run(store.info_async("big")),
            ]
        for read in reads:
            started = time.monotonic()
            try:
                got = read()
            except StoreError as exc:
                assert exc.__cause__ is not None  # noqa: PT017
            else:
                entries = got if isinstance(got, list) else [got]
                assert all(e is None or e.value in (None, big.value, b"s") for e in entries)
            assert time.monotonic() - started <= BOUND
        assert rule.used >= 3, f"{action} never fired"
        s3.heal()
    assert _value(store.get("big")) == big.value  # a bad read removed nothing


@pytest.mark.parametrize(
    "rule", [{"action": "slowdown"}, {"action": "slow", "delay": 1.0},
             {"action": "truncate", "method": "GET"}], ids=["503", "slow", "truncate"],
)  # fmt: skip
def test_degrade_keeps_serving_memory_and_get_never_raises(
    rule: dict[str, Any], s3: FaultyS3, store: ObjectStore
) -> None:
    cache = Cache(MemoryStore(), store, serializer="json")
    try:
        hot = {f"hot{i}": i for i in range(20)}
        for key, value in hot.items():
            cache.set(key, value)
        s3.fail(**rule)
        started = time.monotonic()
        assert {key: cache.get(key) for key in hot} == hot
        assert time.monotonic() - started < 0.1  # memory hits never wait for S3
        for i in range(4):
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
        s3.heal()
        cache.close()
