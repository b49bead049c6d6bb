"""The store protocols (`tiers._stores._protocol`): documented, checkable at run time, and
what each store of tiers implements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tiers.protocol
from tiers import DiskStore, FolderStore, MemoryStore, NullStore, ObjectStore
from tiers._stores import _protocol
from tiers._stores._protocol import implements

CAPABILITIES = {
    name: value
    for name, value in vars(_protocol).items()
    if name.startswith("Supports") and isinstance(value, type)
}
# what each store offers (ObjectStore: locks only where its backend has conditional puts)
# and the walks `tiers` runs: scan everywhere, verify on the stores that keep bytes, usage
# counters where an atomic increment is cheap)
SHARED = {"Info", "Touch", "Expire", "Tags", "Keys", "Scan"}
OFFERS = {
    "memory": SHARED | {"Pop", "Epoch", "Update"},
    "disk": SHARED | {"Pop", "Locks", "FencedWrites", "Epoch", "Usage", "Verify", "Update"},
    "null": set(),
    "object-memory": SHARED | {"Many", "Locks", "FencedWrites", "Revalidate", "Verify", "Update"},
    "object-file": SHARED | {"Many", "Revalidate", "Verify"},
}
OFFERS["folder"] = OFFERS["disk"]


def make(kind: str, path: Path) -> Any:
    return {
        "memory": MemoryStore,
        "disk": lambda: DiskStore(path / "disk"),
        "folder": lambda: FolderStore(path / "folder"),
        "null": NullStore,
        "object-memory": lambda: ObjectStore("memory://"),
        "object-file": lambda: ObjectStore((path / "objects").as_uri()),
    }[kind]()


def test_every_capability_is_documented_runtime_checkable_and_public() -> None:
    assert set(CAPABILITIES) == {f"Supports{name}" for kinds in OFFERS.values() for name in kinds}
    for name, protocol in CAPABILITIES.items():
        assert protocol.__doc__ and len(protocol.__doc__) > 80, name
        assert getattr(protocol, "_is_runtime_protocol", False), name
        assert getattr(tiers.protocol, name) is protocol
    assert set(CAPABILITIES) <= set(tiers.protocol.__all__)


@pytest.mark.parametrize("kind", sorted(OFFERS))
def test_each_store_offers_its_capabilities(kind: str, tmp_path: Path) -> None:
    (tmp_path / "objects").mkdir()
    store = make(kind, tmp_path)
    assert isinstance(store, _protocol.Store)
    offered = {
        name.removeprefix("Supports") for name, p in CAPABILITIES.items() if implements(store, p)
    }
    assert offered == OFFERS[kind]
    checked = {
        name.removeprefix("Supports") for name, p in CAPABILITIES.items() if isinstance(store, p)
    }
    assert checked == offered
    store.close()


def test_implements_sees_a_proxys_methods() -> None:
    """A wrapper handing out its store's methods through ``__getattr__`` (which `isinstance`
    misses from Python 3.12) offers what the store does."""

    class Proxy:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    proxy = Proxy(MemoryStore())
    assert implements(proxy, _protocol.Store)
    assert implements(proxy, _protocol.SupportsKeys)
    assert not implements(proxy, _protocol.SupportsLocks)


class _Proxy:
    """A store handing out another's methods through ``__getattr__``, less those `hidden`."""

    def __init__(self, inner: Any, hidden: tuple[str, ...] = ()) -> None:
        self.inner, self.hidden = inner, hidden

    def __getattr__(self, name: str) -> Any:
        if name in self.hidden:
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_a_cache_finds_a_proxy_stores_capabilities() -> None:
    cache = tiers.Cache(_Proxy(MemoryStore()))
    cache.set("k", 1, tags=("t",))
    assert cache.pop("k") == 1
    cache.set("k", 2, tags=("t",))
    assert cache.evict("t") == 1  # SupportsTags found through __getattr__


def test_a_store_without_keys_async_still_lists_its_keys() -> None:
    """`keys_async` joined `SupportsKeys`; a store written before it (``keys`` and ``count``
    only) keeps its listing, scanned in a worker thread for ``async for``."""
    import asyncio

    cache = tiers.Cache(_Proxy(MemoryStore(), hidden=("keys_async",)))
    cache.set_many({"a": 1, "b": 2})
    assert sorted(cache.keys()) == ["a", "b"] and len(cache) == 2

    async def listed() -> list[str]:
        return sorted([key async for key in cache.keys_async()])

    assert asyncio.run(listed()) == ["a", "b"]
