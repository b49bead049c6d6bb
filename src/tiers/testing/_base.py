"""The base of `StoreTests`: how a store is made and installed, and the helpers tests share."""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from .._stores._protocol import Entry, Store, SupportsKeys
from ._clock import FakeClock

MiB = 1024 * 1024

HOSTILE_KEYS: tuple[str, ...] = (
    "",
    ".",
    "..",
    "../../x",
    "/",
    "/etc/passwd",
    "\\",
    "..\\..\\x",
    "\0",
    "a\0b",
    "a",
    "A",
    "a/b",
    "a:b",
    "CON",
    " ",
    "\t\n",
    "x" * 10_000,
    "x" * 10_000 + "y",  # long keys that share a long prefix
    "\u00e9",  # é, NFC
    "e\u0301",  # é, NFD: must stay a different key
    "\ud800",  # a lone surrogate
    "\U0001f642",  # an emoji
)
"""Keys every store must keep distinct and round-trip, whatever they look like."""


class StoreTestBase(abc.ABC):
    """Fixtures and helpers; subclasses implement `make_store` (and set the flags)."""

    null: ClassVar[bool] = False
    """The store keeps nothing (like `NullStore`): writes succeed, every read misses."""

    supports_large_values: ClassVar[bool] = True
    """Values of several MiB round-trip (set False for a store with a small value limit)."""

    persistent: ClassVar[bool | None] = None
    """An unpickled copy sees the same data; None: true for byte stores, false for objects."""

    bypass: ClassVar[bool] = False
    """`stored` and `plant` reach the store's medium without the store object's own methods.
    False for the defaults here, which fall back to ``store.get`` and ``store.set``."""

    @abc.abstractmethod
    def make_store(self, tmp_path: Path) -> Store:
        """A new, empty store; one rooted in a directory keeps inside `tmp_path`."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        """The fake clock installed on `store`."""
        return FakeClock()

    @pytest.fixture
    def store(self, tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
        """A store from `make_store`, on the fake `clock`, closed after the test."""
        store = self.make_store(tmp_path)
        store.clock = clock
        yield store
        store.close()

    def store_directory(self, store: Store) -> Path | None:
        """The directory the store keeps its data in, if any (``directory`` or ``path``)."""
        for name in ("directory", "path"):
            where = getattr(store, name, None)
            if isinstance(where, (str, os.PathLike)):
                return Path(where)
        return None

    # -- the medium, without the store ----------------------------------------------------

    def stored(self, store: Store, key: str) -> Entry | None:
        """The entry the store's medium holds under `key` (expired or not), read without the
        store's own methods; None if it holds none. Override it, and `plant`, with `bypass`."""
        return store.get(key)

    def plant(self, store: Store, key: str, entry: Entry) -> None:
        """Put `entry` under `key` in the store's medium, indexed as the store would (tags),
        without the store's own methods. `key` is one the store does not hold."""
        assert store.set(key, entry) is True

    # -- helpers --------------------------------------------------------------------------

    def need(self, store: Store, *capabilities: type) -> Any:
        """The store, if it implements the protocols `capabilities`; else skip the test."""
        missing = [kind.__name__ for kind in capabilities if not isinstance(store, kind)]
        if missing:
            pytest.skip(f"{type(store).__name__} is not {', '.join(missing)}")
        return store

    def need_storage(self) -> None:
        """Skip a test about kept data for a store that keeps nothing."""
        if self.null:
            pytest.skip("the store keeps nothing (null = True): see test_null_store_*")

    def entry(
        self,
        store: Store,
        body: bytes = b"value",
        *,
        expires_at: float | None = None,
        tags: tuple[str, ...] = (),
        meta: Mapping[str, Any] | None = None,
        created_at: float | None = None,
    ) -> Entry:
        """An entry whose value is `body` (valid for object and byte stores alike)."""
        return Entry(
            value=body,
            header=b"" if store.holds_objects else b"\x00hdr\xff" + body[:3],
            created_at=store.clock.time() - 3.5 if created_at is None else created_at,
            expires_at=expires_at,
            tags=tags,
            meta=meta,
            size=len(body),
        )

    def body_of(self, store: Store, entry: Entry) -> Any:
        """The value of an entry read back: bytes for a byte store, the object otherwise."""
        if store.holds_objects:
            return entry.value
        return bytes(memoryview(entry.value))

    def assert_holds(self, store: Store, key: str, body: bytes) -> Entry:
        """`key` reads back as `body` (with its header, for byte stores); the entry read."""
        got = store.get(key)
        assert got is not None, f"{key[:40]!r} is missing"
        assert self.body_of(store, got) == body, f"{key[:40]!r} has another value"
        if not store.holds_objects:
            assert bytes(got.header) == b"\x00hdr\xff" + body[:3]
        return got

    def assert_absent(self, store: Store, key: str) -> None:
        got = store.get(key)
        assert got is None, f"{key[:40]!r} should be absent, holds {got!r:.80}"

    def assert_stored(self, store: Store, key: str, body: bytes) -> Entry:
        """Like `assert_holds`, but read from the medium by `stored`."""
        got = self.stored(store, key)
        assert got is not None, f"{key[:40]!r} is not in the medium"
        assert self.body_of(store, got) == body, f"{key[:40]!r} has another value in the medium"
        if not store.holds_objects:
            assert bytes(got.header) == b"\x00hdr\xff" + body[:3]
        return got

    def assert_not_stored(self, store: Store, key: str) -> None:
        got = self.stored(store, key)
        assert got is None, f"{key[:40]!r} should be gone from the medium, holds {got!r:.80}"

    def live_keys(self, store: Store, prefix: str = "", tag: str | None = None) -> list[str]:
        """Sorted keys, if the store lists them (else skip)."""
        return sorted(self.need(store, SupportsKeys).keys(prefix, tag))
