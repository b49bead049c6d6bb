"""ObjectStore when its S3 server dies, freezes or comes back empty (docs/reliability.md,
guarantee 6: remote tiers fail within their deadline): calls
fail with a StoreError within the timeout, a cache in "degrade" mode keeps serving from its
other tiers, "raise" mode raises TierUnavailableError, and the store recovers.

Each test has a SeaweedFS server of its own (`s3_process`); a frozen one is always thawed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from tiers import Cache, MemoryStore
from tiers._stores import Entry
from tiers._stores._object import ObjectStore
from tiers.errors import StoreError, TierUnavailableError

from ._servers import CREDENTIALS, REGION

TIMEOUT = 1.0
LIMIT = TIMEOUT * 1.1 + 0.25  # the timeout, 10 %, and scheduling on a loaded 2-core machine


@pytest.fixture
def bucket(s3_process: Any) -> str:
    return str(s3_process.new_bucket())


@pytest.fixture
def store(s3_process: Any, bucket: str) -> Iterator[ObjectStore]:
    store = ObjectStore(f"s3://{bucket}/c", timeout=TIMEOUT, **s3_process.store_options())
    yield store
    store.close()


def _fails_in_time(call: Callable[[], Any]) -> StoreError:
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < LIMIT, f"took {elapsed:.2f} s"
    return caught.value


def test_a_frozen_server_fails_calls_within_the_timeout(
    s3_process: Any, store: ObjectStore
) -> None:
    """Every kind of call, sync and async, single and batched; then the tiers above keep
    serving ("degrade") or the failure is raised ("raise")."""
    store.set("k", Entry(b"v"))
    degrade = Cache(MemoryStore(), store, serializer="json")
    strict = Cache(MemoryStore(), store, serializer="json", on_tier_error="raise")
    hot = {f"hot{i}": i for i in range(50)}
    for key, value in hot.items():
        degrade.set(key, value)
    s3_process.freeze()
    try:
        _fails_in_time(lambda: store.get("k"))
        _fails_in_time(lambda: store.set("k", Entry(b"w")))
        _fails_in_time(lambda: store.get_many(["a", "b", "c"]))
        _fails_in_time(lambda: asyncio.run(store.get_async("k")))
        _fails_in_time(lambda: store.acquire_lock("L", "t", 10))
        assert all(degrade.get(key) == value for key, value in hot.items())
        started = time.monotonic()
        assert degrade.get("cold") is None  # the S3 tier fails: skipped, not raised
        assert degrade.get("cold2") is None
        assert time.monotonic() - started < 2 * LIMIT
        assert all(degrade.get(key) == value for key, value in hot.items())
        assert degrade.stats().tiers[1].errors >= 1
        with pytest.raises(TierUnavailableError) as caught:
            strict.get("cold")
        assert isinstance(caught.value.__cause__, StoreError)
    finally:
        s3_process.thaw()
    assert store.get("k") is not None
    degrade.close()
    strict.close()


def test_a_killed_server_fails_fast_and_the_memory_tier_keeps_serving(
    s3_process: Any, store: ObjectStore
) -> None:
    cache = Cache(MemoryStore(), store, serializer="json")
    cache.set("a", 1)
    s3_process.kill()
    error = _fails_in_time(lambda: store.get("a"))
    assert s3_process.endpoint in str(error)
    assert cache.get("a") == 1
    assert cache.get("missing") is None
    cache.set("b", 2)  # the write reaches the memory tier
    assert cache.get("b") == 2
    cache.close()


def test_a_server_restarted_empty_is_a_missing_bucket_until_it_is_made_again(
    s3_process: Any, bucket: str, store: ObjectStore
) -> None:
    store.set("k", Entry(b"v"))
    s3_process.restart_empty()
    with pytest.raises(StoreError, match="the bucket does not exist"):
        store.get("k")
    client = boto3.client("s3", endpoint_url=s3_process.endpoint, region_name=REGION, **CREDENTIALS)
    client.create_bucket(Bucket=bucket)
    assert store.get("k") is None
    assert store.set("k", Entry(b"again")) is True
    got = store.get("k")
    assert got is not None
    assert got.value == b"again"
