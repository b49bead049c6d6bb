"""Hypothesis state machines: each store against a model dict, on a fake clock.

The model maps key -> (body, expires_at, tags) and holds every entry the store may still
keep, expired ones included: a store may drop an expired entry when a read meets it or keep
it until `expire()` (or a delete, clear or evict that covers it), but never returns it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tiers import DiskStore, MemoryStore, NullStore
from tiers._stores import Entry
from tiers.testing import FakeClock

KEYS = st.sampled_from(
    ("", "a", "ab", "a/b", "../x", "\0", "\u00e9", "e\u0301", "\ud800", " ", "x" * 500,
     "x" * 500 + "y")
)  # fmt: skip
PREFIXES = st.sampled_from(("", "a", "x" * 450, "\0", "e"))
TAGS = st.sampled_from(("red", "blue", "green"))
TTLS = st.sampled_from((None, None, 0.5, 1.0, 2.0, 10.0))
STEPS = st.sampled_from((0.25, 0.5, 1.0, 3.0))  # exact in binary: expiry boundaries are hit
BODIES = st.one_of(st.binary(max_size=8), st.just(b"L" * 40_000))  # inline and in a file

Model = dict[str, tuple[bytes, float | None, tuple[str, ...]]]


class StoreMachine(RuleBasedStateMachine):
    """Rules shared by every store; subclasses say how to make the store."""

    keeps_data = True
    make_store: Callable[[], Any]  # each machine below says how

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store: Any = self.make_store()
        self.store.clock = self.clock
        self.model: Model = {}

    def teardown(self) -> None:
        self.store.close()

    # -- model ----------------------------------------------------------------------------

    def live(self, key: str) -> bool:
        found = self.model.get(key)
        return found is not None and (found[1] is None or found[1] > self.clock.time())

    def live_keys(self, prefix: str = "", tag: str | None = None) -> list[str]:
        return sorted(
            key
            for key, (_body, _exp, tags) in self.model.items()
            if self.live(key) and key.startswith(prefix) and (tag is None or tag in tags)
        )

    def check_entry(self, key: str, got: Entry | None, *, with_value: bool = True) -> None:
        if not self.live(key):
            assert got is None, f"{key[:20]!r} should be a miss"
            return
        assert got is not None, f"{key[:20]!r} is missing"
        body, expires_at, tags = self.model[key]
        if with_value:
            assert bytes(got.value) == body
        assert (got.expires_at, tuple(got.tags), got.meta) == (expires_at, tags, {"k": key})
        if not self.store.holds_objects:
            assert bytes(got.header) == b"h"

    def has(self, name: str) -> bool:
        return hasattr(self.store, name)

    # -- rules ----------------------------------------------------------------------------

    @rule(key=KEYS, body=BODIES, ttl=TTLS, tags=st.lists(TAGS, unique=True, max_size=2).map(tuple))
    def set(self, key: str, body: bytes, ttl: float | None, tags: tuple[str, ...]) -> None:
        expires_at = None if ttl is None else self.clock.time() + ttl
        entry = Entry(body, b"h", self.clock.time(), expires_at, tags, {"k": key}, len(body))
        assert self.store.set(key, entry) is True
        if self.keeps_data:
            self.model[key] = (body, expires_at, tags)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        self.check_entry(key, self.store.get(key))

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.store.delete(key) is self.live(key)
        self.model.pop(key, None)

    @rule(seconds=STEPS)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(prefix=PREFIXES)
    def clear(self, prefix: str) -> None:
        assert self.store.clear(prefix) == len(self.live_keys(prefix))
        for key in [k for k in self.model if k.startswith(prefix)]:
            del self.model[key]  # expired ones too

    @precondition(lambda self: self.has("evict"))
    @rule(tag=TAGS, prefix=PREFIXES)
    def evict(self, tag: str, prefix: str) -> None:
        assert self.store.evict(tag, prefix) == len(self.live_keys(prefix, tag))
        for key, (_body, _exp, tags) in list(self.model.items()):
            if key.startswith(prefix) and tag in tags:
                del self.model[key]  # expired ones too

    @precondition(lambda self: self.has("expire"))
    @rule()
    def expire(self) -> None:
        expired = [key for key in self.model if not self.live(key)]
        assert 0 <= self.store.expire() <= len(expired)  # some may have gone lazily
        for key in expired:
            del self.model[key]
        assert self.store.stats().items == len(self.model)

    @precondition(lambda self: self.has("touch"))
    @rule(key=KEYS, ttl=TTLS)
    def touch(self, key: str, ttl: float | None) -> None:
        expires_at = None if ttl is None else self.clock.time() + ttl
        live = self.live(key)
        assert self.store.touch(key, expires_at) is live
        if live:
            body, _old, tags = self.model[key]
            self.model[key] = (body, expires_at, tags)

    @precondition(lambda self: self.has("pop"))
    @rule(key=KEYS)
    def pop(self, key: str) -> None:
        self.check_entry(key, self.store.pop(key))
        self.model.pop(key, None)

    @precondition(lambda self: self.has("info"))
    @rule(key=KEYS)
    def info(self, key: str) -> None:
        got = self.store.info(key)
        self.check_entry(key, got, with_value=False)
        assert got is None or got.value is None

    @precondition(lambda self: self.has("keys"))
    @rule(prefix=PREFIXES, tag=st.none() | TAGS)
    def keys_by(self, prefix: str, tag: str | None) -> None:
        assert sorted(self.store.keys(prefix, tag)) == self.live_keys(prefix, tag)
        assert self.store.count(prefix) == len(self.live_keys(prefix))

    @invariant()
    def listing_matches_model(self) -> None:
        live = self.live_keys()
        if self.has("keys"):
            assert sorted(self.store.keys()) == live
            for tag in ("red", "blue", "green"):
                assert sorted(self.store.keys(tag=tag)) == self.live_keys(tag=tag)
        if self.has("count"):
            assert self.store.count() == len(live)
        stats = self.store.stats()
        assert len(live) <= stats.items <= len(self.model)  # nothing kept the model dropped
        assert stats.items > 0 or stats.bytes == 0  # no bytes left behind by removals

    @invariant()
    def live_metadata_matches_model(self) -> None:
        """Expiry and tags of every live entry (info only: expired ones stay unread)."""
        if self.has("info"):
            for key in self.live_keys():
                self.check_entry(key, self.store.info(key), with_value=False)


SETTINGS = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
class MemoryStoreMachine(StoreMachine):
    def make_store(self) -> Any:
        return MemoryStore()


@SETTINGS
class DiskStoreMachine(StoreMachine):
    def make_store(self) -> Any:
        self.directory = Path(tempfile.mkdtemp(prefix="tiers-machine-"))
        return DiskStore(self.directory / "store")

    @rule()
    def reopen(self) -> None:
        """Everything the model holds survives closing and reopening the store."""
        self.store.close()
        self.store = DiskStore(self.directory / "store")
        self.store.clock = self.clock

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


@SETTINGS
class NullStoreMachine(StoreMachine):
    keeps_data = False

    def make_store(self) -> Any:
        return NullStore()


TestMemoryStoreMachine = MemoryStoreMachine.TestCase
TestDiskStoreMachine = DiskStoreMachine.TestCase
TestNullStoreMachine = NullStoreMachine.TestCase
