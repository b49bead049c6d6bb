"""Single-flight leases across processes: fencing, lock-tier outages, GIL-bound factories.

A lock holder is a process of its own (`tests/_lease_workers.py`) on one tier (disk, Redis,
S3), paused with SIGSTOP or busy holding the GIL while this process plays its successor.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._lease_workers import open_cache
from tiers import Cache

ROOT = Path(__file__).resolve().parent.parent
KINDS = ["disk", "redis", "s3"]


@pytest.fixture(params=KINDS)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """One tier that takes locks, described so that a child process can open it too."""
    kind = request.param
    if kind == "disk":
        return {"kind": kind, "target": str(tmp_path / "cache"), "options": {}}
    if kind == "redis":
        return {"kind": kind, "target": request.getfixturevalue("redis_url"), "options": {}}
    s3 = request.getfixturevalue("moto_s3")
    return {"kind": kind, "target": f"s3://{s3.new_bucket()}/c/", "options": s3.store_options()}


class Holder:
    """`get_or_set` of "k" in a child process, computing for a while once it has the lock."""

    def __init__(self, spec: dict[str, Any], tmp: Path, *, lease: float, compute: Any) -> None:
        self.started = tmp / "started"
        order = {**spec, "key": "k", "lease": lease, "compute": compute, "value": "A",
                 "started": str(self.started)}  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests._lease_workers", json.dumps(order)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.started.exists():  # it holds the lock once its factory runs
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "the holder never started computing"
            time.sleep(0.01)

    def result(self) -> tuple[dict[str, Any], str]:
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return json.loads(out), err

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.kill()


def test_a_paused_holder_never_overwrites_its_successor(
    spec: dict[str, Any], tmp_path: Path, holders: list[Holder]
) -> None:
    """The holder (lease 1 s) is paused 2+ s; this process takes over once the lease ran out
    and stores "B"; the holder, resumed, returns its "A" to its caller but never stores it."""
    holder = Holder(spec, tmp_path, lease=1.0, compute=("sleep", 0.5))
    holders.append(holder)
    os.kill(holder.proc.pid, signal.SIGSTOP)
    try:
        with open_cache(spec) as cache:
            began = time.monotonic()
            assert cache.get_or_set("k", lambda: "B", lease=5) == "B"
            assert time.monotonic() - began > 0.4  # it waited for the holder's lease
    finally:
        os.kill(holder.proc.pid, signal.SIGCONT)
    out, err = holder.result()
    assert out["value"] == "A" and out["lost_leases"] == 1
    assert "was not stored" in err
    with open_cache(spec) as fresh:
        assert fresh.get("k") == "B"


def test_a_factory_holding_the_gil_past_its_lease_does_not_publish(
    spec: dict[str, Any], tmp_path: Path, holders: list[Holder]
) -> None:
    """The holder's factory holds the GIL 2 s (its renewer cannot run) with a 1 s lease: the
    successor that took over keeps its value, and the holder says why it did not store."""
    holder = Holder(spec, tmp_path, lease=1.0, compute=("gil", 2.0))
    holders.append(holder)
    with open_cache(spec) as cache:
        assert cache.get_or_set("k", lambda: "B", lease=5) == "B"
    out, err = holder.result()
    assert out["value"] == "A" and out["lost_leases"] == 1
    assert "was not stored" in err and "GIL" in err
    with open_cache(spec) as fresh:
        assert fresh.get("k") == "B"


def _race(url: str, callers: int, hold: float, during: Any) -> tuple[list[str], list[Any]]:
    """`callers` caches (one flight each, as in separate processes) call get_or_set of one
    cold key over `url`; the first computes for `hold` s; `during()` runs meanwhile. Returns
    what was computed and each cache's tier counters."""
    computed: list[str] = []
    caches = [Cache(url, serializer="json") for _ in range(callers)]
    got: list[Any] = [None] * callers

    def call(i: int) -> None:
        def compute() -> str:
            computed.append(f"by {i}")
            time.sleep(hold)
            return f"by {i}"

        got[i] = caches[i].get_or_set("k", compute, lease=10)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    deadline = time.monotonic() + 10
    while not computed and time.monotonic() < deadline:
        time.sleep(0.005)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, callers)]
    for thread in others:
        thread.start()
    time.sleep(0.3)  # the others now wait for the lock
    during()
    for thread in [first, *others]:
        thread.join(60)
    counters = [cache.stats().tiers[0] for cache in caches]
    for cache in caches:
        cache.close()
    assert all(value is not None for value in got), got
    return computed, counters


def test_waiters_ride_out_a_frozen_lock_tier(redis_process: Any) -> None:
    """Redis freezes 1.5 s while one caller computes and three wait: the waiters retry within
    the lease instead of computing; one computation, and everyone gets its value."""

    def freeze() -> None:
        redis_process.freeze()
        time.sleep(1.5)
        redis_process.thaw()

    computed, counters = _race(redis_process.url, 4, 2.5, freeze)
    assert computed == ["by 0"]
    assert sum(c.lock_fallbacks for c in counters) == 0


def test_lock_tier_restarted_empty_costs_one_more_computation_not_three(
    redis_process: Any,
) -> None:
    """Redis restarts empty while one caller computes and three wait: one waiter takes the
    new lock and computes; the first holder's lease is gone, so only the second value is
    stored and every waiter gets it."""
    computed, counters = _race(redis_process.url, 4, 2.0, redis_process.restart_empty)
    assert len(computed) == 2, computed
    assert sum(c.lost_leases for c in counters) == 1
    with Cache(redis_process.url, serializer="json") as fresh:
        assert fresh.get("k") == computed[1]


def test_a_lock_tier_down_for_a_whole_lease_is_computed_around(
    redis_process: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """When the lock cannot be had for a whole lease, the caller computes without it (the
    documented fallback), counted in lock_fallbacks and logged."""
    with Cache(redis_process.url, serializer="json") as cache:
        redis_process.freeze()
        try:
            with caplog.at_level(logging.WARNING, logger="tiers"):
                began = time.monotonic()
                assert cache.get_or_set("k", lambda: 1, lease=1.5) == 1
                waited = time.monotonic() - began
            assert 1.5 <= waited < 10
            assert cache.stats().tiers[0].lock_fallbacks == 1
            assert "computing without it" in caplog.text
            began = time.monotonic()  # the tier now known down: no wait
            assert cache.get_or_set("k2", lambda: 2, lease=1.5) == 2
            assert time.monotonic() - began < 1.5
            assert cache.stats().tiers[0].lock_fallbacks == 2
        finally:
            redis_process.thaw()


def test_server_time_corrects_only_what_it_can_measure(caplog: pytest.LogCaptureFixture) -> None:
    """An offset within the measurement's uncertainty is 0; a larger one converts deadlines
    both ways and is logged once with its size; a test clock is never measured."""
    from tiers._clock import SYSTEM_CLOCK
    from tiers._stores._server_time import ServerTime
    from tiers.testing import FakeClock

    server = ServerTime("the server", SYSTEM_CLOCK)
    assert server.due()
    server.measured(100.0, 100.2, 99.6, 100.6)  # one-second resolution around local time
    assert server.offset == 0.0 and not server.due()
    with caplog.at_level(logging.WARNING, logger="tiers"):
        server.measured(100.0, 100.2, 160.0, 161.0)  # the server is a minute ahead
        server.measured(100.0, 100.2, 160.1, 161.1)  # (not logged again)
    assert 59 < server.offset < 62
    assert server.to_local(server.to_server(1000.0)) == pytest.approx(1000.0)
    assert caplog.text.count("behind the server") == 1
    server.clock = FakeClock()
    assert server.offset == 0.0 and not server.due()


def test_a_lock_refused_for_good_is_not_waited_for(tmp_path: Path) -> None:
    """A permission error does not heal within a lease: the caller computes at once without
    the lock (counted), instead of waiting a whole lease on every miss."""
    from tiers import DiskStore
    from tiers.errors import StorePermissionError

    class Refusing(DiskStore):
        def acquire_lock(self, name: str, token: str, lease: float) -> bool:
            raise StorePermissionError("not allowed to write locks here")

    with Cache(Refusing(tmp_path / "d"), serializer="json") as cache:
        began = time.monotonic()
        assert cache.get_or_set("k", lambda: 1, lease=30) == 1
        assert time.monotonic() - began < 5
        assert cache.stats().tiers[0].lock_fallbacks == 1
