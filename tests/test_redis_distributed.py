"""RedisStore across processes and machines: an eviction policy that takes tag sets, redis-py
errors that quote values, clocks that disagree (faketime), fenced writes (docs/redis.md,
"Clocks, leases and fencing")."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tiers import Cache
from tiers._stores import Entry, _wire
from tiers._stores._redis import RedisStore
from tiers.errors import StoreError

ROOT = Path(__file__).resolve().parent.parent


def _child(command: str, skew: str | None, **arguments: Any) -> subprocess.Popen[str]:
    """A worker of tests/_redis_distributed_workers.py, its wall clock shifted by `skew`
    (faketime: "+60s", "-10s") — monotonic time is left alone, so start times agree."""
    argv = [sys.executable, "-m", "tests._redis_distributed_workers", command,
            json.dumps(arguments)]  # fmt: skip
    env = dict(os.environ)
    if skew is not None:
        argv = ["faketime", "-f", skew, *argv]
        env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _result(child: subprocess.Popen[str], timeout: float = 30) -> tuple[dict[str, Any], str]:
    try:
        out, err = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


# -- (3) an eviction policy that takes tag sets --------------------------------------------------


def _live_tagged(client: redis.Redis, prefix: bytes, tag: str) -> set[str]:
    """Keys of the live records carrying `tag`, read with raw redis-py (no tag index)."""
    found = set()
    for key in client.scan_iter(match=prefix + b"e:*", count=1000):
        data = client.get(key)
        if data is None:
            continue
        entry, _ = _wire.unpack(data)
        if tag in entry.tags and (entry.expires_at is None or entry.expires_at > time.time()):
            found.add(key[len(prefix) + 2 :].decode())
    return found


def test_tags_stay_exact_when_allkeys_lru_evicts_the_tag_set(
    redis_process: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Under maxmemory + allkeys-lru, 200 tagged entries kept hot while 6,000 others are
    written: Redis evicts the tag's set, yet keys(tag=) lists every live tagged entry and
    evict(tag) removes them all (a scan of the records, with one WARNING saying why)."""
    client = redis.Redis.from_url(redis_process.url)
    store = RedisStore(redis_process.url, prefix="ev:", timeout=5)
    try:
        client.config_set("maxmemory-policy", "allkeys-lru")
        hot = [f"hot/{i}" for i in range(200)]
        for key in hot:
            store.set(key, Entry(b"h" * 1000, tags=("hot",)))
        tag_set = store._keys.tag("hot")
        assert client.scard(tag_set) == 200
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 1_500_000)
        written = 0
        while written < 6000 or (client.exists(tag_set) and written < 20_000):
            batch = [(f"cold/{written + i}", Entry(b"c" * 1000)) for i in range(100)]
            store.set_many(batch)
            written += len(batch)
            with client.pipeline(transaction=False) as pipe:  # keep the tagged entries hot
                for key in hot:
                    pipe.get(b"ev:e:" + key.encode())
                pipe.execute()
        assert not client.exists(tag_set), "Redis did not evict the tag set"
        client.config_set("maxmemory", 0)  # no more evictions while we count
        live = _live_tagged(client, b"ev:", "hot")
        assert 0 < len(live) <= 200
        assert int(client.info("stats")["evicted_keys"]) > 0
        with caplog.at_level(logging.WARNING, logger="tiers"):
            assert set(store.keys(tag="hot")) == live
            assert store.evict("hot") == len(live)
        assert _live_tagged(client, b"ev:", "hot") == set()
        warnings = [r for r in caplog.records if "maxmemory-policy allkeys-lru" in r.message]
        assert len(warnings) == 1, caplog.text
        client.config_set("maxmemory-policy", "noeviction")  # read again after a while
        store._ops._policy_next = 0.0
        store.set("t", Entry(b"v", tags=("hot",)))
        assert list(store.keys(tag="hot")) == ["t"]
        assert store._ops.evicting is False
    finally:
        store.close()
        client.close()


def test_the_policy_is_read_from_info_when_config_is_refused(redis_process: Any) -> None:
    """An ACL user without CONFIG: the policy comes from INFO memory."""
    client = redis.Redis.from_url(redis_process.url)
    try:
        client.config_set("maxmemory-policy", "allkeys-lfu")
        client.acl_setuser(
            "app", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
            commands=["+@all", "-config"],
        )  # fmt: skip
        url = f"redis://app:pw@127.0.0.1:{redis_process.port}/0"
        store = RedisStore(url, prefix="acl:")
        try:
            store.set("a", Entry(b"v", tags=("t",)))
            client.delete(store._keys.tag("t"))  # as if evicted
            assert list(store.keys(tag="t")) == ["a"]
            assert store._ops.evicting is True
        finally:
            store.close()
    finally:
        client.close()


# -- (9) no value bytes in errors and logs -------------------------------------------------------


def _chain_text(exc: BaseException) -> str:
    """Everything a traceback, str or repr shows of `exc` and its causes and contexts."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 20:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


@pytest.mark.parametrize("on_tier_error", ["degrade", "raise"])
def test_failed_writes_never_show_values(
    redis_process: Any, caplog: pytest.LogCaptureFixture, on_tier_error: str
) -> None:
    """A write the server refuses (OOM under maxmemory noeviction): redis-py quotes the
    transaction's SET with the record in its error; what RedisStore raises and what the
    cache logs name the operation and the error kind only."""
    marker = "V" + uuid.uuid4().hex[:12]  # short: redis-py quotes the first 100 characters
    client = redis.Redis.from_url(redis_process.url)
    store = RedisStore(redis_process.url)
    cache = Cache(store, on_tier_error=on_tier_error)
    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        caplog.set_level(logging.DEBUG, logger="tiers")
        seen: list[str] = []
        for attempt in range(4):  # past the breaker's threshold: its WARNING too
            value = f"{marker} {attempt}"
            if on_tier_error == "raise":
                with pytest.raises(Exception) as caught:
                    cache.set(f"k{attempt}", value, tags=("t",))
                seen.append(_chain_text(caught.value))
            else:
                cache.set(f"k{attempt}", value, tags=("t",))
        for entry in (Entry(marker.encode(), tags=("t",)), Entry(marker.encode() * 2000)):
            with pytest.raises(StoreError) as failed:
                store.set("direct", entry)
            seen.append(_chain_text(failed.value))
            with pytest.raises(StoreError) as failed_async:
                asyncio.run(store.set_async("direct", entry))
            seen.append(_chain_text(failed_async.value))
        with pytest.raises(StoreError) as many:
            store.set_many([("a", Entry(marker.encode(), tags=("t",)))])
        seen.append(_chain_text(many.value))
        seen.append(caplog.text)
        for text in seen:
            assert marker not in text, text
        assert "failed to set: OutOfMemoryError (OOM" in str(many.value)
        assert "127.0.0.1" in str(many.value)
        if on_tier_error == "degrade":  # the breaker logged each failure, with its message
            assert "failed to set: OutOfMemoryError (OOM" in caplog.text, caplog.text
    finally:
        cache.close()
        store.close()
        client.close()


# -- (4)/(8) clocks that disagree ----------------------------------------------------------------


def test_a_writer_60_s_ahead_does_not_stretch_a_3_s_ttl(redis_url: str) -> None:
    """A writer whose clock is 60 s ahead sets ttl=3: a memory+Redis reader (which promotes
    the entry) and a fresh Redis-only reader serve it now, and neither does 4 s later."""
    writer = _child("set", "+60s", url=redis_url, key="k", value="ahead", ttl=3)
    result, err = _result(writer)
    done = result["done"]
    layered = Cache("memory://", redis_url)
    try:
        assert layered.get("k") == "ahead"  # now in its memory tier too
        fresh = Cache(redis_url)
        try:
            assert fresh.get("k") == "ahead"
        finally:
            fresh.close()
        time.sleep(max(0.0, done + 4.0 - time.monotonic()))
        assert layered.get("k", "<gone>") == "<gone>"
        fresh = Cache(redis_url)
        try:
            assert fresh.get("k", "<gone>") == "<gone>"
        finally:
            fresh.close()
    finally:
        layered.close()
    assert -61.5 < result["offset"] < -58.5
    assert "s ahead of Redis at 127.0.0.1" in err, err  # the skew, measured and logged


def test_a_writer_10_s_behind_writes_entries_readers_see(redis_url: str) -> None:
    writer = _child("set", "-10s", url=redis_url, key="k", value="behind", ttl=3)
    result, err = _result(writer)
    layered = Cache("memory://", redis_url)
    fresh = Cache(redis_url)
    try:
        assert fresh.get("k", "<miss>") == "behind"
        assert layered.get("k", "<miss>") == "behind"
        time.sleep(max(0.0, result["done"] + 4.0 - time.monotonic()))
        assert layered.get("k", "<gone>") == "<gone>"
        assert fresh.get("k", "<gone>") == "<gone>"
    finally:
        fresh.close()
        layered.close()
    assert 8.5 < result["offset"] < 11.5
    assert "s behind Redis at 127.0.0.1" in err, err


@pytest.mark.parametrize(
    ("skew", "lease", "work"), [("+60s", 30.0, 3.0), ("+5s", 3.0, 2.0)], ids=["60s", "5s"]
)
def test_single_flight_holds_across_skewed_clocks(
    redis_url: str, tmp_path: Path, skew: str, lease: float, work: float
) -> None:
    """Two processes get_or_set one key; the second's clock is ahead by more than the first's
    lease: the first holds the lock, the second waits for its value — one computation."""
    log = tmp_path / "computations"
    start = time.monotonic() + 1.5  # both imported by then
    key = f"flight-{uuid.uuid4().hex[:6]}"
    common = {"url": redis_url, "key": key, "lease": lease, "work": work, "log": str(log)}
    first = _child("compute", None, start=start, **common)
    second = _child("compute", skew, start=start + 0.5, **common)
    one, _ = _result(first)
    two, err = _result(second)
    computations = log.read_text().splitlines()
    assert len(computations) == 1, (computations, one, two, err)
    assert one["value"] == two["value"]


# -- (5) fencing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
def test_a_holder_whose_lease_ran_out_cannot_overwrite_its_successor(
    redis_url: str, redis_cluster: Any, cluster: bool
) -> None:
    url = redis_cluster.url.replace("redis://", "redis+cluster://") if cluster else redis_url
    prefix = f"f{uuid.uuid4().hex[:6]}:"
    # 5 s: a new cluster client's first call also finds the nodes (over 0.5 s when loaded)
    a, b = RedisStore(url, prefix=prefix, timeout=5.0), RedisStore(url, prefix=prefix, timeout=5.0)
    try:
        assert a.acquire_lock("L", "alice", 1.0) is True
        assert a.set_if_held("k", Entry(b"A1", tags=("t",)), "L", "alice") is True
        time.sleep(1.2)  # alice's lease runs out
        assert b.acquire_lock("L", "bob", 5.0) is True
        assert b.set_if_held("k", Entry(b"B", tags=("t",)), "L", "bob") is True
        assert a.set_if_held("k", Entry(b"A2"), "L", "alice") is False
        assert asyncio.run(a.set_if_held_async("k", Entry(b"A3"), "L", "alice")) is False
        got = a.get("k")
        assert got is not None and got.value == b"B"
        assert list(a.keys(tag="t")) == ["k"]
        assert asyncio.run(b.set_if_held_async("k", Entry(b"B2"), "L", "bob")) is True
        got = b.get("k")
        assert got is not None and got.value == b"B2"
    finally:
        a.close()
        b.close()
