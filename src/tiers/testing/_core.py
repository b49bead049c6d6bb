"""Conformance tests of the core every store has: get, set, delete, clear, expiry, stats."""

from __future__ import annotations

import math
from typing import Any

import pytest

from .._stores._protocol import (
    Store,
    SupportsExpire,
    SupportsInfo,
    SupportsKeys,
    SupportsPop,
    SupportsTags,
    SupportsTouch,
)
from ._base import StoreTestBase
from ._clock import FakeClock


class CoreTests(StoreTestBase):
    def test_get_of_a_missing_key_is_none(self, store: Store) -> None:
        """A key never written reads as None."""
        assert store.get("never-written") is None

    def test_set_then_get_round_trips_the_entry(self, store: Store, clock: FakeClock) -> None:
        """Value, header (byte stores), times, tags and meta come back as written."""
        self.need_storage()
        expires = clock.time() + 60
        meta = {"by": "test", "n": 3, "nested": {"list": [1, 2.5, None, "é"]}}
        written = self.entry(store, b"payload", expires_at=expires, tags=("t1", "t2"), meta=meta)
        assert store.set("k", written) is True
        kept = self.assert_stored(store, "k", b"payload")
        got = self.assert_holds(store, "k", b"payload")
        for entry in (kept, got):
            assert entry.created_at == written.created_at
            assert entry.expires_at == expires
            assert tuple(entry.tags) == ("t1", "t2")
            assert entry.meta == meta
        assert got.size >= len(b"payload")

    def test_get_reads_the_entry_the_medium_holds(self, store: Store, clock: FakeClock) -> None:
        """An entry put in the medium (`plant`) reads back whole: the store reads what is kept,
        not what it remembers writing."""
        self.need_storage()
        expires = clock.time() + 60
        meta = {"by": "plant", "nested": {"list": [1, None, "é"]}}
        planted = self.entry(store, b"planted", expires_at=expires, tags=("t1", "t2"), meta=meta)
        self.plant(store, "k", planted)
        got = self.assert_holds(store, "k", b"planted")
        assert (got.created_at, got.expires_at) == (planted.created_at, expires)
        assert (tuple(got.tags), got.meta) == (("t1", "t2"), meta)
        self.assert_absent(store, "other")

    def test_set_replaces_an_entry_the_medium_holds(self, store: Store) -> None:
        """set over a planted entry replaces it, tags included, in the medium too."""
        self.need_storage()
        self.plant(store, "k", self.entry(store, b"old", tags=("old",), meta={"v": 1}))
        assert store.set("k", self.entry(store, b"new", tags=("new",))) is True
        kept = self.assert_stored(store, "k", b"new")
        assert (tuple(kept.tags), kept.meta) == (("new",), None)
        self.assert_holds(store, "k", b"new")
        if isinstance(store, SupportsKeys):
            assert self.live_keys(store, tag="old") == []
            assert self.live_keys(store, tag="new") == ["k"]

    def test_stored_and_plant_bypass_the_store(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The hooks reach the medium without any public method of the store (`bypass`)."""
        if not self.bypass:
            pytest.skip("stored and plant fall back to the store's get and set (bypass = False)")
        self.need_storage()

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a hook called a method of the store")

        for name in dir(type(store)):
            if not name.startswith("_") and callable(getattr(type(store), name)):
                monkeypatch.setattr(store, name, refuse)
        self.plant(store, "k", self.entry(store, b"planted", tags=("t",)))
        assert tuple(self.assert_stored(store, "k", b"planted").tags) == ("t",)
        assert self.stored(store, "missing") is None
        monkeypatch.undo()
        self.assert_holds(store, "k", b"planted")

    def test_overwrite_replaces_value_tags_meta_and_expiry(
        self, store: Store, clock: FakeClock
    ) -> None:
        """A second set replaces everything: the old tag and old expiry no longer apply."""
        self.need_storage()
        first = self.entry(store, b"one", expires_at=clock.time() + 5, tags=("old",), meta={"v": 1})
        store.set("k", first)
        store.set("k", self.entry(store, b"two", tags=("new",), meta={"v": 2}))
        kept = self.assert_stored(store, "k", b"two")
        got = self.assert_holds(store, "k", b"two")
        for entry in (kept, got):
            assert (tuple(entry.tags), entry.meta, entry.expires_at) == (("new",), {"v": 2}, None)
        clock.advance(10)  # past the first entry's expiry
        self.assert_holds(store, "k", b"two")
        if isinstance(store, SupportsExpire):
            assert store.expire() == 0
        if isinstance(store, SupportsKeys):
            assert self.live_keys(store, tag="old") == []
            assert self.live_keys(store, tag="new") == ["k"]
        if isinstance(store, SupportsTags):
            assert store.evict("old") == 0
        self.assert_holds(store, "k", b"two")
        self.assert_stored(store, "k", b"two")
        assert store.stats().items == 1

    def test_delete_reports_whether_the_key_was_there(self, store: Store) -> None:
        """delete is True for a live key (then gone), False for a missing one."""
        assert store.delete("missing") is False
        self.need_storage()
        store.set("k", self.entry(store))
        store.set("other", self.entry(store))
        assert store.delete("k") is True
        self.assert_not_stored(store, "k")
        self.assert_absent(store, "k")
        assert store.delete("k") is False
        self.assert_stored(store, "other", b"value")
        self.assert_holds(store, "other", b"value")

    def test_delete_removes_an_entry_the_medium_holds(self, store: Store) -> None:
        """delete removes a planted entry from the medium, and says it was there."""
        self.need_storage()
        self.plant(store, "k", self.entry(store, tags=("t",)))
        assert store.delete("k") is True
        self.assert_not_stored(store, "k")
        self.assert_absent(store, "k")
        assert store.delete("k") is False

    def test_clear_removes_everything_and_counts_live_entries(
        self, store: Store, clock: FakeClock
    ) -> None:
        """clear() returns how many live entries it removed; nothing is left."""
        self.need_storage()
        for key in ("a", "b/1", "c" * 1000):
            store.set(key, self.entry(store, key.encode()[:10]))
        store.set("gone", self.entry(store, expires_at=clock.time() + 1))
        clock.advance(2)
        assert store.clear() == 3
        for key in ("a", "b/1", "c" * 1000, "gone"):
            self.assert_not_stored(store, key)
            self.assert_absent(store, key)
        stats = store.stats()
        assert (stats.items, stats.bytes) == (0, 0)
        assert store.clear() == 0

    def test_clear_with_a_prefix_leaves_other_keys(self, store: Store) -> None:
        """clear(prefix) removes exactly the keys starting with the prefix."""
        self.need_storage()
        for key in ("a/1", "a/2", "a", "b/1", "ba/1"):
            store.set(key, self.entry(store, key.encode()))
        assert store.clear("a/") == 2
        for key in ("a/1", "a/2"):
            self.assert_not_stored(store, key)
            self.assert_absent(store, key)
        for key in ("a", "b/1", "ba/1"):
            self.assert_stored(store, key, key.encode())
            self.assert_holds(store, key, key.encode())
        assert store.clear("zzz") == 0

    def test_clear_with_a_prefix_removes_expired_entries_too(
        self, store: Store, clock: FakeClock
    ) -> None:
        """clear(prefix) counts live entries only, but leaves no expired one behind."""
        self.need_storage()
        store.set("a/old", self.entry(store, expires_at=clock.time() + 1))
        store.set("a/new", self.entry(store))
        store.set("b/old", self.entry(store, expires_at=clock.time() + 1))
        clock.advance(2)
        assert store.clear("a/") == 1
        assert store.clear("b/") == 0
        assert store.stats().items == 0
        if isinstance(store, SupportsExpire):
            assert store.expire() == 0

    def test_entry_is_live_until_it_expires(self, store: Store, clock: FakeClock) -> None:
        """An entry reads back before its expiry time and never after."""
        self.need_storage()
        expires = clock.time() + 10
        store.set("k", self.entry(store, expires_at=expires))
        assert self.assert_stored(store, "k", b"value").expires_at == expires
        clock.advance(9)
        self.assert_holds(store, "k", b"value")
        clock.advance(2)
        self.assert_absent(store, "k")
        self.assert_absent(store, "k")  # and stays gone

    def test_expiry_the_medium_holds_is_honoured(self, store: Store, clock: FakeClock) -> None:
        """A planted entry reads back before the expiry it carries and never after."""
        self.need_storage()
        self.plant(store, "k", self.entry(store, expires_at=clock.time() + 10))
        self.plant(store, "never", self.entry(store))
        clock.advance(9)
        self.assert_holds(store, "k", b"value")
        clock.advance(2)
        self.assert_absent(store, "k")
        assert store.delete("k") is False
        clock.advance(10 * 365 * 86400)
        assert self.assert_holds(store, "never", b"value").expires_at is None

    def test_delete_of_an_expired_key_is_false(self, store: Store, clock: FakeClock) -> None:
        """An expired entry counts as absent for delete."""
        self.need_storage()
        store.set("k", self.entry(store, expires_at=clock.time() + 1))
        clock.advance(5)
        assert store.delete("k") is False

    def test_entry_without_expiry_never_expires(self, store: Store, clock: FakeClock) -> None:
        """expires_at=None lives for ever (ten years on the fake clock)."""
        self.need_storage()
        store.set("k", self.entry(store))
        assert self.assert_stored(store, "k", b"value").expires_at is None
        clock.advance(10 * 365 * 86400)
        self.assert_holds(store, "k", b"value")

    def test_far_future_expiry_is_kept(self, store: Store, clock: FakeClock) -> None:
        """An expiry millions of years away (past 2**64 microseconds) is kept as written."""
        self.need_storage()
        far = clock.time() + 1e15
        store.set("k", self.entry(store, expires_at=far))
        assert self.assert_stored(store, "k", b"value").expires_at == far
        assert self.assert_holds(store, "k", b"value").expires_at == far

    @pytest.mark.parametrize(
        ("field", "bad"),
        [("expires_at", math.inf), ("expires_at", math.nan), ("created_at", math.nan)],
    )
    def test_set_refuses_non_finite_times(
        self, store: Store, clock: FakeClock, field: str, bad: float
    ) -> None:
        """An entry with an infinite or NaN time is a ValueError and writes nothing (None,
        not infinity, means "never expires"): such a time would read as live, or as
        expired, for ever, or as damage."""
        self.need_storage()
        store.set("k", self.entry(store, b"before"))
        times: dict[str, Any] = {
            "expires_at": clock.time() + 60,
            "created_at": clock.time(),
            field: bad,
        }
        with pytest.raises(ValueError, match="finite"):
            store.set("k", self.entry(store, b"after", **times))
        self.assert_holds(store, "k", b"before")

    def test_entry_written_already_expired_is_never_returned(
        self, store: Store, clock: FakeClock
    ) -> None:
        """An entry whose expiry is past when written is a miss everywhere."""
        self.need_storage()
        store.set("k", self.entry(store, expires_at=clock.time() - 1, tags=("t",)))
        self.assert_absent(store, "k")
        assert store.delete("k") is False
        if isinstance(store, SupportsInfo):
            assert store.info("k") is None
        if isinstance(store, SupportsPop):
            assert store.pop("k") is None
        if isinstance(store, SupportsKeys):
            assert self.live_keys(store) == []
            assert self.live_keys(store, tag="t") == []
            assert store.count() == 0
        if isinstance(store, SupportsTouch):
            assert store.touch("k", clock.time() + 100) is False
        self.assert_absent(store, "k")

    def test_expired_entry_the_medium_holds_is_never_returned(
        self, store: Store, clock: FakeClock
    ) -> None:
        """An expired entry still in the medium is a miss for every read (one key per read:
        a read may remove what it finds expired)."""
        self.need_storage()
        reads = ("get", "delete", "info", "pop", "touch")
        for key in reads:
            self.plant(store, key, self.entry(store, expires_at=clock.time() - 1, tags=("t",)))
        if isinstance(store, SupportsKeys):
            assert self.live_keys(store) == []
            assert self.live_keys(store, tag="t") == []
            assert store.count() == 0
        assert store.get("get") is None
        assert store.delete("delete") is False
        if isinstance(store, SupportsInfo):
            assert store.info("info") is None
        if isinstance(store, SupportsPop):
            assert store.pop("pop") is None
        if isinstance(store, SupportsTouch):
            assert store.touch("touch", clock.time() + 100) is False
        for key in reads:
            self.assert_absent(store, key)

    def test_stats_track_items_and_bytes(self, store: Store) -> None:
        """items and bytes follow what the store holds."""
        self.need_storage()
        empty = store.stats()
        assert (empty.items, empty.bytes) == (0, 0)
        bodies = {"a": b"a" * 100, "b": b"b" * 2000, "c": b"c" * 50_000}
        for key, body in bodies.items():
            store.set(key, self.entry(store, body))
        full = store.stats()
        assert full.items == 3
        assert full.bytes >= sum(map(len, bodies.values()))
        store.delete("c")
        smaller = store.stats()
        assert smaller.items == 2
        assert full.bytes - smaller.bytes >= 50_000
        store.set("a", self.entry(store, b"A" * 100))  # an overwrite adds no item
        assert store.stats().items == 2
        store.clear()
        cleared = store.stats()
        assert (cleared.items, cleared.bytes) == (0, 0)

    def test_entry_larger_than_max_size_is_rejected(self, store: Store) -> None:
        """set returns False for an entry over `max_size`, counts it, and drops the old value."""
        max_size = getattr(store, "max_size", None)
        if max_size is None:
            pytest.skip("the store has no max_size")
        if max_size > 64 * 1024 * 1024:
            pytest.skip("max_size is too large to exceed in a test")
        self.need_storage()
        store.set("big", self.entry(store, b"small"))
        store.set("other", self.entry(store, b"other"))
        rejected = store.stats().rejected
        assert store.set("big", self.entry(store, bytes(max_size + 1))) is False
        self.assert_absent(store, "big")
        assert store.stats().rejected == rejected + 1
        self.assert_holds(store, "other", b"other")
        assert store.stats().bytes <= max_size
