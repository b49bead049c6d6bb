"""Freshness across processes (docs/memoize.md#freshness): ``stale=`` serves the old value
while one caller among all processes refreshes it in the background, a refresher killed with
SIGKILL loses its lease to another process's refresh, a failing refresh keeps serving the stale
value until it expires, and ``early=True`` (XFetch) refreshes hot values before they expire.

Every child runs tests/_freshness_workers.py, started with ``spawn`` (threads and ``fork`` do
not mix), over ``Cache(MemoryStore(), <shared tier>)``: a DiskStore, a redis-server or an S3
bucket on moto. Every child has a timeout and none outlives its test.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from tests._processes import running
from tiers import Cache, DiskStore

from . import _freshness_workers as workers

SPAWN = multiprocessing.get_context("spawn")
ROUNDS = 2
FAST = 0.1  # seconds: a call served from the cache, never one waiting for the computation


def pace(spec: dict[str, Any]) -> tuple[float, float]:
    """(seconds a computation takes, the longest a call served a cached value may take).
    Over S3 a stale call may read the server, moto in this process (2 cores shared with 4
    processes): concurrent reads of a key drop each other's memory copies, so the 32 callers
    of a round read S3 at once. The computation is longer there, so that the bound still
    tells a served call from one that waited for it."""
    return (1.0, 0.5) if spec["kind"] == "s3" else (0.4, FAST)


pytestmark = pytest.mark.slow


@pytest.fixture(params=workers.KINDS)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A shared tier, described so that a child process can open it too."""
    kind = request.param
    if kind == "disk":
        path = tmp_path / "shared"
        DiskStore(path).close()  # created up front: no child races to create it
        return {"kind": kind, "target": str(path), "options": {}}
    if kind == "redis":
        return {"kind": kind, "target": request.getfixturevalue("redis_url"), "options": {}}
    s3 = request.getfixturevalue("moto_s3")
    return {"kind": kind, "target": f"s3://{s3.new_bucket()}/c/", "options": s3.store_options()}


def joined(procs: Sequence[BaseProcess], timeout: float = 60) -> None:
    for p in procs:
        p.join(timeout=timeout)
        assert p.exitcode == 0, f"a worker exited with {p.exitcode}"


def prime(job: workers.Job) -> float:
    """Compute generation 1 in this process; when it was stored (wall time, at the latest)."""
    with workers.open_cache(job.spec) as cache:
        assert workers.caller(cache, job)() == {"gen": 1, "by": os.getpid()}
    return time.time()


def stored(reader: Cache, key: str, gen: int, record: Path, timeout: float = 10) -> float:
    """Wait until the shared tier holds generation `gen`; when it was seen (wall time). The
    shared tier is asked only once the computation returned (the record says so): asking
    an S3 server on moto, in this process, takes CPU from the callers."""
    deadline = time.monotonic() + timeout
    while not workers.finished(record, gen):
        assert time.monotonic() < deadline, f"generation {gen} was not computed in {timeout} s"
        time.sleep(0.01)
    while True:
        value = reader.get(key)
        if value is not None and value["gen"] >= gen:
            assert value["gen"] == gen, f"generation {value['gen']} where {gen} was due"
            return time.time()
        assert time.monotonic() < deadline, f"generation {gen} was not stored in {timeout} s"
        time.sleep(0.01)


def sleep_until(at: float) -> None:
    time.sleep(max(0.0, at - time.time()))


def play_rounds(
    job: workers.Job, barrier: Any, procs: Sequence[BaseProcess], outs: list[Path]
) -> list[dict[str, Any]]:
    """Run `crowd` / `crowd_async` children: prime the key, then start each round once the
    value is stale; each child's results."""
    with running(*procs), workers.open_reader(job.spec) as reader:
        key = workers.stored_key(reader, job.api)
        barrier.wait(60)  # every caller is ready
        at = prime(replace(job, role="prime", work=0.05))
        barrier.wait(60)  # primed: each caller makes one (fresh) call
        for r in range(1, ROUNDS + 1):
            if r > 1:
                at = stored(reader, key, r, Path(job.record))
            sleep_until(at + job.ttl + 0.1)  # past fresh_until (which was set before `at`)
            barrier.wait(60)
        stored(reader, key, ROUNDS + 1, Path(job.record))
        joined(procs)
    return [json.loads(out.read_text()) for out in outs]


def check_rounds(record: Path, results: list[dict[str, Any]], callers: int, bound: float) -> None:
    """Round 0 (warming the memory tiers): every call got generation 1. Each round past
    the ttl: every call got the previous generation at once, one computation ran (in
    a background refresh), and every caller then saw the next generation land."""
    for result in results:
        assert result["errors"] == []
    calls = [c for result in results for c in result["calls"]]
    for r in range(ROUNDS + 1):
        got = [(gen, seconds) for _, rnd, gen, seconds in calls if rnd == r]
        assert len(got) == callers, f"round {r}: {len(got)} calls of {callers}"
        assert {gen for gen, _ in got} == {max(r, 1)}, f"round {r}: {sorted(got)}"
        slowest = max(seconds for _, seconds in got)
        assert r == 0 or slowest < bound, f"round {r}: a call took {slowest:.3f} s"
    landed = [c for result in results for c in result["landed"]]
    assert len(landed) == callers * ROUNDS
    for _, r, seen, _ in landed:
        assert seen[-1] == r + 1 and set(seen) <= {r, r + 1}, f"round {r}: saw {seen}"
    rows = workers.computations(record)
    starts = [(role, pid) for event, role, pid, _ in rows if event == "start"]
    assert len(starts) == 1 + ROUNDS, f"{len(starts)} computations for {ROUNDS} rounds: {rows}"
    assert starts[0] == ("prime", os.getpid())
    assert sum(result["stats"]["refreshes"] for result in results) == ROUNDS
    assert sum(result["stats"]["stale_served"] for result in results) >= callers * ROUNDS


# -- (1) one recomputation per expiry; every caller gets the stale value ----------------------


@pytest.mark.parametrize(
    ("spec", "api"),
    [(kind, "get_or_set") for kind in workers.KINDS] + [("disk", "memoize")],
    indirect=["spec"],
)
def test_each_expiry_is_refreshed_once_while_every_caller_gets_the_stale_value(
    spec: dict[str, Any], api: str, tmp_path: Path
) -> None:
    """4 processes x 8 threads, ttl 1 s, stale 30 s, a 0.4 s computation: in each of 2
    rounds, all 32 threads call at once past the ttl and get the previous generation at once
    (under 0.1 s; see `pace` for S3); one computation runs among them; the next generation
    lands everywhere."""
    processes, threads = 4, 8
    record = tmp_path / "computations"
    work, bound = pace(spec)
    job = workers.Job(spec, str(record), api=api, work=work)
    barrier = SPAWN.Barrier(processes * threads + 1)
    outs = [tmp_path / f"out{i}.json" for i in range(processes)]
    procs = [
        SPAWN.Process(target=workers.crowd, args=(job, barrier, threads, ROUNDS, str(out)))
        for out in outs
    ]
    results = play_rounds(job, barrier, procs, outs)
    check_rounds(record, results, processes * threads, bound)


# -- (4) the same with coroutines ------------------------------------------------------------


@pytest.mark.parametrize("spec", ["disk", "redis"], indirect=True)
def test_coroutines_in_processes_get_the_stale_value_while_one_refreshes(
    spec: dict[str, Any], tmp_path: Path
) -> None:
    """2 processes x 8 coroutines calling ``get_or_set_async`` with an async computation
    (its refresh is a task of the loop): as above."""
    processes, coroutines = 2, 8
    record = tmp_path / "computations"
    work, bound = pace(spec)
    job = workers.Job(spec, str(record), work=work)
    barrier = SPAWN.Barrier(processes + 1)
    outs = [tmp_path / f"out{i}.json" for i in range(processes)]
    procs = [
        SPAWN.Process(target=workers.crowd_async, args=(job, barrier, coroutines, ROUNDS, str(out)))
        for out in outs
    ]
    results = play_rounds(job, barrier, procs, outs)
    check_rounds(record, results, processes * coroutines, bound)


# -- (2) a refresher killed with SIGKILL ------------------------------------------------------


@pytest.mark.parametrize("spec", ["disk", "redis"], indirect=True)
def test_a_killed_refresher_loses_its_lease_to_another_process(
    spec: dict[str, Any], tmp_path: Path
) -> None:
    """A's background refresh (lease 2 s) computes for ever; A is killed with SIGKILL. B
    keeps getting the stale value at once, and its own refresh runs once the dead lease
    ends (not before), after which B gets its value."""
    lease = 2.0
    record, go_a, go_b = tmp_path / "computations", tmp_path / "go-a", tmp_path / "go-b"
    out_a, out_b = tmp_path / "a.json", tmp_path / "b.json"
    job = workers.Job(spec, str(record), lease=lease, work=0.1)
    a = SPAWN.Process(
        target=workers.refresh_and_hang, args=(replace(job, role="A"), str(go_a), str(out_a))
    )
    b = SPAWN.Process(
        target=workers.keep_calling, args=(replace(job, role="B"), str(go_b), str(out_b))
    )
    with running(a, b):
        at = prime(replace(job, role="prime"))
        sleep_until(at + job.ttl + 0.1)
        go_a.touch()
        deadline = time.monotonic() + 30
        while not (
            out_a.exists()
            and any(row[:2] == ("start", "A") for row in workers.computations(record))
        ):
            assert a.is_alive(), f"A died (exit code {a.exitcode})"
            assert time.monotonic() < deadline, "A's refresh did not start within 30 s"
            time.sleep(0.005)
        assert a.pid is not None
        os.kill(a.pid, signal.SIGKILL)
        killed = time.time()
        go_b.touch()
        a.join(timeout=10)
        assert a.exitcode == -signal.SIGKILL
        joined([b], timeout=30)
    assert json.loads(out_a.read_text())["value"] == {"gen": 1, "by": os.getpid()}
    rows = workers.computations(record)
    assert [(event, role) for event, role, _, _ in rows] == [
        ("start", "prime"), ("done", "prime"), ("start", "A"), ("start", "B"), ("done", "B"),
    ], rows  # fmt: skip
    b_started = rows[3][3]
    assert lease * 2 / 3 - 0.1 < b_started - killed < lease + 1.5, (
        f"B's refresh started {b_started - killed:.2f} s after the kill (lease {lease} s)"
    )
    calls = json.loads(out_b.read_text())["calls"]
    mine = {"gen": 3, "by": b.pid}
    first = next(i for i, (_, value, _) in enumerate(calls) if value == mine)
    assert first > 0 and all(value == mine for _, value, _ in calls[first:])
    stale = calls[:first]
    assert all(value == {"gen": 1, "by": os.getpid()} for _, value, _ in stale), stale
    slowest = max(seconds for _, _, seconds in stale)
    assert slowest < FAST, f"B waited {slowest:.3f} s for a stale value"
    with workers.open_reader(spec) as reader:
        assert reader.get(workers.KEY) == mine


# -- (3) a failing refresh ----------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["disk", "s3"], indirect=True)
def test_a_failing_refresh_serves_the_stale_value_until_it_expires(
    spec: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ttl 1 s, stale 1.5 s over memory + the shared tier: while refreshes raise, callers get
    the stale value at once (failures logged, counted, retried after a 1 s backoff); once
    ttl + stale passed, a call waits for the computation and raises its error (nothing is
    cached); once the computation works again, it is computed."""
    record, flag = tmp_path / "computations", tmp_path / "fail"
    stale = 1.5
    job = workers.Job(spec, str(record), stale=stale, work=0.1, fail_flag=str(flag))
    first = {"gen": 1, "by": os.getpid()}
    with workers.open_cache(spec) as cache, caplog.at_level(logging.WARNING, logger="tiers"):
        call = workers.caller(cache, job)
        assert call() == first
        at = time.time()
        flag.touch()
        sleep_until(at + job.ttl + 0.05)
        while time.time() < at + job.ttl + 1.3:  # stale: served, refreshed in vain
            value, seconds = workers.timed(call)
            assert value == first and seconds < FAST, (value, seconds)
            time.sleep(0.02)
        stats = cache.stats()
        expired = at + job.ttl + stale
        sleep_until(expired + 0.1)
        with pytest.raises(workers.RefreshRefused):
            call()  # computes (and fails) itself
        assert cache.get(workers.KEY) is None
        flag.unlink()
        assert call() == {"gen": 2, "by": os.getpid()}
    rows = workers.computations(record)
    events = [event for event, _, _, _ in rows]
    # refreshes at ttl and after the 1 s backoff; then the caller that found nothing
    assert events == ["start", "done", "fail", "fail", "fail", "start", "done"], events
    assert rows[3][3] - rows[2][3] >= 1.0, "the retry did not wait for the backoff"
    assert rows[4][3] >= expired
    assert stats.refresh_errors == 2 and stats.refreshes == 2
    assert stats.stale_served >= 40
    warnings = [r for r in caplog.records if "refreshing 'fresh' failed" in r.getMessage()]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    assert "RefreshRefused: the fail flag is up" in warnings[0].getMessage()


# -- (5) early refreshes (XFetch) ---------------------------------------------------------------


@pytest.mark.parametrize("spec", ["disk"], indirect=True)
def test_early_refreshes_keep_dense_callers_from_ever_waiting(
    spec: dict[str, Any], tmp_path: Path
) -> None:
    """4 processes x 4 threads call a memoized function (ttl 1 s, early=True, a 0.2 s
    computation) every 10 ms for 3 s: no call waits for a computation (XFetch refreshed
    each value before it expired), and the computations never overlap (one at a time)."""
    processes, threads, seconds = 4, 4, 3.0
    record = tmp_path / "computations"
    job = workers.Job(spec, str(record), api="memoize", stale=None, early=True, work=0.2)
    barrier = SPAWN.Barrier(processes * threads + 1)
    outs = [tmp_path / f"out{i}.json" for i in range(processes)]
    procs = [
        SPAWN.Process(target=workers.hammer, args=(job, barrier, threads, seconds, str(out)))
        for out in outs
    ]
    with running(*procs):
        barrier.wait(60)
        prime(replace(job, role="prime"))
        barrier.wait(60)
        joined(procs)
    results = [json.loads(out.read_text()) for out in outs]
    for result in results:
        assert result["errors"] == []
        assert result["slowest"] < FAST, f"calls waited: {result['slow']}"
    rows = workers.computations(record)
    starts = [row for row in rows if row[0] == "start"]
    assert sum(result["stats"]["refreshes"] for result in results) == len(starts) - 1
    # Dense callers make XFetch pick a value about work * ln(calls/s * work) = 1.15 s before
    # it expires: beyond the ttl, so a refresh may follow each store at once. What keeps
    # this from being a stampede is that the refreshes run one at a time, among processes.
    assert len(starts) <= seconds / job.work + 2, f"{len(starts)} computations in {seconds} s"
    if rows[-1][0] == "start":  # the children ended in the middle of a refresh
        rows.pop()
    events = [(event, pid) for event, _, pid, _ in rows]
    assert events == [(e, pid) for _, pid in events[::2] for e in ("start", "done")], (
        f"computations overlapped: {rows}"
    )


# -- a refresh under the lock and a memory tier behind the shared tier -------------------------


@pytest.mark.parametrize("spec", workers.KINDS, indirect=True)
def test_a_refresh_does_not_recompute_what_another_process_refreshed(
    spec: dict[str, Any], tmp_path: Path
) -> None:
    """Two caches, each with its own memory tier (as two processes). A refreshes the stale
    value; B's memory tier may still hold the old copy (over S3, for up to max_age), so B
    serves it and starts a refresh, which takes the now free lock: it must find the newer
    value in the shared tier and leave it, not compute a third generation."""
    record = tmp_path / "computations"
    # ttl: the second generation must stay fresh through B's calls below, also on a loaded
    # machine (at 0.5 s it expired during them once, and B then refreshed it, rightly)
    job = workers.Job(spec, str(record), ttl=2.0, work=0.1)
    with (
        workers.open_cache(spec) as a,
        workers.open_cache(spec) as b,
        workers.open_reader(spec) as reader,
    ):
        call_a = workers.caller(a, replace(job, role="A"))
        call_b = workers.caller(b, replace(job, role="B"))
        assert call_a()["gen"] == 1
        assert call_b()["gen"] == 1  # now in B's memory tier too
        time.sleep(job.ttl + 0.05)
        assert call_a()["gen"] == 1  # stale: A refreshes it
        stored(reader, workers.KEY, 2, record)
        time.sleep(0.1)  # (over Redis, B's memory copy is dropped by then)
        seen = []
        for _ in range(8):
            seen.append(call_b()["gen"])
            time.sleep(0.05)
        b_refreshes = b.stats().refreshes
    starts = [role for event, role, _, _ in workers.computations(record) if event == "start"]
    assert starts == ["A", "A"], f"computations: {starts}; B saw generations {seen}"
    assert b_refreshes == 0 and set(seen) <= {1, 2}
