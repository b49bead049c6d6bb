"""Faults in the C library calls a store's process makes (libfiu's POSIX preload, ``fiu-run
-x``), `fork()` with a store open, and readers killed with SIGKILL in the middle of a read.

libfiu: for each failure point (write, pwrite, read, pread and their short ``/reduce``
forms, fsync, fdatasync, open, close, ftruncate, opendir/readdir, mmap) a worker process
(tests/_faultfs/fiu_worker.py) first counts the point's calls over `workload.STEPS`, then
replays the workload once per chosen call with exactly that call failing. It checks what
tests/test_io_faults.py checks (no crash, only `TiersError` subclasses naming the problem,
no wrong value, the old value kept by a failed write, the store working after the fault),
and a fresh process reopens each store. libfiu wraps the path-based calls (``open``,
``rename``, ``unlink``) but not the ``*at`` ones the stores mostly use: the FUSE tests cover
those.
"""

from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests._faultfs import workload
from tests._faultfs.fixture import faultfs, unavailable  # noqa: F401 (a fixture)
from tests._faultfs.mount import FaultMount

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="libfiu, fork: Linux only")

WORKER = Path(__file__).resolve().parent / "_faultfs" / "fiu_worker.py"
PER_POINT = int(os.environ.get("TIERS_FIU_PER_POINT", "10"))  # calls failed per point
POINTS: dict[str, tuple[str, ...]] = {
    "posix/io/rw/write": ("EIO", "ENOSPC", "EDQUOT"),
    "posix/io/rw/write/reduce": ("short",),
    "posix/io/rw/pwrite": ("EIO", "ENOSPC"),
    "posix/io/rw/pwrite/reduce": ("short",),
    "posix/io/rw/read": ("EIO",),
    "posix/io/rw/read/reduce": ("short",),
    "posix/io/rw/pread": ("EIO",),
    "posix/io/rw/pread/reduce": ("short",),
    "posix/io/sync/fsync": ("EIO", "ENOSPC"),
    "posix/io/sync/fdatasync": ("EIO",),
    "posix/io/oc/open": ("EIO", "ENOSPC", "EROFS"),
    "posix/io/oc/close": ("EIO",),
    "posix/io/rw/ftruncate": ("EIO", "ENOSPC"),
    "posix/io/dir/fdopendir": ("EIO",),
    "posix/io/dir/opendir": ("EIO",),
    "posix/io/dir/readdir": ("EIO",),
    "posix/mm/mmap": ("ENOMEM",),
}
FORK = multiprocessing.get_context("fork")


def _fiu_run() -> str:
    found = shutil.which("fiu-run")
    if found is None or not Path("/usr/lib/fiu/fiu_posix_preload.so").exists():
        unavailable("libfiu is missing (Debian: apt-get install libfiu0 fiu-utils)")
    return str(found)


def _work(fiu_run: str, kind: str, base: Path, plan: list[dict[str, Any]], name: str) -> dict[
    int, dict[str, Any]
]:  # fmt: skip
    """Run `plan` in libfiu workers (a new one after each crash); results by run index."""
    base.mkdir(parents=True, exist_ok=True)
    plan_path, out = base / f"{name}.json", base / f"{name}.jsonl"
    plan_path.write_text(json.dumps(plan))
    results: dict[int, dict[str, Any]] = {}
    for _attempt in range(len(plan) + 1):
        cmd = [fiu_run, "-x", "-f", "", sys.executable, str(WORKER), kind, str(base),
               str(plan_path), str(out)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        lines = out.read_text().splitlines() if out.exists() else []
        results = {r["index"]: r for r in map(json.loads, lines)}
        if done.returncode == 0 or len(lines) >= len(plan):
            break
        crashed = plan[len(lines)]  # the run the worker died in: note it, go on after it
        what = f"signal {signal.Signals(-done.returncode).name}" if done.returncode < 0 else (
            f"exit {done.returncode}: {done.stderr.strip()[-800:]}"
        )  # fmt: skip
        with out.open("a") as handle:
            handle.write(json.dumps({"index": crashed["index"], "crashed": what}) + "\n")
    return results


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "disk", "disk-durable"])
def test_one_failing_libc_call_at_a_time(tmp_path: Path, kind: str) -> None:
    fiu_run = _fiu_run()
    counting = [{"index": i, "point": point, "nth": 0} for i, point in enumerate(POINTS)]
    counted = _work(fiu_run, kind, tmp_path / "count", counting, "count")
    plan: list[dict[str, Any]] = []
    for i, point in enumerate(POINTS):
        result = counted.get(i, {})
        assert "crashed" not in result and result.get("violations") == [], result
        total = result["calls_per_step"][-1] if result.get("calls_per_step") else 0
        picks = sorted({1 + round(n * (total - 1) / max(1, PER_POINT - 1))
                        for n in range(PER_POINT)}) if total else []  # fmt: skip
        actions = POINTS[point]
        tolerate = ["MemoryError"] if point == "posix/mm/mmap" else []  # (Python's allocator)
        for n, nth in enumerate(picks):
            action = actions[n % len(actions)]
            code = None if action == "short" else action
            plan.append({"index": len(plan), "point": point, "nth": nth, "action": action,
                         "errno": code, "tolerate": tolerate})  # fmt: skip
    results = _work(fiu_run, kind, tmp_path / "runs", plan, "runs")
    failures: list[str] = []
    per_point: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for run in plan:
        result = results.get(run["index"], {"crashed": "no result"})
        label = f"{run['point']} call #{run['nth']} -> {run['action']}"
        counts = per_point[run["point"]]
        counts[0] += 1
        counts[1] += bool(result.get("fired")) or "crashed" in result
        problems: list[str] = []
        if "crashed" in result:
            problems.append(f"the process crashed: {result['crashed']}")
            allowed = {key: [None, *workload.sets_of(key)] for key in workload.KEYS}
        else:
            problems += result["violations"]
            allowed = result["allowed"]
        store = tmp_path / "runs" / f"f{run['index']}" / "store"
        if store.exists():
            out = tmp_path / f"check-{run['index']}.json"
            what = workload.in_child(workload.check_reopened, kind, str(store), allowed, str(out))
            problems += [f"reopening {what}"] if what else json.loads(out.read_text())["violations"]
        if problems:
            counts[2] += 1
            where = f" (fired in step {result.get('fired_at')})"
            failures.append(f"{label}{where}:\n    " + "\n    ".join(problems))
    summary = ", ".join(f"{p.split('/', 2)[-1]} {r}/{f}/{b}" for p, (r, f, b) in per_point.items())
    print(f"\n{kind}: libfiu runs/fired/failed per point: {summary}; "
          f"{len(failures)} runs with problems")  # fmt: skip
    assert not failures, f"{len(failures)} of {len(plan)} libc faults broke a guarantee:\n" + (
        "\n".join(failures)
    )


SHORT = ("posix/io/rw/read/reduce", "posix/io/rw/pread/reduce", "posix/io/rw/write/reduce",
         "posix/io/rw/pwrite/reduce")  # fmt: skip


@pytest.mark.parametrize("kind", ["folder", "disk", "disk-durable"])
def test_every_read_and_write_cut_short_changes_nothing(tmp_path: Path, kind: str) -> None:
    """A short read or write is no error (a signal, FUSE and network filesystems make them):
    with every call of one kind returning only part of what was asked, the whole workload
    succeeds, every read gives the value last written, and the store reopens sound. (A short
    pread once read as "no such slot" made a tag eviction skip an entry and report success.)"""
    fiu_run = _fiu_run()
    plan = [{"index": i, "point": point, "nth": -1, "action": "short", "errno": None}
            for i, point in enumerate(SHORT)]  # fmt: skip
    results = _work(fiu_run, kind, tmp_path, plan, "short")
    for run in plan:
        result = results.get(run["index"], {"crashed": "no result"})
        label = f"every {run['point']} short"
        assert "crashed" not in result, f"{label}: {result['crashed']}"
        assert result["fired"], f"{label}: the point was never reached"
        steps = zip(workload.STEPS, result["outcomes"], strict=True)
        failed = [(step, outcome) for step, outcome in steps if outcome != "ok"]
        assert failed == [] and result["violations"] == [], (label, failed, result["violations"])
        assert result["missing"] == [], (label, result["missing"])
        out = tmp_path / f"check-{run['index']}.json"
        store = tmp_path / f"f{run['index']}" / "store"
        what = workload.in_child(workload.check_reopened, kind, str(store), result["allowed"],
                                 str(out), False)  # fmt: skip
        assert what is None and json.loads(out.read_text())["violations"] == [], (label, what)


_READ_KEY_SHORT = """
import ctypes, sys
from pathlib import Path
from tiers._codec._signing import _read_key_file
path = Path(sys.argv[1])
expected = path.read_bytes().strip()
lib = ctypes.CDLL("libfiu.so.0")
lib.fiu_enable.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
lib.fiu_enable(b"posix/io/rw/read/reduce", 1, None, 0)
wrong = 0
for _ in range(2000):
    try:
        wrong += _read_key_file(path) != expected
    except Exception:
        wrong += 1
lib.fiu_disable(b"posix/io/rw/read/reduce")
print(wrong)
"""


def test_the_signing_key_file_is_read_whole_when_reads_are_cut_short(tmp_path: Path) -> None:
    """Every `read` cut short (libfiu): the key file still gives the whole key, 2,000 times
    in a row (a short read taken whole made a shorter key: about 1 read in 65 for a 64-byte
    key, and every record signed with the real key looked foreign)."""
    fiu_run = _fiu_run()
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32).hex().encode() + b"\n")
    key.chmod(0o600)
    cmd = [fiu_run, "-x", "-f", "", sys.executable, "-c", _READ_KEY_SHORT, str(key)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "0", f"{done.stdout.strip()} of 2,000 reads gave another key"


# -- fork() with a store open ----------------------------------------------------------------


def _child_uses_inherited(store: Any, out: str) -> None:
    """In a forked child: read what the parent wrote, write and delete, through the store
    object the parent opened."""
    problems = []
    for n in range(6):
        try:
            seq = workload.read_seq(store, f"k{n}")
            allowed = {n + 1} if n < 2 else {n + 1, 300 + n}  # (the parent overwrites k2..k5)
            if seq not in allowed:
                problems.append(f"child read k{n} as {seq}, expected one of {allowed}")
        except Exception as exc:
            problems.append(f"child get(k{n}) raised {exc!r}")
    try:
        for n in range(6, 8):
            store.set(f"k{n}", workload.entry(f"k{n}", 100 + n, (300, 70_000)[n % 2]))
        store.delete("k0")
        store.set("k1", workload.entry("k1", 201, 50_000))
    except Exception as exc:
        problems.append(f"child write raised {exc!r}")
    Path(out).write_text(json.dumps(problems))


@pytest.mark.parametrize("kind", ["folder", "disk", "disk-durable"])
def test_fork_after_open_then_use_in_child_and_parent(tmp_path: Path, kind: str) -> None:
    """A store opened, used, then inherited by a forked child: the child reads the parent's
    values and writes its own while the parent keeps writing; both see each other's writes,
    and a fresh process reopening the store sees the final state."""
    path = tmp_path / "store"
    store = workload.open_store(kind, path)
    for n in range(6):
        store.set(f"k{n}", workload.entry(f"k{n}", n + 1, (200, 70_000)[n % 2]))
    assert workload.read_seq(store, "k3") == 4  # the parent has read state (open files...)
    out = tmp_path / "child.json"
    child = FORK.Process(target=workload._guarded, args=(_child_uses_inherited, store, str(out)))
    child.start()
    for n in range(2, 6):  # the parent writes meanwhile
        store.set(f"k{n}", workload.entry(f"k{n}", 300 + n, (200, 70_000)[n % 2]))
    child.join(60)
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(10)
        pytest.fail("the child hung")
    assert child.exitcode == 0, f"the child exited with {child.exitcode}"
    assert json.loads(out.read_text()) == []
    expected: dict[str, list[int | None]] = {"k0": [None], "k1": [201]}
    expected.update({f"k{n}": [300 + n] for n in range(2, 6)})
    expected.update({f"k{n}": [100 + n] for n in range(6, 8)})
    for key, values in expected.items():
        assert workload.read_seq(store, key) in values, key
    store.set("k0", workload.entry("k0", 400, 100))  # the parent still writes after the fork
    expected["k0"] = [400]
    store.close()
    check = tmp_path / "check.json"
    assert workload.in_child(workload.check_reopened, kind, str(path), expected, str(check),
                             False) is None  # fmt: skip
    assert json.loads(check.read_text())["violations"] == []


# -- readers killed in the middle of a read --------------------------------------------------


def _reader(kind: str, path: str) -> None:
    store = workload.open_store(kind, path)
    while True:
        for key in ("k0", "k1"):
            workload.read_seq(store, key)


@pytest.mark.parametrize("kind", ["folder", "disk"])
def test_readers_killed_inside_a_read_leave_nothing_stuck(
    faultfs: FaultMount,  # noqa: F811
    tmp_path: Path,
    kind: str,
) -> None:
    """Readers whose reads are held inside the filesystem (faultfs delays every read by
    0.3 s, so each is caught holding whatever a read holds: a shared flock, a read lock, an
    open file) are killed with SIGKILL, four rounds. Then a writer overwrites the keys within
    10 s, and a fresh process reopens the store: right values, nothing stuck."""
    path = faultfs.mountpoint / "store"  # (used by children only: nothing here keeps it busy)
    assert workload.in_child(_overwrite, kind, str(path), 1, str(tmp_path / "fill")) is None
    expected: dict[str, list[int | None]] = {"k0": [1], "k1": [2]}
    for round_ in range(4):
        faultfs.fail("read", 1, action="delay:0.3", times=10**6)
        readers = [FORK.Process(target=_reader, args=(kind, str(path))) for _ in range(3)]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(faultfs.call("fired")["fired"]) < 6:
            time.sleep(0.05)
        try:
            assert len(faultfs.call("fired")["fired"]) >= 3, "the readers never reached a read"
        finally:
            for reader in readers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(reader.pid, signal.SIGKILL)  # type: ignore[arg-type]
            for reader in readers:
                reader.join(10)
            faultfs.clear()
        assert all(r.exitcode == -signal.SIGKILL for r in readers)
        out = tmp_path / f"write-{round_}.json"
        seq = 10 * (round_ + 1)
        what = workload.in_child(_overwrite, kind, str(path), seq, str(out), timeout=10)
        assert what is None, f"writing after the readers were killed {what}"
        expected = {"k0": [seq], "k1": [seq + 1]}
    check = tmp_path / "check.json"
    what = workload.in_child(workload.check_reopened, kind, str(path), expected, str(check), False)
    assert what is None
    assert json.loads(check.read_text())["violations"] == []


def _overwrite(kind: str, path: str, seq: int, out: str) -> None:
    store = workload.open_store(kind, path)
    store.set("k0", workload.entry("k0", seq, 70_000))
    store.set("k1", workload.entry("k1", seq + 1, 300))
    assert workload.read_seq(store, "k0") == seq
    assert workload.read_seq(store, "k1") == seq + 1
    store.close()
    Path(out).write_text("ok")
