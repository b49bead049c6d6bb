"""The scripted store workload the fault and power-loss tests replay, and its checks.

Values are self-describing (`tests._disk_workers.make_value`): a read tells a right value from
a torn, stale or foreign one, and names the write (its sequence number) it came from. The
workload only uses the public API: `tiers.FolderStore`, `tiers.DiskStore`, `tiers.Cache`,
`tiers.protocol.Entry`.

Each run happens in a forked child (`in_child`): a crash, a signal or a hang is seen by the
test, and a store that cached state cannot hide what is on disk from the next opener.
"""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tiers
from tests._disk_workers import check_value, make_value
from tiers.errors import StoreError, StoreFullError, TiersError
from tiers.protocol import Entry

from .mount import Control

KEYS = tuple(f"k{n}" for n in range(8))
INLINE_MAX = 32 * 1024  # DiskStore keeps larger values in files of their own
FAR = 10 * 365 * 86400.0

# (step, key, seq, size, tags): the sizes cover small values, values kept in files by the
# DiskStore (> 32 KiB) and one spanning several FUSE writes (300 KB); every kind of change.
STEPS: tuple[tuple[Any, ...], ...] = (
    ("open",),
    ("set", "k0", 1, 200, ()),
    ("set", "k1", 2, 70_000, ()),
    ("set", "k2", 3, 300, ()),
    ("set", "k3", 4, 300_000, ()),
    ("get", "k0"),
    ("get", "k1"),
    ("set", "k0", 5, 250, ()),  # small -> small
    ("set", "k1", 6, 80_000, ()),  # large -> large
    ("set", "k2", 7, 50_000, ()),  # small -> large
    ("set", "k3", 8, 100, ()),  # large -> small
    ("delete", "k2"),
    ("touch", "k0"),
    ("pop", "k3"),
    ("set", "k4", 9, 300, ("evict-me",)),
    ("set", "k5", 10, 60_000, ("evict-me",)),
    ("evict", "evict-me"),
    ("lock",),
    ("get_all",),
    ("stats",),
    ("expire",),
    ("keys",),
    ("reopen",),
    ("get_all",),
    ("clear",),
    ("set", "k6", 11, 400, ()),
    ("set", "k7", 12, 90_000, ()),
    ("get_all",),
    ("close",),
)


def open_store(kind: str, path: str | Path) -> Any:
    """The store under test: ``folder``, ``disk`` or ``disk-durable``."""
    if kind == "folder":
        return tiers.FolderStore(path)
    return tiers.DiskStore(path, durable=kind == "disk-durable")


def entry(key: str, seq: int, size: int, tags: tuple[str, ...] = ()) -> Entry:
    body = make_value(key, seq, size)
    return Entry(body, b"H", time.time(), time.time() + FAR, tags, {"seq": seq}, len(body))


def read_seq(store: Any, key: str) -> int | None:
    """The seq of `key`'s value, None for a miss; AssertionError for a wrong value."""
    got = store.get(key)
    if got is None:
        return None
    assert got.header == b"H", f"foreign header {got.header!r} for {key!r}"
    return check_value(key, bytes(got.value))[0]


def sets_of(key: str) -> list[int]:
    return [step[2] for step in STEPS if step[0] == "set" and step[1] == key]


# -- the fault run (SQLite method) ---------------------------------------------------------


class Model:
    """Which values each key may hold: exactly one after a successful change; the old and
    the new one after a failed change (never something else)."""

    def __init__(self) -> None:
        self.allowed: dict[str, set[int | None]] = {key: {None} for key in KEYS}
        self.tags: dict[str, tuple[str, ...]] = {}

    def apply(self, step: tuple[Any, ...], ok: bool) -> None:
        name = step[0]
        if name == "set":
            key, seq = step[1], step[2]
            self.allowed[key] = {seq} if ok else self.allowed[key] | {seq}
            self.tags[key] = step[4]
        elif name in ("delete", "pop"):
            self.allowed[step[1]] = {None} if ok else self.allowed[step[1]] | {None}
        elif name == "evict":
            for key, tags in self.tags.items():
                if step[1] in tags:
                    self.allowed[key] = {None} if ok else self.allowed[key] | {None}
        elif name == "clear":
            for key in KEYS:
                self.allowed[key] = {None} if ok else self.allowed[key] | {None}

    def seen(self, key: str, seq: int | None) -> str | None:
        """Record a read; a problem description if it is not allowed."""
        if seq in self.allowed[key]:
            self.allowed[key] = {seq}
            return None
        if seq is None:
            return f"{key} is a miss, expected one of {sorted(self.allowed[key], key=str)}"
        return f"{key} reads write #{seq}, expected one of {sorted(self.allowed[key], key=str)}"


def fault_run(kind: str, path: str, control: str, out: str, fault: dict[str, Any]) -> None:
    """Replay STEPS on a store at `path` while faultfs fails one call (armed by the parent);
    write to `out` what `replay` found."""
    ctl = Control(control)
    tag = fault.get("tag", "")
    result = replay(kind, path, fault, lambda: bool(ctl.call("fired", tag=tag)["fired"]))
    Path(out).write_text(json.dumps(result))


def fault_job(kind: str, run_dir: str, control: str, fault: dict[str, Any], out: str) -> None:
    """One fault of the SQLite method, start to end (in a child of its own, so that two can
    run at once): arm the fault (tagged with the run), replay the workload in a child, drop
    the fault, reopen the store in another child. Writes to `out`: what the replay found,
    the calls that failed, and the problems."""
    ctl = Control(control)
    run = os.path.basename(run_dir)
    store = os.path.join(run_dir, "store")
    fault = {**fault, "tag": run}
    ctl.call("fail", op=fault["op"], nth=fault["nth"], glob=f"/{run}/*",
             action=fault["action"], tag=run)  # fmt: skip
    replayed = out + ".replay"
    what = in_child(fault_run, kind, store, control, replayed, fault, timeout=20)
    fired = ctl.call("clear", tag=run)["fired"]
    problems: list[str] = []
    if what is not None:
        problems.append(f"the workload {what}")
        allowed: dict[str, Any] = {k: [None, *sets_of(k)] for k in KEYS}
        result: dict[str, Any] = {}
    else:
        result = json.loads(Path(replayed).read_text())
        problems += result["violations"]
        allowed = result["allowed"]
    checked = out + ".check"
    what = in_child(check_reopened, kind, store, allowed, checked, timeout=20)
    present = 0
    if what is not None:
        problems.append(f"the reopening check {what}")
    else:
        check = json.loads(Path(checked).read_text())
        problems += check["violations"]
        present = check["present"]
    Path(out).write_text(json.dumps({"fired": fired, "problems": problems, "present": present,
                                     "missing": result.get("missing", [])}))  # fmt: skip


CHANGES = ("set", "delete", "pop", "touch", "evict", "clear")


def replay(
    kind: str, path: str, fault: dict[str, Any], fired: Callable[[], bool]
) -> dict[str, Any]:
    """Replay STEPS on a store at `path` while one call fails (`fired()` tells whether it has
    yet); return what happened: the step the fault fired in, each step's outcome, each
    violation of the guarantees, the keys lost, and which values each key may hold now."""
    model = Model()
    held: dict[str, Any] = {"store": None}
    fired_at: int | None = None
    outcomes: list[str] = []
    violations: list[str] = []
    missing: list[str] = []
    for index, step in enumerate(STEPS):

        def problem(text: str, index: int = index, step: tuple[Any, ...] = step) -> None:
            violations.append(f"step {index} {step[0]}: {text}")

        before = dict(model.allowed)
        error = _step(kind, path, held, step, model, missing, index, fault, problem)
        if fired_at is None and fired():
            fired_at = index
        model.apply(step, ok=error is None)
        outcomes.append("ok" if error is None else f"{type(error).__name__}: {error}")
        if error is None:
            if fired_at == index and fault.get("sync") and step[0] in CHANGES:
                problem("an fsync failed, yet the change returned success")
            continue
        if fired_at is None or index > fired_at:
            when = "before" if fired_at is None else f"after step {fired_at}, where"
            problem(f"failed {when} the fault fired: {type(error).__name__}: {error}")
        elif isinstance(error, TiersError):
            _check_error(error, fault, problem)
        if step[0] in ("set", "touch") and held["store"] is not None:
            _old_value_stays(held["store"], step, before, model, problem)
    with contextlib.suppress(Exception):
        if held["store"] is not None:
            held["store"].close()
    allowed = {key: sorted(values, key=lambda v: -1 if v is None else v)
               for key, values in model.allowed.items()}  # fmt: skip
    return {"fired_at": fired_at, "outcomes": outcomes, "violations": violations,
            "missing": missing, "allowed": allowed}  # fmt: skip


def _step(kind: str, path: str, held: dict[str, Any], step: tuple[Any, ...], model: Model,
          missing: list[str], index: int, fault: dict[str, Any],
          problem: Callable[[str], None]) -> BaseException | None:  # fmt: skip
    """Run one step; the error it raised (None if none). A wrong value, and an exception that
    is not a TiersError (unless `fault` tolerates its type), are problems."""
    try:
        _do(kind, path, held, step, model, missing, index)
    except TiersError as exc:
        return exc
    except AssertionError as exc:
        problem(f"wrong value: {exc}")
    except Exception as exc:
        if type(exc).__name__ not in fault.get("tolerate", ()):
            problem(f"{type(exc).__name__} (not a TiersError) escaped: {exc!r}\n"
                    f"{traceback.format_exc()}")  # fmt: skip
        return exc
    return None


def _old_value_stays(store: Any, step: tuple[Any, ...], before: dict[str, set[int | None]],
                     model: Model, problem: Callable[[str], None]) -> None:  # fmt: skip
    """After a failed set or touch, the key reads its previous value (or, for a set that
    failed after its commit point, the new one): never a miss, never something else."""
    key = step[1]
    try:
        seq = read_seq(store, key)
    except Exception as exc:
        problem(f"reading {key} after the failed write raised {exc!r}")
        return
    allowed = before[key] | ({step[2]} if step[0] == "set" else set())
    if seq in allowed:
        model.allowed[key] = {seq}
    else:
        problem(f"after the failed write {key} reads {seq}, allowed {sorted(allowed, key=str)}")


def _check_error(error: TiersError, fault: dict[str, Any], problem: Callable[[str], None]) -> None:
    """The error of the step the fault fired in: a StoreError naming the problem, and a
    StoreFullError exactly when the fault said the disk is full."""
    action = fault.get("action", "")
    full = action in ("ENOSPC", "EDQUOT")
    if not isinstance(error, StoreError):
        problem(f"{type(error).__name__} is not a StoreError: {error}")
    elif full and not isinstance(error, StoreFullError):
        problem(
            f"a full disk ({action}) raised {type(error).__name__}, not StoreFullError: {error}"
        )
    elif not full and isinstance(error, StoreFullError):
        problem(f"{action} raised StoreFullError: {error}")
    text = str(error).lower()
    code = getattr(errno, action, None)
    named = "space" in text if full else code is not None and os.strerror(code).lower() in text
    if action != "short" and not named:
        problem(f"the error does not name the problem ({action}): {error}")


def _do(kind: str, path: str, held: dict[str, Any], step: tuple[Any, ...], model: Model,
        missing: list[str], index: int) -> None:  # fmt: skip
    """Run one step on ``held["store"]`` (opened again after a failed open or reopen)."""
    name = step[0]
    if name in ("reopen", "close") and held["store"] is not None:
        try:
            held["store"].close()
        finally:
            held["store"] = None
        if name == "close":
            return
    if held["store"] is None and name != "close":
        held["store"] = open_store(kind, path)
    store = held["store"]
    if name in ("get", "get_all"):
        for key in (step[1],) if name == "get" else KEYS:
            _read(store, key, model, missing, index)
    elif name == "pop":
        got = store.pop(step[1])
        seq = None if got is None else check_value(step[1], bytes(got.value))[0]
        if seq not in model.allowed[step[1]]:
            raise AssertionError(f"pop({step[1]}) gave write #{seq}, expected "
                                 f"{sorted(model.allowed[step[1]], key=str)}")  # fmt: skip
    elif name in _ACTIONS:
        _ACTIONS[name](store, step)


def _lock(store: Any, _step: tuple[Any, ...]) -> None:
    assert store.acquire_lock("the-lock", "token", 30.0) is True, "lock not taken"
    assert store.release_lock("the-lock", "token") is True, "lock not released"


def _set(store: Any, step: tuple[Any, ...]) -> None:
    assert store.set(step[1], entry(step[1], step[2], step[3], step[4])) is True


_ACTIONS: dict[str, Callable[[Any, tuple[Any, ...]], object]] = {
    "set": _set,
    "delete": lambda store, step: store.delete(step[1]),
    "touch": lambda store, step: store.touch(step[1], time.time() + 2 * FAR),
    "evict": lambda store, step: store.evict(step[1]),
    "lock": _lock,
    "stats": lambda store, step: store.stats(),
    "expire": lambda store, step: store.expire(),
    "keys": lambda store, step: sorted(store.keys()),
    "clear": lambda store, step: store.clear(),
}


def _read(store: Any, key: str, model: Model, missing: list[str], index: int) -> None:
    seq = read_seq(store, key)
    if seq is None and None not in model.allowed[key]:
        missing.append(f"step {index}: {key} lost (expected {sorted(model.allowed[key], key=str)})")
        model.allowed[key] |= {None}
    note = model.seen(key, seq)
    if note is not None:
        raise AssertionError(note)


# -- after a fault or a power cut: reopen and check ----------------------------------------


def check_reopened(kind: str, path: str, allowed: dict[str, list[int | None]], out: str,
                   misses_ok: bool = True) -> None:  # fmt: skip
    """Open the store again (no faults now) and check: every key holds an allowed value (or
    is a miss, if `misses_ok`); the store reads, writes, deletes and clears; nothing is left
    in its temporary folders. Writes to `out` the violations and what each key holds."""
    violations: list[str] = []
    present = 0
    found: dict[str, int | None] = {}
    try:
        store = open_store(kind, path)
    except Exception as exc:
        Path(out).write_text(json.dumps({"violations": [f"reopen failed: {exc!r}"], "present": 0,
                                         "found": {}}))  # fmt: skip
        return
    try:
        for key, values in allowed.items():
            try:
                seq = read_seq(store, key)
            except AssertionError as exc:
                violations.append(f"after reopening: wrong value: {exc}")
                continue
            except Exception as exc:
                violations.append(f"after reopening: get({key}) raised {exc!r}")
                continue
            present += seq is not None
            found[key] = seq
            if seq not in values and (seq is not None or not misses_ok):
                what = "is a miss" if seq is None else f"reads write #{seq}"
                violations.append(f"after reopening: {key} {what}, allowed {values}")
        violations += _still_works(store)
        if kind == "folder":
            for part in (".tmp", ".trash"):
                left = os.listdir(os.path.join(path, part))
                if left:
                    violations.append(f"after reopening: {part} still holds {left}")
    except Exception as exc:
        violations.append(f"after reopening: {exc!r}\n{traceback.format_exc()}")
    finally:
        with contextlib.suppress(Exception):
            store.close()
    Path(out).write_text(json.dumps({"violations": violations, "present": present,
                                     "found": found}))  # fmt: skip


def _still_works(store: Any) -> list[str]:
    problems = []
    cache = tiers.Cache(store, serializer="raw", on_tier_error="raise")
    try:
        for n, size in enumerate((100, 70_000)):
            key = f"after-{n}"
            value = make_value(key, 1000 + n, size)
            cache.set(key, value)
            if cache.get(key) != value:
                problems.append(f"after reopening: {key} does not read back")
        if not cache.delete("after-0"):
            problems.append("after reopening: delete found nothing")
        cache.clear()
        if cache.get("after-1") is not None:
            problems.append("after reopening: clear left after-1 behind")
        store.clear()
        if store.count() != 0:
            problems.append("after reopening: clear left entries behind")
    except Exception as exc:
        problems.append(f"after reopening: the store does not work: {exc!r}")
    return problems


# -- child processes -----------------------------------------------------------------------

FORK = multiprocessing.get_context("fork")


def in_child(target: Callable[..., None], *args: Any, timeout: float = 60.0) -> str | None:
    """Run `target(*args)` in a forked child; None if it exited 0, else what happened
    (killed by a signal, a non-zero exit, or a hang: then it is killed by its pid)."""
    child = FORK.Process(target=_guarded, args=(target, *args))
    child.start()
    child.join(timeout)
    if child.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(10)
        return f"hung for {timeout} s (killed)"
    code = child.exitcode
    if code == 0:
        return None
    if code is not None and code < 0:
        return f"died of signal {signal.Signals(-code).name}"
    return f"exited with {code}"


def _guarded(target: Callable[..., None], *args: Any) -> None:
    try:
        target(*args)
    except BaseException:
        traceback.print_exc()
        os._exit(3)
    os._exit(0)  # no atexit: the next opener sees a process that is gone


# -- power loss ------------------------------------------------------------------------------


def power_run(kind: str, path: str, log: str) -> None:
    """Replay STEPS, noting in `log` (outside the mount) when each step is issued and whether
    it returned: what the store acknowledged before the power went. Errors are expected once
    the power is cut (every call fails): they end nothing, the steps go on; one that is not
    a TiersError is noted ``raw``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    held: dict[str, Any] = {"store": None}
    model = Model()
    for index, step in enumerate(STEPS):
        os.write(fd, f"issued {index}\n".encode())
        try:
            _do(kind, path, held, step, model, [], index)
        except Exception as exc:
            model.apply(step, ok=False)
            raw = "" if isinstance(exc, (TiersError, AssertionError)) else " raw"
            text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            os.write(fd, f"failed {index}{raw} {text}\n".encode())
            continue
        model.apply(step, ok=True)
        os.write(fd, f"acked {index}\n".encode())
    os.close(fd)


def create_store(kind: str, path: str) -> None:
    """Create the store (its folders and marker) and close it."""
    open_store(kind, path).close()


def after_power_loss(log_text: str, *, durable: bool) -> dict[str, list[int | None]]:
    """Which values each key may hold after the power cut, from the steps issued and acked.

    `durable` (DiskStore(durable=True)): an acknowledged set survives unless a later change
    of the key (issued, acknowledged or not) replaced or removed it; a removal is not
    promised durable, so the value it removed may come back. Otherwise nothing is promised
    but this: a key holds a value once written to it, or nothing."""
    issued = {int(line.split()[1]) for line in log_text.splitlines() if line.startswith("issued")}
    acked = {int(line.split()[1]) for line in log_text.splitlines() if line.startswith("acked")}
    tags = {step[1]: step[4] for step in STEPS if step[0] == "set"}
    allowed: dict[str, list[int | None]] = {}
    for key in KEYS:
        changes = []  # (index, seq or None) of every issued step changing the key
        for index, step in enumerate(STEPS):
            if index not in issued:
                continue
            name = step[0]
            if name == "set" and step[1] == key:
                changes.append((index, step[2]))
            elif (
                (name in ("delete", "pop") and step[1] == key)
                or name == "clear"
                or (name == "evict" and step[1] in tags.get(key, ()))
            ):
                changes.append((index, None))
        values: set[int | None] = {None} | {seq for _, seq in changes}
        if durable:
            last = max((i for i, seq in changes if seq is not None and i in acked), default=None)
            if last is not None:
                later = [seq for i, seq in changes if i > last]
                values = {STEPS[last][2], *later}
        allowed[key] = sorted(values, key=lambda v: -1 if v is None else v)
    return allowed


def first_write(path: str, log: str) -> None:
    """Create a DiskStore(durable=True) and write k0 (seq 1) to it; note the acknowledgement."""
    store = open_store("disk-durable", path)
    store.set("k0", entry("k0", 1, 70_000))
    Path(log).write_text("acked\n")
    store.close()
