"""Conformance tests of the optional capabilities, each skipped when a store lacks it."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable

import pytest

from .._stores._protocol import (
    Entry,
    Store,
    SupportsEpoch,
    SupportsExpire,
    SupportsFencedWrites,
    SupportsInfo,
    SupportsKeys,
    SupportsLocks,
    SupportsPop,
    SupportsTags,
    SupportsTouch,
    SupportsUpdate,
)
from ._base import StoreTestBase
from ._clock import FakeClock

Change = Callable[[Entry | None], Entry | None]


class ChangeFailed(Exception):
    """What a test's `change` raises (no store raises it)."""


class CapabilityTests(StoreTestBase):
    # -- keys and count -------------------------------------------------------------------

    def test_keys_lists_live_keys_by_prefix_and_tag(self, store: Store, clock: FakeClock) -> None:
        """keys() yields the live keys the medium holds, filtered by prefix and/or tag."""
        scan = self.need(store, SupportsKeys)
        self.need_storage()
        self.plant(store, "a/1", self.entry(store, tags=("t",)))
        self.plant(store, "a/2", self.entry(store))
        self.plant(store, "b/1", self.entry(store, tags=("t", "u")))
        self.plant(store, "a/3", self.entry(store, tags=("t",), expires_at=clock.time() + 1))
        clock.advance(2)
        assert sorted(scan.keys()) == ["a/1", "a/2", "b/1"]
        assert sorted(scan.keys("a/")) == ["a/1", "a/2"]
        assert sorted(scan.keys(tag="t")) == ["a/1", "b/1"]
        assert sorted(scan.keys("a/", "t")) == ["a/1"]
        assert sorted(scan.keys(tag="u")) == ["b/1"]
        assert list(scan.keys("zzz")) == []
        assert list(scan.keys(tag="none")) == []

    def test_keys_async_lists_what_keys_lists(self, store: Store, clock: FakeClock) -> None:
        """keys_async() yields the same keys as keys(), for every prefix and tag."""
        scan = self.need(store, SupportsKeys)
        self.need_storage()
        store.set("a/1", self.entry(store, tags=("t",)))
        store.set("a/2", self.entry(store))
        store.set("b/1", self.entry(store, tags=("t",)))
        store.set("a/3", self.entry(store, tags=("t",), expires_at=clock.time() + 1))
        clock.advance(2)

        async def listed(prefix: str, tag: str | None) -> list[str]:
            return sorted([key async for key in scan.keys_async(prefix, tag)])

        for prefix, tag in (("", None), ("a/", None), ("", "t"), ("a/", "t"), ("zzz", None)):
            assert asyncio.run(listed(prefix, tag)) == self.live_keys(store, prefix, tag)

    def test_count_counts_live_keys_by_prefix(self, store: Store, clock: FakeClock) -> None:
        """count() agrees with keys(): live entries, optionally under a prefix."""
        counter = self.need(store, SupportsKeys)
        assert counter.count() == 0
        self.need_storage()
        for key in ("a/1", "a/2", "b/1"):
            store.set(key, self.entry(store))
        store.set("a/3", self.entry(store, expires_at=clock.time() + 1))
        assert (counter.count(), counter.count("a/")) == (4, 3)
        clock.advance(2)
        assert (counter.count(), counter.count("a/"), counter.count("b/")) == (3, 2, 1)
        assert counter.count("zzz") == 0

    def test_tags_of_any_content_work(self, store: Store) -> None:
        """Long (256-byte), non-ASCII and surrogate tags round-trip, list and evict exactly."""
        scan = self.need(store, SupportsKeys, SupportsTags)
        self.need_storage()
        long_a, long_b = "t" * 255 + "a", "t" * 255 + "b"  # differ only at the end
        odd = ("\u00e9", "e\u0301", "\ud800", "\U0001f642", " ")
        key = "k" * 10_000
        store.set(key, self.entry(store, tags=(long_a, *odd)))
        store.set("short", self.entry(store, tags=(long_b,)))
        assert tuple(self.assert_holds(store, key, b"value").tags) == (long_a, *odd)
        for tag in (long_a, *odd):
            assert list(scan.keys(tag=tag)) == [key], repr(tag[-3:])
        assert list(scan.keys(tag=long_b)) == ["short"]
        assert scan.evict("\u00e9") == 1
        self.assert_absent(store, key)
        assert scan.evict(long_a) == 0
        assert scan.evict(long_b) == 1
        assert list(scan.keys()) == []

    # -- info and touch ---------------------------------------------------------------------

    def test_info_returns_metadata_without_the_value(self, store: Store, clock: FakeClock) -> None:
        """info carries created_at, expires_at, tags, meta and size, but no value."""
        reader = self.need(store, SupportsInfo)
        assert reader.info("missing") is None
        self.need_storage()
        written = self.entry(
            store, b"x" * 100, expires_at=clock.time() + 50, tags=("t",), meta={"m": [1]}
        )
        store.set("k", written)
        info = reader.info("k")
        assert info is not None
        assert info.value is None
        assert (info.created_at, info.expires_at) == (written.created_at, written.expires_at)
        assert (tuple(info.tags), info.meta) == (("t",), {"m": [1]})
        assert info.size >= 100
        if not store.holds_objects:
            assert bytes(info.header) == written.header
        clock.advance(60)
        assert reader.info("k") is None

    def test_touch_extends_and_shortens_expiry(self, store: Store, clock: FakeClock) -> None:
        """touch sets a new expiry (later, earlier or none) on a live entry."""
        toucher = self.need(store, SupportsTouch)
        self.need_storage()
        start = clock.time()
        store.set("k", self.entry(store, expires_at=start + 10))
        assert toucher.touch("k", start + 100) is True
        assert self.assert_stored(store, "k", b"value").expires_at == start + 100
        clock.advance(50)
        assert self.assert_holds(store, "k", b"value").expires_at == start + 100
        assert toucher.touch("k", clock.time() + 1) is True
        clock.advance(2)
        self.assert_absent(store, "k")
        store.set("n", self.entry(store, expires_at=clock.time() + 1))
        assert toucher.touch("n", None) is True
        assert self.assert_stored(store, "n", b"value").expires_at is None
        clock.advance(10 * 365 * 86400)
        assert self.assert_holds(store, "n", b"value").expires_at is None

    def test_touch_leaves_entries_handed_out_unchanged(
        self, store: Store, clock: FakeClock
    ) -> None:
        """touch changes the stored expiry, not Entry objects written or read before it."""
        toucher = self.need(store, SupportsTouch)
        self.need_storage()
        expires = clock.time() + 10
        written = self.entry(store, expires_at=expires)
        store.set("k", written)
        read = self.assert_holds(store, "k", b"value")
        assert toucher.touch("k", clock.time() + 100) is True
        assert (written.expires_at, read.expires_at) == (expires, expires)
        assert self.assert_holds(store, "k", b"value").expires_at == clock.time() + 100

    def test_touch_of_a_missing_or_expired_key_is_false(
        self, store: Store, clock: FakeClock
    ) -> None:
        """touch cannot bring back an expired entry, nor create one."""
        toucher = self.need(store, SupportsTouch)
        assert toucher.touch("missing", clock.time() + 10) is False
        self.need_storage()
        store.set("k", self.entry(store, expires_at=clock.time() + 1))
        clock.advance(2)
        assert toucher.touch("k", clock.time() + 100) is False
        self.assert_absent(store, "k")

    @pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
    def test_touch_refuses_a_non_finite_expiry(
        self, store: Store, clock: FakeClock, bad: float
    ) -> None:
        """touch with an infinite or NaN expiry is a ValueError and leaves the entry as it
        was (None, not infinity, means "never expires")."""
        toucher = self.need(store, SupportsTouch)
        self.need_storage()
        expires = clock.time() + 10
        store.set("k", self.entry(store, expires_at=expires))
        with pytest.raises(ValueError, match="finite"):
            toucher.touch("k", bad)
        assert self.assert_holds(store, "k", b"value").expires_at == expires

    # -- expire, evict, pop ---------------------------------------------------------------

    def test_expire_removes_and_counts_expired_entries(
        self, store: Store, clock: FakeClock
    ) -> None:
        """expire() removes exactly the expired entries and returns how many."""
        expirer = self.need(store, SupportsExpire)
        assert expirer.expire() == 0
        self.need_storage()
        for i in range(3):
            store.set(f"short{i}", self.entry(store, expires_at=clock.time() + 10))
        store.set("long", self.entry(store, expires_at=clock.time() + 1000))
        store.set("never", self.entry(store))
        expirations = store.stats().expirations
        clock.advance(20)
        assert expirer.expire() == 3
        assert expirer.expire() == 0
        stats = store.stats()
        assert stats.expirations == expirations + 3
        assert stats.items == 2
        for i in range(3):
            self.assert_not_stored(store, f"short{i}")
        self.assert_holds(store, "long", b"value")
        self.assert_holds(store, "never", b"value")

    def test_evict_removes_only_tagged_entries(self, store: Store, clock: FakeClock) -> None:
        """evict(tag) removes the live entries carrying the tag and returns how many."""
        evicter = self.need(store, SupportsTags)
        assert evicter.evict("t1") == 0
        self.need_storage()
        store.set("a", self.entry(store, b"a", tags=("t1",)))
        store.set("b", self.entry(store, b"b", tags=("t1", "t2")))
        store.set("c", self.entry(store, b"c", tags=("t2",)))
        store.set("d", self.entry(store, b"d"))
        store.set("e", self.entry(store, b"e", tags=("t1",), expires_at=clock.time() + 1))
        clock.advance(2)
        assert evicter.evict("t1") == 2
        for key in ("a", "b"):
            self.assert_not_stored(store, key)
            self.assert_absent(store, key)
        for key in ("c", "d"):
            self.assert_stored(store, key, key.encode())
            self.assert_holds(store, key, key.encode())
        assert evicter.evict("t1") == 0
        assert evicter.evict("nope") == 0
        assert evicter.evict("t2") == 1
        self.assert_holds(store, "d", b"d")

    def test_evict_removes_expired_tagged_entries_too(self, store: Store, clock: FakeClock) -> None:
        """evict(tag) counts live entries only, but leaves no expired tagged one behind."""
        evicter = self.need(store, SupportsTags)
        self.need_storage()
        store.set("old", self.entry(store, tags=("t",), expires_at=clock.time() + 1))
        store.set("other", self.entry(store, tags=("u",), expires_at=clock.time() + 1))
        clock.advance(2)
        assert evicter.evict("t") == 0
        assert store.stats().items == 1  # "other": expired, not tagged "t"
        self.assert_not_stored(store, "old")
        if isinstance(store, SupportsExpire):
            assert store.expire() == 1

    def test_evict_removes_tagged_entries_the_medium_holds(
        self, store: Store, clock: FakeClock
    ) -> None:
        """evict(tag) finds planted entries through the tag index, and removes them."""
        evicter = self.need(store, SupportsTags)
        self.need_storage()
        self.plant(store, "a", self.entry(store, b"a", tags=("t1",)))
        self.plant(store, "b", self.entry(store, b"b", tags=("t1", "t2")))
        self.plant(store, "c", self.entry(store, b"c", tags=("t2",)))
        self.plant(store, "e", self.entry(store, b"e", tags=("t1",), expires_at=clock.time() + 1))
        clock.advance(2)
        assert evicter.evict("t1") == 2
        for key in ("a", "b", "e"):
            self.assert_not_stored(store, key)
            self.assert_absent(store, key)
        self.assert_stored(store, "c", b"c")
        self.assert_holds(store, "c", b"c")

    def test_evict_within_a_prefix(self, store: Store) -> None:
        """evict(tag, prefix) leaves tagged entries outside the prefix."""
        evicter = self.need(store, SupportsTags)
        self.need_storage()
        for key in ("p/a", "p/b", "q/a", "p"):
            store.set(key, self.entry(store, key.encode(), tags=("t",)))
        assert evicter.evict("t", "p/") == 2
        self.assert_absent(store, "p/a")
        self.assert_absent(store, "p/b")
        self.assert_holds(store, "q/a", b"q/a")
        self.assert_holds(store, "p", b"p")

    def test_pop_returns_and_removes(self, store: Store, clock: FakeClock) -> None:
        """pop returns the live entry and removes it; None when missing or expired."""
        popper = self.need(store, SupportsPop)
        assert popper.pop("missing") is None
        self.need_storage()
        store.set("k", self.entry(store, b"popped", tags=("t",), meta={"a": 1}))
        got = popper.pop("k")
        assert got is not None
        assert self.body_of(store, got) == b"popped"
        assert (tuple(got.tags), got.meta) == (("t",), {"a": 1})
        self.assert_not_stored(store, "k")
        self.assert_absent(store, "k")
        assert popper.pop("k") is None
        store.set("e", self.entry(store, expires_at=clock.time() + 1))
        clock.advance(2)
        assert popper.pop("e") is None

    # -- update (read-modify-write) ---------------------------------------------------------

    def counting(self, store: Store) -> Change:
        """A `change` adding 1 to a count kept as ASCII digits (absent: 0)."""

        def change(entry: Entry | None) -> Entry:
            count = 0 if entry is None else int(self.body_of(store, entry))
            return self.entry(store, b"%d" % (count + 1))

        return change

    def test_update_of_an_absent_key_stores_what_change_returns(
        self, store: Store, clock: FakeClock
    ) -> None:
        """update of a key never written calls change(None), stores the entry it returns
        (times, tags and meta included) and returns it."""
        updater = self.need(store, SupportsUpdate)
        self.need_storage()
        seen: list[Entry | None] = []
        expires = clock.time() + 60

        def change(entry: Entry | None) -> Entry:
            seen.append(entry)
            return self.entry(store, b"1", expires_at=expires, tags=("t",), meta={"n": 1})

        got = updater.update("k", change)
        assert seen
        assert all(entry is None for entry in seen)
        assert got is not None
        assert self.body_of(store, got) == b"1"
        for kept in (self.assert_stored(store, "k", b"1"), self.assert_holds(store, "k", b"1")):
            assert (kept.expires_at, tuple(kept.tags), kept.meta) == (expires, ("t",), {"n": 1})

    def test_update_sees_the_current_entry(self, store: Store, clock: FakeClock) -> None:
        """change gets the live entry (value, expiry, tags, meta), whether written through the
        store or put in its medium; what it returns replaces it."""
        updater = self.need(store, SupportsUpdate)
        self.need_storage()
        expires = clock.time() + 60
        self.plant(
            store, "k", self.entry(store, b"41", expires_at=expires, tags=("t",), meta={"m": 1})
        )
        seen: list[tuple[bytes, float | None, tuple[str, ...], object]] = []

        def change(entry: Entry | None) -> Entry:
            assert entry is not None
            body = bytes(self.body_of(store, entry))
            seen.append((body, entry.expires_at, tuple(entry.tags), entry.meta))
            return self.entry(
                store, b"%d" % (int(body) + 1), expires_at=entry.expires_at,
                tags=tuple(entry.tags), meta=entry.meta,
            )  # fmt: skip

        assert updater.update("k", change) is not None
        assert seen[-1] == (b"41", expires, ("t",), {"m": 1})
        assert updater.update("k", change) is not None
        assert seen[-1] == (b"42", expires, ("t",), {"m": 1})
        kept = self.assert_stored(store, "k", b"43")
        assert (kept.expires_at, tuple(kept.tags), kept.meta) == (expires, ("t",), {"m": 1})
        self.assert_holds(store, "k", b"43")

    def test_update_returning_none_writes_nothing(self, store: Store) -> None:
        """change returning None leaves the key as it was (absent stays absent); update
        returns None."""
        updater = self.need(store, SupportsUpdate)
        self.need_storage()
        store.set("k", self.entry(store, b"1"))
        assert updater.update("k", lambda entry: None) is None
        self.assert_stored(store, "k", b"1")
        self.assert_holds(store, "k", b"1")
        assert updater.update("absent", lambda entry: None) is None
        self.assert_not_stored(store, "absent")
        self.assert_absent(store, "absent")

    @pytest.mark.parametrize("error", [KeyError, TypeError, ChangeFailed, FileNotFoundError])
    def test_update_passes_what_change_raises_and_writes_nothing(
        self, store: Store, error: type[Exception]
    ) -> None:
        """An exception change raises reaches the caller as it is (an OS error included: it
        is not the store's own) and nothing is written."""
        updater = self.need(store, SupportsUpdate)
        self.need_storage()
        store.set("k", self.entry(store, b"1"))
        raised: list[Exception] = []

        def change(entry: Entry | None) -> Entry:
            raised.append(error("from change"))
            raise raised[-1]

        for key in ("k", "absent"):
            with pytest.raises(error) as caught:
                updater.update(key, change)
            assert caught.value is raised[-1]
        self.assert_holds(store, "k", b"1")
        self.assert_absent(store, "absent")
        self.assert_not_stored(store, "absent")

    def test_update_of_an_expired_entry_sees_none(self, store: Store, clock: FakeClock) -> None:
        """An entry whose expiry passed is absent to change, and replaced."""
        updater = self.need(store, SupportsUpdate)
        self.need_storage()
        store.set("k", self.entry(store, b"old", expires_at=clock.time() + 1))
        clock.advance(2)
        seen: list[Entry | None] = []

        def change(entry: Entry | None) -> Entry:
            seen.append(entry)
            return self.entry(store, b"new")

        assert updater.update("k", change) is not None
        assert seen
        assert all(entry is None for entry in seen)
        assert self.assert_holds(store, "k", b"new").expires_at is None

    def test_update_of_large_values(self, store: Store) -> None:
        """Values of hundreds of KiB are read and written whole by update (a store keeping
        big values apart), and shrink back."""
        updater = self.need(store, SupportsUpdate)
        self.need_storage()
        if not self.supports_large_values:
            pytest.skip("the store keeps small values only")
        big, bigger = b"a" * 200_000, b"b" * 300_000
        store.set("k", self.entry(store, big))
        for before, after in ((big, bigger), (bigger, b"small")):

            def change(entry: Entry | None, before: bytes = before, after: bytes = after) -> Entry:
                assert entry is not None
                assert self.body_of(store, entry) == before
                return self.entry(store, after)

            assert updater.update("k", change) is not None
            self.assert_holds(store, "k", after)

    def test_update_changes_the_epoch_as_set_does(self, store: Store) -> None:
        """An update is a write: a copy checked against the key's epoch read before it stays
        out afterwards."""
        updater = self.need(store, SupportsUpdate, SupportsEpoch)
        self.need_storage()
        store.set("k", self.entry(store, b"1"))
        epoch = updater.epoch("k")
        assert updater.update("k", self.counting(store)) is not None
        assert updater.epoch("k") != epoch
        assert updater.set("k", self.entry(store, b"stale"), epoch=epoch) is False
        got = store.get("k")
        assert got is None or self.body_of(store, got) == b"2"

    def test_update_async_is_update(self, store: Store) -> None:
        """update_async updates as update does, passes what change raises, writes nothing
        for None."""
        updater = self.need(store, SupportsUpdate)
        self.need_storage()

        async def scenario() -> None:
            for expected in (b"1", b"2", b"3"):
                got = await updater.update_async("k", self.counting(store))
                assert got is not None
                assert self.body_of(store, got) == expected
            assert await updater.update_async("k", lambda entry: None) is None

            def fail(entry: Entry | None) -> Entry:
                raise ChangeFailed

            with pytest.raises(ChangeFailed):
                await updater.update_async("k", fail)

        asyncio.run(scenario())
        self.assert_holds(store, "k", b"3")

    def test_threads_updating_one_key_lose_no_update(self, store: Store) -> None:
        """8 threads x 200 increments by update of one key: each lands once, none is lost
        (the counts update returned are 1 to 1600, each once)."""
        updater = self.need(store, SupportsUpdate)
        self.need_storage()
        change = self.counting(store)
        counts: list[int] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def work() -> None:
            try:
                barrier.wait()
                for _ in range(200):
                    got = updater.update("n", change)
                    counts.append(int(self.body_of(store, got)))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
        assert not errors, f"update raised: {errors[0]!r}"
        lost = 1600 - len(set(counts))
        assert sorted(counts) == list(range(1, 1601)), f"{lost} of 1600 updates were lost"
        self.assert_holds(store, "n", b"1600")

    # -- locks ----------------------------------------------------------------------------

    def test_lock_is_exclusive_until_released_by_its_owner(self, store: Store) -> None:
        """Another token cannot take, renew or release a held lock; the owner can."""
        locks = self.need(store, SupportsLocks)
        assert locks.acquire_lock("L", "alice", 30) is True
        assert locks.acquire_lock("L", "bob", 30) is False
        assert locks.renew_lock("L", "bob", 30) is False
        assert locks.release_lock("L", "bob") is False
        assert locks.renew_lock("L", "alice", 30) is True
        assert locks.acquire_lock("L", "bob", 30) is False
        assert locks.release_lock("L", "alice") is True
        assert locks.release_lock("L", "alice") is False
        assert locks.renew_lock("L", "alice", 30) is False
        assert locks.acquire_lock("L", "bob", 30) is True
        assert locks.acquire_lock("other", "alice", 30) is True  # locks are independent

    def test_lock_whose_lease_ran_out_can_be_taken(self, store: Store, clock: FakeClock) -> None:
        """A lease that expired (a dead holder) lets another token in; the old owner is out."""
        locks = self.need(store, SupportsLocks)
        assert locks.acquire_lock("L", "alice", 5) is True
        clock.advance(3)
        assert locks.acquire_lock("L", "bob", 5) is False
        assert locks.renew_lock("L", "alice", 5) is True  # now held until +8
        clock.advance(4)
        assert locks.acquire_lock("L", "bob", 5) is False
        clock.advance(2)
        assert locks.acquire_lock("L", "bob", 5) is True
        assert locks.renew_lock("L", "alice", 5) is False
        assert locks.release_lock("L", "alice") is False
        assert locks.release_lock("L", "bob") is True

    def test_set_if_held_writes_only_under_a_current_lease(
        self, store: Store, clock: FakeClock
    ) -> None:
        """set_if_held writes while the token holds the lock, and never for a token that
        does not hold it or whose lease ran out (a successor's value stays)."""
        locks = self.need(store, SupportsLocks, SupportsFencedWrites)
        assert locks.set_if_held("k", self.entry(store, b"nobody"), "L", "alice") is False
        self.assert_absent(store, "k")
        assert locks.acquire_lock("L", "alice", 5) is True
        assert locks.set_if_held("k", self.entry(store, b"bob's"), "L", "bob") is False
        self.assert_absent(store, "k")
        assert locks.set_if_held("k", self.entry(store, b"alice's"), "L", "alice") is True
        self.assert_holds(store, "k", b"alice's")
        clock.advance(6)  # alice's lease ran out
        assert locks.set_if_held("k", self.entry(store, b"late"), "L", "alice") is False
        self.assert_holds(store, "k", b"alice's")
        assert locks.acquire_lock("L", "bob", 5) is True
        assert locks.set_if_held("k", self.entry(store, b"bob's"), "L", "bob") is True
        assert locks.set_if_held("k", self.entry(store, b"stale"), "L", "alice") is False
        self.assert_holds(store, "k", b"bob's")

    def test_set_if_held_after_release_writes_nothing(self, store: Store) -> None:
        """A released lock fences its former holder out."""
        locks = self.need(store, SupportsLocks, SupportsFencedWrites)
        assert locks.acquire_lock("L", "alice", 30) is True
        assert locks.release_lock("L", "alice") is True
        assert locks.set_if_held("k", self.entry(store, b"late"), "L", "alice") is False
        self.assert_absent(store, "k")

    def test_locks_and_entries_do_not_interfere(self, store: Store) -> None:
        """Lock names are a namespace of their own, hostile names included."""
        locks = self.need(store, SupportsLocks)
        for name in ("", "k", "\0", "x" * 10_000, "\ud800"):
            assert locks.acquire_lock(name, "alice", 30) is True, repr(name[:20])
            assert locks.acquire_lock(name, "bob", 30) is False, repr(name[:20])
        if self.null:
            return
        store.set("k", self.entry(store))
        self.assert_holds(store, "k", b"value")
        assert locks.release_lock("k", "alice") is True
        self.assert_holds(store, "k", b"value")
