"""The ``_async`` twins of the blocking stores (declared with `tiers._stores._twins`): one for
every method of the store protocols a store has, each a coroutine (``keys_async`` an async
generator) that answers what its method answers, run where it is declared to run."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tiers import DiskStore, FolderStore, MemoryStore, NullStore
from tiers._stores import _protocol, _twins
from tiers._stores._protocol import Entry

PROTOCOLS = [
    value
    for name, value in vars(_protocol).items()
    if name == "Store" or (name.startswith("Supports") and isinstance(value, type))
]
TWINNED = sorted(
    {name.removesuffix("_async") for p in PROTOCOLS for name in dir(p) if name.endswith("_async")}
)
STORES: dict[str, Callable[[Path], Any]] = {
    "memory": lambda _path: MemoryStore(),
    "disk": lambda path: DiskStore(path / "disk"),
    "folder": lambda path: FolderStore(path / "folder"),
    "null": lambda _path: NullStore(),
}
FUTURE = 4_000_000_000.0  # (epoch seconds: the year 2096)


@pytest.fixture(params=sorted(STORES))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def entry(value: bytes, *tags: str) -> Entry:
    return Entry(value, b"h", 1_000.0, FUTURE, tags, {"m": 1}, len(value) + 1)


def test_protocols_list_every_twin() -> None:
    assert {"get", "set", "keys", "count", "set_if_held", "revalidate"} <= set(TWINNED)


def test_every_method_of_the_protocols_has_an_async_twin(kind: str, tmp_path: Path) -> None:
    store = STORES[kind](tmp_path)
    cls = type(store)
    present = [name for name in TWINNED if callable(getattr(store, name, None))]
    assert "get" in present
    for name in present:
        twin = getattr(cls, f"{name}_async", None)
        assert twin is not None, f"{cls.__name__}.{name} has no twin"
        if name in ("keys", "scan"):
            assert inspect.isasyncgenfunction(twin), twin
        else:
            assert inspect.iscoroutinefunction(twin), twin
        assert list(inspect.signature(twin).parameters) == list(
            inspect.signature(getattr(cls, name)).parameters
        )
    store.close()


def scenario(store: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """Calls, in order, of every method `store` has (close last)."""
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("set", ("a", entry(b"one"))),
        ("set", ("b", entry(b"two", "t"))),
        ("set", ("c/x", entry(b"three", "t", "u"))),
        ("set", ("big", entry(b"x" * 100_000))),  # (a DiskStore value file)
        ("get", ("a",)),
        ("get", ("big",)),
        ("get", ("missing",)),
        ("info", ("b",)),
        ("touch", ("a", FUTURE + 1)),
        ("get", ("a",)),
        ("count", ("",)),
        ("count", ("c/",)),
        ("keys", ("", "t")),
        ("keys", ("c/", None)),
        ("evict", ("u", "")),
        ("pop", ("b",)),
        ("pop", ("b",)),
        ("expire", ()),
        ("acquire_lock", ("L", "me", 30.0)),
        ("renew_lock", ("L", "me", 30.0)),
        ("set_if_held", ("held", entry(b"fenced"), "L", "me")),
        ("set_if_held", ("held", entry(b"fenced"), "L", "other")),
        ("release_lock", ("L", "me")),
        ("get", ("held",)),
        ("delete", ("a",)),
        ("delete", ("a",)),
        ("clear", ("",)),
        ("stats", ()),
        ("close", ()),
    ]
    return [(name, args) for name, args in calls if callable(getattr(store, name, None))]


def seen(result: Any) -> Any:
    """What a caller sees of a result (a DiskStore record also names its value's file)."""
    if isinstance(result, Entry):
        return (result.value, bytes(result.header), result.created_at, result.expires_at,
                tuple(result.tags), result.meta, result.size)  # fmt: skip
    return result


def run_sync(store: Any) -> list[Any]:
    found = []
    for name, args in scenario(store):
        result = getattr(store, name)(*args)
        found.append(sorted(result) if name == "keys" else seen(result))
    return found


async def run_async(store: Any) -> list[Any]:
    found = []
    for name, args in scenario(store):
        twin = getattr(store, f"{name}_async")
        if name in ("keys", "scan"):
            found.append(sorted([key async for key in twin(*args)]))
        else:
            found.append(seen(await twin(*args)))
    return found


def test_each_twin_answers_what_its_method_answers(kind: str, tmp_path: Path) -> None:
    expected = run_sync(STORES[kind](tmp_path / "sync"))
    assert asyncio.run(run_async(STORES[kind](tmp_path / "async"))) == expected
    if kind != "null":
        assert expected[4][0] == b"one"  # (the scenario did run)


def test_keys_async_yields_the_keys(kind: str, tmp_path: Path) -> None:
    store = STORES[kind](tmp_path)
    for key in ("p/1", "p/2", "q"):
        store.set(key, entry(b"v", "t" if key != "q" else "u"))

    async def listed(*args: Any) -> list[str]:
        return sorted([key async for key in store.keys_async(*args)])

    if kind == "null":
        assert not hasattr(store, "keys_async")
        return
    for args in [(), ("p/",), ("", "u"), ("zzz",)]:
        assert asyncio.run(listed(*args)) == sorted(store.keys(*args))
    store.close()


@pytest.mark.parametrize(
    ("kind", "method", "args", "in_thread"),
    [
        ("memory", "get", ("k",), False),
        ("memory", "count", ("",), False),
        ("disk", "delete", ("k",), False),
        ("disk", "count", ("",), True),
        ("disk", "keys", ("",), True),
        ("folder", "get", ("k",), True),
        ("folder", "close", (), False),
        ("folder", "keys", ("",), True),
    ],
)
def test_twins_run_where_declared_and_call_overrides(
    kind: str, method: str, args: tuple[Any, ...], in_thread: bool, tmp_path: Path
) -> None:
    """A twin calls its method by name (a subclass's override), in a worker thread or not."""
    threads: list[int] = []
    base = type(STORES[kind](tmp_path / "probe"))

    def recorded(self: Any, *args: Any) -> Any:
        threads.append(threading.get_ident())
        return getattr(base, method)(self, *args)

    subclass = type("Recording", (base,), {method: recorded})
    store = subclass(tmp_path / kind) if kind != "memory" else subclass()

    async def call() -> int:
        twin = getattr(store, f"{method}_async")
        if method == "keys":
            [key async for key in twin(*args)]
        else:
            await twin(*args)
        return threading.get_ident()

    loop_thread = asyncio.run(call())
    assert len(threads) == 1
    assert (threads[0] != loop_thread) is in_thread


def test_a_twin_takes_plain_parameters_only() -> None:
    def starred(self: Any, *keys: str) -> None: ...

    with pytest.raises(TypeError, match="plain parameters"):
        _twins.inline(starred)
