"""RedisStore's scan, usage counters and verify, against a real redis-server (and a cluster):
what scan gives and what it transfers, counts added by several processes, and damage planted
with redis-py found, fixed, and gone on the next verify."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import redis.cluster

from tiers._stores import Entry
from tiers._stores._protocol import implements
from tiers._stores._redis import RedisStore
from tiers.protocol import Damage, SupportsScan, SupportsUsage, SupportsVerify, Usage
from tiers.testing import FakeClock

MiB = 1024 * 1024
PREFIX = "sv:"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as found:
        yield found


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    made = RedisStore(redis_url, prefix=PREFIX)
    yield made
    made.close()


@contextmanager
def policy(client: redis.Redis, name: str) -> Iterator[None]:
    """The server's maxmemory-policy set to `name` for the block (the server is shared)."""
    before = str(client.config_get("maxmemory-policy")["maxmemory-policy"])
    client.config_set("maxmemory-policy", name)
    try:
        yield
    finally:
        client.config_set("maxmemory-policy", before)


def scanned(store: RedisStore, prefix: str = "", tag: str | None = None, *, use_async: bool = False
            ) -> dict[str, Entry]:  # fmt: skip
    if not use_async:
        return dict(store.scan(prefix, tag))

    async def collect() -> dict[str, Entry]:
        return {key: entry async for key, entry in store.scan_async(prefix, tag)}

    return asyncio.run(collect())


def test_redis_store_has_scan_usage_and_verify(store: RedisStore) -> None:
    for capability in (SupportsScan, SupportsUsage, SupportsVerify):
        assert implements(store, capability)
        assert isinstance(store, capability)


# -- scan ------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_scan_gives_every_entry_present_with_its_metadata_and_no_value(
    store: RedisStore, client: redis.Redis, redis_url: str, use_async: bool
) -> None:
    clock = FakeClock()
    store.clock = clock
    now = clock.time()
    store.set("a/1", Entry(b"one", b"hd1", now - 5, None, ("red", "blue"), {"n": 1}))
    store.set("a/2", Entry(b"two!", b"h2", now - 4, now + 5, ("red",)))
    store.set("b/1", Entry(b"three", b"", now - 3, now + 100, (), {"n": [3]}))
    for i in range(1200):  # more than two SCAN pages
        store.set(f"many/{i:04}", Entry(b"x" * (i % 7), b"h", now, None, ("many",)))
    store.add_usage(Usage(hits=1))  # the usage hash is no entry
    clock.advance(10)  # a/2 expired, still on the server (its TTL runs 1 s past, in real time)
    assert "a/2" not in set(store.keys("a/"))

    found = scanned(store, use_async=use_async)
    assert len(found) == 1203
    one, two, three = found["a/1"], found["a/2"], found["b/1"]
    assert (one.value, one.header, one.created_at, one.expires_at) == (None, b"hd1", now - 5, None)
    assert (one.tags, one.meta, one.size) == (("red", "blue"), {"n": 1}, 3 + 3)
    assert (two.value, two.expires_at, two.tags, two.meta, two.size) == (
        None, now + 5, ("red",), None, 4 + 2,
    )  # fmt: skip
    assert (three.expires_at, three.meta, three.size) == (now + 100, {"n": [3]}, 5)
    assert all(entry.value is None for entry in found.values())
    assert found["many/0006"].size == 6 + 1

    assert sorted(scanned(store, "a/", use_async=use_async)) == ["a/1", "a/2"]
    assert sorted(scanned(store, tag="red", use_async=use_async)) == ["a/1", "a/2"]
    assert sorted(scanned(store, "a/", "blue", use_async=use_async)) == ["a/1"]
    assert len(scanned(store, "many/", "many", use_async=use_async)) == 1200
    assert scanned(store, "many/", "red", use_async=use_async) == {}
    assert scanned(store, "zzz", use_async=use_async) == {}
    # a stale tag member (an overwrite without the tag) is not listed with the tag
    store.set("a/1", Entry(b"one", b"hd1", now, None, ("blue",)))
    assert sorted(scanned(store, tag="red", use_async=use_async)) == ["a/2"]
    # the server may evict tag sets: the tag is then checked in every record's head
    with policy(client, "allkeys-lru"):
        other = RedisStore(redis_url, prefix=PREFIX)
        try:
            client.delete(other._keys.tag("blue"))  # as if evicted
            assert sorted(scanned(other, tag="blue", use_async=use_async)) == ["a/1"]
        finally:
            other.close()


def test_scan_reads_record_heads_never_values(store: RedisStore, client: redis.Redis) -> None:
    """A 5 MB value: the server sends a few KiB for a scan of its store (INFO's count of
    bytes sent to clients), the value's size for a get."""
    body = bytes(range(256)) * (5 * MiB // 256)
    store.set("big", Entry(body, b"hdr", 1.0, None, ("t",), {"m": "x" * 5000}))
    store.set("small", Entry(b"s", b"h", 1.0))

    def sent() -> int:
        return int(client.info("stats")["total_net_output_bytes"])

    for use_async in (False, True):
        before = sent()
        found = scanned(store, tag="t" if use_async else None, use_async=use_async)
        traffic = sent() - before
        assert found["big"].size == len(body) + 3
        assert found["big"].meta == {"m": "x" * 5000}  # a head past 4 KiB, read in one step
        assert traffic < 64 * 1024, f"{traffic} bytes sent for a scan"
    before = sent()
    assert store.get("big") is not None
    assert sent() - before > len(body)


def test_scan_gives_the_last_access_from_the_servers_idle_time(
    store: RedisStore, client: redis.Redis
) -> None:
    store.set("read", Entry(b"r", b"h", time.time()))
    store.set("idle", Entry(b"i", b"h", time.time()))
    time.sleep(2.2)
    read_at = time.time()
    assert store.get("read") is not None
    found = dict(store.scan())
    idle_at, last_read = found["idle"].accessed_at, found["read"].accessed_at
    assert idle_at is not None and last_read is not None
    assert idle_at <= read_at - 1.0  # idle times are whole seconds
    assert last_read >= read_at - 1.5
    with policy(client, "allkeys-lfu"):  # LFU keeps no idle time
        assert all(entry.accessed_at is None for _key, entry in store.scan())


def test_scan_skips_what_is_not_a_record(store: RedisStore, client: redis.Redis) -> None:
    store.set("good", Entry(b"g", b"h", 1.0))
    client.hset(PREFIX.encode() + b"e:hash", "a", 1)
    client.set(PREFIX.encode() + b"e:junk", b"not a record")
    client.set(PREFIX.encode() + b"e:\xff\xfe", b"T1")
    good = client.get(PREFIX.encode() + b"e:good")
    assert isinstance(good, bytes)
    client.set(PREFIX.encode() + b"e:cut", good[:30])
    assert list(dict(store.scan())) == ["good"]
    assert scanned(store, use_async=True).keys() == {"good"}


# -- usage -----------------------------------------------------------------------------------


def add_usage_many(url: str, times: int) -> None:
    """A child process's part: `times` additions of one of each count."""
    store = RedisStore(url, prefix=PREFIX, timeout=5.0)
    try:
        for _ in range(times):
            store.add_usage(Usage(hits=1, misses=2, sets=3, deletes=4, errors=5))
    finally:
        store.close()


def test_usage_added_by_four_processes_sums_exactly(redis_url: str, store: RedisStore) -> None:
    assert store.usage() == Usage()
    started = time.time()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        for done in [pool.submit(add_usage_many, redis_url, 250) for _ in range(4)]:
            done.result(timeout=120)
    usage = store.usage()
    assert (usage.hits, usage.misses, usage.sets, usage.deletes, usage.errors) == (
        1000, 2000, 3000, 4000, 5000,
    )  # fmt: skip
    assert usage.since is not None
    assert started - 1 <= usage.since <= time.time() + 1


def test_usage_since_resets_and_async_twins(store: RedisStore, client: redis.Redis) -> None:
    store.add_usage(Usage())  # counts nothing: no `since` either
    assert store.usage() == Usage()
    store.add_usage(Usage(hits=2, since=1000.0))
    store.add_usage(Usage(misses=1, since=2000.0))
    assert store.usage() == Usage(hits=2, misses=1, since=1000.0)
    client.set(PREFIX.encode() + b"e:cut", b"T1")  # damage a get finds: rejected
    assert store.get("cut") is None
    assert store.stats().rejected == 1
    store.reset_usage()
    assert store.usage() == Usage()
    assert store.stats().rejected == 0
    assert list(store.keys()) == []

    async def scenario() -> tuple[Usage, Usage]:
        await store.add_usage_async(Usage(sets=7, deletes=1))
        added = await store.usage_async()
        await store.reset_usage_async()
        return added, await store.usage_async()

    added, after = asyncio.run(scenario())
    assert (added.sets, added.deletes, added.hits) == (7, 1, 0)
    assert added.since is not None
    assert after == Usage()


# -- verify ----------------------------------------------------------------------------------


def _plant_damage(store: RedisStore, client: redis.Redis) -> dict[str, tuple[str, str | None]]:
    """Damage of every kind verify finds on Redis; what it should report, by location:
    (problem, key)."""
    raw = PREFIX.encode()
    keys = store._keys
    for name in ("flipped", "cut", "lengths", "unindexed", "healthy", "stale"):
        store.set(name, Entry(b"value of " + name.encode(), b"hdr", 1.0, None, ("t",)))
    client.setrange(raw + b"e:flipped", 0, b"X")  # a flipped bit in the magic
    record = client.get(raw + b"e:cut")
    assert record is not None
    client.set(raw + b"e:cut", record[:36])  # cut inside its metadata
    client.setrange(raw + b"e:lengths", 22, b"\xff\xff\x00\x00")  # a tag length past the end
    client.srem(keys.tag("t"), b"unindexed")  # a record missing from its tag's set
    store.set("stale", Entry(b"v", b"hdr", 1.0))  # overwritten without its tag
    client.sadd(keys.tag("t"), b"gone")  # a member whose entry is gone
    client.hset(raw + b"e:hash", "a", 1)  # not a string where records are
    client.set(raw + b"e:\xff", b"T1")  # a name no key has
    client.set(keys.tag("other"), b"x")  # a string where a set belongs
    client.sadd(raw + b"t:not-a-digest", b"healthy")  # not a tag's set
    client.hset(raw + b"l:lock", "a", 1)  # not a lock
    client.hset(keys.usage, mapping={"hits": "12", "bogus": "x", "misses": "many"})
    return {
        "e:flipped": ("unreadable", "flipped"),
        "e:cut": ("truncated", "cut"),
        "e:lengths": ("truncated", "lengths"),
        "e:hash": ("unreadable", "hash"),
        "e:\\xff": ("orphan", None),
        keys.where(keys.tag("t")) + " unindexed": ("index", "unindexed"),
        keys.where(keys.tag("t")) + " stale": ("leftover", "stale"),
        keys.where(keys.tag("t")) + " gone": ("leftover", "gone"),
        keys.where(keys.tag("other")): ("orphan", None),
        "t:not-a-digest": ("orphan", None),
        "l:lock": ("orphan", None),
        "u": ("unreadable", None),
    }


def _by_place(damages: list[Damage]) -> dict[str, tuple[str, str | None]]:
    """Damages by location (tag set members: location and key), each found once."""
    found: dict[str, tuple[str, str | None]] = {}
    for damage in damages:
        place = damage.location
        if damage.problem in ("index", "leftover"):
            place += f" {damage.key}"
        assert place not in found, damage
        found[place] = (damage.problem, damage.key)
    return found


def test_verify_finds_planted_damage_and_fix_leaves_a_clean_store(
    store: RedisStore, client: redis.Redis
) -> None:
    clock = FakeClock()
    store.clock = clock
    store.set("expired", Entry(b"e", b"h", clock.time(), clock.time() + 100, ("t",)))
    clock.advance(200)  # expired, still on the server for 100 s: not damage
    assert store.acquire_lock("lapsed", "token", 0.001)  # a lease that ran out: not damage
    for i in range(700):  # more than a page of entries
        store.set(f"fine/{i}", Entry(b"fine %d" % i, b"h", 1.0, None, ("fine",)))
    assert list(store.verify()) == []

    expected = _plant_damage(store, client)
    found = list(store.verify())
    assert _by_place(found) == expected
    assert not any(damage.fixed for damage in found)
    assert client.exists(PREFIX.encode() + b"e:flipped")  # verify alone changes nothing

    fixed = list(store.verify(fix=True))
    # fixing the records leaves their tag members dangling: found and fixed in the same run
    dangling = {
        store._keys.where(store._keys.tag("t")) + f" {key}": ("leftover", key)
        for key in ("flipped", "cut", "lengths")
    }
    assert _by_place(fixed) == expected | dangling
    assert all(damage.fixed for damage in fixed)
    assert list(store.verify()) == []

    for name in ("healthy", "unindexed"):
        entry = store.get(name)
        assert entry is not None and entry.value == b"value of " + name.encode()
    assert store.get("stale") is not None
    assert store.get("fine/699") is not None
    assert sorted(store.keys(tag="t")) == ["healthy", "unindexed"]
    assert store.usage().hits == 12
    assert store.evict("t") == 2  # the repaired index finds "unindexed"
    assert client.exists(PREFIX.encode() + b"e:hash", PREFIX.encode() + b"l:lock") == 0


def test_verify_fix_keeps_a_record_rewritten_since_it_was_read(
    store: RedisStore, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing a damaged record is conditional on its bytes: a write landing between
    verify's read and its fix survives."""
    from tiers._stores import _wire

    raw = PREFIX.encode() + b"e:k"
    client.set(raw, b"not a record")
    judge = _wire.damage

    def rewrite_then_judge(data: bytes) -> tuple[str, str] | None:
        store.set("k", Entry(b"new", b"h", 1.0))  # another process's write, after the GET
        return judge(data)

    monkeypatch.setattr(_wire, "damage", rewrite_then_judge)
    (damage,) = list(store.verify(fix=True))
    monkeypatch.undo()
    assert (damage.problem, damage.key) == ("unreadable", "k")
    entry = store.get("k")
    assert entry is not None and entry.value == b"new"
    assert list(store.verify()) == []


# -- a cluster -------------------------------------------------------------------------------


def test_scan_and_verify_on_a_cluster(redis_cluster: Any) -> None:
    url = redis_cluster.url.replace("redis://", "redis+cluster://")
    prefix = f"c{time.monotonic_ns()}:"
    store = RedisStore(url, prefix=prefix, timeout=5.0)
    client = redis.cluster.RedisCluster.from_url(redis_cluster.url)
    try:
        store.set_many([(f"k{i}", Entry(b"v%d" % i, b"h", 1.0, None, ("t",))) for i in range(1100)])
        assert len(dict(store.scan())) == 1100
        assert len(scanned(store, tag="t", use_async=True)) == 1100
        client.setrange(f"{prefix}e:k5".encode(), 0, b"X")
        client.sadd(store._keys.tag("t"), b"gone")
        store.add_usage(Usage(hits=3))
        assert store.usage().hits == 3
        found = {(d.problem, d.key) for d in store.verify()}
        assert found == {("unreadable", "k5"), ("leftover", "gone")}
        assert {(d.problem, d.key) for d in store.verify(fix=True)} == found | {("leftover", "k5")}
        assert list(store.verify()) == []
        assert len(dict(store.scan())) == 1099
    finally:
        store.clear()
        store.reset_usage()
        store.close()
        client.close()
