"""One I/O fault at a time at every step of a workload (the SQLite method), on a real FUSE
filesystem (tests/_faultfs) for FolderStore and DiskStore (default and ``durable=True``).

A clean run of `workload.STEPS` records every filesystem operation the store makes, in order.
Then, for a sample of them (per kind, up to `BUDGET` calls evenly spread; all of the rare
kinds; ``TIERS_FAULT_SCALE=100`` fails every single call, ~10 minutes for FolderStore), the
workload runs again in a fresh child process with that one call failing (EIO, ENOSPC, EDQUOT,
EROFS or a short write, cycling by kind), two runs at once in folders of their own. Checked
in the child: no exception but `TiersError` subclasses, `StoreFullError` exactly for a full
disk, an error message that names the problem, no wrong or torn value ever read, the previous
value intact after a failed write, a change that saw its fsync fail never reported done, and
every later step working. Checked in a second child that reopens the store: every key holds
its last written value, the failed write's previous value, or nothing; the store reads,
writes, deletes and clears; no temporary files are left.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import tiers
from tests._faultfs import workload
from tests._faultfs.fixture import faultfs  # noqa: F401 (a fixture)
from tests._faultfs.mount import FaultMount

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="FUSE and fork: Linux only"),
]

# How many calls of each kind to fail at most (evenly spread over the clean run's calls).
# TIERS_FAULT_SCALE multiplies them (e.g. 100 to fail every single call).
SCALE = float(os.environ.get("TIERS_FAULT_SCALE", "0.6"))  # (make test: 60% of each budget)
SYNCS = ("fsync", "fdatasync", "fsyncdir")
WIDTH = 2  # fault runs at once (each in a folder of its own; the faults are tagged per run)
BUDGET = {
    "create": 15, "mkdir": 15, "rename": 15, "unlink": 15, "rmdir": 15, "link": 15,
    "symlink": 15, "truncate": 15, "fallocate": 15, "fsync": 20, "fdatasync": 20,
    "fsyncdir": 20, "chmod": 8, "utimens": 4, "write": 20, "read": 8, "open": 6,
    "flush": 5, "getattr": 10, "opendir": 4, "readdir": 4, "release": 2, "releasedir": 2,
    "statfs": 3,
}  # fmt: skip
DEADLINE = float(os.environ.get("TIERS_FAULT_SECONDS", "240"))  # per store, then give up
ACTIONS = {
    "write": ("EIO", "ENOSPC", "short", "EDQUOT"),
    "create": ("ENOSPC", "EIO", "EDQUOT", "EROFS"),
    "mkdir": ("ENOSPC", "EIO", "EDQUOT", "EROFS"),
    "rename": ("ENOSPC", "EIO", "EDQUOT", "EROFS"),
    "link": ("ENOSPC", "EIO"),
    "symlink": ("ENOSPC", "EIO"),
    "truncate": ("ENOSPC", "EIO"),
    "fallocate": ("ENOSPC", "EIO"),
    "fsync": ("EIO", "ENOSPC"),
    "fdatasync": ("EIO", "ENOSPC"),
    "fsyncdir": ("EIO",),
    "flush": ("EIO", "ENOSPC"),
    "chmod": ("EIO", "EROFS"),
    "unlink": ("EIO", "EROFS"),
    "rmdir": ("EIO", "EROFS"),
}


def path_class(path: str) -> str:
    """A path with its run, random and per-entry parts blanked: `/.tmp/T/data.R.bin`."""
    path = re.sub(r"^/[^/]+/store", "", path)
    path = re.sub(r"[a-z0-9._-]*-[0-9a-f]{32}", "E", path)  # FolderStore entry folders
    path = re.sub(r"\d+\.[0-9a-f]{12}", "T", path)  # temporary names
    path = re.sub(r"data\.[0-9a-f]{8}", "data.R", path)
    path = re.sub(r"[0-9a-f]{24,}", "H", path)  # DiskStore value files
    return re.sub(r"/\d+$", "/PID", path) or "/"


def plan(ops: list[tuple[str, str]], scale: float = SCALE) -> list[dict[str, Any]]:
    """The calls to fail: per kind, up to its budget, evenly spread; each as (kind, nth)."""
    by_kind: dict[str, list[str]] = collections.defaultdict(list)
    for kind, path in ops:
        by_kind[kind].append(path)
    faults = []
    for kind, paths in sorted(by_kind.items()):
        budget = max(1, round(BUDGET.get(kind, 10) * scale))
        picks = sorted({round(i * (len(paths) - 1) / max(1, budget - 1)) for i in range(budget)})
        actions = ACTIONS.get(kind, ("EIO",))
        for n, at in enumerate(picks[: len(paths)]):
            faults.append({"op": kind, "nth": at + 1, "action": actions[n % len(actions)],
                           "where": path_class(paths[at]), "sync": kind in SYNCS})  # fmt: skip
    return faults


def clean_run(fs: FaultMount, kind: str, base: Path) -> list[tuple[str, str]]:
    (fs.mountpoint / "clean").mkdir()
    fs.trace("/clean/*")
    store = fs.mountpoint / "clean" / "store"
    out = base / "clean.json"
    what = workload.in_child(workload.fault_run, kind, str(store), str(fs.control), str(out), {})
    ops = fs.ops()
    fs.trace(None)
    assert what is None, f"the clean run {what}"
    result = json.loads(out.read_text())
    assert result["violations"] == [] and result["missing"] == [], result
    assert result["fired_at"] is None
    assert set(result["outcomes"]) == {"ok"}, result["outcomes"]
    return ops


def run_all(
    fs: FaultMount, kind: str, faults: list[dict[str, Any]], base: Path, deadline: float = DEADLINE
) -> list[dict[str, Any]]:
    """Each fault's `workload.fault_job`, WIDTH at a time (each in a run folder of its own);
    their results in order."""
    pending = list(enumerate(faults))
    running: list[tuple[int, Any]] = []
    results: dict[int, dict[str, Any]] = {}
    give_up = time.monotonic() + deadline
    while pending or running:
        while pending and len(running) < WIDTH and time.monotonic() < give_up:
            number, fault = pending.pop(0)
            run_dir = fs.mountpoint / f"r{number}"
            run_dir.mkdir()
            job = workload.FORK.Process(
                target=workload._guarded,
                args=(workload.fault_job, kind, str(run_dir), str(fs.control), fault,
                      str(base / f"r{number}.json")),
            )  # fmt: skip
            job.start()
            running.append((number, job))
        for number, job in list(running):
            job.join(0.01)
            if job.is_alive():
                continue
            running.remove((number, job))
            out = base / f"r{number}.json"
            results[number] = json.loads(out.read_text()) if job.exitcode == 0 else {
                "fired": [], "problems": [f"the fault job exited with {job.exitcode}"],
                "present": 0, "missing": []}  # fmt: skip
            shutil.rmtree(fs.backing / f"r{number}", ignore_errors=True)  # (unused by now)
        if pending and not running and time.monotonic() >= give_up:
            break  # out of time: the faults not run are reported as such
    late = {"fired": [], "problems": [f"not run: the store took over {deadline} s for the "
                                      "faults before"], "present": 0, "missing": []}  # fmt: skip
    return [results.get(n, late) for n in range(len(faults))]


@pytest.mark.parametrize("kind", ["folder", "disk", "disk-durable"])
def test_one_fault_at_every_step_of_a_workload(
    faultfs: FaultMount,  # noqa: F811
    tmp_path: Path,
    kind: str,
) -> None:
    _fault_campaign(faultfs, tmp_path, kind, SCALE, DEADLINE)


@pytest.mark.soak
@pytest.mark.timeout(4 * 3600)
@pytest.mark.parametrize("kind", ["folder", "disk", "disk-durable"])
def test_every_single_call_fails_in_turn(
    faultfs: FaultMount,  # noqa: F811
    tmp_path: Path,
    kind: str,
) -> None:
    """The soak run (``pytest --soak``): every filesystem call of the workload fails once."""
    _fault_campaign(faultfs, tmp_path, kind, 1000.0, 3 * 3600.0)


def _fault_campaign(
    fs: FaultMount, tmp_path: Path, kind: str, scale: float, deadline: float
) -> None:
    ops = clean_run(fs, kind, tmp_path)
    faults = plan(ops, scale)
    failures: list[str] = []
    per_kind: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])  # run, fired, bad
    lost = 0
    results = run_all(fs, kind, faults, tmp_path, deadline)
    for fault, result in zip(faults, results, strict=True):
        label = f"{fault['op']} #{fault['nth']} {fault['where']} -> {fault['action']}"
        counts = per_kind[fault["op"]]
        counts[0] += 1
        counts[1] += bool(result["fired"])
        lost += len(result["missing"])
        if result["problems"]:
            counts[2] += 1
            fired = result["fired"]
            where = f" (fired on {fired[0]['path']})" if fired else " (never fired)"
            failures.append(f"{label}{where}:\n    " + "\n    ".join(result["problems"]))
    summary = ", ".join(f"{k} {r}/{f}/{b}" for k, (r, f, b) in sorted(per_kind.items()))
    print(
        f"\n{kind}: {len(ops)} operations in the clean run; faults injected/fired/failed per "
        f"kind: {summary}; {lost} reads lost a value; {len(failures)} runs with problems"
    )
    fired_total = sum(f for _, f, _ in per_kind.values())
    assert fired_total >= 0.9 * len(faults), "most faults never fired: the replay is not stable"
    assert not failures, (
        f"{len(failures)} of {len(faults)} faults broke a guarantee:\n" + "\n".join(failures)
    )


# -- short writes of the files FolderStore rewrites in place -------------------------------


def test_a_short_write_of_a_lock_file_still_holds_the_lock(
    faultfs: FaultMount,  # noqa: F811
) -> None:
    """The filesystem accepts only half of the lock file's write (a short pwrite): the lock
    must still be held — another token cannot take it — not read back as free."""
    store = tiers.FolderStore(faultfs.mountpoint / "store")
    faultfs.fail("write", 1, glob="/store/.locks/*", action="short")
    assert store.acquire_lock("L", "mine", 60)
    assert [e["action"] for e in faultfs.clear()] == ["short"], "the short write did not happen"
    assert not store.acquire_lock("L", "theirs", 60), "a half-written lock read as free"
    assert store.release_lock("L", "mine")


def test_a_short_write_of_the_counters_keeps_the_counts(
    faultfs: FaultMount,  # noqa: F811
) -> None:
    """Half of a counters update written (a short pwrite): the count is still right."""
    store = tiers.FolderStore(faultfs.mountpoint / "store")
    for n in range(2):
        store.set(f"k{n}", workload.entry(f"k{n}", n, 300))
        name = next(p for p in store.directory.iterdir() if p.name.startswith(f"k{n}-"))
        (name / "metadata.json").write_bytes(b"damaged")
    assert store.get("k0") is None
    faultfs.fail("write", 1, glob="/store/.stats.json", action="short:20")  # inside the JSON
    assert store.get("k1") is None
    assert [e["action"] for e in faultfs.clear()] == ["short:20"], "no short write happened"
    assert store.stats().rejected == 2
