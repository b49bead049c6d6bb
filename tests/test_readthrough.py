"""`tiers.CachingReadableStore`: parity with obspec-utils' class, and what it does better."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import obstore
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from obspec_utils.wrappers import CachingReadableStore as TheirStore
from obstore.store import MemoryStore, S3Store

import tiers
from tests._flights import count_waiters
from tests._origin import TracingStore
from tiers import CachingReadableStore

ROOT = Path(__file__).resolve().parent.parent
BLOB = bytes(range(256)) * 64  # 16 KiB


class HeldOrigin(TracingStore):
    """A TracingStore that can hold a request at its door: after `hold_next()`, the next
    request sets `arrived` and waits for `release()`, so that a test acts while that fetch is
    in flight (rather than after a sleep long enough for it to have started)."""

    def __init__(self, store: Any, *, latency: float = 0.0) -> None:
        super().__init__(store, latency=latency)
        self.arrived = threading.Event()
        self._released = threading.Event()
        self._armed = False

    def hold_next(self) -> None:
        self._armed = True

    def release(self) -> None:
        self._released.set()

    def _held(self) -> bool:
        with self._lock:
            held, self._armed = self._armed, False
        if held:
            self.arrived.set()
        return held

    def _before(self, method: str, path: str) -> None:
        if self._held():
            assert self._released.wait(10), "the held request was never released"
        super()._before(method, path)

    async def _before_async(self, method: str, path: str) -> None:
        if self._held():
            released = await asyncio.to_thread(self._released.wait, 10)
            assert released, "the held request was never released"
        await super()._before_async(method, path)


def origin(objects: dict[str, bytes] | None = None, *, latency: float = 0.0) -> HeldOrigin:
    """A MemoryStore holding `objects` behind a HeldOrigin (a TracingStore), fresh counters."""
    traced = HeldOrigin(MemoryStore(), latency=latency)
    for path, data in (objects or {"a": BLOB}).items():
        obstore.put(traced.store, path, data)
    return traced


def parallel(n: int, fn: Callable[[int], Any]) -> list[Any]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


# -- parity with obspec-utils -------------------------------------------------------------------


def scenario(cls: Any, traced: TracingStore) -> list[Any]:
    """Reads and bookkeeping observable through the public API."""
    store = cls(traced, max_size=3000)
    seen: list[Any] = [
        bytes(store.get_range("a", start=1, end=5)),
        bytes(store.get_range("b", start=10, length=3)),
        [bytes(b) for b in store.get_ranges("a", starts=[0, 7], ends=[2, 9])],
        [bytes(b) for b in store.get_ranges("c", starts=[0], lengths=[4])],
        store.cached_paths,
        store.cache_size,
        bytes(store.get("a").buffer()),
        store.cached_paths,
        bytes(store.get("d").bytes()),  # evicts the least recently used
        store.cached_paths,
        store.cache_size,
        bytes(store.get("a", options={"range": (2, 6)}).buffer()),
        store.get("a", options={"range": (2, 6)}).range,
        store.head("a")["size"],
    ]
    with store as entered:
        assert entered is store
    seen += [store.cached_paths, store.cache_size]
    store.get("a")
    store.clear_cache()
    seen += [store.cached_paths, store.cache_size]
    return seen


def test_same_results_and_bookkeeping_as_obspec_utils() -> None:
    objects = {"a": bytes(range(100)) * 10, "b": b"x" * 700, "c": b"y" * 800, "d": b"z" * 900}
    assert scenario(CachingReadableStore, origin(objects)) == scenario(TheirStore, origin(objects))


def test_same_results_async_as_obspec_utils() -> None:
    async def reads(cls: Any) -> list[Any]:
        store = cls(origin())
        result = await store.get_async("a")
        return [
            bytes(await result.buffer_async()),
            bytes(await store.get_range_async("a", start=3, end=9)),
            [bytes(b) for b in await store.get_ranges_async("a", starts=[1], lengths=[5])],
            (await store.head_async("a"))["size"],
            store.cached_paths,
        ]

    assert asyncio.run(reads(CachingReadableStore)) == asyncio.run(reads(TheirStore))


def test_get_result_iterates_sync_and_async_like_obstore() -> None:
    store = CachingReadableStore(origin())
    result = store.get("a")
    assert b"".join(bytes(chunk) for chunk in result) == BLOB
    assert b"".join(bytes(c) for c in result.stream(min_chunk_size=1000)) == BLOB

    async def collect() -> bytes:
        chunks = [bytes(chunk) async for chunk in store.get("a")]
        return b"".join(chunks) + bytes(await store.get("a").bytes_async())

    assert asyncio.run(collect()) == BLOB * 2
    assert result.range == (0, len(BLOB)) and result.attributes == {}
    assert isinstance(result.buffer(), obstore.Bytes)


def test_pickling_gives_a_fresh_instance_with_the_same_configuration(
    tmp_path: Path, moto_s3: Any
) -> None:
    traced = TracingStore(S3Store(moto_s3.new_bucket(), **moto_s3.store_options()))
    traced.put("a", BLOB)
    level = tiers.Cache(tmp_path / "level")
    store = CachingReadableStore(traced, 12345, cache=level, block_size=512)
    store.get("a")
    copy = pickle.loads(pickle.dumps(store))
    assert type(copy) is CachingReadableStore
    assert (copy.cached_paths, copy.cache_size) == ([], 0)
    assert (copy._max_size, copy._block_size) == (12345, 512)
    assert copy._cache is not None and repr(copy._store) == repr(traced)
    assert bytes(copy.get_range("a", start=0, end=4)) == BLOB[:4]
    their = pickle.loads(pickle.dumps(TheirStore(traced, 12345)))
    assert their._max_size == copy._max_size
    level.close()
    copy._cache.close()


def test_unknown_public_attributes_are_forwarded_and_private_ones_are_not() -> None:
    traced = origin()
    for cls in (CachingReadableStore, TheirStore):
        store = cls(traced)
        assert store.latency == 0.0 and store.requests is traced.requests
        with pytest.raises(AttributeError):
            _ = store._lock_of_the_origin
        with pytest.raises(AttributeError):
            _ = store.no_such_attribute


def test_s3_prefix_is_forwarded(moto_s3: Any) -> None:
    s3 = S3Store(moto_s3.new_bucket(), prefix="data", **moto_s3.store_options())
    assert CachingReadableStore(s3).prefix == TheirStore(s3).prefix == "data"


# -- (a) no lock during origin I/O ----------------------------------------------------------------


def test_distinct_misses_run_in_parallel_and_hits_do_not_wait() -> None:
    traced = origin({f"p{i}": bytes([i]) * 100 for i in range(8)}, latency=0.2)
    store = CachingReadableStore(traced)
    store.get("p0")
    store.clear_cache()
    traced.reset()
    began = time.perf_counter()
    parallel(8, lambda i: store.get_range(f"p{i}", start=0, end=10))
    assert time.perf_counter() - began < 0.6  # obspec-utils: 8 x 0.2 s in series
    assert traced.requests["get"] == 8

    traced.store.put("slow", b"s" * 10)
    traced.hold_next()
    miss = threading.Thread(target=store.get, args=("slow",))
    miss.start()
    assert traced.arrived.wait(10)
    began = time.perf_counter()
    assert bytes(store.get_range("p3", start=0, end=2)) == b"\x03\x03"
    assert time.perf_counter() - began < 0.1  # a hit, while a miss is in flight
    traced.release()
    miss.join()


# -- (b) single-flight ----------------------------------------------------------------------------


def test_concurrent_misses_of_one_path_make_one_request_threads() -> None:
    traced = origin(latency=0.1)
    store = CachingReadableStore(traced)
    results = parallel(8, lambda i: bytes(store.get_range("a", start=i, end=i + 4)))
    assert results == [BLOB[i : i + 4] for i in range(8)]
    assert traced.requests["get"] == 1


def test_concurrent_misses_of_one_path_make_one_request_coroutines() -> None:
    traced = origin(latency=0.1)
    store = CachingReadableStore(traced, block_size=1024)

    async def many() -> list[bytes]:
        reads = [store.get_range_async("a", start=i * 10, end=i * 10 + 5) for i in range(8)]
        heads = [store.head_async("a") for _ in range(4)]
        done = await asyncio.gather(*reads, *heads)
        return [bytes(b) for b in done[:8]]

    assert asyncio.run(many()) == [BLOB[i * 10 : i * 10 + 5] for i in range(8)]
    assert traced.requests["head"] == 1 and traced.data_requests() == 1


def test_threads_and_coroutines_share_one_flight() -> None:
    traced = origin()
    store = CachingReadableStore(traced)
    waiters = count_waiters(store)
    traced.hold_next()
    thread = threading.Thread(target=store.get, args=("a",))
    thread.start()
    assert traced.arrived.wait(10)  # the thread leads the flight, its request at the origin

    async def join() -> Any:
        read = asyncio.create_task(store.get_range_async("a", start=0, end=3))
        await waiters.wait_for_async(1)  # the coroutine waits for the thread's request
        traced.release()
        return await read

    data = asyncio.run(join())
    thread.join()
    assert bytes(data) == BLOB[:3] and traced.requests["get"] == 1


@pytest.mark.parametrize("block_size", [None, 1000])
def test_a_blocking_read_never_deadlocks_behind_a_coroutine_of_its_thread(
    block_size: int | None,
) -> None:
    traced = origin()
    store = CachingReadableStore(traced, block_size=block_size)

    async def main() -> bytes:
        traced.hold_next()
        leader = asyncio.create_task(store.get_range_async("a", start=0, end=3))
        assert await asyncio.to_thread(traced.arrived.wait, 10)  # awaiting the origin, here
        data = bytes(store.get_range("a", start=0, end=3))  # blocking, same thread
        traced.release()
        return data + bytes(await leader)

    assert asyncio.run(main()) == BLOB[:3] * 2


def test_a_failed_fetch_reaches_every_waiter_and_is_not_cached() -> None:
    traced = origin(latency=0.1)
    store = CachingReadableStore(traced)

    def read(_: int) -> str:
        try:
            store.get("missing")
        except FileNotFoundError as exc:
            return type(exc).__name__
        return "no error"

    with pytest.raises(FileNotFoundError) as raw:
        traced.store.get("missing")
    assert set(parallel(4, read)) == {type(raw.value).__name__}
    assert traced.requests["get"] == 1 and store.cached_paths == []


# -- (c) objects over max_size --------------------------------------------------------------------


def test_objects_over_max_size_are_never_admitted() -> None:
    traced = origin({"big": b"b" * 5000, "small": b"s" * 100})
    store = CachingReadableStore(traced, max_size=1000)
    store.get("small")
    assert bytes(store.get("big").buffer()) == b"b" * 5000
    assert bytes(store.get_range("big", start=10, end=20)) == b"b" * 10
    assert store.cached_paths == ["small"] and store.cache_size == 100
    traced.reset()
    store.get_range("big", start=0, end=5)
    assert traced.requests["get_range"] == 1 and traced.bytes_fetched == 5  # served through

    blocks = CachingReadableStore(traced, max_size=1000, block_size=256)
    blocks.get_range("big", start=300, end=310)
    assert blocks.cached_paths == ["big"] and blocks.cache_size == 256


# -- (d) blocks -----------------------------------------------------------------------------------


def test_a_small_range_of_a_large_object_fetches_only_its_blocks() -> None:
    traced = origin({"huge": BLOB * 64})  # 1 MiB
    store = CachingReadableStore(traced, block_size=64 * 1024)
    assert bytes(store.get_range("huge", start=100_000, length=16)) == (BLOB * 64)[100_000:100_016]
    assert traced.bytes_fetched == 64 * 1024 and traced.data_requests() == 1
    traced.reset()
    store.get_range("huge", start=100_016, length=16)
    assert traced.data_requests() == 0


def test_get_ranges_coalesces_missing_blocks_into_one_request() -> None:
    data = BLOB * 4
    traced = origin({"a": data})
    store = CachingReadableStore(traced, block_size=1000)
    store.get_range("a", start=5000, end=5001)  # block 5 cached
    traced.reset()
    starts, ends = [10, 900, 4200, 30000, 62000], [20, 2500, 6500, 30010, 70000]
    got = store.get_ranges("a", starts=starts, ends=ends)
    assert [bytes(b) for b in got] == [data[s:e] for s, e in zip(starts, ends, strict=True)]
    assert traced.requests["get_ranges"] == 1 and traced.data_requests() == 1
    # blocks 0-2, 4, 6, 30, 62-63: three runs and two single blocks, block 5 from memory
    assert traced.bytes_fetched == 3000 + 1000 + 1000 + 1000 + (len(data) - 62000)


def test_a_whole_get_of_a_block_cached_object() -> None:
    traced = origin()
    store = CachingReadableStore(traced, block_size=5000)
    store.get_range("a", start=0, end=10)
    result = store.get("a")
    assert bytes(result.buffer()) == BLOB and result.meta == traced.store.head("a")
    traced.reset()
    assert bytes(store.get("a").buffer()) == BLOB and traced.data_requests() == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(min_size=1, max_size=3000),
    block=st.integers(1, 700),
    picks=st.lists(st.tuples(st.integers(0, 3100), st.integers(1, 900)), min_size=1, max_size=6),
)
def test_any_ranges_give_exactly_the_origins_bytes(
    data: bytes, block: int, picks: list[tuple[int, int]]
) -> None:
    traced = origin({"o": data})
    store = CachingReadableStore(traced, max_size=2000, block_size=block)
    picks = [(s % len(data), n) for s, n in picks]
    starts, lengths = [s for s, _ in picks], [n for _, n in picks]
    want = obstore.get_ranges(traced.store, "o", starts=starts, lengths=lengths)
    got = store.get_ranges("o", starts=starts, lengths=lengths)
    assert [bytes(b) for b in got] == [bytes(b) for b in want]
    for s, n in picks:
        expected = bytes(obstore.get_range(traced.store, "o", start=s, length=n))
        assert bytes(store.get_range("o", start=s, length=n)) == expected
    assert bytes(store.get("o").buffer()) == data


# -- (e) the cache= level -------------------------------------------------------------------------

_WORKER = """
import sys, json, tiers
from obstore.store import S3Store
from tests._origin import TracingStore
bucket, level_dir, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
traced = TracingStore(S3Store(bucket, **options))
with tiers.Cache(level_dir) as level:
    store = tiers.CachingReadableStore(traced, cache=level, block_size=4096)
    whole = tiers.CachingReadableStore(traced, cache=level)
    data = bytes(range(256)) * 40
    ok = bytes(store.get_range("obj", start=5000, end=9000)) == data[5000:9000]
    ok = ok and bytes(whole.get("obj").buffer()) == data
print(json.dumps({"ok": ok, "data": traced.data_requests()}))
"""


def test_a_second_process_reads_from_the_shared_level(moto_s3: Any, tmp_path: Path) -> None:
    import json

    bucket, options = moto_s3.new_bucket(), moto_s3.store_options()
    traced = TracingStore(S3Store(bucket, **options))
    traced.put("obj", bytes(range(256)) * 40)
    with tiers.Cache(tmp_path / "level") as level:
        CachingReadableStore(traced, cache=level, block_size=4096).get_range(
            "obj", start=5000, end=9000
        )
        CachingReadableStore(traced, cache=level).get("obj")
    assert traced.data_requests() == 2
    argv = [sys.executable, "-c", _WORKER, bucket, str(tmp_path / "level"), json.dumps(options)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"ok": True, "data": 0}


def test_a_changed_origin_object_is_never_served_from_the_level(tmp_path: Path) -> None:
    traced = origin({"a": b"old" * 10})
    with tiers.Cache(tmp_path / "level") as level:
        CachingReadableStore(traced, cache=level).get("a")
        traced.store.put("a", b"new" * 10)  # behind the wrapper's back
        fresh = CachingReadableStore(traced, cache=level)
        assert bytes(fresh.get("a").buffer()) == b"new" * 10


def test_the_level_is_looked_up_before_the_origin_in_memory_too(tmp_path: Path) -> None:
    traced = origin()
    with tiers.Cache("memory://", tmp_path / "level") as level:
        CachingReadableStore(traced, cache=level, block_size=1024).get_range("a", start=0, end=10)
        traced.reset()
        again = CachingReadableStore(traced, cache=level, block_size=1024)
        assert bytes(again.get_range("a", start=0, end=10)) == BLOB[:10]
        assert traced.data_requests() == 0 and traced.requests["head"] == 1


# -- (f) head, (g) writes, (h) metadata -----------------------------------------------------------


def test_head_is_asked_once_per_path() -> None:
    traced = origin()
    store = CachingReadableStore(traced)
    metas = [store.head("a") for _ in range(5)] + [asyncio.run(store.head_async("a"))]
    assert all(meta == metas[0] for meta in metas) and traced.requests["head"] == 1


@pytest.mark.parametrize("block_size", [None, 1000])
def test_writes_through_the_wrapper_invalidate(tmp_path: Path, block_size: int | None) -> None:
    traced = origin({"a": b"1" * 3000, "b": b"2" * 3000})
    with tiers.Cache(tmp_path / "level") as level:
        store = CachingReadableStore(traced, cache=level, block_size=block_size)

        def read(path: str) -> bytes:
            store.head(path)
            return bytes(store.get_range(path, start=0, end=3))

        assert read("a") == b"111"
        store.put("a", b"3" * 3000)
        assert read("a") == b"333"
        store.copy("b", "a")
        assert read("a") == b"222"
        asyncio.run(store.put_async("b", b"4" * 3000))
        assert read("b") == b"444"
        store.rename("b", "c")
        assert read("c") == b"444"
        with pytest.raises(FileNotFoundError):
            read("b")
        store.delete("c")
        with pytest.raises(FileNotFoundError):
            read("c")
        asyncio.run(store.copy_async("a", "d"))
        asyncio.run(store.rename_async("d", "e"))
        asyncio.run(store.delete_async("e"))
        assert "e" not in store.cached_paths and read("a") == b"222"
        assert bytes(CachingReadableStore(traced, cache=level).get("a").buffer()) == b"2" * 3000


def test_metadata_is_the_origins(moto_s3: Any) -> None:
    s3 = S3Store(moto_s3.new_bucket(), **moto_s3.store_options())
    s3.put("a", BLOB)
    real = obstore.head(s3, "a")
    for block_size in (None, 4096):
        store = CachingReadableStore(s3, block_size=block_size)
        assert store.head("a") == real
        assert store.get("a").meta == real
        assert store.get("a").meta == real  # from memory, still the origin's


# -- (i) eviction during reads --------------------------------------------------------------------


def test_eviction_never_spoils_a_buffer_a_reader_holds() -> None:
    objects = {f"p{i}": bytes([i]) * 1000 for i in range(20)}
    store = CachingReadableStore(origin(objects), max_size=2500, block_size=300)
    held = [(i, store.get_range(f"p{i}", start=0, end=1000)) for i in range(20)]
    results = parallel(
        8, lambda i: [bytes(store.get(f"p{(i + j) % 20}").buffer()) for j in range(20)]
    )
    assert all(bytes(buf) == bytes([i]) * 1000 for i, buf in held)
    assert all(r == [objects[f"p{(i + j) % 20}"] for j in range(20)] for i, r in enumerate(results))
    assert store.cache_size <= 2500


# -- bad input ------------------------------------------------------------------------------------

BAD_RANGES = [
    {"start": 5, "end": 2},
    {"start": 4, "end": 4},
    {"start": 0, "end": 3, "length": 3},
    {"start": 0},
    {"start": -1, "end": 2},
    {"start": 0, "length": -1},
    {"start": 10**6, "end": 10**6 + 5},
]


@pytest.mark.parametrize("block_size", [None, 1000])
@pytest.mark.parametrize("bad", BAD_RANGES)
def test_bad_ranges_raise_what_obstore_raises(bad: dict[str, int], block_size: int | None) -> None:
    traced = origin()
    with pytest.raises(Exception) as theirs:
        traced.store.get_range("a", **bad)
    with pytest.raises(type(theirs.value)):
        CachingReadableStore(traced, block_size=block_size).get_range("a", **bad)
    with pytest.raises(type(theirs.value)):
        asyncio.run(CachingReadableStore(traced).get_range_async("a", **bad))


def test_bad_ranges_raise_what_s3_raises(moto_s3: Any) -> None:
    s3 = S3Store(moto_s3.new_bucket(), **moto_s3.store_options())
    s3.put("a", BLOB)
    for bad in BAD_RANGES:
        with pytest.raises(Exception) as theirs:
            s3.get_range("a", **bad)
        with pytest.raises(type(theirs.value)):
            CachingReadableStore(s3, block_size=4096).get_range("a", **bad)


def test_bad_get_ranges_arguments() -> None:
    store = CachingReadableStore(origin())
    with pytest.raises(ValueError, match="same length"):
        store.get_ranges("a", starts=[0, 1], ends=[2])
    with pytest.raises(ValueError, match="both"):
        store.get_ranges("a", starts=[0], ends=[2], lengths=[2])
    with pytest.raises(ValueError, match="Either"):
        store.get_ranges("a", starts=[0])
    with pytest.raises(ValueError, match="Invalid range"):
        store.get_ranges("a", starts=[5], ends=[2])
    assert store.get_ranges("a", starts=[], ends=[]) == []


def test_missing_paths_raise_the_origins_not_found_error(moto_s3: Any) -> None:
    s3 = S3Store(moto_s3.new_bucket(), **moto_s3.store_options())
    with pytest.raises(FileNotFoundError) as raw:
        s3.get("nope")
    reads: list[Callable[[CachingReadableStore], Any]] = [
        lambda store: store.get("nope"),
        lambda store: store.get_range("nope", start=0, end=3),
        lambda store: store.get_ranges("nope", starts=[0], ends=[3]),
        lambda store: store.head("nope"),
        lambda store: asyncio.run(store.get_async("nope")),
    ]
    for block_size in (None, 64):
        store = CachingReadableStore(TracingStore(s3), block_size=block_size)
        for read in reads:
            with pytest.raises(type(raw.value)):
                read(store)


def test_a_store_without_read_methods_is_refused() -> None:
    class WriteOnly:
        def put(self, path: str, data: bytes) -> None: ...

    with pytest.raises(TypeError, match=r"WriteOnly lacks get, get_async, .*head_async\."):
        CachingReadableStore(WriteOnly())
    with pytest.raises(ValueError, match="block_size"):
        CachingReadableStore(origin(), block_size=0)
    with pytest.raises(ValueError, match="max_size"):
        CachingReadableStore(origin(), max_size=-1)
    with pytest.raises(TypeError, match=r"tiers\.Cache"):
        CachingReadableStore(origin(), cache={})
