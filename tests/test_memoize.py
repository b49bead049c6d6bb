"""Memoization (docs/memoize.md) over real stores: memory, disk and memory-over-disk.

What is held here: every kind of callable is memoized; keys are the bound arguments (defaults
applied, `ignore`d names left out, type-distinct); the lock-free memory fast path never
disagrees with the full path and never returns a value its tier no longer holds; the wrapper
keeps the function's face (and its types, checked by running mypy); provenance lands in meta;
bad options and arguments fail before anything is computed or stored.

Tests taking `mode` run twice: with a plain function, and with an ``async def`` of the same
signature called through ``asyncio.run`` (the generated async wrapper has its own fast path).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import math
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tiers
from tests._tiers import install_clock, store_of, stores_of, tiers_of
from tiers import MISSING, Cache, DiskStore, MemoryStore, hash_key
from tiers.errors import SerializationError, StoreError
from tiers.testing import FakeClock

START = 1_700_000_000.0
STACKS = ["memory", "disk", "memory+disk"]
MODES = ["sync", "async"]
VENV_BIN = Path(sys.executable).parent


# -- helpers -----------------------------------------------------------------------------------


class CountingMemoryStore(MemoryStore):
    """A MemoryStore that counts its reads: a memoized hit on the fast path makes none."""

    reads = 0

    def get(self, key: str) -> Any:
        self.reads += 1
        return super().get(key)


def build(stack: str, path: Path, **options: Any) -> Cache:
    if stack == "memory":
        return Cache(CountingMemoryStore(), **options)
    if stack == "disk":
        return Cache(DiskStore(path), **options)
    return Cache(CountingMemoryStore(), DiskStore(path), **options)


def memory_reads(cache: Cache) -> int:
    """Reads of the memory tier so far (-1 for a cache without one)."""
    store = store_of(cache)
    return store.reads if isinstance(store, CountingMemoryStore) else -1


def empty_memory(cache: Cache) -> None:
    """Drop the memory tier's contents behind the cache's back (values stay on disk)."""
    store = store_of(cache)
    assert isinstance(store, MemoryStore) and len(tiers_of(cache)) > 1
    store.clear()


def tier0_hits(cache: Cache) -> int:
    return cache.stats().tiers[0].hits


class Recorder:
    """A function body that records its calls and returns ``(serial, *arguments)``: each
    computation is told apart from every other, so a stale value cannot pass for a new one."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    @property
    def n(self) -> int:
        return len(self.calls)

    def __call__(self, *args: Any) -> tuple[Any, ...]:
        with self._lock:
            self.calls.append(args)
            return (len(self.calls), *args)


class Facade:
    """A memoized function called synchronously whatever its kind: in "async" mode the body
    runs in an ``async def`` with the same signature, and each call in ``asyncio.run``."""

    def __init__(self, cache: Cache, mode: str, body: Callable[..., Any], **options: Any):
        self.mode = mode
        if mode == "async":

            @functools.wraps(body)
            async def run(*args: Any, **kwargs: Any) -> Any:
                await asyncio.sleep(0)
                return body(*args, **kwargs)

            self.memoized: Any = cache.memoize(**options)(run)
            assert inspect.iscoroutinefunction(self.memoized)
        else:
            self.memoized = cache.memoize(**options)(body)
        self.key = self.memoized.key
        self.invalidate = self.memoized.invalidate

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.memoized(*args, **kwargs)
        return asyncio.run(result) if self.mode == "async" else result


def one_arg(rec: Recorder) -> Callable[..., Any]:
    def f(x: Any) -> Any:
        return rec(x)

    return f


def with_default(rec: Recorder) -> Callable[..., Any]:
    def f(x: Any = 1) -> Any:
        return rec(x)

    return f


def check_message(exc: BaseException, *fragments: str) -> None:
    message = str(exc)
    assert message and "\n" not in message, f"not one line: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def cache(stack: str, store_dir: Path, clock: FakeClock) -> Iterator[Cache]:
    c = build(stack, store_dir)
    install_clock(c, clock)
    yield c
    c.close()
    for store in stores_of(c):
        store.close()


@pytest.fixture
def layered(store_dir: Path, clock: FakeClock) -> Iterator[Cache]:
    """Memory over disk, on the fake clock."""
    c = build("memory+disk", store_dir)
    install_clock(c, clock)
    yield c
    c.close()
    for store in stores_of(c):
        store.close()


@pytest.fixture
def fresh_default() -> Iterator[None]:
    """`tiers.default_cache()` rebuilt for this test (in its TIERS_CACHE_DIR), closed after."""
    from tiers import _defaults

    _defaults._default = None
    yield
    if _defaults._default is not None:
        _defaults._default.close()
    _defaults._default = None


# -- what can be memoized ----------------------------------------------------------------------


def test_bare_and_called_decorators_compute_once_then_hit(cache: Cache) -> None:
    rec = Recorder()

    @cache.memoize
    def bare(x: int) -> tuple[Any, ...]:
        return rec("bare", x)

    @cache.memoize(ttl=60, tags=("t",))
    def called(x: int) -> tuple[Any, ...]:
        return rec("called", x)

    assert bare(1) == (1, "bare", 1)
    assert called(1) == (2, "called", 1)
    assert [bare(1), called(1), bare(1), called(1)] == [
        (1, "bare", 1), (2, "called", 1), (1, "bare", 1), (2, "called", 1),
    ]  # fmt: skip
    assert rec.n == 2
    assert bare.key(1) != called.key(1)  # each function its own entries
    info = cache.info(called.key(1))
    assert info is not None and info.tags == ("t",)


def test_methods_are_keyed_by_self(cache: Cache) -> None:
    rec = Recorder()

    @dataclass(frozen=True)
    class Frozen:
        name: str

        @cache.memoize
        def predict(self, x: int) -> tuple[Any, ...]:
            return rec(self.name, x)

    class Keyed:
        def __init__(self, ident: str) -> None:
            self.ident = ident
            self.scratch = object()  # state the key leaves out

        def __cache_key__(self) -> str:
            return self.ident

        @cache.memoize
        def predict(self, x: int) -> tuple[Any, ...]:
            return rec(self.ident, x)

    assert Frozen("a").predict(1) == (1, "a", 1)
    assert Frozen("a").predict(1) == (1, "a", 1)  # an equal instance: the same entry
    assert Frozen("b").predict(1) == (2, "b", 1)
    assert Frozen("a").predict(x=2) == (3, "a", 2)
    assert Frozen.predict(Frozen("a"), 2) == (3, "a", 2)  # unbound call, same binding
    assert Keyed("a").predict(1) == (4, "a", 1)  # another class, its own entries
    assert Keyed("a").predict(1) == (4, "a", 1)
    assert Keyed("z").predict(1) == (5, "z", 1)
    assert rec.n == 5
    assert Frozen.predict.key(Frozen("a"), 1) != Frozen.predict.key(Frozen("b"), 1)


def test_ignore_self_shares_entries_between_instances(cache: Cache) -> None:
    rec = Recorder()

    class Service:
        def __init__(self) -> None:
            self.conn = threading.Lock()  # not hashable by content: must be ignorable

        @cache.memoize(ignore=("self",))
        def lookup(self, x: int) -> tuple[Any, ...]:
            return rec(x)

    assert Service().lookup(1) == (1, 1)
    assert Service().lookup(1) == (1, 1)
    assert Service().lookup(x=1) == (1, 1)
    assert Service().lookup(2) == (2, 2)
    assert rec.n == 2


def test_an_instance_that_cannot_be_keyed_names_self(cache: Cache) -> None:
    rec = Recorder()

    class Opaque:
        @cache.memoize
        def method(self, x: int) -> tuple[Any, ...]:
            return rec(x)

    with pytest.raises(TypeError) as caught:
        Opaque().method(1)
    check_message(caught.value, "'self'", "Opaque'", "ignore=")
    assert rec.n == 0 and len(cache) == 0


def test_static_and_class_methods_in_both_decorator_orders(cache: Cache) -> None:
    # (At run time every form works. mypy, which cannot tell a memoized static or class
    # method from an instance method, flags some of these calls: see the report.)
    rec = Recorder()

    class Base:
        @cache.memoize
        @staticmethod
        def s_outer(x: int) -> tuple[Any, ...]:
            return rec("s_outer", x)

        @staticmethod
        @cache.memoize
        def s_inner(x: int) -> tuple[Any, ...]:
            return rec("s_inner", x)

        @cache.memoize
        @classmethod
        def c_outer(cls, x: int) -> tuple[Any, ...]:
            return rec("c_outer", cls.__name__, x)

        @classmethod
        @cache.memoize
        def c_inner(cls, x: int) -> tuple[Any, ...]:
            return rec("c_inner", cls.__name__, x)

    class Child(Base):
        pass

    assert Base.s_outer(1) == (1, "s_outer", 1)
    assert Base().s_outer(1) == (1, "s_outer", 1)  # through an instance: the same entry
    assert Base.s_inner(1) == (2, "s_inner", 1)
    assert Base().s_inner(x=1) == (2, "s_inner", 1)
    assert Base.c_outer(1) == (3, "c_outer", "Base", 1)
    assert Base().c_outer(1) == (3, "c_outer", "Base", 1)
    assert Base.c_inner(1) == (4, "c_inner", "Base", 1)
    assert Base().c_inner(1) == (4, "c_inner", "Base", 1)
    # A class method is keyed by the class it is called on.
    assert Child.c_outer(1) == (5, "c_outer", "Child", 1)
    assert Child.c_inner(1) == (6, "c_inner", "Child", 1)
    assert Child.s_outer(1) == (1, "s_outer", 1)
    assert rec.n == 6
    assert Base.s_inner.key(1) == Base.s_inner.key(x=1)
    assert Base().s_outer.key(1) == Base.s_outer.key(x=1) != Base.s_inner.key(1)
    # read from a class, a class method is bound: its key takes the class explicitly
    assert Base.c_inner.key(Base, 1) != Base.c_inner.key(Child, 1)
    assert Base.c_outer.invalidate(Child, 1) is True
    assert Child.c_outer(1) == (7, "c_outer", "Child", 1)


def test_async_functions_and_methods(cache: Cache) -> None:
    rec = Recorder()

    @cache.memoize
    async def fetch(url: str, retries: int = 3) -> tuple[Any, ...]:
        await asyncio.sleep(0.001)
        return rec(url, retries)

    class Client:
        @cache.memoize(ignore=("self",))
        async def get(self, path: str) -> tuple[Any, ...]:
            await asyncio.sleep(0.001)
            return rec("get", path)

    assert inspect.iscoroutinefunction(fetch) and inspect.iscoroutinefunction(Client.get)
    assert asyncio.run(fetch("a")) == (1, "a", 3)
    assert asyncio.run(fetch("a", retries=3)) == (1, "a", 3)
    assert asyncio.run(fetch(url="a")) == (1, "a", 3)
    assert asyncio.run(fetch("a", 4)) == (2, "a", 4)
    assert asyncio.run(Client().get("/x")) == (3, "get", "/x")
    assert asyncio.run(Client().get(path="/x")) == (3, "get", "/x")
    assert rec.n == 3


def test_concurrent_coroutines_on_a_cold_key_compute_once(cache: Cache) -> None:
    rec = Recorder()

    @cache.memoize
    async def slow(x: int) -> tuple[Any, ...]:
        await asyncio.sleep(0.05)
        return rec(x)

    async def main() -> list[Any]:
        return await asyncio.gather(*(slow(7) for _ in range(20)))

    assert asyncio.run(main()) == [(1, 7)] * 20
    assert rec.n == 1


def test_concurrent_threads_on_a_cold_key_compute_once(cache: Cache) -> None:
    rec = Recorder()

    @cache.memoize
    def slow(x: int) -> tuple[Any, ...]:
        time.sleep(0.05)
        return rec(x)

    barrier = threading.Barrier(12)
    results: list[Any] = []

    def run() -> None:
        barrier.wait(timeout=10)
        results.append(slow(3))

    threads = [threading.Thread(target=run) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [(1, 3)] * 12
    assert rec.n == 1


def test_nested_functions_are_memoized(cache: Cache) -> None:
    rec = Recorder()

    def outer() -> Any:
        @cache.memoize
        def inner(x: int) -> tuple[Any, ...]:
            return rec(x)

        return inner

    first = outer()
    assert first(1) == (1, 1)
    assert first(1) == (1, 1)
    assert "outer.<locals>.inner/" in first.key(1)
    # A second definition with the same qualified name is the same function to the cache:
    # its entries are shared (a persistent cache knows functions by name, not identity).
    assert outer()(1) == (1, 1)
    assert rec.n == 1


def test_lambdas_are_memoized_and_two_lambdas_never_share_entries(cache: Cache) -> None:
    double = cache.memoize(lambda x: ("double", x * 2))
    triple = cache.memoize(lambda x: ("triple", x * 3))
    plus, minus = (
        cache.memoize(lambda x: ("plus", x + 1)),
        cache.memoize(lambda x: ("minus", x - 1)),
    )
    assert double(3) == ("double", 6)
    assert triple(3) == ("triple", 9)  # not the double's entry
    assert plus(3) == ("plus", 4)
    assert minus(3) == ("minus", 2)  # defined on the same line as `plus`
    assert len({double.key(3), triple.key(3), plus.key(3), minus.key(3)}) == 4
    assert double(3) == ("double", 6) and minus(3) == ("minus", 2)
    # the name stays deterministic: the same lambda decorated again finds its entry
    key_again = [cache.memoize(f).key(3) for f in (double.__wrapped__, minus.__wrapped__)]
    assert key_again == [double.key(3), minus.key(3)]


def test_partials_bound_methods_and_callable_objects_are_named_by_their_state(
    cache: Cache,
) -> None:
    """Their bound state is part of what they compute, as `self` is for a method: two of them
    never share entries, and the same state finds its entries again (no address in a key)."""
    rec = Recorder()

    def scaled(factor: int, x: int) -> tuple[Any, ...]:
        return rec("partial", factor, x)

    class Scaler:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        def __cache_key__(self) -> int:
            return self.factor

        def __call__(self, x: int) -> tuple[Any, ...]:
            return rec("call", self.factor, x)

        def apply(self, x: int) -> tuple[Any, ...]:
            return rec("apply", self.factor, x)

    made = [
        lambda: cache.memoize(functools.partial(scaled, 2)),
        lambda: cache.memoize(functools.partial(scaled, 3)),
        lambda: cache.memoize(functools.partial(scaled, factor=2)),
        lambda: cache.memoize(Scaler(2)),
        lambda: cache.memoize(Scaler(3)),
        lambda: cache.memoize(Scaler(2).apply),
        lambda: cache.memoize(Scaler(3).apply),
    ]
    first = [make()(x=5) for make in made]
    assert [r[0] for r in first] == list(range(1, len(made) + 1))
    assert [make()(x=5) for make in made] == first  # decorated afresh: the same entries
    assert rec.n == len(made)
    for make in made:
        key = make().key(x=5)
        assert "0x" not in key and " at " not in key, key

    class Opaque:
        def method(self, x: int) -> tuple[Any, ...]:
            return rec("opaque", x)

    with pytest.raises(TypeError) as caught:
        cache.memoize(Opaque().method)
    check_message(caught.value, "Opaque.method'", "name=")
    with pytest.raises(TypeError, match="name="):
        cache.memoize(functools.partial(scaled, threading.Lock()))  # type: ignore[arg-type]
    assert cache.memoize(name="opaque")(Opaque().method)(1) == (len(made) + 1, "opaque", 1)


def test_bare_tiers_memoize_uses_the_default_cache(fresh_default: None) -> None:
    rec = Recorder()

    @tiers.memoize
    def f(x: int) -> tuple[Any, ...]:
        return rec(x)

    assert f(1) == (1, 1) and f(1) == (1, 1) and rec.n == 1
    assert f.cache is tiers.default_cache()
    memory, disk = stores_of(f.cache)
    assert isinstance(memory, MemoryStore) and isinstance(disk, DiskStore)
    assert disk.directory.is_relative_to(Path(os.environ["TIERS_CACHE_DIR"]).resolve())
    with Cache() as other:  # a new cache over the default stack reads it from disk
        assert other.get(f.key(1)) == (1, 1)

    @tiers.memoize(ttl=30, version=2)
    def g(x: int) -> tuple[Any, ...]:
        return rec("g", x)

    assert g.cache is tiers.default_cache()
    assert g(1) == (2, "g", 1) and g(1) == (2, "g", 1)
    assert "@2/" in g.key(1)


def test_tiers_memoize_with_tiers_builds_its_own_cache(tmp_path: Path) -> None:
    rec = Recorder()
    memory = MemoryStore(max_items=128)

    @tiers.memoize(memory, tmp_path / "cache", ttl=3600)
    def fetch(url: str) -> tuple[Any, ...]:
        return rec(url)

    assert fetch("u") == (1, "u") and fetch("u") == (1, "u") and rec.n == 1
    first, second = stores_of(fetch.cache)
    assert first is memory and memory.max_items == 128
    assert isinstance(second, DiskStore)
    assert second.directory == (tmp_path / "cache").resolve()
    info = fetch.cache.info(fetch.key("u"))
    assert info is not None and info.expires_at is not None
    assert (info.expires_at - info.created_at).total_seconds() == pytest.approx(3600)
    memory.clear()
    assert fetch("u") == (1, "u") and rec.n == 1  # from disk
    fetch.cache.close()


def test_tiers_memoize_passes_cache_options(tmp_path: Path) -> None:
    rec = Recorder()

    @tiers.memoize(MemoryStore(), tmp_path / "c", namespace="lab", serializer="json")
    def load(name: str) -> Any:
        rec(name)
        return {"name": name, "items": (1, 2)} if name != "bad" else {1, 2}

    cache = load.cache
    assert load("a") == {"name": "a", "items": [1, 2]}  # as JSON gives it back, from any tier
    disk = store_of(cache, 1)
    assert list(disk.keys("lab:")) == ["lab:" + load.key("a")]  # inside the namespace
    empty_memory(cache)
    assert load("a") == {"name": "a", "items": [1, 2]}  # through JSON: the tuple is a list
    assert rec.n == 1
    with pytest.raises(SerializationError):  # JSON refuses a set, and nothing is kept
        load("bad")
    assert cache.get(load.key("bad"), MISSING) is MISSING
    cache.close()


# -- keys: bound arguments ---------------------------------------------------------------------


def test_positional_keyword_and_default_are_one_entry(cache: Cache, mode: str) -> None:
    rec = Recorder()
    f = Facade(cache, mode, with_default(rec))
    assert f(1) == (1, 1)
    assert f(x=1) == (1, 1)
    assert f() == (1, 1)
    assert rec.n == 1
    assert f.key(1) == f.key(x=1) == f.key()
    assert cache.info(f.key()) is not None
    assert len(cache) == 1
    assert f(2) == (2, 2) and rec.n == 2


def test_positional_only_and_keyword_only_parameters(cache: Cache, mode: str) -> None:
    rec = Recorder()

    def body(a: int, /, b: int = 2, *, c: int = 3) -> Any:
        return rec(a, b, c)

    f = Facade(cache, mode, body)
    assert f(1) == (1, 1, 2, 3)
    assert [f(1, 2), f(1, b=2), f(1, c=3), f(1, 2, c=3), f(1, c=3, b=2)] == [(1, 1, 2, 3)] * 5
    assert f(1, c=4) == (2, 1, 2, 4)
    assert f(1, 4) == (3, 1, 4, 3)
    assert rec.n == 3
    assert inspect.signature(f.memoized) == inspect.signature(body)
    with pytest.raises(TypeError, match="positional"):
        f(a=1)  # a is positional-only, as in the original
    with pytest.raises(TypeError):
        f(1, 2, 3)  # c is keyword-only
    assert rec.n == 3


def test_var_args_and_kwargs_are_keyed_by_content(cache: Cache, mode: str) -> None:
    rec = Recorder()

    def body(*args: Any, **kwargs: Any) -> Any:
        return rec(args, sorted(kwargs.items()))

    f = Facade(cache, mode, body)
    assert f(1, 2, x=1, y=[2]) == (1, (1, 2), [("x", 1), ("y", [2])])
    assert f(1, 2, y=[2], x=1) == (1, (1, 2), [("x", 1), ("y", [2])])  # kwargs order-free
    assert f(*[1, 2], **{"y": [2], "x": 1}) == (1, (1, 2), [("x", 1), ("y", [2])])
    assert f(2, 1, x=1, y=[2])[0] == 2  # args order matters
    assert f(1, 2, x=1)[0] == 3
    assert f(1, 2.0, x=1)[0] == 4  # type-distinct inside *args too
    assert f()[0] == 5 and f()[0] == 5
    assert rec.n == 5
    assert f.key(1, 2, x=1, y=[2]) == f.key(1, 2, y=[2], x=1)


def test_a_mix_of_named_and_var_parameters(cache: Cache) -> None:
    rec = Recorder()

    @cache.memoize
    def f(a: int, *rest: int, scale: float = 1.0, **opts: Any) -> tuple[Any, ...]:
        return rec(a, rest, scale, opts)

    assert f(1, 2, 3, k=1) == (1, 1, (2, 3), 1.0, {"k": 1})
    assert f(1, 2, 3, k=1, scale=1.0) == (1, 1, (2, 3), 1.0, {"k": 1})
    assert f(a=1) == (2, 1, (), 1.0, {})
    assert f(1) == (2, 1, (), 1.0, {})
    assert rec.n == 2


# -- keys: type-distinct, fast path agrees with full path -----------------------------------------

DISTINCT = [1, 1.0, True, "1", b"1"]


def test_equal_arguments_of_different_types_are_different_entries(cache: Cache, mode: str) -> None:
    rec = Recorder()
    f = Facade(cache, mode, one_arg(rec))
    reads = 0
    for round_ in range(3):  # the first round computes, the others hit (fast path on memory)
        results = [f(v) for v in DISTINCT]
        assert [r[0] for r in results] == [1, 2, 3, 4, 5], round_
        assert [type(r[1]) for r in results] == [int, float, bool, str, bytes]
        if round_ > 0:
            assert memory_reads(cache) == reads, "a hit of the memory tier read the store"
        reads = memory_reads(cache)
    assert rec.n == 5
    assert len({f.key(v) for v in DISTINCT}) == 5
    if len(tiers_of(cache)) > 1:
        empty_memory(cache)
        assert [f(v)[:2] for v in DISTINCT] == list(enumerate(DISTINCT, 1))
        assert [type(f(v)[1]) for v in DISTINCT] == [int, float, bool, str, bytes]
        assert rec.n == 5


def test_zero_and_negative_zero_are_two_entries(cache: Cache, mode: str) -> None:
    rec = Recorder()
    f = Facade(cache, mode, one_arg(rec))
    for _ in range(2):
        zero, negative = f(0.0), f(-0.0)
        assert zero[0] == 1 and math.copysign(1, zero[1]) == 1
        assert negative[0] == 2 and math.copysign(1, negative[1]) == -1
    assert f(0)[0] == 3  # and the int 0 is a third
    if len(tiers_of(cache)) > 1:
        empty_memory(cache)
        assert math.copysign(1, f(-0.0)[1]) == -1 and f(0.0)[0] == 1
    assert rec.n == 3


def test_nan_computes_once_then_hits_through_the_full_path(cache: Cache, mode: str) -> None:
    rec = Recorder()
    f = Facade(cache, mode, one_arg(rec))
    first = f(math.nan)
    assert first[0] == 1 and math.isnan(first[1])
    assert f(float("nan"))[0] == 1  # another NaN object: the same (canonical) entry
    assert f(math.nan)[0] == 1
    assert f(-math.nan)[0] == 1
    if len(tiers_of(cache)) > 1:
        empty_memory(cache)
        assert f(math.nan)[0] == 1
    assert rec.n == 1
    assert f(math.inf)[0] == 2 and f(-math.inf)[0] == 3 and f(math.inf)[0] == 2


ARGUMENTS = st.sampled_from(
    [
        0,
        1,
        -1,
        2,
        2**64,
        True,
        False,
        0.0,
        -0.0,
        1.0,
        2.0,
        1.5,
        -1.5,
        1e300,
        math.inf,
        math.nan,
        "",
        "1",
        "a",
        "1.0",
        b"",
        b"1",
        b"a",
        None,
        (1,),
        (1.0,),
        (True,),
        [1],
        [1.0],
        {"a": 1},
        frozenset({1}),
    ]
)
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("call"), ARGUMENTS, st.one_of(st.just(MISSING), ARGUMENTS), st.booleans()
        ),
        st.tuples(st.just("invalidate"), ARGUMENTS, st.one_of(st.just(MISSING), ARGUMENTS)),
        st.just(("empty memory",)),
    ),
    max_size=40,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
def test_the_fast_path_never_disagrees_with_the_full_path(
    ops: list[tuple[Any, ...]], tmp_path: Path
) -> None:
    """Random calls with mixed-type arguments against a model keyed by `hash_key` of the bound
    arguments: one computation per model key, every answer the model's."""
    disk = DiskStore(tmp_path / f"store-{os.getpid()}-{time.monotonic_ns()}")
    cache = Cache(MemoryStore(), disk)
    serial = [0]

    @cache.memoize
    def f(a: Any, b: Any = 0) -> tuple[int, str, str]:
        serial[0] += 1
        return serial[0], type(a).__name__, type(b).__name__

    model: dict[str, tuple[int, str, str]] = {}
    try:
        for op in ops:
            if op[0] == "empty memory":
                store_of(cache).clear()
                continue
            a, b = op[1], op[2]
            args, kwargs = ((a,), {}) if b is MISSING else ((a, b), {})
            if op[0] == "call" and op[3]:  # the same call by keyword
                args, kwargs = (), {"a": a} | ({} if b is MISSING else {"b": b})
            key = hash_key((a, 0 if b is MISSING else b))
            if op[0] == "invalidate":
                assert f.invalidate(*args, **kwargs) is (model.pop(key, None) is not None)
                continue
            before = serial[0]
            got = f(*args, **kwargs)
            if key in model:
                assert got == model[key], f"f{args or ''}{kwargs or ''} returned a wrong entry"
                assert serial[0] == before, f"f{args or ''}{kwargs or ''} recomputed a hit"
            else:
                assert serial[0] == before + 1, "a new key was not computed exactly once"
                model[key] = got
    finally:
        cache.close()
        disk.close()


# -- options: ignore, key, version, name -------------------------------------------------------


def test_ignore_leaves_a_parameter_out_however_passed(cache: Cache, mode: str) -> None:
    rec = Recorder()

    def body(x: int, verbose: bool = False, session: Any = None) -> Any:
        return rec(x)

    f = Facade(cache, mode, body, ignore=("verbose", "session"))
    assert f(1) == (1, 1)
    assert f(1, True) == (1, 1)
    assert f(1, verbose=True, session=lambda: None) == (1, 1)  # unhashable, but ignored
    assert f(x=1, session=threading.Lock()) == (1, 1)
    assert f(1, False, object()) == (1, 1)
    assert f(2, verbose=True) == (2, 2)
    assert rec.n == 2
    assert f.key(1) == f.key(1, True, threading.Lock())
    g = Facade(cache, mode, body, ignore="verbose", name="single")  # one name as a str
    assert g.key(1, True) == g.key(1, False)


def test_a_key_callable_replaces_the_argument_hash(cache: Cache, tmp_path: Path) -> None:
    rec = Recorder()
    seen: list[dict[str, Any]] = []

    def by_path_and_mtime(path: Path, **rest: Any) -> tuple[str, int]:
        seen.append({"path": path, **rest})
        return (str(path), path.stat().st_mtime_ns)

    @cache.memoize(key=by_path_and_mtime)
    def parse(path: Path, encoding: str = "utf-8") -> tuple[Any, ...]:
        return rec(path.read_text(encoding))

    data = tmp_path / "data.txt"
    data.write_text("one")
    assert parse(data) == (1, "one")
    # called with the bound arguments by name, defaults included
    assert seen == [{"path": data, "encoding": "utf-8"}]
    assert parse(data, encoding="latin-1") == (1, "one")  # not part of this key
    assert rec.n == 1
    assert parse.key(data) == "tests.test_memoize." + (
        "test_a_key_callable_replaces_the_argument_hash.<locals>.parse/"
        + hash_key((str(data), data.stat().st_mtime_ns))
    )
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10**9))
    data.write_text("two")
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 2 * 10**9))
    assert parse(data) == (2, "two")  # a new mtime: a new key
    assert cache.info(parse.key(data)) is not None


def test_a_key_callable_on_var_arguments_gets_them_by_name(cache: Cache) -> None:
    rec = Recorder()

    @cache.memoize(key=lambda args, kwargs: (len(args), sorted(kwargs)))
    def f(*args: int, **kwargs: int) -> tuple[Any, ...]:
        return rec(args, kwargs)

    assert f(1, 2, a=1) == (1, (1, 2), {"a": 1})
    assert f(3, 4, a=5) == (1, (1, 2), {"a": 1})  # the key function says: the same
    assert f(3, a=5)[0] == 2
    assert rec.n == 2


def test_a_new_version_recomputes_and_the_old_entries_stay(cache: Cache, mode: str) -> None:
    rec = Recorder()
    v1 = Facade(cache, mode, one_arg(rec), name="model", version=1)
    assert v1(5) == (1, 5)
    v2 = Facade(cache, mode, one_arg(rec), name="model", version="2")
    assert v2(5) == (2, 5)
    assert v2(5) == (2, 5) and v1(5) == (1, 5)
    assert rec.n == 2
    assert v1.key(5).startswith("model@1/") and v2.key(5).startswith("model@2/")
    assert v1.key(5).split("/")[1] == v2.key(5).split("/")[1]  # same arguments
    assert cache.get(v1.key(5)) == (1, 5)  # the old version stays addressable
    unversioned = Facade(cache, mode, one_arg(rec), name="model")
    assert unversioned.key(5).startswith("model/")
    assert unversioned(5) == (3, 5)


def test_name_sets_the_key_prefix_and_is_the_function_identity(cache: Cache) -> None:
    rec = Recorder()
    first = cache.memoize(name="shared.area")(lambda r: rec("first", r))
    second = cache.memoize(name="shared.area")(lambda r: rec("second", r))
    assert first.key(2).startswith("shared.area/")
    assert first(2) == (1, "first", 2)
    assert second(2) == (1, "first", 2)  # one name, one function to the cache
    assert rec.n == 1


# -- arguments the key cannot use, and those it can -------------------------------------------


class NoCacheKey:
    pass


@dataclass(frozen=True)
class Point:
    x: int


@pytest.mark.parametrize(
    ("argument", "type_name"),
    [(lambda: 1, "'function'"), (NoCacheKey(), "NoCacheKey'"), ([1, object()], "'list'")],
    ids=["lambda", "plain object", "list holding an object"],
)
def test_an_unhashable_argument_names_the_parameter_and_type(
    cache: Cache, mode: str, argument: Any, type_name: str
) -> None:
    rec = Recorder()

    def body(count: int, payload: Any = None) -> Any:
        return rec(count)

    f = Facade(cache, mode, body)
    for call in (lambda: f(1, argument), lambda: f(1, payload=argument)):
        with pytest.raises(TypeError) as caught:
            call()
        check_message(caught.value, "'payload'", type_name)
        assert "0x" not in str(caught.value)  # no address leaks into the message
    with pytest.raises(TypeError, match="'payload'"):
        f.key(1, argument)
    assert rec.n == 0
    assert len(cache) == 0 and list(cache.keys()) == []


def test_containers_arrays_and_frames_hit_on_the_second_call(cache: Cache, mode: str) -> None:
    rec = Recorder()
    f = Facade(cache, mode, lambda x: rec(type(x).__name__)[0])
    values = [
        [1, 2, [3]],
        {"b": 2, "a": 1},
        np.arange(12, dtype=np.float64).reshape(3, 4),
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
        pd.Series([1.5, 2.5], name="s"),
    ]
    first = [f(v) for v in values]
    assert first == [1, 2, 3, 4, 5]
    copies = [
        [1, 2, [3]],
        {"a": 1, "b": 2},  # other order, same content
        np.arange(12, dtype=np.float64).reshape(3, 4),
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
        pd.Series([1.5, 2.5], name="s"),
    ]
    assert [f(v) for v in copies] == first
    assert rec.n == 5
    assert f(np.arange(12, dtype=np.int64).reshape(3, 4)) == 6  # another dtype
    assert f(np.arange(12, dtype=np.float64).reshape(4, 3)) == 7  # another shape
    if len(tiers_of(cache)) > 1:
        empty_memory(cache)
        assert [f(v) for v in copies] == first
        assert rec.n == 7


def test_an_array_mutated_in_place_gets_a_new_key(cache: Cache, mode: str) -> None:
    rec = Recorder()
    f = Facade(cache, mode, lambda a: rec(float(a.sum()))[:2])
    array = np.zeros(1000)
    assert f(array) == (1, 0.0)
    key = f.key(array)
    array[10] = 5.0
    assert f.key(array) != key
    assert f(array) == (2, 5.0)
    array[10] = 0.0
    assert f(array) == (1, 0.0)  # back to the first content: the first entry
    assert rec.n == 2


# -- the wrapper -------------------------------------------------------------------------------


def test_the_wrapper_keeps_the_functions_face(cache: Cache) -> None:
    def area(width: float, height: float = 1.0, *, unit: str = "m") -> str:
        """Area of a rectangle."""
        return f"{width * height}{unit}2"

    memoized = cache.memoize(area)
    assert memoized.__wrapped__ is area
    assert memoized.cache is cache
    assert inspect.signature(memoized) == inspect.signature(area)
    assert memoized.__name__ == "area"
    assert memoized.__qualname__ == area.__qualname__
    assert memoized.__doc__ == "Area of a rectangle."
    assert memoized.__module__ == area.__module__
    assert memoized.__annotations__ == area.__annotations__
    assert typing.get_type_hints(memoized) == {
        "width": float, "height": float, "unit": str, "return": str,
    }  # fmt: skip
    assert memoized(2.0, 3.0) == "6.0m2"


def test_key_is_the_key_used_and_info_shows_the_duration(cache: Cache, mode: str) -> None:
    rec = Recorder()

    def slow(x: int) -> Any:
        time.sleep(0.05)
        return rec(x)

    f = Facade(cache, mode, slow)
    assert cache.info(f.key(4)) is None
    f(4)
    info = cache.info(f.key(4))
    assert info is not None
    assert info.key == f.key(4)
    assert info.meta is not None and info.meta["duration_s"] >= 0.05
    assert cache.get(f.key(4)) == (1, 4)
    assert sorted(cache.keys()) == [f.key(4)]


def test_invalidate_deletes_the_entry_then_the_function_recomputes(cache: Cache, mode: str) -> None:
    rec = Recorder()
    f = Facade(cache, mode, with_default(rec))
    assert f.invalidate(1) is False  # nothing there yet
    assert f() == (1, 1)
    assert f.invalidate(x=1) is True
    stores = stores_of(cache)
    assert [store.get(cache._key(f.key(1))) for store in stores] == [None] * len(stores)
    assert f.invalidate(1) is False
    assert f(1) == (2, 1)
    assert f(1) == (2, 1)
    assert rec.n == 2


def test_key_and_invalidate_live_in_the_cache_namespace(tmp_path: Path) -> None:
    disk = DiskStore(tmp_path / "s")
    a, b = Cache(disk, namespace="a"), Cache(disk, namespace="b")
    rec = Recorder()
    fa = a.memoize(name="f")(one_arg(rec))
    fb = b.memoize(name="f")(one_arg(rec))
    assert fa.key(1) == fb.key(1)  # the key is without the namespace...
    assert fa(1) == (1, 1) and fb(1) == (2, 1)  # ...and the namespaces keep them apart
    assert fa.invalidate(1) is True
    assert fb(1) == (2, 1) and b.get(fb.key(1)) == (2, 1)
    assert sorted(disk.keys()) == ["b:" + fb.key(1)]


def test_a_type_checker_sees_the_original_signature(tmp_path: Path) -> None:
    """ParamSpec: mypy accepts correct calls of memoized functions and methods and flags a
    wrong argument type as it would on the original."""
    header = textwrap.dedent(
        """\
        from tiers import Cache, MemoryStore

        cache = Cache(MemoryStore())

        @cache.memoize
        def area(width: float, height: float = 1.0, *, unit: str = "m") -> str:
            return f"{width * height}{unit}"

        @cache.memoize(ttl=60, version=2)
        async def fetch(url: str) -> bytes:
            return url.encode()

        class Model:
            @cache.memoize(ignore=("self",))
            def predict(self, x: int) -> list[int]:
                return [x]

            @cache.memoize
            @staticmethod
            def load(path: str) -> str:
                return path
        """
    )
    good = header + textwrap.dedent(
        """\
        a: str = area(2.0, 3, unit="cm")
        k: str = area.key(2.0)
        gone: bool = area.invalidate(2.0, height=3)
        c: Cache = area.cache
        p: list[int] = Model().predict(3)
        pk: str = Model.predict.key(Model(), 3)
        ld: str = Model.load("p")
        named: str = area.__name__ + area.__qualname__ + area.__module__

        async def use() -> bytes:
            return await fetch("u")
        """
    )
    bad = header + textwrap.dedent(
        """\
        area("two")  # E
        area(2.0, unit=3)  # E
        area(2.0, colour="red")  # E
        s: int = area(2.0)  # E
        fetch(b"u")  # E
        Model().predict("3")  # E
        Model.load(1)  # E
        area.key("two")  # E
        """
    )
    (tmp_path / "good.py").write_text(good)
    (tmp_path / "bad.py").write_text(bad)
    run = subprocess.run(
        [
            str(VENV_BIN / "mypy"),
            "--strict",
            "--no-error-summary",
            "--hide-error-context",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--config-file",
            os.devnull,
            "good.py",
            "bad.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert not [e for e in errors if e.startswith("good.py")], run.stdout
    flagged = {int(e.split(":")[1]) for e in errors if e.startswith("bad.py")}
    expected = {i for i, line in enumerate(bad.splitlines(), 1) if line.endswith("# E")}
    assert flagged == expected, run.stdout + run.stderr


# -- provenance --------------------------------------------------------------------------------


def test_meta_records_provenance(cache: Cache, mode: str, clock: FakeClock) -> None:
    def simulate(model: str, steps: int = 10, *, verbose: bool = False) -> Any:
        time.sleep(0.01)
        return model * 2

    f = Facade(cache, mode, simulate, version=3)
    f("ising", steps=20)
    info = cache.info(f.key("ising", 20))
    assert info is not None and info.meta is not None
    meta = dict(info.meta)
    assert meta["function"] == f"{__name__}.{simulate.__qualname__}"
    assert meta["version"] == 3
    assert 0.01 <= meta["duration_s"] < 5
    assert meta["tiers_version"] == tiers.__version__
    computed = datetime.fromisoformat(meta["computed_at"])
    offset = computed.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert computed == datetime.fromtimestamp(START, timezone.utc)  # the cache's clock
    assert meta["args"] == "simulate(model='ising', steps=20, verbose=False)"
    assert set(meta) == {
        "function", "version", "duration_s", "computed_at", "tiers_version", "args",
    }  # fmt: skip


def test_the_args_repr_stays_short_for_huge_arguments(cache: Cache) -> None:
    @cache.memoize
    def f(text: str, numbers: list[int], array: Any, table: dict[str, int]) -> int:
        return len(text)

    huge = ("x" * 1_000_000, list(range(100_000)), np.zeros((1000, 1000)),
            {str(i): i for i in range(10_000)})  # fmt: skip
    assert f(*huge) == 1_000_000
    info = cache.info(f.key(*huge))
    assert info is not None and info.meta is not None
    meta = info.meta
    assert meta["args"].startswith("f(text='xxx") and len(meta["args"]) <= 200


# -- TTL and invalidation through the fast path --------------------------------------------------

FAST_STACKS = ["memory", "memory+disk"]


@pytest.mark.parametrize("stack", FAST_STACKS)
def test_the_fast_path_honours_expiry(cache: Cache, mode: str, clock: FakeClock) -> None:
    rec = Recorder()
    f = Facade(cache, mode, one_arg(rec), ttl=10)
    assert f("a") == (1, "a")
    hits = tier0_hits(cache)
    clock.advance(9)
    assert f("a") == (1, "a")
    assert tier0_hits(cache) == hits + 1  # served by the memory tier
    clock.advance(1)
    assert f("a") == (2, "a")  # expired in every tier: computed again
    assert f("a") == (2, "a")
    info = cache.info(f.key("a"))
    assert info is not None and info.expires_at is not None
    assert info.expires_at.timestamp() == START + 10 + 10  # ttl counts from the computation
    assert rec.n == 2


def test_the_cache_default_ttl_applies_to_memoize(store_dir: Path, clock: FakeClock) -> None:
    cache = Cache(MemoryStore(), DiskStore(store_dir), ttl=5)
    install_clock(cache, clock)
    rec = Recorder()
    f = cache.memoize(one_arg(rec))
    g = cache.memoize(ttl=None)(lambda x: rec("forever", x))
    assert f(1) == (1, 1) and g(1) == (2, "forever", 1)
    clock.advance(5)
    assert f(1) == (3, 1) and g(1) == (2, "forever", 1)


def fast_path_invalidations() -> dict[str, Callable[[Cache, Facade, FakeClock], None]]:
    return {
        "delete": lambda c, f, _: c.delete(f.key("a")) or None,
        "invalidate": lambda c, f, _: f.invalidate("a") or None,
        "pop": lambda c, f, _: c.pop(f.key("a")) and None,
        "clear": lambda c, f, _: c.clear() and None,
        "evict tag": lambda c, f, _: c.evict("group") and None,
        "expire": lambda c, f, clock: clock.advance(60),
        "expire and sweep": lambda c, f, clock: clock.advance(60) or (c.expire() and None),
        "delete async": lambda c, f, _: asyncio.run(c.delete_async(f.key("a"))) and None,
    }


@pytest.mark.parametrize("stack", FAST_STACKS)
@pytest.mark.parametrize("action", list(fast_path_invalidations()))
def test_invalidation_reaches_the_fast_path(
    cache: Cache, mode: str, clock: FakeClock, action: str
) -> None:
    rec = Recorder()
    f = Facade(cache, mode, one_arg(rec), ttl=60, tags=("group",))
    other = Facade(cache, mode, one_arg(rec), ttl=3600, name="other")
    assert f("a") == (1, "a") and other("a") == (2, "a")
    reads = memory_reads(cache)
    assert f("a") == (1, "a")  # linked: a fast-path hit, no store read
    assert memory_reads(cache) == reads
    fast_path_invalidations()[action](cache, f, clock)
    assert f("a") == (3, "a"), f"a stale value survived {action}"
    hits, reads = tier0_hits(cache), memory_reads(cache)
    assert f("a") == (3, "a")  # linked again
    assert tier0_hits(cache) == hits + 1 and memory_reads(cache) == reads
    assert rec.n == 3


@pytest.mark.parametrize("stack", FAST_STACKS)
def test_a_value_set_under_the_key_replaces_the_linked_one(cache: Cache, mode: str) -> None:
    rec = Recorder()
    f = Facade(cache, mode, one_arg(rec))
    assert f("a") == (1, "a") and f("a") == (1, "a")
    cache.set(f.key("a"), "replaced")
    assert f("a") == "replaced"
    cache.touch(f.key("a"), ttl=100)
    assert f("a") == "replaced"
    assert rec.n == 1


def test_memory_eviction_unlinks_and_gives_hot_entries_a_second_chance(mode: str) -> None:
    memory = MemoryStore(max_items=2)
    cache = Cache(memory)
    rec = Recorder()
    f = Facade(cache, mode, one_arg(rec))
    assert [f(1), f(2), f(3)] == [(1, 1), (2, 2), (3, 3)]  # 1 is evicted
    assert memory.stats().evictions == 1
    assert f(1) == (4, 1)  # recomputed, not the evicted (1, 1); now 2 is evicted
    assert f(3) == (3, 3)  # a fast-path hit marks 3 as used...
    assert f(5) == (5, 5)  # ...so the insertion-order-oldest 3 survives and 1 goes
    assert f(3) == (3, 3)
    assert f(1) == (6, 1)
    assert f(2) == (7, 2)
    assert rec.n == 7
    assert memory.stats().items == 2


def test_eviction_from_memory_falls_back_to_disk_and_links_again(store_dir: Path) -> None:
    cache = Cache(MemoryStore(max_items=2), DiskStore(store_dir))
    rec = Recorder()
    f = cache.memoize(one_arg(rec))
    assert [f(i) for i in range(5)] == [(i + 1, i) for i in range(5)]
    assert [f(i) for i in range(5)] == [(i + 1, i) for i in range(5)]  # from disk, promoted
    assert rec.n == 5
    assert store_of(cache).stats().items == 2


@pytest.mark.parametrize("mode", MODES)
def test_values_promoted_from_disk_are_served_by_the_fast_path(layered: Cache, mode: str) -> None:
    rec = Recorder()
    f = Facade(layered, mode, one_arg(rec))
    assert f("a") == (1, "a")
    empty_memory(layered)
    mem_hits, disk_hits = (t.hits for t in layered.stats().tiers)
    assert f("a") == (1, "a")  # from disk, copied up and linked
    stats = layered.stats()
    assert (stats.tiers[0].hits, stats.tiers[1].hits) == (mem_hits, disk_hits + 1)
    reads = memory_reads(layered)
    assert f("a") == (1, "a")
    stats = layered.stats()
    assert (stats.tiers[0].hits, stats.tiers[1].hits) == (mem_hits + 1, disk_hits + 1)
    assert memory_reads(layered) == reads  # the fast path
    assert rec.n == 1


def test_a_promoted_value_keeps_its_remaining_ttl_on_the_fast_path(
    layered: Cache, mode: str, clock: FakeClock
) -> None:
    rec = Recorder()
    f = Facade(layered, mode, one_arg(rec), ttl=100)
    assert f("a") == (1, "a")
    empty_memory(layered)
    clock.advance(60)
    assert f("a") == (1, "a")  # promoted with 40 s left
    clock.advance(39)
    assert f("a") == (1, "a")
    clock.advance(1)
    assert f("a") == (2, "a")
    assert rec.n == 2


# -- stats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", FAST_STACKS)
def test_fast_path_hits_count_as_memory_tier_hits(cache: Cache, mode: str) -> None:
    rec = Recorder()
    f = Facade(cache, mode, one_arg(rec))
    f("a")
    f(1.5)
    for _ in range(4):
        f("a")
        f(1.5)
    stats = cache.stats()
    assert stats.misses == 2
    assert stats.tiers[0].hits == 8 and stats.hits == 8
    assert [t.hits for t in stats.tiers[1:]] == [0] * (len(stats.tiers) - 1)
    assert stats.hit_rate == pytest.approx(8 / 10)


def test_hits_of_a_collected_function_stay_counted(layered: Cache) -> None:
    def scope() -> None:
        f = layered.memoize(lambda x: x)
        for _ in range(3):
            f("a")

    scope()
    gc.collect()
    assert layered.stats().tiers[0].hits == 2
    assert layered.stats().hits == 2


# -- failures ----------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_an_exception_propagates_and_nothing_is_cached(cache: Cache, mode: str) -> None:
    attempts: list[int] = []

    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) < 3:
            raise Boom(f"attempt {len(attempts)}")
        return x * 10

    f = Facade(cache, mode, flaky)
    with pytest.raises(Boom, match="attempt 1"):
        f(1)
    assert cache.info(f.key(1)) is None and len(cache) == 0
    with pytest.raises(Boom, match="attempt 2"):
        f(1)
    assert f(1) == 10
    assert f(1) == 10
    assert attempts == [1, 1, 1]


def test_generator_functions_are_refused_at_decoration(cache: Cache) -> None:
    def numbers(n: int) -> Iterator[int]:
        yield from range(n)

    async def stream(n: int) -> Any:
        yield n

    for gen in (numbers, stream):
        with pytest.raises(TypeError) as caught:
            cache.memoize(gen)
        check_message(caught.value, gen.__qualname__, "generator")
        with pytest.raises(TypeError):
            cache.memoize(ttl=5)(gen)


# -- bad options and arguments -----------------------------------------------------------------


@Cache(MemoryStore()).memoize
def module_level(x: int) -> int:
    return x


BAD_OPTIONS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("ignore missing", {"ignore": ("nope",)}, ValueError, "'nope'"),
    ("ignore not names", {"ignore": [1]}, TypeError, "ignore"),
    ("ignore not iterable", {"ignore": 3}, TypeError, "ignore"),
    ("version float", {"version": 1.5}, TypeError, "version"),
    ("version bool", {"version": True}, TypeError, "version"),
    ("version list", {"version": [1]}, TypeError, "version"),
    ("name empty", {"name": ""}, TypeError, "name"),
    ("name not str", {"name": 5}, TypeError, "name"),
    ("key not callable", {"key": "x"}, TypeError, "key"),
    ("ttl negative", {"ttl": -1}, ValueError, "ttl"),
    ("ttl zero", {"ttl": 0}, ValueError, "ttl"),
    ("ttl nan", {"ttl": math.nan}, ValueError, "ttl"),
    ("ttl str", {"ttl": "soon"}, TypeError, "ttl"),
    ("tags not iterable", {"tags": 3}, TypeError, "tags"),
    ("tag empty", {"tags": ("",)}, ValueError, "tag"),
    ("tag not str", {"tags": (1,)}, TypeError, "tag"),
    ("lease zero", {"lease": 0}, ValueError, "lease"),
    ("lease negative", {"lease": -1.0}, ValueError, "lease"),
    ("lease bool", {"lease": True}, ValueError, "lease"),
    ("lease str", {"lease": "1"}, ValueError, "lease"),
]


@pytest.mark.parametrize(
    ("options", "error", "fragment"),
    [case[1:] for case in BAD_OPTIONS],
    ids=[case[0] for case in BAD_OPTIONS],
)
def test_a_bad_option_is_one_clear_error_at_decoration(
    layered: Cache, options: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    rec = Recorder()
    with pytest.raises(error) as caught:
        layered.memoize(**options)(one_arg(rec))
    check_message(caught.value, fragment)
    with pytest.raises(error):
        tiers.memoize(MemoryStore(), **options)(one_arg(rec))
    assert rec.n == 0 and len(layered) == 0


@pytest.mark.parametrize("target", [42, "f", None, Point(1)], ids=repr)
def test_decorating_a_non_callable_is_refused(layered: Cache, target: Any) -> None:
    with pytest.raises(TypeError) as caught:
        layered.memoize()(target)
    check_message(caught.value, "memoize", type(target).__qualname__)
    if target is not None:  # (memoize(None) is memoize() with no function yet)
        with pytest.raises(TypeError):
            layered.memoize(target)


def test_a_key_callable_returning_an_unhashable_value(layered: Cache) -> None:
    rec = Recorder()
    f = layered.memoize(key=lambda x: NoCacheKey(), name="keyed")(one_arg(rec))
    for call in (lambda: f(1), lambda: f.key(1), lambda: f.invalidate(1)):
        with pytest.raises(TypeError) as caught:
            call()
        check_message(caught.value, "key function", "keyed", "'NoCacheKey'")
    assert rec.n == 0 and len(layered) == 0


def test_a_call_with_wrong_arguments_computes_nothing(layered: Cache, mode: str) -> None:
    rec = Recorder()
    f = Facade(layered, mode, with_default(rec))
    for bad in (lambda: f(1, 2), lambda: f(y=1), lambda: f(1, x=1)):
        with pytest.raises(TypeError):
            bad()
    assert rec.n == 0 and len(layered) == 0


# -- odds and ends -----------------------------------------------------------------------------


def test_none_is_a_cached_result(cache: Cache, mode: str) -> None:
    rec = Recorder()

    def body(x: int) -> None:
        rec(x)

    f = Facade(cache, mode, body)
    assert f(1) is None and f(1) is None and f(x=1) is None
    assert rec.n == 1
    assert cache.get(f.key(1), MISSING) is None


def test_a_closed_cache_refuses_memoized_calls_hits_included(stack: str, store_dir: Path) -> None:
    cache = build(stack, store_dir)
    rec = Recorder()
    f = cache.memoize(one_arg(rec))
    assert f("a") == (1, "a") and f("a") == (1, "a")  # (a fast-path hit on memory stacks)
    cache.close()
    for call in (lambda: f("a"), lambda: f("b")):
        with pytest.raises(StoreError, match="is closed"):
            call()
    assert rec.n == 1
    for store in stores_of(cache):
        store.close()


def test_a_module_level_memoized_function_pickles_by_reference() -> None:
    """(What `multiprocessing` needs to send it to a pool.)"""
    assert pickle.loads(pickle.dumps(module_level)) is module_level
    assert module_level(2) == 2


def test_parameters_named_like_the_wrapper_internals(cache: Cache) -> None:
    rec = Recorder()

    @cache.memoize
    def f(_tiers_slot: int, memoized: int = 0, type: str = "t") -> tuple[Any, ...]:
        return rec(_tiers_slot, memoized, type)

    assert f(1) == (1, 1, 0, "t") and f(1, 0, "t") == (1, 1, 0, "t")
    assert f(1, memoized=2) == (2, 1, 2, "t")
    assert rec.n == 2


def test_clear_removes_this_functions_results_only(tmp_path: Path) -> None:
    """`f.clear()` deletes every cached result of `f` (this name and version) from every tier,
    and nothing else: another function's results and plain keys stay."""
    cache = Cache(MemoryStore(), tmp_path / "store")
    runs: list[int] = []

    @cache.memoize
    def f(x: int) -> int:
        runs.append(x)
        return x * 2

    @cache.memoize
    def g(x: int) -> int:
        return x * 3

    for x in range(5):
        f(x), g(x)
    cache.set("plain", 1)
    assert f.clear() == 5
    assert [f(x) for x in range(5)] == [0, 2, 4, 6, 8]
    assert runs == [0, 1, 2, 3, 4] * 2  # computed again, every one
    assert all(cache.has(g.key(x)) for x in range(5)) and cache.get("plain") == 1
    assert f.clear() == 5 and f.clear() == 0
    cache.close()
