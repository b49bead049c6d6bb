"""Code run in child processes (``spawn``) and on Dask workers by tests/test_coherence.py.

- `serve`: a command server holding one `Cache` at a time, driven through a pipe by the test
  process (each command has returned before the next is sent, so the two processes' calls
  are ordered as the test wrote them);
- `churn`: one of several processes writing its own keys, announcing every finished change in
  shared memory, and reading every key to check it is never older than what was announced;
- `table_stamp`: opens a fresh store at the same moment as its peers and stamps one slot of
  its generation table, to see whether they all mapped the same table;
- `dask_*`: tasks run on a Dask LocalCluster's workers.
"""

from __future__ import annotations

import os
import random
import time
import traceback
from typing import Any

from tests._tiers import install_clock, store_of, stores_of, tier_of
from tiers import Cache, DiskStore, FolderStore, MemoryStore, ObjectStore
from tiers.testing import FakeClock

# -- building caches from a picklable description ------------------------------------------


def open_store(spec: dict[str, Any]) -> Any:
    """The shared store a spec names: ``{"store": "disk" | "folder", "path": ...}`` or
    ``{"store": "s3", "url": ..., "options": {...}}``."""
    kind = spec["store"]
    if kind == "disk":
        return DiskStore(spec["path"])
    if kind == "folder":
        return FolderStore(spec["path"])
    if kind == "s3":
        return ObjectStore(spec["url"], **spec["options"])
    raise ValueError(f"unknown store kind {kind!r}")


def open_cache(spec: dict[str, Any]) -> Cache:
    """``Cache(MemoryStore(), [DiskStore(spec["disk"]),] <shared store>, **spec["cache"])``;
    with ``spec["fake_clock"]`` set, every clock of the cache is a `FakeClock` starting there."""
    stores: list[Any] = [MemoryStore()]
    if spec.get("disk"):
        stores.append(DiskStore(spec["disk"]))
    stores.append(open_store(spec))
    cache = Cache(*stores, **spec.get("cache", {}))
    start = spec.get("fake_clock")
    if start is not None:
        clock = FakeClock(start)
        install_clock(cache, clock)
    return cache


def close_cache(cache: Cache) -> None:
    cache.close()
    for store in stores_of(cache):  # stores passed in stay open on close(): close them too
        store.close()


def memoized(cache: Cache, record: list[str]) -> tuple[Any, Any, Any]:
    """The memoized functions of the memoize scenarios, as both processes declare them: one
    str parameter (the ``index[type][value]`` fast path), a str and an int (the tuple one),
    and an ``async def`` twin of the first under the same name (so the same keys). Each call
    of a body appends to `record` and returns who computed it."""

    def one(x: str) -> tuple[str, int, str]:
        record.append(f"one {x}")
        return (x, os.getpid(), f"computation {len(record)}")

    def two(x: str, n: int) -> tuple[str, int, int, str]:
        record.append(f"two {x} {n}")
        return (x, n, os.getpid(), f"computation {len(record)}")

    async def one_async(x: str) -> tuple[str, int, str]:
        return one(x)

    return (
        cache.memoize(name="coherence.one", tags="memo")(one),
        cache.memoize(name="coherence.two", tags="memo")(two),
        cache.memoize(name="coherence.one", tags="memo")(one_async),
    )


# -- the command server ---------------------------------------------------------------------


class _Server:
    """The state of `serve`: the open cache and its memoized functions."""

    def __init__(self) -> None:
        self.cache: Cache | None = None
        self.functions: tuple[Any, ...] = ()

    def open(self, spec: dict[str, Any], environ: dict[str, str]) -> None:
        self.close()
        os.environ.pop("TIERS_SECRET", None)  # the signing key: the test's own
        os.environ.update(environ)
        self.cache = open_cache(spec)
        self.functions = memoized(self.cache, [])

    def close(self) -> None:
        if self.cache is not None:
            close_cache(self.cache)
        self.cache, self.functions = None, ()

    def run(self, op: str, *args: Any) -> Any:
        if op == "open":
            return self.open(*args)
        cache = self.cache
        if cache is None:
            raise RuntimeError("no cache is open")
        if op == "call":
            name, positional, keywords = args
            return getattr(cache, name)(*positional, **keywords)
        if op == "store":  # the shared store itself, as a script using it would
            name, positional = args
            return getattr(store_of(cache, -1), name)(*positional)
        if op == "memo":
            return self.functions[args[0]](*args[1])
        if op == "invalidate":
            return self.functions[args[0]].invalidate(*args[1])
        if op == "memo_clear":
            return self.functions[args[0]].clear()
        if op == "advance":
            return cache._clock.advance(args[0])  # type: ignore[attr-defined]
        if op == "close":
            return self.close()
        raise ValueError(f"unknown command {op!r}")


def serve(conn: Any) -> None:
    """Answer commands from `conn` until ``("stop",)``: each is answered ``("ok", result)``
    or ``("error", "Type: message")``.

    ``("open", spec, environ)`` opens a cache (closing the previous one) with the test's
    environment (its user directories: the signing key A uses); ``("call", name, args,
    kwargs)`` calls a method of it; ``("store", name, args)`` one of its shared store (the
    last tier); ``("memo", which, args)`` calls memoized function `which` (0 or 1) and
    ``("invalidate", which, args)`` its `invalidate`; ``("advance", seconds)`` moves its
    fake clock; ``("close",)`` closes the cache."""
    server = _Server()
    try:
        while True:
            try:
                command = conn.recv()
            except EOFError:  # the test process is gone
                break
            if command[0] == "stop":
                conn.send(("ok", None))
                break
            try:
                result = server.run(*command)
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                conn.send(("ok", result))
    finally:
        server.close()


# -- many processes, each writing its own keys and reading everyone's ----------------------

DELETE_EVERY = 5  # the change with seq % DELETE_EVERY == 0 is a delete (or a pop): known by all


def is_removal(seq: int) -> bool:
    return seq % DELETE_EVERY == 0


def churn_value(key: str, seq: int) -> tuple[str, int, bytes]:
    """The value of change `seq` of `key`: self-describing, some of them big."""
    size = (10, 200, 3_000, 50_000)[seq % 4]
    return (key, seq, (f"{key}:{seq}:".encode() * (size // 8 + 1))[:size])


def churn(
    spec: dict[str, Any], me: int, processes: int, keys_each: int, seconds: float,
    announced: Any, counts: Any, barrier: Any, failures: Any,
) -> None:  # fmt: skip
    """One of `processes` processes, each with its own memory tier over one shared store.

    Process `me` owns keys ``k{me}.{j}``: change ``seq`` (1, 2, ...) of a key writes
    `churn_value(key, seq)`, or removes the key when `is_removal(seq)`; once the call has
    returned, ``announced[key index] = seq``. Every other operation reads a random key of any
    process (get, or get_many of two keys): with ``a0`` the key's announcement before the read
    began and ``a1`` the one after it ended, the answer must be change ``s`` for some ``s`` in
    ``[a0, a1 + 1]`` (the writer may be inside change a1 + 1): a value with ``s < a0``, or
    nothing when no change of that window is a removal, is a stale read.

    Nothing where the window holds no removal is counted apart, as a false miss: the key
    was there all along (an older state, but no older value).

    ``counts[me * 5 + i]``: reads, changes, stale reads, false misses, other problems. The
    first problems are described in `failures` (a queue)."""
    rng = random.Random(me)
    cache = open_cache(spec)
    names = [f"k{p}.{j}" for p in range(processes) for j in range(keys_each)]
    mine = [i for i, name in enumerate(names) if name.startswith(f"k{me}.")]
    seqs = dict.fromkeys(mine, 0)
    reads = changes = stale = missed = other = 0
    told = 0

    def report(message: str) -> None:
        nonlocal told
        if told < 5:
            told += 1
            failures.put(f"process {me}: {message}")

    def check(index: int, got: Any, a0: int, a1: int) -> None:
        nonlocal stale, missed, other
        name = names[index]
        window = range(a0, a1 + 2)
        if got is None:
            if a0 == 0 or any(is_removal(s) for s in window if s > 0):
                return
            missed += 1
            report(f"{name}: nothing (a false miss), but changes {a0}..{a1 + 1} are all writes")
            return
        try:
            key, seq, body = got
            assert (key, seq, body) == churn_value(name, seq) and not is_removal(seq)
        except Exception:
            other += 1
            report(f"{name}: a wrong value {str(got)[:80]}")
            return
        if seq < a0:
            stale += 1
            report(f"{name}: change {seq}, but change {a0} had been announced")
        elif seq > a1 + 1:
            other += 1
            report(f"{name}: change {seq} from the future ({a1} announced after the read)")

    try:
        barrier.wait(timeout=60)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.3:
                index = rng.choice(mine)
                seq = seqs[index] + 1
                name = names[index]
                if not is_removal(seq):
                    cache.set(name, churn_value(name, seq))
                elif seq % 2:
                    cache.delete(name)
                else:
                    cache.pop(name, None)
                seqs[index] = seq
                announced[index] = seq  # only once the change has returned
                changes += 1
            elif roll < 0.85:
                index = rng.randrange(len(names))
                a0 = announced[index]
                got = cache.get(names[index])
                a1 = announced[index]
                reads += 1
                check(index, got, a0, a1)
            else:
                pair = rng.sample(range(len(names)), 2)
                before = [announced[i] for i in pair]
                found = cache.get_many([names[i] for i in pair])
                after = [announced[i] for i in pair]
                reads += 2
                for i, a0, a1 in zip(pair, before, after, strict=True):
                    check(i, found[names[i]], a0, a1)
    except Exception:
        other += 1
        report(traceback.format_exc())
    finally:
        counts[me * 5 : me * 5 + 5] = [reads, changes, stale, missed, other]
        close_cache(cache)


# -- one generation table per store, however many processes create it at once ----------------


def table_stamp(spec: dict[str, Any], me: int, barrier: Any, out: Any) -> None:
    """Open a store no process has created yet, at the same moment as the others; write a
    known stamp into slot `me` of its generation table; once every process has, report the
    stamps this process's table holds in the slots of all of them."""
    barrier.wait(timeout=60)
    store = open_store(spec)
    try:
        store.generations.view[me] = 1000 + me
        barrier.wait(timeout=60)
        out.put((me, [int(store.generations.view[i]) for i in range(barrier.parties)]))
    finally:
        store.close()


# -- Dask tasks --------------------------------------------------------------------------------


def dask_read(cache: Cache, key: str) -> dict[str, Any]:
    """The worker's view of `key`: its value, and whether the worker's memory tier answered."""
    memory = tier_of(cache)
    hits = memory.hits
    value = cache.get(key)
    return {"pid": os.getpid(), "cache": id(cache), "value": value,
            "memory_hit": memory.hits > hits}  # fmt: skip


def dask_write(cache: Cache, key: str, value: Any) -> int:
    cache.set(key, value)
    return os.getpid()
