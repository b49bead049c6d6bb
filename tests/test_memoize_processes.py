"""Cross-process single-flight of `get_or_set` and `memoize` over a shared store
(docs/architecture.md#6-invariants-per-layer): one computation among processes times threads on
a cold key, and a lock holder killed with SIGKILL loses its lease to a caller in another process.

The child processes run tests/_memo_workers.py, started with ``spawn`` (threads and ``fork``
do not mix). Every child has a timeout and none outlives its test.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

import tiers
from tests._processes import running

from . import _memo_workers as workers

SPAWN = multiprocessing.get_context("spawn")
PROCESSES, THREADS = 4, 8

pytestmark = pytest.mark.slow


@pytest.fixture(params=workers.STORE_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=workers.APIS)
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def shared(kind: str, tmp_path: Path) -> str:
    """The shared store's path, created up front (so no child races to create it)."""
    path = tmp_path / "store"
    workers.open_store(kind, str(path)).close()
    return str(path)


def wait_for(path: Path, proc: BaseProcess, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.is_alive(), f"{what}: the process died (exit code {proc.exitcode})"
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.01)


def test_processes_and_threads_on_a_cold_key_compute_once(
    kind: str, api: str, shared: str, tmp_path: Path
) -> None:
    record = tmp_path / "computations"
    barrier = SPAWN.Barrier(PROCESSES)
    outs = [tmp_path / f"out{i}.json" for i in range(PROCESSES)]
    procs = [
        SPAWN.Process(
            target=workers.crowd,
            args=(kind, api, shared, str(record), str(out), barrier, THREADS),
        )
        for out in outs
    ]
    with running(*procs):
        for p in procs:
            p.join(timeout=90)
            assert p.exitcode == 0, f"a worker exited with {p.exitcode}"
    lines = workers.read_lines(record)
    assert len(lines) == 1, f"{len(lines)} computations among {PROCESSES}x{THREADS}: {lines}"
    leader = int(lines[0].split()[0])
    assert leader in {p.pid for p in procs}
    expected = {"value": 42, "by": leader}
    for out in outs:
        assert json.loads(out.read_text()) == [expected] * THREADS
    with tiers.Cache(workers.open_store(kind, shared)) as reader:  # stored for everyone
        key = (
            "shared" if api == "get_or_set" else reader.memoize(name="shared")(lambda x: x).key(21)
        )
        assert reader.get(key) == expected


def test_a_killed_lock_holder_loses_its_lease_to_another_process(
    kind: str, api: str, shared: str, tmp_path: Path
) -> None:
    record, started = tmp_path / "computations", tmp_path / "started"
    waiting, out = tmp_path / "waiting", tmp_path / "taker.json"
    holder = SPAWN.Process(target=workers.hold, args=(kind, api, shared, str(record), str(started)))
    taker = SPAWN.Process(
        target=workers.take_over,
        args=(kind, api, shared, str(record), str(started), str(waiting), str(out)),
    )
    with running(holder, taker):
        wait_for(started, holder, "the holder starting its computation")
        wait_for(waiting, taker, "the taker calling the key")
        time.sleep(1.6)  # past the 1 s lease: a live holder keeps renewing it
        assert not out.exists(), "the taker got a value while the holder was computing"
        assert [line.split()[1] for line in workers.read_lines(record)] == ["holder"], (
            "the taker computed while a live holder held the lease"
        )
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.time()
        holder.join(timeout=10)
        assert holder.exitcode == -signal.SIGKILL
        taker.join(timeout=20)
        assert taker.exitcode == 0, (
            "the taker did not finish within 20 s of the kill (hung on the dead lease?)"
            if taker.exitcode is None
            else f"the taker exited with {taker.exitcode}"
        )
    lines = [line.split() for line in workers.read_lines(record)]
    assert [(int(pid), role) for pid, role, _ in lines] == [
        (holder.pid, "holder"),
        (taker.pid, "taker"),
    ], "the factory must have run in the taker, once"
    result = json.loads(out.read_text())
    assert result["value"] == {"value": 42, "by": taker.pid}
    assert result["returned_at"] - killed < 10
