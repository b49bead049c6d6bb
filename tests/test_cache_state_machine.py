"""A hypothesis state machine: a memory-over-disk `Cache` against a model dict, on a fake clock.

The memory tier is sometimes emptied behind the cache's back, so reads fall through to the
DiskStore and promote what they find (with its remaining TTL) — the model must not notice.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests._tiers import install_clock, store_of, stores_of
from tiers import MISSING, Cache, DiskStore, MemoryStore
from tiers.testing import FakeClock

START = 1_700_000_000.0
KEYS = st.sampled_from(["a", "b", "c", "d", "é/ü", "k" * 300])
TAGS = st.lists(st.sampled_from(["red", "blue"]), max_size=2, unique=True).map(tuple)
TTLS = st.one_of(st.none(), st.integers(1, 60))
VALUES = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.tuples(st.integers(), st.booleans()),
    st.integers(0, 255).map(lambda b: bytes([b]) * 40_000),  # stored in a value file on disk
)
ASYNC = st.booleans()


class Model:
    """key -> (value, expires_at or None, tags)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.entries: dict[str, tuple[Any, float | None, tuple[str, ...]]] = {}

    def live(self, key: str) -> bool:
        found = self.entries.get(key)
        return found is not None and (found[1] is None or found[1] > self.clock.time())

    def value(self, key: str) -> Any:
        return self.entries[key][0] if self.live(key) else MISSING

    def live_keys(self) -> list[str]:
        return sorted(k for k in self.entries if self.live(k))

    def expiry(self, ttl: int | None) -> float | None:
        return None if ttl is None else self.clock.time() + ttl


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tiers-sm-"))
        self.clock = FakeClock(START)
        self.cache = Cache(MemoryStore(), DiskStore(self.dir / "store"))
        install_clock(self.cache, self.clock)
        self.model = Model(self.clock)

    def teardown(self) -> None:
        for store in stores_of(self.cache):
            store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def call(self, use_async: bool, name: str, *args: Any, **kwargs: Any) -> Any:
        if use_async:
            return asyncio.run(getattr(self.cache, name + "_async")(*args, **kwargs))
        return getattr(self.cache, name)(*args, **kwargs)

    # -- writes -----------------------------------------------------------------------------

    @rule(key=KEYS, value=VALUES, ttl=TTLS, tags=TAGS, use_async=ASYNC)
    def set(
        self, key: str, value: Any, ttl: int | None, tags: tuple[str, ...], use_async: bool
    ) -> None:
        self.call(use_async, "set", key, value, ttl=ttl, tags=tags)
        self.model.entries[key] = (value, self.model.expiry(ttl), tags)

    @rule(key=KEYS, value=VALUES, ttl=TTLS, use_async=ASYNC)
    def get_or_set(self, key: str, value: Any, ttl: int | None, use_async: bool) -> None:
        calls: list[int] = []

        def factory() -> Any:
            calls.append(1)
            return value

        expected = self.model.value(key)
        got = self.call(use_async, "get_or_set", key, factory, ttl=ttl)
        if expected is MISSING:
            assert calls == [1] and got == value
            self.model.entries[key] = (value, self.model.expiry(ttl), ())
        else:
            assert calls == [] and got == expected

    @rule(key=KEYS, use_async=ASYNC)
    def delete(self, key: str, use_async: bool) -> None:
        assert self.call(use_async, "delete", key) == self.model.live(key)
        self.model.entries.pop(key, None)

    @rule(key=KEYS, use_async=ASYNC)
    def pop(self, key: str, use_async: bool) -> None:
        absent = object()  # pop(key, MISSING) would mean "no default": KeyError
        got = self.call(use_async, "pop", key, absent)
        assert (MISSING if got is absent else got) == self.model.value(key)
        self.model.entries.pop(key, None)

    @rule(key=KEYS, ttl=TTLS, use_async=ASYNC)
    def touch(self, key: str, ttl: int | None, use_async: bool) -> None:
        live = self.model.live(key)
        assert self.call(use_async, "touch", key, ttl=ttl) == live
        if live:
            value, _old, tags = self.model.entries[key]
            self.model.entries[key] = (value, self.model.expiry(ttl), tags)

    @rule(tag=st.sampled_from(["red", "blue", "green"]), use_async=ASYNC)
    def evict(self, tag: str, use_async: bool) -> None:
        doomed = [k for k in self.model.live_keys() if tag in self.model.entries[k][2]]
        assert self.call(use_async, "evict", tag) == len(doomed)
        for key in doomed:
            del self.model.entries[key]

    @rule(use_async=ASYNC)
    def clear(self, use_async: bool) -> None:
        live = self.model.live_keys()
        assert self.call(use_async, "clear") == len(live)
        for key in live:  # expired ones may linger until expire(): see test_cache_api.py
            del self.model.entries[key]

    @rule(use_async=ASYNC)
    def expire(self, use_async: bool) -> None:
        removed = self.call(use_async, "expire")
        stale = len(self.model.entries) - len(self.model.live_keys())
        assert 0 <= removed <= stale
        assert self.call(use_async, "expire") == 0
        self.model.entries = {k: self.model.entries[k] for k in self.model.live_keys()}

    # -- time and the memory tier ---------------------------------------------------------------

    @rule(seconds=st.integers(1, 40))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def drop_memory(self) -> None:
        store_of(self.cache).clear()

    # -- reads ----------------------------------------------------------------------------------

    @rule(key=KEYS, use_async=ASYNC)
    def get(self, key: str, use_async: bool) -> None:
        assert self.call(use_async, "get", key, MISSING) == self.model.value(key)

    @rule(key=KEYS, use_async=ASYNC)
    def has(self, key: str, use_async: bool) -> None:
        assert self.call(use_async, "has", key) == self.model.live(key)

    @rule(key=KEYS)
    def info(self, key: str) -> None:
        info = self.cache.info(key)
        if not self.model.live(key):
            assert info is None
            return
        assert info is not None
        _value, expires_at, tags = self.model.entries[key]
        assert info.key == key and info.tier in (0, 1)
        assert info.tags == tags
        assert (info.expires_at.timestamp() if info.expires_at else None) == expires_at

    @precondition(lambda self: bool(self.model.entries))
    @rule(use_async=ASYNC)
    def keys(self, use_async: bool) -> None:
        if use_async:

            async def collect() -> list[str]:
                return [k async for k in self.cache.keys_async()]

            found = asyncio.run(collect())
        else:
            found = list(self.cache.keys())
        assert sorted(found) == self.model.live_keys()
        for tag in ("red", "blue"):
            tagged = [k for k in self.model.live_keys() if tag in self.model.entries[k][2]]
            assert sorted(self.cache.keys(tag=tag)) == tagged

    @invariant()
    def length(self) -> None:
        assert len(self.cache) == len(self.model.live_keys())


CacheMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_cache_matches_a_model = CacheMachine.TestCase
