"""Power loss on a real FUSE filesystem (tests/_faultfs in power-loss mode), for FolderStore and
DiskStore with and without ``durable=True``.

The workload (`workload.STEPS`) runs in a child process that notes, outside the mount, when
each step is issued and acknowledged. The power is cut after the k-th filesystem operation
(k spread over the whole run, and once after it ends): every later call fails, the child is
stopped, and the filesystem falls back to what a power cut keeps, in one of three ways:

- ``drop``: only what was fsynced (file data by fsync of the file, names by fsync of their
  directory) survives;
- ``metadata``: every namespace change survives but no unsynced data (renames persisted
  ahead of the data they carry, as with ext4 ``data=writeback``);
- ``random``: a random prefix of the namespace changes and, page by page, old or new data.

Then the filesystem is mounted again and a fresh process reopens the store: every key must
hold a value once written to it or nothing — with ``durable=True``, every acknowledged write
(unless a later change of the key replaced or removed it) — and the store must read, write,
delete and clear.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests._faultfs import workload
from tests._faultfs.fixture import faultfs  # noqa: F401 (a fixture)
from tests._faultfs.mount import FaultMount

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="FUSE and fork: Linux only"),
]

CUTS = 36  # power cuts per store, spread over the run's operations (plus one after it)
MODES = ("drop", "metadata", "random")


def _count_ops(fs: FaultMount, kind: str, base: Path) -> int:
    (fs.mountpoint / "count").mkdir()
    fs.trace("*")
    what = workload.in_child(
        workload.power_run, kind, str(fs.mountpoint / "count" / "store"), str(base / "count.log")
    )
    total = len(fs.ops())
    fs.trace(None)
    assert what is None, f"the run without a power cut {what}"
    assert "failed" not in (base / "count.log").read_text()
    shutil.rmtree(fs.backing / "count")
    return total


def _last_acked_sets(log_text: str) -> dict[str, int]:
    """The seq of each key's last change, for keys whose last issued change was an
    acknowledged set (what `durable=True` must keep)."""
    issued = [int(line.split()[1]) for line in log_text.splitlines() if line.startswith("issued")]
    acked = {int(line.split()[1]) for line in log_text.splitlines() if line.startswith("acked")}
    kept: dict[str, int] = {}
    for key in workload.KEYS:
        allowed = workload.after_power_loss(log_text, durable=True)[key]
        last = [i for i in issued if workload.STEPS[i][0] == "set" and workload.STEPS[i][1] == key]
        if last and last[-1] in acked and allowed == [workload.STEPS[last[-1]][2]]:
            kept[key] = workload.STEPS[last[-1]][2]
    return kept


@pytest.mark.parametrize("kind", ["folder", "disk", "disk-durable"])
def test_power_cut_keeps_acknowledged_durable_writes_and_never_a_wrong_value(
    faultfs: FaultMount,  # noqa: F811
    tmp_path: Path,
    kind: str,
) -> None:
    total = _count_ops(faultfs, kind, tmp_path)
    cuts = sorted({round(1 + i * (total - 1) / (CUTS - 1)) for i in range(CUTS)})
    points: list[int | None] = [*cuts, None]  # None: the power goes after the workload ended
    failures: list[str] = []
    kept = collections.Counter[str]()  # per mode: acknowledged last writes found / expected
    for number, point in enumerate(points):
        mode = MODES[number % len(MODES)]
        run = f"p{number}"
        (faultfs.mountpoint / run).mkdir()
        store, log = faultfs.mountpoint / run / "store", tmp_path / f"{run}.log"
        assert workload.in_child(workload.create_store, kind, str(store)) is None
        faultfs.powerloss()  # the state so far (a new, empty store) is durable
        if point is not None:
            faultfs.cut(after=point)
        workload.in_child(workload.power_run, kind, str(store), str(log), timeout=30)
        if point is None:
            faultfs.cut()
        report = faultfs.crash(mode, seed=number)  # and mount again
        log_text = log.read_text() if log.exists() else ""
        allowed = workload.after_power_loss(log_text, durable=kind == "disk-durable")
        out = tmp_path / f"{run}-check.json"
        what = workload.in_child(
            workload.check_reopened, kind, str(store), allowed, str(out), False
        )
        label = f"cut after operation {point or 'the end'} ({mode}; {report})"
        raw = [line for line in log_text.splitlines() if " raw " in line]
        if raw:
            failures.append(f"{label}: errors that are not TiersError:\n    " + "\n    ".join(raw))
        if what is not None:
            failures.append(f"{label}: reopening {what}")
        else:
            check = json.loads(out.read_text())
            if check["violations"]:
                failures.append(f"{label}:\n    " + "\n    ".join(check["violations"]))
            for key, seq in _last_acked_sets(log_text).items():
                kept[f"{mode} expected"] += 1
                kept[f"{mode} found"] += check["found"].get(key) == seq
        shutil.rmtree(faultfs.backing / run, ignore_errors=True)
    summary = "; ".join(
        f"{mode}: {kept[f'{mode} found']}/{kept[f'{mode} expected']}" for mode in MODES
    )
    print(f"\n{kind}: {len(points)} power cuts over {total} operations; acknowledged last "
          f"writes found after the cut per mode: {summary}")  # fmt: skip
    assert not failures, f"{len(failures)} of {len(points)} power cuts broke a guarantee:\n" + (
        "\n".join(failures)
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_new_durable_store_keeps_its_first_acknowledged_write(
    faultfs: FaultMount,  # noqa: F811
    tmp_path: Path,
    mode: str,
) -> None:
    """DiskStore(durable=True) created in an existing (durable) folder, one write
    acknowledged, then the power goes: the write is there after the restart — which needs
    the store's own new folders (its root, index and data folders) to be durable too."""
    (faultfs.mountpoint / "run").mkdir()
    faultfs.powerloss()
    store, log = faultfs.mountpoint / "run" / "store", tmp_path / "run.log"
    what = workload.in_child(workload.first_write, str(store), str(log))
    assert what is None, f"the first write {what}"
    assert log.read_text() == "acked\n"
    faultfs.cut()
    report = faultfs.crash(mode, seed=1)
    out = tmp_path / "check.json"
    allowed: dict[str, list[int | None]] = {key: [None] for key in workload.KEYS}
    allowed["k0"] = [1]
    what = workload.in_child(workload.check_reopened, "disk-durable", str(store), allowed,
                             str(out), False)  # fmt: skip
    assert what is None, f"reopening {what}"
    check = json.loads(out.read_text())
    assert check["violations"] == [], f"after a power cut ({mode}; {report}): {check}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def test_the_power_loss_model_keeps_exactly_what_was_synced(
    faultfs: FaultMount,  # noqa: F811
) -> None:
    """The harness itself: after a cut ("drop"), a file's bytes are those of its last fsync
    and a name exists as of its directory's last fsync; renames and unlinks not followed by
    an fsync of the directory are undone."""
    root = faultfs.mountpoint / "d"
    root.mkdir()
    _write(root / "old", b"old", sync=True)
    _write(root / "gone", b"gone", sync=True)
    faultfs.powerloss()
    _write(root / "synced", b"synced", sync=True)  # data synced, then the name
    _fsync_dir(root)
    _write(root / "name-only", b"lost bytes", sync=False)  # the name synced, not the data
    _fsync_dir(root)
    _write(root / "unsynced", b"nothing", sync=True)  # the data synced, not the name
    _write(root / "new", b"new", sync=True)
    os.rename(root / "new", root / "old")  # not followed by an fsync of the directory
    os.unlink(root / "gone")
    _write(root / "synced", b"synced, then changed", sync=False)
    faultfs.cut()
    faultfs.crash("drop")
    assert sorted(p.name for p in root.iterdir()) == ["gone", "name-only", "old", "synced"]
    assert (root / "synced").read_bytes() == b"synced"
    assert (root / "name-only").read_bytes() == b""
    assert (root / "old").read_bytes() == b"old"
    assert (root / "gone").read_bytes() == b"gone"
    faultfs.powerloss()
    os.rename(root / "synced", root / "old")
    _fsync_dir(root)
    faultfs.crash("drop")
    assert sorted(p.name for p in root.iterdir()) == ["gone", "name-only", "old"]
    assert (root / "old").read_bytes() == b"synced"
    faultfs.powerloss()
    _write(root / "fresh", b"fresh", sync=False)
    faultfs.crash("metadata")  # names kept, unsynced bytes not
    assert (root / "fresh").read_bytes() == b""
