"""Memoization and content hashing (docs/benchmarks.md#targets: "memoize hit on the memory
tier", "memoize hit with an 8 MB NumPy argument", "hash_key of an 8 MB NumPy array"). The
disk-tier memoize rows are informational: no target covers them.

Every memoized function has a trivial body (``return x + 1``) that also counts how often it
runs. Before timing, each case is filled (every distinct argument called once), then called
with every distinct argument again, which must compute nothing and return what the fill
returned: the timed loops measure hits only. A timed loop is ``for x in args: f(x)`` over a
pre-generated list in a fixed random order, whose items are the very objects the caches were
filled with (as the get rows look up the stored key objects; equal but fresh int objects cost
both sides ~9 ns more per call). Slow peers run a shorter prefix of the same list (ops/s is per
call either way).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from ._harness import (
    Measured,
    Row,
    Settings,
    Target,
    measure,
    scratch,
    shuffled,
    slowdown,
    speedup,
)

KEYS = 1000  # distinct arguments of the int, str and two-argument rows
ITEMS = 10_000  # capacity of every in-memory cache
TTL = 3600  # the TTLCache row, on both sides; the other rows keep entries without expiry
TIERS = "tiers Cache(MemoryStore).memoize"
CACHIER_NOTE = (
    "cachier's default pickle core, in a temp dir: with its default pickle_reload=True every "
    "call re-reads the whole cache file (all entries) under a file lock, so a hit costs "
    "O(entries), and every miss rewrites the whole file"
)

_computed = [0]  # how many times a memoized body ran: a miss


def plus_one(x: int) -> int:
    _computed[0] += 1
    return x + 1


def exclaim(x: str) -> str:
    _computed[0] += 1
    return x + "!"


def add(x: int, y: int = 1) -> int:
    _computed[0] += 1
    return x + y


def small_bytes(x: int) -> bytes:
    _computed[0] += 1
    return x.to_bytes(8, "little") * 8  # 64 bytes


def first_plus_one(a: Any) -> float:
    _computed[0] += 1
    return float(a[0]) + 1


@dataclass(frozen=True)
class Case:
    """A memoized function, the arguments of its calls, and how many of them a timed run makes."""

    func: Callable[..., Any]
    args: Sequence[Any]  # one argument per call, or an (x, y) pair when `pairs`
    ops: int
    pairs: bool = False

    def call(self, arg: Any) -> Any:
        return self.func(*arg) if self.pairs else self.func(arg)

    def loop(self) -> Callable[[], None]:
        f, args = self.func, self.args[: self.ops]
        if self.pairs:

            def run_pairs() -> None:
                for x, y in args:
                    f(x, y)

            return run_pairs

        def run() -> None:
            for x in args:
                f(x)

        return run

    def check(self, who: str) -> None:
        """Fill, then fail unless calling every distinct argument again is a hit."""
        distinct = list({_identity(a): a for a in self.args}.values())
        filled = [self.call(a) for a in distinct]
        before = _computed[0]
        again = [self.call(a) for a in distinct]
        if _computed[0] != before or again != filled:
            misses = _computed[0] - before
            raise AssertionError(f"{who}: {misses} of {len(distinct)} warm calls were not hits")


def _identity(arg: Any) -> object:
    """What tells distinct arguments apart: their type and value, or (unhashable) their id."""
    return id(arg) if type(arg).__hash__ is None else (type(arg), arg)


def _measure(cases: dict[str, Case], settings: Settings) -> Measured:
    for name, case in cases.items():
        case.check(name)
    loops = {name: case.loop() for name, case in cases.items()}
    return measure(loops, {name: case.ops for name, case in cases.items()}, settings)


def _versus(
    what: str,
    ops: Measured,
    mine: tuple[str, str],
    theirs: tuple[str, str],
    target: Target | None = None,
    *,
    time_ratio: bool = False,
    note: str = "",
) -> Row:
    """A row for case ``mine[0]`` (labelled ``mine[1]``) against case ``theirs[0]``."""
    subject, baseline, spread = ops.pair(mine[0], theirs[0])
    row = slowdown if time_ratio else speedup
    pair = ((mine[1], subject), (theirs[1], baseline))
    return row(what, *pair, target, spread=spread, note=note)


def memory_hit(settings: Settings) -> list[Row]:
    """Memoize hits on the memory tier: 1,000 warm int (or str, or (x, y)) arguments."""
    import cachebox
    import cachetools
    import cachier
    import diskcache  # type: ignore[import-untyped]
    import joblib  # type: ignore[import-untyped]

    import tiers

    calls = settings.count(200_000, 20_000)
    ints = shuffled(list(range(KEYS)), calls)
    strs = shuffled([f"user:{i}" for i in range(KEYS)], calls)
    pairs = shuffled([(i, i % 7) for i in range(KEYS)], calls)

    def memo() -> Any:
        return tiers.Cache(tiers.MemoryStore(max_items=ITEMS)).memoize

    def lru() -> Any:
        return functools.lru_cache(maxsize=ITEMS)

    def cached() -> Any:
        return cachetools.cached(cachetools.LRUCache(ITEMS))

    with scratch() as root, ExitStack() as stack:
        dc = diskcache.Cache(str(root / "diskcache"))
        stack.callback(dc.close)
        cases = {
            "tiers": Case(memo()(plus_one), ints, calls),
            "lru_cache": Case(lru()(plus_one), ints, calls),
            "cachetools": Case(cached()(plus_one), ints, calls),
            "tiers ttl": Case(memo()(plus_one, ttl=TTL), ints, calls),
            "cachetools ttl": Case(
                cachetools.cached(cachetools.TTLCache(ITEMS, TTL))(plus_one), ints, calls
            ),
            "cachebox": Case(cachebox.cached(cachebox.LRUCache(ITEMS))(plus_one), ints, calls),
            "diskcache": Case(dc.memoize()(plus_one), ints, calls // 10),
            "joblib": Case(
                joblib.Memory(root / "joblib", verbose=0).cache(plus_one), ints, calls // 100
            ),
            "cachier": Case(
                cachier.cachier(cache_dir=root / "cachier")(plus_one), ints, calls // 1000
            ),
            "tiers str": Case(memo()(exclaim), strs, calls),
            "lru_cache str": Case(lru()(exclaim), strs, calls),
            "cachetools str": Case(cached()(exclaim), strs, calls),
            "tiers 2 args": Case(memo()(add), pairs, calls, pairs=True),
            "lru_cache 2 args": Case(lru()(add), pairs, calls, pairs=True),
            "cachetools 2 args": Case(cached()(add), pairs, calls, pairs=True),
        }
        ops = _measure(cases, settings)
    rows = []
    for suffix, arguments in (("", "f(x: int)"), (" str", "f(x: str)"), (" 2 args", "f(x, y)")):
        what = f"memoize hit, memory tier, {arguments}"
        goal = not suffix  # the targets are for the plain one-argument function
        mine = ("tiers" + suffix, TIERS)
        rows += [
            _versus(what, ops, mine, ("cachetools" + suffix, "cachetools.cached(LRUCache)"),
                    Target(">", 1) if goal else None),
            _versus(what, ops, mine, ("lru_cache" + suffix, "functools.lru_cache"),
                    Target("<=", 3) if goal else None, time_ratio=True),
        ]  # fmt: skip
    what = rows[0].comparison
    ttl = _versus(what, ops, ("tiers ttl", f"{TIERS}(ttl={TTL})"),
                  ("cachetools ttl", f"cachetools.cached(TTLCache(ttl={TTL}))"))  # fmt: skip
    rows.insert(2, ttl)
    for name, label, note in (
        ("cachebox", "cachebox.cached(LRUCache)", ""),
        ("diskcache", "diskcache Cache.memoize", ""),
        ("joblib", "joblib.Memory.cache", ""),
        ("cachier", "cachier (pickle core)", CACHIER_NOTE),
    ):
        row = _versus(what, ops, ("tiers", TIERS), (name, label), note=note)
        rows.insert(len(rows) - 4, row)  # after the int rows, before the str and (x, y) ones
    return rows


def disk_hit(settings: Settings) -> list[Row]:
    """Memoize hits on a disk tier alone (no memory tier above it): 1,000 warm int arguments."""
    import diskcache
    import joblib

    import tiers

    calls = settings.count(10_000, 1_000)
    ints = shuffled(list(range(KEYS)), calls, seed=3)
    with scratch() as root, ExitStack() as stack:
        stores = {name: tiers.DiskStore(root / name) for name in ("signed", "raw")}
        peers = {name: diskcache.Cache(str(root / name)) for name in ("dc", "dc-bytes")}
        for closable in (*stores.values(), *peers.values()):
            stack.callback(closable.close)
        signed = tiers.Cache(stores["signed"])
        raw = tiers.Cache(stores["raw"], serializer="raw")
        cases = {
            "tiers": Case(signed.memoize(plus_one), ints, calls),
            "tiers raw": Case(raw.memoize(small_bytes), ints, calls),
            "diskcache": Case(peers["dc"].memoize()(plus_one), ints, calls),
            "diskcache bytes": Case(peers["dc-bytes"].memoize()(small_bytes), ints, calls),
            "joblib": Case(
                joblib.Memory(root / "joblib", verbose=0).cache(plus_one), ints, calls // 10
            ),
        }
        ops = _measure(cases, settings)
    signed_label = "tiers Cache(DiskStore).memoize"
    return [
        _versus("memoize hit, disk tier, int result", ops, ("tiers", signed_label),
                ("diskcache", "diskcache Cache.memoize")),
        _versus("memoize hit, disk tier, 64 B bytes result", ops,
                ("tiers raw", "tiers Cache(DiskStore, raw).memoize"),
                ("diskcache bytes", "diskcache Cache.memoize")),
        _versus("memoize hit, disk tier, int result", ops, ("tiers", signed_label),
                ("joblib", "joblib.Memory.cache")),
    ]  # fmt: skip


def numpy_argument(settings: Settings) -> list[Row]:
    """Memoize hits whose argument is one 8 MB NumPy array (the same object on every call)."""
    import diskcache
    import joblib
    import numpy as np

    import tiers

    array = np.random.default_rng(1).random(1_000_000)  # float64: 8 MB
    calls, slow = settings.count(300, 30), settings.count(20, 3)
    args = [array] * calls
    with scratch() as root, ExitStack() as stack:
        dc = diskcache.Cache(str(root / "diskcache"))
        stack.callback(dc.close)
        cache = tiers.Cache(tiers.MemoryStore(max_items=ITEMS))
        cases = {
            "tiers": Case(cache.memoize(first_plus_one), args, calls),
            "joblib": Case(joblib.Memory(root / "joblib", verbose=0).cache(first_plus_one),
                           args, slow),
            "diskcache": Case(dc.memoize()(first_plus_one), args, slow),
        }  # fmt: skip
        ops = _measure(cases, settings)
    what = "memoize hit, 8 MB NumPy argument"
    return [
        _versus(what, ops, ("tiers", TIERS), ("joblib", "joblib.Memory.cache"), Target(">=", 10)),
        _versus(what, ops, ("tiers", TIERS), ("diskcache", "diskcache Cache.memoize")),
    ]


def _hash_loop(hash_: Callable[[Any], object], obj: object, count: int) -> Callable[[], None]:
    objects = [obj] * count

    def run() -> None:
        for o in objects:
            hash_(o)

    return run


def hash_keys(settings: Settings) -> list[Row]:
    """`tiers.hash_key` against `joblib.hash` of an array, a DataFrame and a small tuple."""
    import joblib
    import numpy as np
    import pandas as pd

    import tiers

    rng = np.random.default_rng(2)
    size = 1_000_000  # array elements (float64: 8 MB) and DataFrame rows
    frame = pd.DataFrame({
        "a": rng.random(size), "b": rng.random(size),
        "c": rng.integers(0, 2**40, size), "d": rng.integers(0, 1000, size),
    })  # fmt: skip
    subjects: list[tuple[str, object, tuple[int, int], Target | None]] = [
        ("hash_key, 8 MB NumPy array", rng.random(size), (100, 10), Target(">=", 20)),
        ("hash_key, DataFrame 1M rows x 4 numeric", frame, (20, 3), None),
        ("hash_key, tuple (1, 'a', 2.5)", (1, "a", 2.5), (100_000, 10_000), None),
    ]
    hashers = {"tiers": tiers.hash_key, "joblib": joblib.hash}
    result = []
    for what, obj, (mine, theirs), target in subjects:
        twin = copy.deepcopy(obj)
        for name, hash_ in hashers.items():  # a content hash: an equal copy hashes the same
            if hash_(obj) != hash_(twin):
                raise AssertionError(f"{name}: {what}: an equal copy hashes differently")
        counts = {"tiers": settings.count(mine, max(1, mine // 10)), "joblib": theirs}
        loops = {name: _hash_loop(h, obj, counts[name]) for name, h in hashers.items()}
        ops = measure(loops, counts, settings)
        result.append(
            _versus(what, ops, ("tiers", "tiers.hash_key"), ("joblib", "joblib.hash"), target)
        )
    return result
