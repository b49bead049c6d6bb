"""Code run in child processes (``spawn``) by tests/test_coherence_redis.py.

- `serve`: a command server holding one `Cache` over Redis at a time, driven through a pipe
  by the test process (each command has returned before the next is sent);
- `latency_writer` and `latency_reader`: one process changes a key, the others hold a copy
  of it in memory and read it every millisecond until they see the change; each records
  when;
- `churn`: one of several processes writing its own keys, announcing every finished change
  (and when) in shared memory, and reading every key to measure how stale what it reads is;
- `race_writer` and `race_reader`: one process changes each key twice in a row while the
  others read it, to see whether a read racing the second change leaves a copy behind.

Each cache is `Cache(MemoryStore(), [<disk path> | folder://<path>,] <redis URL>)`, as an
application writes it.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
import traceback
from typing import Any

from tests._tiers import store_of, tier_of, tiers_of
from tiers import Cache, MemoryStore

from ._coherence_workers import churn_value, is_removal

ABSENT = "<absent>"  # what a read answers for a key it does not find
perf = time.perf_counter  # CLOCK_MONOTONIC: one clock for every process of the host


def open_cache(spec: dict[str, Any]) -> Cache:
    """``Cache(MemoryStore(), [DiskStore(spec["disk"]) | FolderStore(spec["folder"]),]
    spec["url"], **spec["cache"])``."""
    tiers: list[Any] = [MemoryStore()]
    if spec.get("disk"):
        tiers.append(spec["disk"])  # (a path: a DiskStore the cache opens and closes)
    if spec.get("folder"):
        tiers.append(f"folder://{spec['folder']}")
    tiers.append(spec["url"])
    return Cache(*tiers, **spec.get("cache", {}))


def close_cache(cache: Cache) -> None:
    cache.close()  # (its tiers were opened from a path and a URL: closed with it)


def in_memory(cache: Cache, key: str) -> bool:
    """Whether the memory tier of `cache` holds a copy of `key` (servable or not)."""
    return cache._key(key) in store_of(cache)._data


def record_channel(cache: Cache, events: list[tuple[float, str]]) -> None:
    """Append (when, "lost" | "back") to `events` for each such event of the cache's
    invalidation channel: "lost" once the cache has applied it (its tiers are bypassed from
    then on), "back" before the cache applies it (they are bypassed until then)."""
    listener = cache._channels[0].watch._listener
    inner = listener.on_change

    def recording(event: Any) -> None:
        if event.kind == "back":
            events.append((perf(), "back"))
        inner(event)
        if event.kind == "lost":
            events.append((perf(), "lost"))

    listener.on_change = recording


def wait_until(condition: Any, timeout: float, step: float = 0.0002) -> bool:
    deadline = perf() + timeout
    while not condition():
        if perf() > deadline:
            return False
        time.sleep(step)
    return True


# -- the command server ---------------------------------------------------------------------


def _command(cache: Cache | None, op: str, args: list[Any]) -> tuple[Cache | None, Any]:
    """Run one command of `serve`: (the cache open now, the result)."""
    if op in ("open", "close") and cache is not None:
        close_cache(cache)
        cache = None
    if op == "open":
        spec, environ = args
        os.environ.pop("TIERS_SECRET", None)
        os.environ.update(environ)
        return open_cache(spec), None
    if op == "close":
        return None, None
    if cache is None:
        raise RuntimeError("no cache is open")
    if op != "call":
        raise ValueError(f"unknown command {op!r}")
    name, positional, keywords = args
    return cache, getattr(cache, name)(*positional, **keywords)


def serve(conn: Any) -> None:
    """Answer commands from `conn` until ``("stop",)``, each with ``("ok", result)`` or
    ``("error", "Type: message")``: ``("open", spec, environ)`` opens a cache (closing the
    previous one) with the test's user directories; ``("call", name, args, kwargs)`` calls a
    method of it; ``("close",)`` closes it."""
    cache: Cache | None = None
    try:
        while True:
            try:
                op, *args = conn.recv()
            except EOFError:  # the test process is gone
                break
            if op == "stop":
                conn.send(("ok", None))
                break
            try:
                cache, result = _command(cache, op, args)
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                conn.send(("ok", result))
    finally:
        if cache is not None:
            close_cache(cache)


# -- latency: one writer, readers holding copies ----------------------------------------------


class LatencyBoard:
    """What the latency processes share (made by the test, inherited by the children):
    ``phase`` (-1 at first; 2i: change i prepared, 2i + 1: made; `STOP`), ``ready[r]`` (the
    changes reader r holds a copy for), ``started[i]`` and ``returned[i]`` (when change i
    was called and returned), ``seen[r * changes + i]`` (when reader r first read it) and
    ``held[...]`` (whether its memory still held the old copy just before)."""

    def __init__(self, ctx: Any, readers: int, changes: int) -> None:
        self.readers, self.changes = readers, changes
        self.phase = ctx.Value("q", -1, lock=False)
        self.ready = ctx.Array("q", readers, lock=False)
        self.started = ctx.Array("d", changes, lock=False)
        self.returned = ctx.Array("d", changes, lock=False)
        self.seen = ctx.Array("d", readers * changes, lock=False)
        self.held = ctx.Array("b", readers * changes, lock=False)


LATENCY_OPS = ("set", "delete", "pop", "touch", "evict", "clear")
STOP = -10  # the latency writer failed: the readers stop


def latency_change(i: int) -> tuple[str, str]:
    """(key, operation) of change `i`: every operation, on 5 keys in turn."""
    return f"k{i % 5}", LATENCY_OPS[i % len(LATENCY_OPS)]


def apply_change(cache: Cache, i: int) -> None:
    """Make change `i` (`latency_change`)."""
    key, op = latency_change(i)
    if op == "set":
        cache.set(key, ("new", i), tags=("t",))
    elif op == "delete":
        cache.delete(key)
    elif op == "pop":
        cache.pop(key)
    elif op == "touch":
        cache.touch(key, ttl=3600)
    elif op == "evict":
        cache.evict("t")
    else:
        cache.clear()


def latency_writer(spec: dict[str, Any], board: Any, failures: Any) -> None:
    """For each change i: write ``("old", i)`` (tagged "t", no expiry), wait until every
    reader reads it from its memory tier, then make change i, recording when it started and
    returned, and wait until every reader has seen it (5 s at most)."""
    cache = open_cache(spec)
    readers, changes = board.readers, board.changes
    try:
        for i in range(changes):
            key, op = latency_change(i)
            cache.set(key, ("old", i), tags=("t",))
            board.phase.value = 2 * i
            if not wait_until(lambda i=i: min(board.ready) > i, 10):
                raise TimeoutError(f"change {i}: the readers never held ('old', {i})")
            started = perf()
            apply_change(cache, i)
            board.returned[i] = perf()
            board.started[i] = started
            board.phase.value = 2 * i + 1
            if not wait_until(lambda i=i: all(board.seen[r * changes + i]
                                              for r in range(readers)), 5):  # fmt: skip
                seen = [board.seen[r * changes + i] for r in range(readers)]
                raise TimeoutError(f"change {i} ({op} {key}): not seen within 5 s: {seen}")
    except BaseException:
        failures.put(f"writer: {traceback.format_exc()}")
        board.phase.value = STOP
    finally:
        close_cache(cache)


def latency_reader(spec: dict[str, Any], me: int, board: Any, failures: Any) -> None:
    """For each change i: read ``("old", i)`` until it is a memory hit, say so, then read
    the key every millisecond until the change shows (get; for a touch, the expiry `info`
    shows), recording when that read returned and whether the last read of the old state
    found the copy still in memory."""
    cache = open_cache(spec)
    try:
        for i in range(board.changes):
            if not wait_until(lambda i=i: board.phase.value >= 2 * i
                              or board.phase.value == STOP, 30):  # fmt: skip
                raise TimeoutError(f"change {i}: the writer never prepared it")
            if board.phase.value == STOP:
                return
            _hold(cache, i)
            board.ready[me] = i + 1
            held, when = _see(cache, i, board)
            board.held[me * board.changes + i] = held
            board.seen[me * board.changes + i] = when
    except BaseException:
        failures.put(f"reader {me}: {traceback.format_exc()}")
    finally:
        close_cache(cache)


def _hold(cache: Cache, i: int) -> None:
    """Read the key of change `i` until a memory hit answers ``("old", i)``."""
    key, _op = latency_change(i)
    memory = tier_of(cache)
    deadline = perf() + 10
    while True:
        hits = memory.hits
        got = cache.get(key, ABSENT)
        if got == ("old", i) and memory.hits > hits:
            return
        if perf() > deadline:
            raise TimeoutError(f"change {i}: {key} read {got!r}, not {('old', i)!r}")
        time.sleep(0.0005)


def _see(cache: Cache, i: int, board: Any) -> tuple[bool, float]:
    """Read the key of change `i` every millisecond until the change shows: (whether the
    last read of the old state found a copy in memory, when the first new read returned)."""
    key, op = latency_change(i)
    old, target = ("old", i), ("new", i) if op == "set" else ABSENT
    held = False
    deadline = perf() + 10
    while True:
        copy = in_memory(cache, key)
        got: Any
        if op == "touch":
            got = cache.info(key)
            new, wrong = got is not None and got.expires_at is not None, got is None
        else:
            got = cache.get(key, ABSENT)
            new, wrong = got == target, got not in (old, target)
        when = perf()
        if new:
            return held, when
        if wrong:
            raise AssertionError(f"change {i} ({op} {key}): read {got!r}")
        held = copy
        if perf() > deadline or board.phase.value == STOP:
            raise TimeoutError(f"change {i} ({op} {key}): never seen")
        time.sleep(0.001)


# -- many processes, each writing its own keys and reading everyone's -------------------------

RING = 256  # announcement times kept per key
WINDOW = 0.05  # seconds a read may lag an announced change without being counted
BOUND = 1.0  # seconds past which a lagging read fails the tests
BUCKET = 0.01  # seconds per bucket of the memory hits timeline


class ChurnBoard:
    """What the churn processes share: ``seq[key]`` (the last change announced),
    ``at[key * RING + seq % RING]`` (when it returned; inf: it failed), ``tried[key]`` (the
    last change begun: one that failed may still happen, e.g. on a frozen server once it
    runs again), ``buckets`` (memory hits per process per `BUCKET` from ``origin``, a `perf`
    time taken before they start)."""

    def __init__(
        self, ctx: Any, processes: int, keys: int, seconds: float, *, misses_allowed: bool,
        seed: int = 0,
    ) -> None:  # fmt: skip
        self.seq = ctx.Array("q", keys, lock=False)
        self.at = ctx.Array("d", keys * RING, lock=False)
        self.tried = ctx.Array("q", keys, lock=False)
        self.buckets_each = int((seconds + 30) / BUCKET)
        self.buckets = ctx.Array("q", processes * self.buckets_each, lock=False)
        self.origin = perf()
        self.misses_allowed = misses_allowed
        self.seed = seed


def tag_of(name: str) -> str:
    return "t-" + name


def removal_kind(seq: int) -> str:
    return ("delete", "pop", "evict")[(seq // 5) % 3]


COUNTS = ("reads", "changes", "lagged", "over_window", "beyond", "misses", "other", "errors",
          "memory_hits", "stuck", "hits_while_down")  # fmt: skip


def churn(
    spec: dict[str, Any], me: int, processes: int, keys_each: int, seconds: float,
    board: Any, barrier: Any, out: Any,
) -> None:  # fmt: skip
    """One of `processes` processes, each with its own cache over one Redis.

    Process `me` owns keys ``k{me}.{j}``: change ``seq`` (1, 2, ...) of a key writes
    `churn_value(key, seq)` (with `set`, sometimes `set_many`, tagged ``t-<key>``), or
    removes the key (delete, pop, or evict of its tag) when `is_removal(seq)`; once the call
    has returned, the time goes in ``board.at`` and then ``board.seq[key] = seq``. A change
    that raised (a server down, with ``on_tier_error="raise"``) is never announced: its
    number is skipped.

    Every other operation reads a random key of any process (get, or get_many of two keys):
    with ``a0`` the key's announcement before the read began (at ``r``) and ``a1`` the last
    change begun when it ended, the answer should be change ``s`` in ``[a0, a1]``. A value
    with ``s < a0`` lags: its staleness is ``r`` minus when the first change after ``s`` was
    announced. Nothing where no change of the window is a removal is a miss (a server
    restarted empty loses keys).

    After `seconds`, every process waits for the others, then for `BOUND`, then reads every
    key once: each must be in its last announced state ("stuck" counts those that are not).
    Memory hits of `get` are counted in ``board.buckets``, and those made while the cache's
    channel was down (between a "lost" and the next "back") in "hits_while_down". A summary
    goes to `out` (a queue)."""
    churner = _Churner(spec, me, processes, keys_each, board)
    try:
        barrier.wait(timeout=60)
        churner.run(seconds)
        barrier.wait(timeout=60)  # every change is done and announced
        time.sleep(BOUND)
        churner.final_reads()
        churner.hits_while_down()
    except Exception:
        churner.n["other"] += 1
        churner.report(traceback.format_exc())
    finally:
        with contextlib.suppress(Exception):
            close_cache(churner.cache)
        out.put(churner.summary())


class _Churner:
    """The state of one `churn` process."""

    def __init__(
        self, spec: dict[str, Any], me: int, processes: int, keys_each: int, board: Any
    ) -> None:
        self.me, self.board = me, board
        self.rng = random.Random(me * 7919 + int(board.seed))
        self.cache = open_cache(spec)
        self.memory = tier_of(self.cache)
        self.names = [f"k{p}.{j}" for p in range(processes) for j in range(keys_each)]
        self.mine = [i for i, name in enumerate(self.names) if name.startswith(f"k{me}.")]
        self.seqs = dict.fromkeys(self.mine, 0)
        self.events: list[tuple[float, str]] = []
        if self.cache._channels:
            record_channel(self.cache, self.events)
        self.n = dict.fromkeys(COUNTS, 0)
        self.worst = 0.0
        self.problems: list[str] = []
        self.hit_reads: list[tuple[float, float]] = []  # (start, end) of each memory hit

    def report(self, message: str) -> None:
        if len(self.problems) < 5:
            self.problems.append(f"process {self.me}: {message}")

    def summary(self) -> dict[str, Any]:
        origin = self.board.origin
        return {"me": self.me, **self.n, "worst": self.worst, "problems": self.problems,
                "events": [(t - origin, kind) for t, kind in self.events]}  # fmt: skip

    def run(self, seconds: float) -> None:
        deadline = perf() + seconds
        while perf() < deadline:
            roll = self.rng.random()
            if roll < 0.3:
                self.change()
            elif roll < 0.85:
                self.read_one()
            else:
                self.read_two()

    # -- changes ----------------------------------------------------------------------

    def change(self) -> None:
        board, cache = self.board, self.cache
        index = self.rng.choice(self.mine)
        seq = self.seqs[index] = self.seqs[index] + 1
        board.tried[index] = seq
        name = self.names[index]
        try:
            if not is_removal(seq):
                value = churn_value(name, seq)
                if self.rng.random() < 0.2:
                    cache.set_many({name: value}, tags=(tag_of(name),))
                else:
                    cache.set(name, value, tags=(tag_of(name),))
            elif removal_kind(seq) == "delete":
                cache.delete(name)
            elif removal_kind(seq) == "pop":
                cache.pop(name, None)
            else:
                cache.evict(tag_of(name))
        except Exception:
            self.n["errors"] += 1
            board.at[index * RING + seq % RING] = math.inf
            return
        board.at[index * RING + seq % RING] = perf()
        board.seq[index] = seq  # only once the change has returned
        self.n["changes"] += 1

    # -- reads ----------------------------------------------------------------------------

    def read_one(self) -> None:
        board, memory = self.board, self.memory
        index = self.rng.randrange(len(self.names))
        a0, hits, r = board.seq[index], memory.hits, perf()
        try:
            got = self.cache.get(self.names[index])
        except Exception:
            self.n["errors"] += 1
            return
        end, a1 = perf(), board.tried[index]
        self.n["reads"] += 1
        if memory.hits > hits:
            self.n["memory_hits"] += 1
            self.hit_reads.append((r, end))
            bucket = int((r - board.origin) / BUCKET)
            if 0 <= bucket < board.buckets_each:
                board.buckets[self.me * board.buckets_each + bucket] += 1
        self.check(index, got, a0, a1, r)

    def read_two(self) -> None:
        board = self.board
        pair = self.rng.sample(range(len(self.names)), 2)
        before, hits, r = [board.seq[i] for i in pair], self.memory.hits, perf()
        try:
            found = self.cache.get_many([self.names[i] for i in pair])
        except Exception:
            self.n["errors"] += 1
            return
        after = [board.tried[i] for i in pair]
        self.n["reads"] += 2
        self.n["memory_hits"] += self.memory.hits - hits
        for i, a0, a1 in zip(pair, before, after, strict=True):
            self.check(i, found[self.names[i]], a0, a1, r)

    def check(self, index: int, got: Any, a0: int, a1: int, r: float) -> None:
        name = self.names[index]
        if got is None:
            if a0 == 0 or any(is_removal(s) for s in range(a0, a1 + 1) if s > 0):
                return
            self.n["misses"] += 1
            if not self.board.misses_allowed:
                self.report(f"{name}: nothing, but changes {a0}..{a1} are all writes")
            return
        try:
            key, seq, body = got
            assert (key, seq, body) == churn_value(name, seq) and not is_removal(seq)
        except Exception:
            self.n["other"] += 1
            self.report(f"{name}: a wrong value {str(got)[:80]}")
            return
        if seq > a1:
            self.n["other"] += 1
            self.report(f"{name}: change {seq} from the future ({a1} begun after the read)")
        elif seq < a0:
            self.n["lagged"] += 1
            staleness = r - self.announced_after(index, seq, a0)
            self.worst = max(self.worst, staleness)
            if staleness > WINDOW:
                self.n["over_window"] += 1
                self.report(f"{name}: change {seq}, {staleness * 1000:.1f} ms after change "
                            f"{seq + 1} was announced ({a0} was)")  # fmt: skip
            if staleness > BOUND:
                self.n["beyond"] += 1

    def announced_after(self, index: int, seq: int, a0: int) -> float:
        """When the first announced change of key `index` after change `seq` returned."""
        at = self.board.at
        for s in range(max(seq + 1, a0 - RING + 1), a0 + 1):
            when = at[index * RING + s % RING]
            if math.isfinite(when):  # (inf: it failed, never announced)
                return float(when)
        return float(at[index * RING + a0 % RING])

    # -- after the run --------------------------------------------------------------------

    def final_reads(self) -> None:
        """Every key must read as its last announced change (or a later one that failed)."""
        board = self.board
        for index, name in enumerate(self.names):
            last, tried = board.seq[index], board.tried[index]
            try:
                got = self.cache.get(name)
            except Exception as exc:
                self.n["stuck"] += 1
                self.report(f"{name}: the final read failed: {exc!r}")
                continue
            right = [None if s == 0 or is_removal(s) else churn_value(name, s)
                     for s in range(last, tried + 1)]  # fmt: skip
            if got not in right and not (got is None and board.misses_allowed):
                self.n["stuck"] += 1
                shown = got if got is None else got[:2]
                self.report(f"{name}: {shown!r} {BOUND} s after change {last} was announced")

    def hits_while_down(self) -> None:
        """Count the memory hits made wholly between a "lost" and the next "back"."""
        for start, end in self.hit_reads:
            state = "back"
            for t, kind in self.events:
                if t < start:
                    state = kind
            if state == "lost" and not any(start <= t <= end for t, _k in self.events):
                self.n["hits_while_down"] += 1
                self.report(f"a memory hit at {start - self.board.origin:.3f} s while the "
                            "channel was down")  # fmt: skip


# -- a read racing a change: is a copy left behind? ------------------------------------------

RACE_KINDS = ("set", "set_many", "delete", "pop", "evict")  # (a clear would drop the rest)


def race_key(i: int) -> tuple[str, str]:
    """(key, kind of its second change) of key `i`."""
    return f"r{i}", RACE_KINDS[i % len(RACE_KINDS)]


def race_writer(spec: dict[str, Any], keys: int, board: Any, failures: Any) -> None:
    """For each key in turn: write ``(1, <2 or 200 kB>)`` tagged with a tag of its own, say
    which key is being changed, wait 0-1 ms (the readers read it meanwhile), then change it
    (`race_key`: set ``(2, ...)``, set_many, delete, pop, or evict its tag)."""
    rng = random.Random()
    cache = open_cache(spec)
    try:
        board.phase.value = 0
        wait_until(lambda: min(board.ready) > 0, 30)
        for i in range(keys):
            key, kind = race_key(i)
            size = (2_000, 200_000)[(i // len(RACE_KINDS)) % 2]
            cache.set(key, (1, os.urandom(size)), tags=("t" + key,))
            board.phase.value = i
            time.sleep(rng.uniform(0, 0.001))
            if kind == "set":
                cache.set(key, (2, b"new"))
            elif kind == "set_many":
                cache.set_many({key: (2, b"new")})
            elif kind == "delete":
                cache.delete(key)
            elif kind == "pop":
                cache.pop(key)
            else:
                cache.evict("t" + key)
            time.sleep(0.002)
    except BaseException:
        failures.put(f"writer: {traceback.format_exc()}")
    finally:
        board.phase.value = STOP
        close_cache(cache)


def race_reader(
    spec: dict[str, Any], me: int, keys: int, settle: float, board: Any, out: Any
) -> None:  # fmt: skip
    """Read the key being changed, again and again, until the writer is done; `settle`
    seconds later, report what this cache reads for every key: ``{key: (first item of the
    value or None, [tiers holding a copy])}``."""
    cache = open_cache(spec)
    views: dict[str, Any] = {}
    reads = 0
    try:
        wait_until(lambda: not any(t.suspect for t in tiers_of(cache)), 10)  # listening
        board.ready[me] = 1
        wait_until(lambda: board.phase.value >= 0 or board.phase.value == STOP, 30)
        while board.phase.value != STOP:
            cache.get(race_key(max(board.phase.value, 0))[0])
            reads += 1

        time.sleep(settle)
        for i in range(keys):
            key = race_key(i)[0]
            got = cache.get(key)
            holders = [t.name.split("(")[0] for t in tiers_of(cache)[:-1]
                       if t.store.get(cache._key(key)) is not None]  # fmt: skip
            views[key] = (None if got is None else got[0], holders)
    except BaseException:
        views["error"] = traceback.format_exc()
    finally:
        close_cache(cache)
        out.put((me, reads, views))
