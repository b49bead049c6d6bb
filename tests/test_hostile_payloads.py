"""Planted payloads, through a Cache over real stores (a FolderStore directory, redis-server,
moto's S3): a decompression bomb with a forged size (H) and hostile JSON where tiers reads a
document (I) are misses, removed and counted; they never inflate, never raise, never trip the
tier's breaker.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests._fuzz_cases import zlib_bomb, zstd_bomb
from tiers import MISSING, Cache, FolderStore
from tiers._codec._documents import MAX_DEPTH, check_object, load_object
from tiers._codec._envelope import MAX_EXPANSION, PADDED
from tiers._stores import Entry, _wire
from tiers._stores._folder._naming import entry_dir

TEST_SECRET = "a test secret, 32 bytes long...."  # noqa: S105 (not a credential)

# -- H: decompression bombs of unsigned entries ----------------------------------------------

_BOMB_SIZE = 512 * 2**20
_READ_IN_A_FRESH_PROCESS = textwrap.dedent(
    """
    import json, resource, sys
    from tiers import MISSING, Cache, FolderStore

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    cache = Cache(FolderStore(sys.argv[1]), serializer="json")
    before = peak_mib()
    value = cache.get("k", MISSING)
    print(json.dumps({"before": before, "after": peak_mib(), "miss": value is MISSING,
                      "rejected": cache.stats().rejected}))
    """
)


def _bomb(compression: str) -> tuple[int, bytes]:
    """(compression id, 512 MiB of JSON whitespace compressed without its size)."""
    chunk = b" " * 2**20
    if compression == "zlib":
        return 1, zlib_bomb(b"[", chunk, 512, b"]")
    return 2, zstd_bomb(b"[", chunk, 512, b"]")


@pytest.mark.parametrize("compression", ["zstd", "zlib"])
def test_a_bomb_with_a_forged_size_is_refused_without_inflating(
    tmp_path: Path, compression: str
) -> None:
    """16 KB of zstd (or 0.5 MB of zlib) claiming 512 MiB, under serializer="json": the
    recorded size of an unsigned entry is trusted only up to MAX_EXPANSION times the stored
    body, so the read is a counted miss and the reader's peak RSS stays put (it rose from
    28 to 1,052 MiB before)."""
    cid, body = _bomb(compression)
    assert 8 * MAX_EXPANSION * len(body) < _BOMB_SIZE  # far past the bound
    header = bytes((1, 0, cid, 4)) + b"json" + _BOMB_SIZE.to_bytes(8, "little")
    store = FolderStore(tmp_path / "store")
    store.set(":k", Entry(body, header, 0.0, None, (), None, len(header) + len(body)))
    done = subprocess.run(
        [sys.executable, "-c", _READ_IN_A_FRESH_PROCESS, str(store.directory)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["miss"] and report["rejected"] == 1
    grown = report["after"] - report["before"]
    assert grown < 64, f"reading a {len(body):,}-byte entry raised the peak RSS by {grown} MiB"
    assert store.get(":k") is None  # removed


@pytest.mark.parametrize("compression", ["zlib", "zstd", "lz4"])
@pytest.mark.parametrize("serializer", ["raw", "json", "msgpack"])
def test_values_that_compress_past_the_bound_are_stored_padded_and_read_back(
    tmp_path: Path, compression: str, serializer: str
) -> None:
    """The writer keeps the reader's rule: a value compressing more than MAX_EXPANSION
    times is stored padded to 1/MAX_EXPANSION of its size, and reads back."""
    value: Any = bytes(8 * 2**20) if serializer != "json" else [0] * 2**20
    store = FolderStore(tmp_path / "store")
    cache = Cache(store, serializer=serializer, compress=compression)
    cache.set("k", value)
    entry = store.get(":k")
    assert entry is not None and entry.header[1] & PADDED and entry.header[2]
    size = int.from_bytes(entry.header[4 + entry.header[3] :][:8], "little")
    assert len(entry.value) == math.ceil(size / MAX_EXPANSION)
    assert Cache(FolderStore(store.directory), serializer=serializer).get("k") == value
    words = ("alpha", "beta", "gamma", "delta", "epsilon")
    text = " ".join(f"{words[n * 7 % 5]}{n * 7919 % 100}" for n in range(600))  # ~2-4 times
    cache.set("text", text if serializer != "raw" else text.encode())
    small = store.get(":text")
    assert small is not None and small.header[2] and not small.header[1] & PADDED


def test_signed_entries_are_verified_before_inflating_and_never_padded(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    cache = Cache(store, compress="zstd", secret=TEST_SECRET)
    cache.set("k", [bytes(8 * 2**20)])  # (a value that needs pickle: signed)
    entry = store.get(":k")
    assert entry is not None and not entry.header[1] & PADDED and len(entry.value) < 2**12
    assert cache.get("k") == [bytes(8 * 2**20)]
    tampered = bytearray(entry.header)
    tampered[-1] ^= 1  # the MAC: refused before anything is inflated
    store.set(":k", Entry(entry.value, bytes(tampered), 0.0, None, (), None, 0))
    assert cache.get("k", MISSING) is MISSING and cache.stats().rejected == 1


# -- I: hostile JSON where a store reads a document -------------------------------------------

HOSTILE = {
    "200k nested brackets": b"[" * 200_000,
    "nested objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "1M-digit number": b'{"n":' + b"9" * 1_000_000 + b"}",
    "huge string": b'"' + b"x" * 2_000_000 + b'"',
    "a list": b"[1, 2, 3]",
    "a string": b'"metadata"',
    "invalid UTF-8": b'{"key": "\xff\xfe"}',
}


def _check_the_cache_survives(cache: Cache, store_has: Any, damaged: list[str]) -> None:
    """Three damaged reads: misses, no tier errors, the breaker shut, keys() answering
    (RedisStore lists keys by their expiry bytes alone: it may list a damaged one)."""
    assert "k3" in set(cache.keys()) <= {"k0", "k1", "k2", "k3"}
    for key in damaged:
        assert cache.get(key, MISSING) is MISSING
        assert not store_has(key), f"damaged {key} was not removed"
    stats = cache.stats()
    assert (stats.errors, stats.misses) == (0, 3)
    cache.set("new", {"after": "damage"})  # the breaker did not trip: the write lands
    assert store_has("new")
    assert sorted(cache.keys()) == ["k3", "new"]
    assert cache.get("k3") == 3


def _filled(cache: Cache) -> None:
    for n in range(4):
        cache.set(f"k{n}", n, meta={"n": n})


@pytest.mark.parametrize("document", list(HOSTILE))
def test_hostile_metadata_json_is_a_removed_counted_miss(tmp_path: Path, document: str) -> None:
    store = FolderStore(tmp_path / "store")
    cache = Cache(store, serializer="json")
    _filled(cache)
    damaged = ["k0", "k1", "k2"]
    for key in damaged:
        (store.directory / entry_dir(f":{key}") / "metadata.json").write_bytes(HOSTILE[document])
    _check_the_cache_survives(cache, lambda key: store.get(f":{key}") is not None, damaged)
    assert store.stats().rejected == 3 and cache.stats().rejected == 3


def with_meta(record: bytes, document: bytes) -> bytes:
    """`record` with its meta replaced by `document` (the lengths kept right)."""
    head_len, tags_len, meta_len, _key_len = _wire.FIXED.unpack_from(record)[4:]
    start = _wire.FIXED.size + head_len + tags_len
    fixed = bytearray(record[: _wire.FIXED.size])
    fixed[26:30] = len(document).to_bytes(4, "little")
    return bytes(fixed) + record[_wire.FIXED.size : start] + document + record[start + meta_len :]


@pytest.fixture
def redis_cache(redis_url: str) -> Iterator[tuple[Cache, Any]]:
    import redis

    from tiers import RedisStore

    raw = redis.Redis.from_url(redis_url)
    store = RedisStore(redis_url, prefix="h:")
    yield Cache(store, serializer="json"), raw
    store.close()
    raw.close()


@pytest.mark.parametrize("document", list(HOSTILE))
def test_hostile_meta_in_a_redis_record_is_a_removed_miss(
    redis_cache: tuple[Cache, Any], document: str
) -> None:
    cache, raw = redis_cache
    _filled(cache)
    damaged = ["k0", "k1", "k2"]
    for key in damaged:
        name = b"h:e::" + key.encode()
        raw.set(name, with_meta(raw.get(name), HOSTILE[document]))
    _check_the_cache_survives(cache, lambda key: raw.exists(b"h:e::" + key.encode()), damaged)


def test_redis_counts_the_damaged_records_it_removes(redis_cache: tuple[Cache, Any]) -> None:
    cache, raw = redis_cache
    _filled(cache)
    raw.set(b"h:e::k0", with_meta(raw.get(b"h:e::k0"), HOSTILE["200k nested brackets"]))
    assert cache.get("k0", MISSING) is MISSING
    assert cache.stats().rejected == 1


@pytest.fixture
def s3_cache(moto_s3: Any) -> Iterator[tuple[Cache, Any, str]]:
    import boto3

    from tests._servers import CREDENTIALS, REGION
    from tiers import ObjectStore

    bucket = moto_s3.new_bucket()
    client = boto3.client("s3", endpoint_url=moto_s3.endpoint, region_name=REGION, **CREDENTIALS)
    store = ObjectStore(f"s3://{bucket}/cache", **moto_s3.store_options())
    yield Cache(store, serializer="json"), client, bucket
    store.close()


@pytest.mark.parametrize("document", list(HOSTILE))
def test_hostile_meta_in_an_s3_record_is_a_removed_counted_miss(
    s3_cache: tuple[Cache, Any, str], document: str
) -> None:
    from tiers._stores._object._paths import Layout

    cache, client, bucket = s3_cache
    _filled(cache)
    layout = Layout("cache")
    damaged = ["k0", "k1", "k2"]
    for key in damaged:
        name = layout.entry(f":{key}")
        record = client.get_object(Bucket=bucket, Key=name)["Body"].read()
        client.put_object(Bucket=bucket, Key=name, Body=with_meta(record, HOSTILE[document]))

    def present(key: str) -> bool:
        found = client.list_objects_v2(Bucket=bucket, Prefix=layout.entry(f":{key}"))
        return bool(found.get("KeyCount"))

    _check_the_cache_survives(cache, present, damaged)
    assert cache.stats().rejected == 3


# -- the bounded JSON reader both use (tiers/_codec/_documents.py) ----------------------------

LEAVES = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet='[]{}"\\ax\0'),
    st.integers(), st.integers(10**4290, 10**4310), st.integers(-(10**4310), -(10**4290)),
)  # fmt: skip


@st.composite
def nested_documents(draw: st.DrawFn) -> dict[str, Any]:
    """An object around `depth` lists and objects around a leaf: near and past the bound."""
    value = draw(LEAVES)
    depth = draw(st.one_of(st.integers(0, 5), st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3)))
    wraps = st.lists(st.sampled_from(["list", "dict"]), min_size=depth, max_size=depth)
    for wrap in draw(wraps):
        value = [value] if wrap == "list" else {draw(st.text(max_size=3)): value}
    return {"m": value}


@given(nested_documents())
def test_what_is_written_is_what_reads_back_and_nothing_else(doc: dict[str, Any]) -> None:
    """`check_object` (writers) and `load_object` (readers) draw the same line."""
    try:
        check_object(doc)
        writable = True
    except ValueError:
        writable = False
    try:
        text = json.dumps(doc, allow_nan=False).encode()
    except ValueError:  # (Python's own int digit limit: no writer gets this far either)
        assert not writable
        return
    try:
        assert load_object(text) == doc
        readable = True
    except ValueError:
        readable = False
    assert writable == readable


def test_the_depth_bound_counts_containers_not_brackets_in_strings() -> None:
    inner = MAX_DEPTH - 1  # arrays inside the object: the document is MAX_DEPTH deep
    assert load_object(b'{"a":' + b"[" * inner + b"1" + b"]" * inner + b"}")
    with pytest.raises(ValueError, match="deeper"):
        load_object(b'{"a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}")
    assert load_object(b'{"s": "' + b"[{" * 10_000 + b'\\" ]"}') == {"s": "[{" * 10_000 + '" ]'}
