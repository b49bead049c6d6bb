"""Coherent tiers across processes, with real processes and real servers (no mocks).

``Cache(MemoryStore(), <DiskStore | FolderStore>)`` in several processes of one host: once a
change (set, delete, pop, touch, evict, clear, expire, a memoized function's invalidate)
has returned in one process, no process's memory tier returns the older value. Over an
ObjectStore (PULL) a memory copy may be served for at most `max_age` after another machine's
change, and an unchanged one is revalidated without moving its value again.

Process B is a command server in a ``spawn`` child (tests/_coherence_workers.py) driven
through a pipe: each of its calls has returned before the test's next call starts, so every
read of process A below must see the last change, whoever made it. Every child process is
stopped by its test or fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import queue
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from tests._processes import running
from tests._tiers import store_of
from tiers import MISSING, Cache, DiskStore, MemoryStore
from tiers.errors import ConfigError

from . import _coherence_workers as workers
from ._netfaults import FaultProxy
from ._peer import Peer, replaced_if_dead

SPAWN = multiprocessing.get_context("spawn")
KINDS = ["disk", "folder"]
ABSENT = "<absent>"  # what a read answers for a key it does not find
PRESENT = "<present>"  # what has() and info() answer for a key they find
MAX_AGE = 0.5  # the PULL tests' max_age
SLACK = 0.3  # seconds a PULL read may take beyond max_age (requests to the S3 server)
MiB = 1024 * 1024


# -- process B ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peer_process() -> Iterator[list[Peer]]:
    """One process B for the module (spawning costs ~1 s), replaced if it died."""
    holder = [Peer(workers.serve)]
    yield holder
    holder[0].stop()


@pytest.fixture
def peer(peer_process: list[Peer]) -> Iterator[Peer]:
    b = replaced_if_dead(peer_process, workers.serve, 60)
    yield b
    with contextlib.suppress(Exception):
        b.ask("close", timeout=10)


# -- process A (this one) and what it reads ---------------------------------------------------


def local_spec(kind: str, path: Path, **cache: Any) -> dict[str, Any]:
    return {"store": kind, "path": str(path), "cache": cache}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pair(kind: str, tmp_path: Path, peer: Peer) -> Iterator[tuple[Cache, Peer]]:
    """(A, B): this process's cache and process B's, each a memory tier over one store."""
    spec = local_spec(kind, tmp_path / "shared")
    a = workers.open_cache(spec)
    peer.open(spec)
    yield a, peer
    workers.close_cache(a)


def observe(cache: Cache, how: str, key: str) -> Any:
    """What one of the read APIs of `cache` says about `key`: its value or ABSENT (PRESENT
    or ABSENT for has() and info())."""
    if how == "get":
        return cache.get(key, ABSENT)
    if how == "get_async":
        return asyncio.run(cache.get_async(key, ABSENT))
    if how == "get_many":
        return cache.get_many([key], ABSENT)[key]
    if how == "getitem":
        try:
            return cache[key]
        except KeyError:
            return ABSENT
    if how == "get_or_set":
        return cache.get_or_set(key, lambda: ABSENT)  # (stores ABSENT: the key's last read)
    if how == "has":
        return PRESENT if cache.has(key) else ABSENT
    if how == "info":
        return PRESENT if cache.info(key) is not None else ABSENT
    raise AssertionError(how)


READS = ["get", "get_async", "get_many", "getitem", "get_or_set", "has", "info"]


def expected(how: str, value: Any) -> Any:
    return value if value == ABSENT or how not in ("has", "info") else PRESENT


def in_memory(cache: Cache, key: str) -> bool:
    """Whether the memory tier of `cache` holds a copy of `key` (guarded or not)."""
    return cache._key(key) in store_of(cache)._data


def read_into_memory(a: Cache, key: str, value: Any, **options: Any) -> None:
    """A writes `value` and reads it back: its memory tier now holds a copy."""
    a.set(key, value, **options)
    assert a.get(key) == value
    assert in_memory(a, key)


# -- 1. the scenario, each change made by process B -----------------------------------


def test_an_overwrite_by_another_process_is_read_at_once(pair: tuple[Cache, Peer]) -> None:
    """B's set → A reads B's value through every read API, although A's memory tier holds
    its own copy (each API gets a stale copy of its own to refuse)."""
    a, b = pair
    for how in READS:
        read_into_memory(a, how, ("v1", how))
        b.call("set", how, ("v2", how))
        assert observe(a, how, how) == expected(how, ("v2", how)), how
        assert a.get(how) == ("v2", how)
    # and A's own next write is again what B reads (B's memory tier held ("v2", key))
    for how in READS:
        assert b.call("get", how) == ("v2", how)
        a.set(how, ("v3", how))
        assert b.call("get", how) == ("v3", how)


def test_a_batch_written_by_another_process_is_read_at_once(pair: tuple[Cache, Peer]) -> None:
    """B's set_many → A reads B's values."""
    a, b = pair
    for how in READS:
        read_into_memory(a, how, ("v1", how))
    b.call("set_many", {how: ("v2", how) for how in READS})
    for how in READS:
        assert observe(a, how, how) == expected(how, ("v2", how)), how


@pytest.mark.parametrize("change", ["delete", "pop"])
def test_a_removal_by_another_process_is_read_at_once(
    pair: tuple[Cache, Peer], change: str
) -> None:
    """B's delete or pop → A finds nothing through every read API."""
    a, b = pair
    for how in READS:
        read_into_memory(a, how, ("v1", how))
        if change == "delete":
            assert b.call("delete", how) is True
        else:
            assert b.call("pop", how) == ("v1", how)
        assert observe(a, how, how) == ABSENT, how


def test_a_shorter_ttl_set_by_another_process_is_honoured(pair: tuple[Cache, Peer]) -> None:
    """B's touch(ttl=0.5) of entries A holds with no expiry: A sees the new expiry at once
    and finds nothing once it has passed (A's own copy never expires)."""
    a, b = pair
    for how in READS:
        read_into_memory(a, how, ("v1", how), ttl=None)
    for how in READS:
        assert b.call("touch", how, ttl=0.5) is True
    touched = time.time()
    info = a.info("get")
    assert info is not None and info.expires_at is not None
    assert touched - 1 < info.expires_at.timestamp() <= touched + 0.5
    assert a.get("get_async") == ("v1", "get_async")  # still live: B only shortened it
    time.sleep(max(0.0, touched + 0.6 - time.time()))
    for how in READS:
        assert observe(a, how, how) == ABSENT, how


def test_an_eviction_by_another_process_is_read_at_once(pair: tuple[Cache, Peer]) -> None:
    """B's evict(tag) → A finds none of the tagged entries, and still the others."""
    a, b = pair
    for how in READS:
        read_into_memory(a, how, ("v1", how), tags=("t",))
    read_into_memory(a, "untagged", "kept", tags=("other",))
    assert b.call("evict", "t") == len(READS)
    for how in READS:
        assert observe(a, how, how) == ABSENT, how
    assert a.get("untagged") == "kept"


def test_a_clear_by_another_process_is_read_at_once(pair: tuple[Cache, Peer]) -> None:
    """B's clear() → A finds nothing."""
    a, b = pair
    for how in READS:
        read_into_memory(a, how, ("v1", how))
    assert b.call("clear") == len(READS)
    for how in READS:
        assert observe(a, how, how) == ABSENT, how


def test_a_store_cleared_whole_by_another_process_is_read_at_once(
    pair: tuple[Cache, Peer],
) -> None:
    """B's clear() of the store itself (every namespace, as a maintenance script would) →
    A finds nothing, in its namespace and in another."""
    a, b = pair
    for how in READS:
        read_into_memory(a, how, ("v1", how))
    other = Cache(MemoryStore(), store_of(a, 1), namespace="other")
    read_into_memory(other, "k", "v1")
    assert b.ask("store", "clear", ()) == len(READS) + 1
    for how in READS:
        assert observe(a, how, how) == ABSENT, how
    assert other.get("k") is None
    other.close()


def test_an_expiry_removed_by_another_process_is_read_at_once(pair: tuple[Cache, Peer]) -> None:
    """Entries with a 0.4 s TTL, time passes, B's expire() removes them → A finds nothing."""
    a, b = pair
    for how in READS:
        read_into_memory(a, how, ("v1", how), ttl=0.4)
    time.sleep(0.5)
    assert b.call("expire") == len(READS)
    for how in READS:
        assert observe(a, how, how) == ABSENT, how


@pytest.mark.parametrize("change", ["delete", "evict", "clear", "expire"])
def test_a_copy_another_process_removed_is_not_counted_again(
    pair: tuple[Cache, Peer], change: str
) -> None:
    """After B's delete (or evict, or clear) of an entry A holds a copy of, A's own delete
    returns False and its evict, clear and expire count 0: there was nothing left to remove
    (A's copy could no longer be served). And A's own touch leaves nothing to expire."""
    a, b = pair
    read_into_memory(a, "k", "v1", tags=("t",))
    assert b.call("delete", "k") is True
    if change == "delete":
        got: object = a.delete("k")
    elif change == "evict":
        got = a.evict("t")
    else:
        got = getattr(a, change)()
    assert not got, f"A's {change} returned {got!r}"
    read_into_memory(a, "j", "w")
    assert a.touch("j", ttl=600) is True
    assert a.expire() == 0, "A's touch left a copy its expire() counts as expired"


@pytest.mark.parametrize("which", [0, 1, 2], ids=["one_str", "str_and_int", "async"])
def test_a_memoized_result_changed_by_another_process_is_recomputed(
    pair: tuple[Cache, Peer], which: int
) -> None:
    """A's memoized f(x) (str/int arguments: its lock-free fast path; also ``async def``)
    after B's f.invalidate(x), B's own recomputation, B's evict of the functions' tag,
    B's clear() and B's f.clear(): A recomputes, or returns B's result, never its old one."""
    a, b = pair
    record: list[str] = []
    function = workers.memoized(a, record)[which]
    memo = function.__tiers_memo__
    args = ("x", 3) if which == 1 else ("x",)
    theirs = 0 if which == 2 else which  # B calls the sync twin: same name, same keys

    def f() -> Any:
        if which == 2:
            return asyncio.run(function(*args))
        return function(*args)

    def fast_path_holds() -> bool:
        if which == 1:
            return (args[0], str, args[1], int) in memo.index
        return args[0] in memo.index.get(str, {})

    first = f()
    assert first[-2:] == (os.getpid(), "computation 1")
    hits = memo.hits
    assert f() == first and memo.hits == hits + 1  # served by the fast path
    assert fast_path_holds()

    assert b.ask("invalidate", theirs, args) is True
    assert fast_path_holds()  # A's fast path still indexes its copy: the guard must refuse it
    second = f()
    assert second[-2:] == (os.getpid(), "computation 2"), second
    assert f() == second

    assert b.ask("invalidate", theirs, args) is True
    by_b = b.ask("memo", theirs, args)
    assert by_b[-2] == b.pid
    assert f() == by_b and len(record) == 2  # B's result, not a third computation

    assert b.call("evict", "memo") >= 1
    third = f()
    assert third[-2:] == (os.getpid(), "computation 3"), third

    assert b.call("clear") >= 1
    fourth = f()
    assert fourth[-2:] == (os.getpid(), "computation 4"), fourth
    assert b.ask("memo", theirs, args) == fourth  # and B reads A's

    assert b.ask("memo_clear", theirs) >= 1  # the function's own clear()
    fifth = f()
    assert fifth[-2:] == (os.getpid(), "computation 5"), fifth


# -- 2. four processes changing and reading shared keys for a few seconds ---------------------


def run_churn(
    spec: dict[str, Any], seconds: float, processes: int = 4, keys_each: int = 3
) -> dict[str, Any]:
    """`workers.churn` in `processes` spawned processes: the sums of their counts (reads,
    changes, stale, missed, other) and the first problems they described."""
    total_keys = processes * keys_each
    announced = SPAWN.Array("q", total_keys, lock=False)
    counts = SPAWN.Array("q", processes * 5, lock=False)
    barrier = SPAWN.Barrier(processes)
    failures = SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=workers.churn,
            args=(spec, me, processes, keys_each, seconds, announced, counts, barrier, failures),
        )
        for me in range(processes)
    ]
    with running(*procs, grace=30):  # each may finish its run first
        for p in procs:
            p.join(timeout=seconds + 60)
    problems: list[str] = []
    with contextlib.suppress(queue.Empty):
        while True:
            problems.append(failures.get(timeout=0.2))
    failures.close()
    failures.join_thread()
    assert [p.exitcode for p in procs] == [0] * processes, problems
    numbers = list(counts)
    names = ("reads", "changes", "stale", "missed", "other")
    found: dict[str, Any] = {name: sum(numbers[i::5]) for i, name in enumerate(names)}
    found["problems"] = problems
    return found


@pytest.mark.slow
def test_four_processes_never_read_an_announced_change_undone(kind: str, tmp_path: Path) -> None:
    """4 processes, each with its own memory tier over one store, for 3 s: each writes,
    deletes and pops its own keys (values of 10 B to 50 kB, some in value files), announcing
    each change once it has returned, and reads everyone's (get and get_many): no read
    returns a value older than the last change announced before the read began, nor
    nothing while the key was there all along (see `workers.churn`)."""
    spec = local_spec(kind, tmp_path / "shared")
    found = run_churn(spec, seconds=3.0)
    print(f"\n{kind}: 4 processes, 3 s: {found['reads']} reads, {found['changes']} changes, "
          f"{found['stale']} stale values, {found['missed']} false misses, "
          f"{found['other']} other problems")  # fmt: skip
    assert found["stale"] == 0, found["problems"]
    assert found["other"] == 0, found["problems"]
    assert found["missed"] == 0, found["problems"]
    assert found["reads"] > 1000 and found["changes"] > 300


def test_the_churn_check_catches_stale_reads_without_coherence(tmp_path: Path) -> None:
    """The same run with coherence="none" (copies kept until they expire): the check reports
    stale values, so its zero above means something."""
    spec = local_spec("disk", tmp_path / "shared", coherence="none")
    found = run_churn(spec, seconds=1.0)
    print(f"\ncoherence='none': {found['reads']} reads, {found['changes']} changes, "
          f"{found['stale']} stale values")  # fmt: skip
    assert found["other"] == 0, found["problems"]
    assert found["stale"] > 0


def test_processes_creating_a_store_at_once_share_one_generation_table(
    kind: str, tmp_path: Path
) -> None:
    """4 processes open a store nobody has created yet at the same moment: each stamps one
    slot of its generation table, and each sees every other's stamp (one table, not four)."""
    spec = local_spec(kind, tmp_path / "fresh")
    barrier = SPAWN.Barrier(4)
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=workers.table_stamp, args=(spec, me, barrier, out))
             for me in range(4)]  # fmt: skip
    with running(*procs, grace=30):  # each may finish its run first
        seen = dict(out.get(timeout=60) for _ in procs)
    out.close()
    out.join_thread()
    assert [p.exitcode for p in procs] == [0] * 4
    assert seen == {me: [1000, 1001, 1002, 1003] for me in range(4)}


def test_a_store_deleted_and_made_anew_at_its_path_is_read_at_once(
    kind: str, tmp_path: Path, peer: Peer
) -> None:
    """A holds a copy; the store directory is deleted (what a damaged store's error message
    recommends) and B makes a new store at the same path and writes there: A, which never
    touched its store since, reads B's value, not its copy (B scrambled the old table)."""
    spec = local_spec(kind, tmp_path / "replaced")
    a = workers.open_cache(spec)
    try:
        read_into_memory(a, "k", "v1")
        shutil.rmtree(tmp_path / "replaced")
        peer.open(spec)
        peer.call("set", "k", "v2")
        assert a.get("k") == "v2"
    finally:
        workers.close_cache(a)


# -- 3. a state machine over two processes ----------------------------------------------------

START = 1_700_000_000.0
SIDES = st.sampled_from(["A", "B"])
KEYS = st.sampled_from(["a", "b", "c", "é/ü"])
TAG_SETS = st.lists(st.sampled_from(["red", "blue"]), max_size=2, unique=True).map(tuple)
TTLS = st.one_of(st.none(), st.integers(1, 30))
VALUES = st.one_of(
    st.integers(),
    st.text(max_size=6),
    st.integers(0, 255).map(lambda b: bytes([b]) * 40_000),  # a value file of its own on disk
)


class TwoProcesses(RuleBasedStateMachine):
    """Cache A in this process and cache B in process B, each `Cache(MemoryStore(), <one
    store>)` on fake clocks moved together; every change and read on either side, every read
    checked against one model (each call has returned before the next starts)."""

    peer: Peer
    kind: str
    base: Path
    exact_answers: bool
    counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        spec = local_spec(self.kind, self.base / f"example{next(self.counter)}")
        spec["fake_clock"] = START
        self.a = workers.open_cache(spec)
        self.b = self.peer.open(spec)
        self.now = START
        self.model: dict[str, tuple[Any, float | None, tuple[str, ...]]] = {}

    def teardown(self) -> None:
        self.b.ask("close")
        workers.close_cache(self.a)

    def on(self, side: str, name: str, *args: Any, **kwargs: Any) -> Any:
        if side == "A":
            return getattr(self.a, name)(*args, **kwargs)
        return self.b.call(name, *args, **kwargs)

    def answered(self, side: str, call: str, got: Any, expected: Any) -> None:
        """With `exact_answers`: what delete, evict, clear or expire returned (True/False, a
        count) is what the model says."""
        if self.exact_answers:
            right = got in expected if isinstance(expected, range) else got == expected
            assert right, f"{side}: {call} returned {got!r}, not {expected!r}"

    def live(self, key: str) -> bool:
        found = self.model.get(key)
        return found is not None and (found[1] is None or found[1] > self.now)

    def value(self, key: str) -> Any:
        return self.model[key][0] if self.live(key) else MISSING

    def live_keys(self) -> list[str]:
        return sorted(k for k in self.model if self.live(k))

    def expiry(self, ttl: int | None) -> float | None:
        return None if ttl is None else self.now + ttl

    # -- changes --------------------------------------------------------------------------

    @rule(side=SIDES, key=KEYS, value=VALUES, ttl=TTLS, tags=TAG_SETS)
    def set(self, side: str, key: str, value: Any, ttl: int | None, tags: tuple[str, ...]) -> None:
        self.on(side, "set", key, value, ttl=ttl, tags=tags)
        self.model[key] = (value, self.expiry(ttl), tags)

    @rule(side=SIDES, key=KEYS)
    def delete(self, side: str, key: str) -> None:
        self.answered(side, "delete", self.on(side, "delete", key), self.live(key))
        self.model.pop(key, None)

    @rule(side=SIDES, key=KEYS)
    def pop(self, side: str, key: str) -> None:
        assert self.on(side, "pop", key, None) == (
            None if self.value(key) is MISSING else self.value(key)
        )
        self.model.pop(key, None)

    @rule(side=SIDES, key=KEYS, ttl=TTLS)
    def touch(self, side: str, key: str, ttl: int | None) -> None:
        live = self.live(key)
        assert self.on(side, "touch", key, ttl=ttl) == live
        if live:
            value, _old, tags = self.model[key]
            self.model[key] = (value, self.expiry(ttl), tags)

    @rule(side=SIDES, tag=st.sampled_from(["red", "blue", "green"]))
    def evict(self, side: str, tag: str) -> None:
        doomed = [k for k in self.live_keys() if tag in self.model[k][2]]
        self.answered(side, f"evict {tag!r}", self.on(side, "evict", tag), len(doomed))
        for key in doomed:
            del self.model[key]

    @rule(side=SIDES)
    def clear(self, side: str) -> None:
        live = self.live_keys()
        self.answered(side, "clear", self.on(side, "clear"), len(live))
        for key in live:
            del self.model[key]

    @rule(side=SIDES)
    def expire(self, side: str) -> None:
        expired = len(self.model) - len(self.live_keys())  # (some may be gone already)
        self.answered(side, "expire", self.on(side, "expire"), range(expired + 1))
        self.model = {k: self.model[k] for k in self.live_keys()}

    @rule(seconds=st.integers(1, 20))
    def advance(self, seconds: int) -> None:
        self.a._clock.advance(seconds)  # type: ignore[attr-defined]
        self.b.ask("advance", seconds)
        self.now += seconds

    # -- reads ----------------------------------------------------------------------------

    @rule(side=SIDES, key=KEYS)
    def get(self, side: str, key: str) -> None:
        assert self.on(side, "get", key, MISSING) == self.value(key)

    @rule(side=SIDES, keys=st.lists(KEYS, min_size=1, max_size=3, unique=True))
    def get_many(self, side: str, keys: list[str]) -> None:
        got = self.on(side, "get_many", keys, MISSING)
        assert got == {k: self.value(k) for k in keys}

    @rule(side=SIDES, key=KEYS)
    def has(self, side: str, key: str) -> None:
        assert self.on(side, "has", key) == self.live(key)

    @rule(side=SIDES, key=KEYS)
    def info(self, side: str, key: str) -> None:
        info = self.on(side, "info", key)
        if not self.live(key):
            assert info is None
            return
        assert info is not None
        _value, expires_at, tags = self.model[key]
        assert info.tags == tags
        assert (info.expires_at.timestamp() if info.expires_at else None) == expires_at


def run_machine(peer: Peer, kind: str, base: Path, exact: bool, examples: int, steps: int) -> None:
    attributes = {"peer": peer, "kind": kind, "base": base, "exact_answers": exact}
    run_state_machine_as_test(
        type("Machine", (TwoProcesses,), attributes),
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


@pytest.mark.slow
def test_two_processes_read_what_one_model_says(kind: str, tmp_path: Path, peer: Peer) -> None:
    """Hypothesis drives changes and reads on either side of two processes sharing a store:
    every read on either side (get, get_many, has, info; pop's and touch's answers) equals
    the model of all the changes made so far."""
    run_machine(peer, kind, tmp_path, exact=False, examples=60, steps=50)


def test_two_processes_answer_changes_as_one_model_says(
    kind: str, tmp_path: Path, peer: Peer
) -> None:
    """The same, and what delete, evict, clear and expire return (True/False, a count) is
    what the model says too: a copy another process's change already made unservable is no
    entry to count."""
    run_machine(peer, kind, tmp_path, exact=True, examples=50, steps=25)


# -- 4. PULL over S3 -------------------------------------------------------------------------


class CountingProxy(FaultProxy):
    """The fault proxy (no faults), counting the reply bytes it forwards."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.replied = 0

    async def _write(self, link: Any, writer: Any, chunk: bytes, *, upstream: bool) -> bool:
        if not upstream:
            self.replied += len(chunk)
        return await super()._write(link, writer, chunk, upstream=upstream)


def s3_spec(server: Any, url: str, **cache: Any) -> dict[str, Any]:
    return {"store": "s3", "url": url, "options": server.store_options(), "cache": cache}


@pytest.fixture(params=["moto", "seaweed"])
def s3_server(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_s3")


def poll(read: Callable[[], Any], until: Any, since: float, limit: float = 3.0) -> list[Any]:
    """(seconds since `since`, value) of `read()` every 10 ms until it returns `until`."""
    seen: list[Any] = []
    while time.monotonic() - since < limit:
        value = read()
        seen.append((round(time.monotonic() - since, 3), value))
        if value == until:
            break
        time.sleep(0.01)
    return seen


def check_bounded(seen: list[Any], old: Any, new: Any) -> float:
    """The values `poll` saw after a change from `old` to `new`: only those two, `new` last,
    within max_age (+ the requests' time). Returns when `new` was first seen."""
    assert {value for _t, value in seen} <= {old, new}, seen
    assert seen[-1][1] == new, f"still {seen[-1][1]!r} {seen[-1][0]} s after the change"
    first = seen[-1][0]
    assert first <= MAX_AGE + SLACK, seen
    return float(first)


def test_pull_copies_are_stale_for_at_most_max_age(s3_server: Any, peer: Peer) -> None:
    """Over an S3 store, B's overwrite and then B's delete reach A within max_age (0.5 s),
    for a copy of A's own write and for a copy A read from B's: A serves its memory copy
    until then, and never anything but the old value and the new."""
    url = f"s3://{s3_server.new_bucket()}/pull"
    a = workers.open_cache(s3_spec(s3_server, url, max_age=MAX_AGE))
    b = peer.open(s3_spec(s3_server, url, max_age=MAX_AGE))
    try:
        for key in ("own", "theirs"):
            if key == "own":
                read_into_memory(a, key, "v1")
            else:
                b.call("set", key, "v1")
                assert a.get(key) == "v1" and in_memory(a, key)
            b.call("set", key, "v2")
            changed = time.monotonic()
            seen = poll(lambda key=key: a.get(key, ABSENT), "v2", changed)
            first = check_bounded(seen, "v1", "v2")
            old = sum(1 for _t, v in seen if v == "v1")
            b.call("delete", key)
            deleted = time.monotonic()
            seen = poll(lambda key=key: a.get(key, ABSENT), ABSENT, deleted)
            gone = check_bounded(seen, "v2", ABSENT)
            print(f"\n{key}: overwrite seen after {first} s ({old} reads of the old value), "
                  f"delete after {gone} s")  # fmt: skip
    finally:
        workers.close_cache(a)


@pytest.fixture
def counted(moto_s3: Any) -> Iterator[tuple[dict[str, Any], dict[str, Any], CountingProxy]]:
    """(A's spec through a `CountingProxy`, B's spec straight to moto) over one prefix."""
    proxy = CountingProxy(int(moto_s3.endpoint.rsplit(":", 1)[1])).start()
    url = f"s3://{moto_s3.new_bucket()}/counted"
    mine = s3_spec(moto_s3, url, max_age=MAX_AGE)
    mine["options"] = {**mine["options"], "endpoint": f"http://127.0.0.1:{proxy.port}"}
    yield mine, s3_spec(moto_s3, url, max_age=MAX_AGE), proxy
    proxy.stop()


def test_an_unchanged_pull_copy_is_revalidated_without_its_value(
    counted: tuple[dict[str, Any], dict[str, Any], CountingProxy], peer: Peer
) -> None:
    """A 1 MiB value B wrote: A's first read moves it, reads within max_age move nothing,
    each revalidation after max_age moves no value (it is unchanged), and the first read
    after B's overwrite (past max_age) moves the new value."""
    mine, theirs, proxy = counted
    a = workers.open_cache(mine)
    b = peer.open(theirs)
    try:
        value, new = os.urandom(MiB), os.urandom(MiB)

        def moved(key: str) -> tuple[Any, int]:
            before = proxy.replied
            got = a.get(key)
            return got, proxy.replied - before

        b.call("set", "big", value)
        got, first = moved("big")
        assert got == value and first >= MiB
        assert moved("big") == (value, 0)  # a memory hit
        revalidations = []
        for _ in range(3):
            time.sleep(MAX_AGE + 0.1)
            got, by_revalidation = moved("big")
            assert got == value
            revalidations.append(by_revalidation)
            assert moved("big") == (value, 0)  # renewed for another max_age
        assert max(revalidations) < 16 * 1024, revalidations
        b.call("set", "big", new)
        time.sleep(MAX_AGE + 0.1)
        got, after_change = moved("big")
        assert got == new and after_change >= MiB
        print(f"\n1 MiB: first read {first} B, revalidations {revalidations} B, after an "
              f"overwrite {after_change} B")  # fmt: skip
    finally:
        workers.close_cache(a)


def test_a_copy_of_its_own_write_is_revalidated_without_its_value(
    counted: tuple[dict[str, Any], dict[str, Any], CountingProxy],
) -> None:
    """A writes 1 MiB and keeps a copy: once max_age has passed, the unchanged entry is
    revalidated without moving its value, the first time as every later time."""
    mine, _theirs, proxy = counted
    a = workers.open_cache(mine)
    try:
        value = os.urandom(MiB)
        a.set("own", value)
        revalidations = []
        for _ in range(2):
            time.sleep(MAX_AGE + 0.1)
            before = proxy.replied
            assert a.get("own") == value
            revalidations.append(proxy.replied - before)
        print(f"\n1 MiB written by A: revalidations moved {revalidations} B")
        assert max(revalidations) < 16 * 1024, revalidations
    finally:
        workers.close_cache(a)


def test_pull_byte_tier_copies_expire_after_max_age(
    moto_s3: Any, peer: Peer, tmp_path: Path
) -> None:
    """`Cache(MemoryStore(), DiskStore(d), ObjectStore(...), max_age=0.5)`: the disk copy
    expires after max_age, and so what A reads (memory over that disk copy) follows B's
    overwrite within max_age; B is another machine (a disk of its own over the same bucket)."""
    url = f"s3://{moto_s3.new_bucket()}/stack"
    spec_a = {**s3_spec(moto_s3, url, max_age=MAX_AGE), "disk": str(tmp_path / "disk-a")}
    spec_b = {**s3_spec(moto_s3, url, max_age=MAX_AGE), "disk": str(tmp_path / "disk-b")}
    a = workers.open_cache(spec_a)
    b = peer.open(spec_b)
    try:
        written = time.time()
        read_into_memory(a, "own", "v1")
        found = store_of(a, 1).get(a._key("own"))
        assert found is not None and found.expires_at is not None
        assert found.expires_at <= written + MAX_AGE + 0.1  # the disk copy: max_age at most
        b.call("set", "theirs", "v1")
        assert a.get("theirs") == "v1" and in_memory(a, "theirs")
        failures = []
        for key in ("own", "theirs"):
            b.call("set", key, "v2")
            changed = time.monotonic()
            seen = poll(lambda key=key: a.get(key, ABSENT), "v2", changed)
            try:
                check_bounded(seen, "v1", "v2")
            except AssertionError as exc:
                failures.append(f"{key}: {exc}")
        assert not failures, failures
    finally:
        workers.close_cache(a)


# -- coherence="none": copies are kept (documented), for disk and S3 alike ---------------------


def test_without_coherence_a_memory_copy_is_kept_over_a_local_store(
    kind: str, tmp_path: Path, peer: Peer
) -> None:
    """coherence="none" over a DiskStore or FolderStore: A keeps serving its copy after B's
    overwrite and delete (for data immutable by construction), until A drops it."""
    spec = local_spec(kind, tmp_path / "shared", coherence="none")
    a = workers.open_cache(spec)
    b = peer.open(spec)
    try:
        read_into_memory(a, "k", "v1")
        b.call("set", "k", "v2")
        assert a.get("k") == "v1"
        b.call("delete", "k")
        assert a.get("k") == "v1"
        store_of(a).clear()
        assert a.get("k") is None
    finally:
        workers.close_cache(a)


def test_without_coherence_a_pull_copy_outlives_max_age(moto_s3: Any, peer: Peer) -> None:
    """coherence="none" over S3: A serves its copy past max_age after B's overwrite."""
    url = f"s3://{moto_s3.new_bucket()}/none"
    a = workers.open_cache(s3_spec(moto_s3, url, coherence="none", max_age=MAX_AGE))
    b = peer.open(s3_spec(moto_s3, url, coherence="none", max_age=MAX_AGE))
    try:
        read_into_memory(a, "k", "v1")
        b.call("set", "k", "v2")
        time.sleep(MAX_AGE * 2)
        assert a.get("k") == "v1"
        assert b.call("get", "k") == "v2"
    finally:
        workers.close_cache(a)


# -- 5. a Dask cluster ------------------------------------------------------------------------


@pytest.mark.slow
def test_dask_workers_read_a_write_made_on_another_worker(tmp_path: Path) -> None:
    """A memory-over-disk cache pickled to 2 worker processes (one copy per worker, reused by
    its tasks): both read v1 into their memory tier, a task on worker 1 writes v2, then a
    task on each worker reads v2."""
    distributed = pytest.importorskip("distributed")
    cache = Cache(MemoryStore(), DiskStore(tmp_path / "shared"))
    cache.set("k", "v1")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=2, host="127.0.0.1",
            dashboard_address=None, scheduler_port=0, silence_logs=50,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        addresses = sorted(client.scheduler_info()["workers"])
        assert len(addresses) == 2
        shared = client.scatter(cache, broadcast=True, hash=False)

        def on_each(func: Callable[..., Any], *args: Any) -> list[Any]:
            futures = [
                client.submit(func, shared, *args, workers=[w], pure=False,
                              allow_other_workers=False)
                for w in addresses
            ]  # fmt: skip
            return list(client.gather(futures))

        first = on_each(workers.dask_read, "k")
        again = on_each(workers.dask_read, "k")
        assert [r["value"] for r in first + again] == ["v1"] * 4
        assert [r["memory_hit"] for r in again] == [True, True]  # in each worker's memory
        assert len({r["pid"] for r in first}) == 2
        assert [r["cache"] for r in first] == [r["cache"] for r in again]  # one cache each
        writer = client.submit(workers.dask_write, shared, "k", "v2", workers=[addresses[1]],
                               pure=False, allow_other_workers=False)  # fmt: skip
        assert writer.result() == first[1]["pid"]
        after = on_each(workers.dask_read, "k")
        assert [r["value"] for r in after] == ["v2", "v2"]
        assert after[0]["memory_hit"] is False  # worker 0's copy was refused, read from disk
    assert cache.get("k") == "v2"
    cache.close()
    store_of(cache, 1).close()


# -- 6. options ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["always", "", "AUTO", None, 1, ["auto"]])
def test_a_bad_coherence_is_a_one_sentence_config_error(mode: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Cache(MemoryStore(), tmp_path / "d", coherence=mode)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("coherence must be 'auto', 'pull' or 'none', not ")
    assert repr(mode) in message and "\n" not in message and ". " not in message


@pytest.mark.parametrize(
    "max_age", [0, -1, 0.0, -0.0, math.nan, math.inf, -math.inf, "60", True, None, [1]]
)
def test_a_bad_max_age_is_a_one_sentence_config_error(max_age: object, tmp_path: Path) -> None:
    for mode in ("auto", "none"):
        with pytest.raises(ConfigError) as caught:
            Cache(MemoryStore(), tmp_path / "d", coherence=mode, max_age=max_age)  # type: ignore[arg-type]
        message = str(caught.value)
        assert message.startswith("max_age must be a positive number of seconds, not ")
        assert "\n" not in message and ". " not in message


@pytest.mark.parametrize("mode", ["auto", "pull", "none"])
@pytest.mark.parametrize("max_age", [0.001, 1, 60.0, 10**9])
def test_good_options_open(mode: str, max_age: float, tmp_path: Path) -> None:
    with Cache(MemoryStore(), tmp_path / "d", coherence=mode, max_age=max_age) as cache:
        cache.set("k", 1)
        assert cache.get("k") == 1


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="POSIX shared memory in /dev/shm")
def test_the_table_of_a_deleted_store_is_swept(kind: str, tmp_path: Path) -> None:
    """A store's generation table names its root; once the root is deleted, `sweep` (run by
    the next process to open a store, at most once an hour) scrambles it for whoever still
    maps it, then removes it, and leaves the tables of live stores alone."""
    from tiers._stores._generations import sweep

    gone = workers.open_cache(local_spec(kind, tmp_path / "gone"))
    kept = workers.open_cache(local_spec(kind, tmp_path / "kept"))
    try:
        gone.set("k", "v")
        assert gone.get("k") == "v"
        tables = {}
        for name in ("gone", "kept"):
            marker = next(p for p in (tmp_path / name).iterdir() if "generations.json" in p.name)
            tables[name] = Path("/dev/shm") / f"tiers-{json.loads(marker.read_text())['table']}"
            assert tables[name].exists()
        shutil.rmtree(tmp_path / "gone")
        assert sweep() >= 1
        assert not tables["gone"].exists() and tables["kept"].exists()
        slot = store_of(gone)._data[gone._key("k")]
        assert slot.gens.view[slot.gslot] != slot.gstamp  # scrambled: the copy is not served
    finally:
        workers.close_cache(gone)
        workers.close_cache(kept)
