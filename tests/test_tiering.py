"""Tiering over three and four tiers (docs/architecture.md#1-layers): write-through, promotion
into every faster tier with the remaining TTL, removal in every tier, and a failing middle tier
under ``on_tier_error="degrade"`` (skipped, counted, breaker, probe) and ``"raise"``.

Stacks: memory, memory, disk (3) and memory, memory, disk, disk (4), all real stores on one
fake clock. The failing tier is a real MemoryStore behind a switch that makes its calls raise
(a tier going away is the one failure no local component produces on demand).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._flights import count_waiters
from tests._tiers import install_clock, store_of, stores_of, tiers_of
from tiers import MISSING, Cache, DiskStore, MemoryStore
from tiers._cache import _breaker
from tiers.errors import TierUnavailableError
from tiers.testing import FakeClock

START = 1_700_000_000.0


class FaultyStore:
    """A MemoryStore whose I/O raises `error()` while `failing` (all calls, or those named).

    Its local, pure helpers (`epoch`, `stats`, `close`, the `clock`) keep working, as they
    would for a remote tier whose client is alive but whose server is not.
    """

    _SPARED = frozenset({"epoch", "stats", "stats_async", "close", "close_async"})

    def __init__(self, error: Callable[[], Exception] | None = None) -> None:
        self.inner = MemoryStore()
        self.error = error or (lambda: ConnectionError("connection reset by peer"))
        self.failing: bool | set[str] = False
        self.calls = 0

    def __repr__(self) -> str:
        return "FaultyStore()"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name.startswith("_") or not callable(attr) or name in self._SPARED:
            return attr
        base = name.removesuffix("_async")

        def check() -> None:
            self.calls += 1
            if self.failing is True or (isinstance(self.failing, set) and base in self.failing):
                raise self.error()

        if asyncio.iscoroutinefunction(attr):

            async def call_async(*args: Any, **kwargs: Any) -> Any:
                check()
                return await attr(*args, **kwargs)

            return call_async

        def call(*args: Any, **kwargs: Any) -> Any:
            check()
            return attr(*args, **kwargs)

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "clock":
            self.inner.clock = value
        else:
            super().__setattr__(name, value)


class Api:
    """The cache's blocking methods, or their ``_async`` twins each run in ``asyncio.run``."""

    def __init__(self, cache: Cache, mode: str) -> None:
        self.cache, self.mode = cache, mode

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if self.mode == "sync":
            method: Callable[..., Any] = getattr(self.cache, name)
            return method
        coro = getattr(self.cache, name + "_async")
        return lambda *args, **kwargs: asyncio.run(coro(*args, **kwargs))


def stores(depth: int, path: Path, middle: Any = None) -> list[Any]:
    """memory, memory (or `middle`), disk[, disk]."""
    made = [MemoryStore(), middle if middle is not None else MemoryStore(), DiskStore(path / "d1")]
    if depth == 4:
        made.append(DiskStore(path / "d2"))
    return made


def held(cache: Cache, key: str) -> list[Any]:
    """Per tier: the value its store holds live for user key `key`, or MISSING."""
    out = []
    for tier in tiers_of(cache):
        store = tier.store.inner if isinstance(tier.store, FaultyStore) else tier.store
        entry = store.get(cache._key(key))
        if entry is None:
            out.append(MISSING)
        else:
            out.append(cache._decode(tier, cache._key(key), entry))
    return out


def items(cache: Cache) -> list[int]:
    return [store.stats().items for store in stores_of(cache)]


@pytest.fixture(params=[3, 4], ids=["3 tiers", "4 tiers"])
def depth(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def cache(depth: int, tmp_path: Path, clock: FakeClock) -> Iterator[Cache]:
    c = Cache(*stores(depth, tmp_path))
    install_clock(c, clock)
    yield c
    c.close()
    for store in stores_of(c):
        store.close()


@pytest.fixture
def faulty() -> FaultyStore:
    return FaultyStore()


@pytest.fixture
def degraded(depth: int, tmp_path: Path, clock: FakeClock, faulty: FaultyStore) -> Iterator[Cache]:
    """A cache whose tier 1 is `faulty` (healthy until told otherwise), policy "degrade"."""
    c = Cache(*stores(depth, tmp_path, faulty))
    install_clock(c, clock)
    yield c
    c.close()
    for store in stores_of(c):
        store.close()


@pytest.fixture
def breaker_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="tiers")
    return caplog


def warnings_about(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and fragment in r.getMessage()
    ]


# -- complete tiering --------------------------------------------------------------------------


def test_set_writes_through_to_every_tier(cache: Cache, mode: str, depth: int) -> None:
    api = Api(cache, mode)
    api.set("k", {"v": 1}, ttl=50, tags=("t",), meta={"m": 1})
    assert held(cache, "k") == [{"v": 1}] * depth
    for store in stores_of(cache):
        entry = store.get(cache._key("k"))
        assert entry.expires_at == START + 50 and entry.tags == ("t",) and entry.meta == {"m": 1}
    assert [t.sets for t in api.stats().tiers] == [1] * depth
    api.set("k", {"v": 2})
    assert held(cache, "k") == [{"v": 2}] * depth


def test_a_value_only_in_the_slowest_tier_is_promoted_into_every_faster_one(
    cache: Cache, mode: str, depth: int, clock: FakeClock
) -> None:
    api = Api(cache, mode)
    api.set("k", "v", ttl=100, tags=("t",))
    for store in stores_of(cache)[:-1]:
        store.clear()
    assert held(cache, "k") == [MISSING] * (depth - 1) + ["v"]
    clock.advance(30)
    assert api.get("k") == "v"
    stats = api.stats()
    assert [t.hits for t in stats.tiers] == [0] * (depth - 1) + [1]
    assert [t.misses for t in stats.tiers] == [1] * (depth - 1) + [0]
    assert held(cache, "k") == ["v"] * depth
    for store in stores_of(cache):  # the remaining 70 s, not a fresh 100, and the same tags
        entry = store.get(cache._key("k"))
        assert entry.expires_at == START + 100 and entry.tags == ("t",)
    clock.advance(69)
    assert api.get("k") == "v"
    assert [t.hits for t in api.stats().tiers] == [1] + [0] * (depth - 2) + [1]
    clock.advance(1)
    assert api.get("k", MISSING) is MISSING  # expired together everywhere
    assert held(cache, "k") == [MISSING] * depth
    assert api.evict("t") == 0


def test_a_value_in_a_middle_tier_is_promoted_above_and_slower_tiers_are_not_read(
    cache: Cache, mode: str, depth: int
) -> None:
    api = Api(cache, mode)
    api.set("k", "v")
    answering = depth - 2  # the first disk tier
    for store in stores_of(cache)[:answering]:
        store.clear()
    assert api.get("k") == "v"
    stats = api.stats()
    assert [t.hits for t in stats.tiers] == [0] * answering + [1, 0]
    assert [t.misses for t in stats.tiers] == [1] * answering + [0, 0]  # the last: not read
    assert held(cache, "k") == ["v"] * depth


def test_a_promotion_that_finds_no_ttl_keeps_none(cache: Cache, depth: int) -> None:
    cache.set("k", "v", ttl=None)
    for store in stores_of(cache)[:-1]:
        store.clear()
    assert cache.get("k") == "v"
    assert [store.get(cache._key("k")).expires_at for store in stores_of(cache)] == [None] * depth


def test_delete_evict_expire_and_clear_act_on_every_tier(
    cache: Cache, mode: str, depth: int, clock: FakeClock
) -> None:
    api = Api(cache, mode)
    api.set("a", 1, tags=("x",))
    api.set("b", 2, tags=("x", "y"))
    api.set("c", 3)
    api.set("d", 4, ttl=10)
    api.set("e", 5, ttl=10, tags=("x",))
    assert items(cache) == [5] * depth
    store_of(cache).clear()  # some tiers hold entries only through promotion...
    assert api.get("b") == 2  # ...with their tags

    assert api.delete("a") is True
    assert held(cache, "a") == [MISSING] * depth
    assert [t.deletes for t in api.stats().tiers] == [0] + [1] * (depth - 1)  # tier 0 had none
    assert api.delete("a") is False

    assert api.evict("x") == 2  # b and e
    assert held(cache, "b") == held(cache, "e") == [MISSING] * depth
    assert items(cache) == [0] + [2] * (depth - 1)  # c, d (tier 0 lost them to the clear)
    assert api.get("d") == 4  # promoted back into tier 0

    clock.advance(10)
    assert api.expire() == 1  # d, counted once though every tier removed it
    # (the evict changed every generation of the disk store: the memory copy of c over it
    # was not to be served any more, and expire() dropped it too)
    assert items(cache) == [0, 0] + [1] * (depth - 2)
    assert api.stats().expirations >= depth

    assert api.clear() == 1  # c
    assert items(cache) == [0] * depth
    assert list(cache.keys()) == []


def test_get_answers_from_the_slowest_tier_when_the_faster_are_empty(
    cache: Cache, mode: str, depth: int
) -> None:
    api = Api(cache, mode)
    for i in range(5):
        api.set(f"k{i}", i)
    for store in stores_of(cache)[:-1]:
        store.clear()
    assert [api.get(f"k{i}") for i in range(5)] == list(range(5))
    assert api.stats().tiers[-1].hits == 5
    assert [api.has(f"k{i}") for i in range(5)] == [True] * 5
    info = api.info("k0")
    assert info is not None and info.tier == 0  # promoted by the get


# -- a failing middle tier: "degrade" ------------------------------------------------------------

ERRORS = {
    "OSError": lambda: OSError(errno.EIO, "input/output error"),
    "ConnectionError": lambda: ConnectionError("connection reset by peer"),
    "TimeoutError": lambda: TimeoutError("timed out after 0.5 s"),
}


@pytest.mark.parametrize("error", list(ERRORS))
def test_degrade_serves_from_the_other_tiers_and_counts_errors(
    degraded: Cache, faulty: FaultyStore, mode: str, depth: int, error: str
) -> None:
    faulty.error = ERRORS[error]
    api = Api(degraded, mode)
    api.set("k", "v")
    faulty.failing = True
    store_of(degraded).clear()
    assert api.get("k") == "v"  # tier 0 missed, tier 1 failed, tier 2 answered
    assert held(degraded, "k")[0] == "v"  # and the value went up into tier 0 all the same
    api.set("j", "w")  # a write skips the failing tier
    assert held(degraded, "j") == ["w", MISSING] + ["w"] * (depth - 2)
    assert api.get("j") == "w"  # (from tier 0: no error)
    stats = api.stats()
    assert stats.tiers[1].errors == 3  # the get, the copy up into it, the set
    assert stats.errors == 3
    assert [t.errors for t in stats.tiers] == [0, 3] + [0] * (depth - 2)
    assert stats.tiers[2].hits == 1 and stats.hits == 2


def test_degrade_keeps_serving_every_operation(
    degraded: Cache, faulty: FaultyStore, mode: str, depth: int, clock: FakeClock
) -> None:
    api = Api(degraded, mode)
    api.set("k", "v", tags=("t",))
    api.set("gone", 0, ttl=5)
    faulty.failing = True
    assert api.has("k") is True
    assert api.info("k").tier == 0
    assert api.touch("k", ttl=100) is True
    assert api.pop("k") == "v"
    assert api.get("k", MISSING) is MISSING
    api.set("k", "again", tags=("t",))
    assert api.evict("t") == 1
    clock.advance(5)
    assert api.expire() == 1
    api.set("c", 1)
    assert api.clear() == 1
    assert api.get_or_set("computed", lambda: "x") == "x"
    faulty.failing = False
    assert held(degraded, "computed") == ["x", MISSING] + ["x"] * (depth - 2)
    assert api.stats().tiers[1].errors > 0


def test_the_breaker_opens_after_three_failures_warns_once_and_probes_after_cooldown(
    degraded: Cache,
    faulty: FaultyStore,
    depth: int,
    breaker_log: pytest.LogCaptureFixture,
    clock: FakeClock,
) -> None:
    for i in range(4):
        degraded.set(f"k{i}", i)
    faulty.failing = True
    for i in range(3):  # three writes, each failing in tier 1 once
        degraded.set(f"new{i}", i)
    assert degraded.stats().tiers[1].errors == 3
    calls = faulty.calls
    first, opened = warnings_about(breaker_log, "failed")  # the first failure, then opening
    assert first.startswith("tier 1 (FaultyStore()) failed to set (ConnectionError")
    assert "tier 1 (FaultyStore())" in opened and "failed 3 times in a row" in opened
    assert "ConnectionError: connection reset by peer" in opened
    # open: the tier is not called at all, and the others serve
    for _ in range(5):
        store_of(degraded).clear()
        assert degraded.get("k3") == 3
        assert degraded.get("new0") == 0
        degraded.set("other", 1)
        assert degraded.delete("other") is True
    assert faulty.calls == calls
    assert degraded.stats().tiers[1].errors == 3
    clock.advance(_breaker.COOLDOWN)
    store_of(degraded).clear()
    assert degraded.get("k0") == 0  # one probe, still failing: open again
    assert faulty.calls == calls + 1
    store_of(degraded).clear()
    assert degraded.get("k0") == 0
    assert faulty.calls == calls + 1
    assert degraded.stats().tiers[1].errors == 4
    # the probe's failure is the first of a get: said once, then quiet
    assert [w.split(" (")[1] for w in warnings_about(breaker_log, "failed")[2:]] == [
        "FaultyStore()) failed to get"
    ]
    faulty.failing = False
    clock.advance(_breaker.COOLDOWN)
    store_of(degraded).clear()
    assert degraded.get("k1") == 1  # the probe succeeds (tier 1 still holds k1)
    assert degraded.stats().tiers[1].hits == 1
    assert [r.levelno for r in breaker_log.records if "answers again" in r.getMessage()] == [
        logging.INFO
    ]
    degraded.set("after", "healed")
    assert held(degraded, "after") == ["healed"] * depth  # written to again
    assert degraded.stats().tiers[1].errors == 4


def test_failures_that_are_not_consecutive_never_open_the_breaker(
    degraded: Cache, faulty: FaultyStore, breaker_log: pytest.LogCaptureFixture
) -> None:
    degraded.set("k", "v")
    for _ in range(4):
        faulty.failing = True
        store_of(degraded).clear()
        assert degraded.get("k") == "v"  # two failures: the read and the copy up
        faulty.failing = False
        store_of(degraded).clear()
        assert degraded.get("k") == "v"  # an answer from tier 1 resets the count
    calls = faulty.calls
    store_of(degraded).clear()
    degraded.get("k")
    assert faulty.calls == calls + 1  # never skipped
    assert degraded.stats().tiers[1].errors == 8
    said = warnings_about(breaker_log, "failed")  # the first of each kind only, never opening
    assert [w.split(") failed to ")[1].split(" (")[0] for w in said] == ["get", "copy a value up"]
    assert not warnings_about(breaker_log, "in a row")


def test_a_failed_write_never_leaves_the_old_value_to_be_served_later(
    degraded: Cache, faulty: FaultyStore, depth: int
) -> None:
    degraded.set("k", "old")
    faulty.failing = {"set"}
    degraded.set("k", "new")  # tier 1 refuses the write; its old copy is dropped
    faulty.failing = False
    store_of(degraded).clear()
    assert degraded.get("k") == "new"
    assert held(degraded, "k") == ["new"] * depth


def test_a_tier_down_during_a_write_does_not_serve_the_old_value_after_it_heals(
    degraded: Cache, faulty: FaultyStore
) -> None:
    degraded.set("k", "old")
    degraded.set("gone", "old")
    faulty.failing = True  # gone entirely: the set and the clean-up delete both fail
    degraded.set("k", "new")
    assert degraded.delete("gone") is True
    faulty.failing = False
    store_of(degraded).clear()
    assert degraded.get("k") == "new"
    assert degraded.get("gone") is None
    assert not degraded.has("gone")
    assert "gone" not in faulty.inner._data  # the read healed the tier: its old copy is gone


# -- a failing middle tier: "raise" --------------------------------------------------------------


@pytest.fixture
def strict(depth: int, tmp_path: Path, clock: FakeClock, faulty: FaultyStore) -> Iterator[Cache]:
    c = Cache(*stores(depth, tmp_path, faulty), on_tier_error="raise")
    install_clock(c, clock)
    yield c
    c.close()
    for store in stores_of(c):
        store.close()


@pytest.mark.parametrize("error", list(ERRORS))
def test_raise_reports_the_middle_tier_with_the_cause_and_changes_nothing(
    strict: Cache, faulty: FaultyStore, mode: str, depth: int, error: str
) -> None:
    faulty.error = ERRORS[error]
    api = Api(strict, mode)
    api.set("k", "v", tags=("t",))
    store_of(strict).clear()
    faulty.failing = True
    reads: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("get", ("k",), {}), ("has", ("k",), {}), ("info", ("k",), {}), ("pop", ("k",), {}),
        ("get_or_set", ("k", lambda: "computed"), {}),
    ]  # fmt: skip
    for name, args, kwargs in reads:
        with pytest.raises(TierUnavailableError) as caught:
            getattr(api, name)(*args, **kwargs)
        assert type(caught.value.__cause__) is type(ERRORS[error]()), name
        assert caught.value.tier == 1
        message = str(caught.value)
        assert "tier 1" in message and f"{error}: " in message and "\n" not in message
    faulty.failing = False
    assert held(strict, "k") == [MISSING] + ["v"] * (depth - 1)  # nothing changed
    assert api.get("k") == "v"
    assert api.stats().tiers[1].errors == len(reads)


def test_raise_on_a_failing_slowest_set_keeps_the_previous_value_everywhere(
    tmp_path: Path, mode: str
) -> None:
    bottom = FaultyStore(lambda: OSError(5, "input/output error"))
    cache = Cache(MemoryStore(), DiskStore(tmp_path / "d"), bottom, on_tier_error="raise")
    api = Api(cache, mode)
    api.set("k", "old")
    bottom.failing = {"set"}
    with pytest.raises(TierUnavailableError) as caught:
        api.set("k", "new")
    assert isinstance(caught.value.__cause__, OSError) and caught.value.tier == 2
    bottom.failing = False
    assert held(cache, "k") == ["old"] * 3
    assert api.get("k") == "old"


def test_raise_on_a_failing_middle_set_never_leaves_the_old_value_above(
    strict: Cache, faulty: FaultyStore, mode: str, depth: int
) -> None:
    api = Api(strict, mode)
    api.set("k", "old")
    faulty.failing = {"set"}
    with pytest.raises(TierUnavailableError):
        api.set("k", "new")
    faulty.failing = False
    # The slower tiers took "new" before tier 1 failed: the faster ones must not say "old".
    assert held(strict, "k") == [MISSING, MISSING] + ["new"] * (depth - 2)
    assert api.get("k") == "new"


# -- memoize over three tiers with a failing middle -------------------------------------------


def test_memoize_over_a_failing_middle_tier_computes_once_and_serves(
    degraded: Cache, faulty: FaultyStore, depth: int
) -> None:
    faulty.failing = True
    computed: list[int] = []
    lock = threading.Lock()
    waiters = count_waiters(degraded)

    @degraded.memoize(ttl=60)
    def square(x: int) -> int:
        waiters.wait_for(7)  # every other caller waits for this computation
        with lock:
            computed.append(x)
        return x * x

    barrier = threading.Barrier(8)
    results: list[int] = []

    def run() -> None:
        barrier.wait(timeout=10)
        results.append(square(9))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [81] * 8 and computed == [9]
    key = square.key(9)
    assert held(degraded, key) == [81, MISSING] + [81] * (depth - 2)
    store_of(degraded).clear()
    assert square(9) == 81  # from the slowest tier, past the failing one
    assert square(9) == 81  # and the fast path again
    assert asyncio.run(degraded.get_async(key)) == 81
    assert computed == [9]
    assert degraded.stats().tiers[1].errors >= 1


def test_async_memoize_over_a_failing_middle_tier(
    degraded: Cache, faulty: FaultyStore, depth: int
) -> None:
    faulty.failing = True
    computed: list[int] = []
    waiters = count_waiters(degraded)

    @degraded.memoize
    async def cube(x: int) -> int:
        await waiters.wait_for_async(9)  # every other caller waits for this computation
        computed.append(x)
        return x**3

    async def main() -> list[int]:
        return await asyncio.gather(*(cube(3) for _ in range(10)))

    assert asyncio.run(main()) == [27] * 10
    store_of(degraded).clear()
    assert asyncio.run(cube(3)) == 27
    assert computed == [3]
