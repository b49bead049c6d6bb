"""RedisStore's invalidation channel against real servers: every write announces what it
changed, another process hears it, and the listener reports a channel it cannot trust
("lost") and its return ("back") — dropped connections, CLIENT KILL, a frozen server, a
restart, a cluster, hostile messages, close() and fork()."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tiers._stores import Entry
from tiers._stores._redis import RedisStore
from tiers._stores._redis import _invalidation as inv
from tiers._stores._redis._invalidation import Invalidation, read_message
from tiers._stores._redis._ops import SCRIPTED_SET

WAIT = 5.0  # seconds any expected event may take (they take milliseconds)


class Recorder:
    """An `on_change` that keeps every event (and when it came) for the test to wait on."""

    def __init__(self) -> None:
        self.events: list[tuple[float, Invalidation]] = []
        self.seen = 0
        self.cond = threading.Condition()

    def __call__(self, event: Invalidation) -> None:
        with self.cond:
            self.events.append((time.perf_counter(), event))
            self.cond.notify_all()

    def next(self, timeout: float = WAIT) -> Invalidation:
        """The next event not taken yet."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.events) > self.seen, timeout):
                raise AssertionError(f"no event within {timeout} s; had {self.kinds()}")
            self.seen += 1
            return self.events[self.seen - 1][1]

    def until(self, kind: str, timeout: float = WAIT) -> tuple[float, Invalidation]:
        """(when, event) of the next event of `kind`, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(deadline - time.monotonic(), 0.0))
            if event.kind == kind:
                return self.events[self.seen - 1][0], event

    def quiet(self) -> list[Invalidation]:
        """The events not taken yet (none expected)."""
        with self.cond:
            return [event for _, event in self.events[self.seen :]]

    def kinds(self) -> list[str]:
        return [event.kind for _, event in self.events]


@pytest.fixture
def stores(redis_url: str) -> Iterator[tuple[RedisStore, RedisStore, Recorder]]:
    """(writer, watched, recorder): two stores on one prefix, the second watched."""
    writer = RedisStore(redis_url, prefix="inv:")
    watched = RedisStore(redis_url, prefix="inv:")
    recorder = Recorder()
    watch = watched.watch(recorder)
    try:
        assert recorder.next().kind == "back"  # the first subscription
        assert watch.connected
        yield writer, watched, recorder
    finally:
        writer.close()
        watched.close()


def _watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tiers-redis-watch" and t.is_alive()]


def _keys(*keys: str) -> Callable[[Invalidation], bool]:
    return lambda e: e.kind == "keys" and e.keys == keys


def _prefix(prefix: str, tag: str | None = None) -> Callable[[Invalidation], bool]:
    return lambda e: e.kind == "prefix" and e.prefix == prefix and e.tag == tag


# -- every write, and only writes, announce what they changed -------------------------------


def test_every_write_announces_what_it_changed(
    stores: tuple[RedisStore, RedisStore, Recorder],
) -> None:
    writer, watched, recorder = stores
    now = time.time()
    big = Entry(os.urandom(SCRIPTED_SET + 1))  # a SET and a PUBLISH in a transaction
    writes: list[tuple[Callable[[], object], Callable[[Invalidation], bool]]] = [
        (lambda: writer.set("a", Entry(b"1")), _keys("a")),
        (lambda: writer.set("b", Entry(b"2", tags=("t",))), _keys("b")),
        (lambda: writer.set("big", big), _keys("big")),
        (lambda: writer.set("ttl", Entry(b"3", expires_at=now + 60)), _keys("ttl")),
        (lambda: writer.set("gone", Entry(b"4", expires_at=now - 1)), _keys("gone")),
        (lambda: writer.set("\0 \udc80 ☃", Entry(b"5")), _keys("\0 \udc80 ☃")),
        (lambda: writer.set_many([("m1", Entry(b"1")), ("m2", Entry(b"2"))]), _keys("m1", "m2")),
        (lambda: writer.delete("a"), _keys("a")),
        (lambda: writer.delete("never-there"), _keys("never-there")),  # a copy may be
        (lambda: writer.pop("big"), _keys("big")),
        (lambda: writer.touch("ttl", now + 120), _keys("ttl")),
        (lambda: writer.evict("t", "b"), _prefix("b", "t")),
        (lambda: writer.clear("m"), _prefix("m")),
        (writer.clear, _prefix("")),
    ]
    for write, expected in writes:
        write()
        event = recorder.next()
        assert expected(event), event
        assert event.origin == writer.origin
    assert writer.get("m1") is None and writer.get("\0 \udc80 ☃") is None  # they did happen

    async def async_writes() -> None:
        await writer.set_async("x", Entry(b"1"))
        await writer.set_many_async([("y", Entry(b"2", tags=("u",)))])
        await writer.touch_async("x", None)
        await writer.pop_async("x")
        await writer.delete_async("y")
        await writer.evict_async("u")
        await writer.clear_async("y")
        await writer.close_async()

    asyncio.run(async_writes())
    for expected in (_keys("x"), _keys("y"), _keys("x"), _keys("x"), _keys("y"),
                     _prefix("", "u"), _prefix("y")):  # fmt: skip
        event = recorder.next()
        assert expected(event), event
    watched.set("own", Entry(b"v"))  # the watching store's own writes come back, marked
    assert recorder.next() == Invalidation("keys", keys=("own",), origin=watched.origin)


def test_reads_expire_and_locks_announce_nothing(
    stores: tuple[RedisStore, RedisStore, Recorder], redis_url: str
) -> None:
    writer, _watched, recorder = stores
    writer.set("old", Entry(b"v", expires_at=time.time() + 0.05))
    assert recorder.next().keys == ("old",)
    time.sleep(0.1)
    assert writer.get("old") is None and writer.info("old") is None
    assert writer.get_many(["old"]) == [None]
    assert list(writer.keys()) == [] and writer.count() == 0
    assert writer.expire() == 1  # copies carry the same expiry: nothing to say
    assert writer.acquire_lock("L", "tok", 5) and writer.release_lock("L", "tok")
    silent = RedisStore(redis_url, prefix="inv:")
    silent._publish = False  # what the benchmark compares against
    silent.set("s", Entry(b"v", tags=("t",)))
    silent.pop("s")
    silent.evict("t")
    silent.clear()
    silent.close()
    writer.set("end", Entry(b"v"))
    assert recorder.next().keys == ("end",)  # the first event since "old"


def test_a_pickled_store_announces_with_an_origin_of_its_own(
    stores: tuple[RedisStore, RedisStore, Recorder],
) -> None:
    import pickle

    writer, _watched, recorder = stores
    copy = pickle.loads(pickle.dumps(writer))
    try:
        copy.set("p", Entry(b"v"))
        event = recorder.next()
        assert event.keys == ("p",) and event.origin == copy.origin != writer.origin
        writer._publish = False
        assert pickle.loads(pickle.dumps(writer))._publish is False
    finally:
        copy.close()


def test_databases_and_prefixes_have_channels_of_their_own(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    recorder = Recorder()
    watched = RedisStore(f"{base}/0", prefix="p:")
    others = [RedisStore(f"{base}/1", prefix="p:"), RedisStore(f"{base}/0", prefix="q:")]
    same = RedisStore(f"{base}/0", prefix="p:")
    try:
        assert (watched._channel, others[0]._channel, others[1]._channel) == (
            b"p:i", b"p:i.1", b"q:i")  # fmt: skip
        watched.watch(recorder)
        assert recorder.next().kind == "back"
        for store in others:
            store.set("k", Entry(b"v"))
        same.set("mine", Entry(b"v"))
        assert recorder.next().keys == ("mine",)
    finally:
        for store in (watched, same, *others):
            store.close()


# -- other processes, latency ----------------------------------------------------------------


def _write_keys(url: str, prefix: str, count: int) -> bytes:
    """(A spawned process.) Write `count` keys; this store's origin."""
    store = RedisStore(url, prefix=prefix)
    try:
        for i in range(count):
            store.set(f"child{i}", Entry(b"v"))
        return store.origin
    finally:
        store.close()


def test_writes_in_another_process_arrive(
    stores: tuple[RedisStore, RedisStore, Recorder], redis_url: str
) -> None:
    _writer, watched, recorder = stores
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        origin = pool.apply(_write_keys, (redis_url, "inv:", 20))
    for i in range(20):
        event = recorder.next()
        assert event.keys == (f"child{i}",) and event.origin == origin
        assert origin not in (watched.origin, b"")


def test_latency_from_write_to_callback(
    stores: tuple[RedisStore, RedisStore, Recorder], record_property: Any
) -> None:
    """Recorded, not asserted tightly (a loaded machine is slow): p50/p99 over 500 writes
    on loopback, from the call to `set` to the callback on the listener thread."""
    writer, _watched, recorder = stores
    entry = Entry(os.urandom(1024))
    latencies = []
    for i in range(500):
        started = time.perf_counter()
        writer.set(f"lat{i}", entry)
        when, event = recorder.until("keys")
        assert event.keys == (f"lat{i}",)
        latencies.append(when - started)
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99)]
    record_property("invalidation_p50_ms", round(p50 * 1000, 3))
    record_property("invalidation_p99_ms", round(p99 * 1000, 3))
    print(f"\nwrite -> callback: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
    assert p99 < 1.0


# -- the channel going down and coming back --------------------------------------------------


def test_client_kill_reports_lost_then_back(
    stores: tuple[RedisStore, RedisStore, Recorder], redis_url: str
) -> None:
    writer, watched, recorder = stores
    raw = redis.Redis.from_url(redis_url)
    try:
        killed = time.perf_counter()
        assert raw.client_kill_filter(_type="pubsub") >= 1
        lost_at, _ = recorder.until("lost", timeout=1.0)
        back_at, _ = recorder.until("back", timeout=2.0)
        print(f"\nCLIENT KILL: lost in {(lost_at - killed) * 1000:.1f} ms, back in "
              f"{(back_at - killed) * 1000:.1f} ms")  # fmt: skip
        assert lost_at - killed < 0.5
        assert watched._watches[0].connected
        writer.set("after", Entry(b"v"))
        assert recorder.until("keys")[1].keys == ("after",)
    finally:
        raw.close()


@pytest.fixture
def process_watch(redis_process: Any) -> Iterator[tuple[Any, RedisStore, Recorder]]:
    store = RedisStore(redis_process.url, prefix="inv:")
    recorder = Recorder()
    store.watch(recorder)
    try:
        assert recorder.next().kind == "back"
        yield redis_process, store, recorder
    finally:
        if redis_process.proc is not None:
            redis_process.thaw()
        store.close()


def test_a_frozen_server_is_noticed(
    process_watch: tuple[Any, RedisStore, Recorder], record_property: Any
) -> None:
    """SIGSTOP: no error, no EOF, just silence — the PINGs go unanswered: "lost" in 1.5 s at
    most (a PING every 0.5 s, 1 s for its PONG); "back" once it runs again."""
    server, store, recorder = process_watch
    time.sleep(random.uniform(0, inv.PING_EVERY))  # anywhere in the PING cycle
    frozen = time.perf_counter()
    server.freeze()
    lost_at, _ = recorder.until("lost", timeout=3.0)
    assert not store._watches[0].connected
    server.thaw()
    thawed = time.perf_counter()
    back_at, _ = recorder.until("back", timeout=3.0)
    record_property("frozen_lost_after_s", round(lost_at - frozen, 3))
    print(f"\nfrozen: lost after {lost_at - frozen:.3f} s; back {back_at - thawed:.3f} s after "
          "the thaw")  # fmt: skip
    assert inv.PONG_WITHIN - 0.05 <= lost_at - frozen <= 2.5
    store.set("k", Entry(b"v"))
    assert recorder.until("keys")[1].keys == ("k",)


def test_a_killed_then_restarted_server(process_watch: tuple[Any, RedisStore, Recorder]) -> None:
    server, store, recorder = process_watch
    killed = time.perf_counter()
    server.kill()
    lost_at, _ = recorder.until("lost", timeout=1.0)
    assert lost_at - killed < 0.5  # the connection drops: noticed at once
    time.sleep(0.3)  # a few failed reconnects: still one "lost"
    server.start()
    started = time.perf_counter()
    back_at, _ = recorder.until("back", timeout=3.0)
    print(f"\nkilled: lost in {(lost_at - killed) * 1000:.1f} ms; back "
          f"{back_at - started:.3f} s after the restart")  # fmt: skip
    assert back_at - started < 1.5  # the backoff is at most 1 s
    assert recorder.kinds() == ["back", "lost", "back"]
    store.set("k", Entry(b"v"))
    assert recorder.until("keys")[1].keys == ("k",)


def test_a_server_that_is_not_there_is_lost_until_it_comes(tmp_path: Any) -> None:
    from tests._servers import RedisServer, ServerMissing, free_port

    port = free_port()
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    recorder = Recorder()
    watch = store.watch(recorder)
    try:
        assert recorder.next(timeout=2.0).kind == "lost"  # the first connect failed
        assert not watch.connected
        try:
            server = RedisServer(tmp_path / "late", port=port).start()
        except ServerMissing as exc:
            pytest.skip(str(exc))
        try:
            assert recorder.next(timeout=3.0).kind == "back"
            assert watch.connected
        finally:
            server.kill()
    finally:
        store.close()


def test_a_sentinel_watch_follows_the_failover(redis_process: Any, tmp_path: Any) -> None:
    """On a ``redis+sentinel://`` URL the listener subscribes on the primary the Sentinel
    names: the primary dies ("lost" at once), the replica is promoted, "back" on it."""
    from tests._servers import RedisServer
    from tests.test_redis_faults import _Sentinel

    replica = RedisServer(tmp_path / "replica").start()
    sentinel = _Sentinel(tmp_path / "sentinel", redis_process.port)
    stores: list[RedisStore] = []
    try:
        with redis.Redis.from_url(redis_process.url) as primary:
            primary.config_set("repl-diskless-sync-delay", 0)  # not the 5 s default
        with redis.Redis.from_url(replica.url) as raw:
            raw.replicaof("127.0.0.1", redis_process.port)
            _until(lambda: raw.info("replication")["master_link_status"] == "up", 10)
        sentinel.start()
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/main"
        writer, watched = stores[:] = [RedisStore(url, prefix="s:"), RedisStore(url, prefix="s:")]
        recorder = Recorder()
        watched.watch(recorder)
        assert recorder.next().kind == "back"
        writer.set("k", Entry(b"v"))
        assert recorder.next().keys == ("k",)
        _until(lambda: sentinel.replicas() == 1, 15)
        redis_process.kill()
        recorder.until("lost", timeout=1.0)
        recorder.until("back", timeout=20)
        _until(lambda: _stored(writer, "after"), 10)
        assert recorder.until("keys")[1].keys == ("after",)
    finally:
        for store in stores:
            store.close()
        sentinel.kill()
        replica.kill()


def _until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.05)


def _stored(store: RedisStore, key: str) -> bool:
    try:
        return store.set(key, Entry(b"v"))
    except Exception:
        return False


# -- a cluster ------------------------------------------------------------------------------


def test_a_cluster_announces_writes_on_every_primary(redis_cluster: Any) -> None:
    """Any node hears every PUBLISH (the cluster bus carries it), so one subscriber does; the
    messages of writes on different primaries come by different links, in any order."""
    url = redis_cluster.url.replace("redis://", "redis+cluster://")
    # 5 s: a new cluster client's first call also finds the nodes (over 0.5 s when loaded)
    writer = RedisStore(url, prefix="cinv:", timeout=5.0)
    watched = RedisStore(url, prefix="cinv:", timeout=5.0)
    recorder = Recorder()
    watched.watch(recorder)
    raw = redis.cluster.RedisCluster.from_url(redis_cluster.url)
    try:
        assert recorder.next(timeout=10).kind == "back"
        keys = [f"k{i}" for i in range(30)]
        owners = {raw.get_node_from_key(writer._keys.entry(key)).name for key in keys}
        assert len(owners) == 3  # every primary holds some
        for key in keys:
            writer.set(key, Entry(b"v"))
        writer.set("tagged", Entry(b"v", tags=("t",)))  # a pipeline across nodes
        writer.set("big", Entry(os.urandom(SCRIPTED_SET + 1)))
        writer.set_many([(key, Entry(b"w")) for key in keys[:10]])
        writer.pop("big")
        writer.delete("k0")
        writer.evict("t")
        expected = [*((key,) for key in keys), ("tagged",), ("big",), tuple(keys[:10]),
                    ("big",), ("k0",), ("prefix", "", "t")]  # fmt: skip
        events = [recorder.next() for _ in expected]  # each node's in order, not across nodes
        got = [e.keys if e.kind == "keys" else (e.kind, e.prefix, e.tag) for e in events]
        assert sorted(got) == sorted(expected)
        for node in raw.get_nodes():  # whichever node it listens on: lost, then back
            node.redis_connection.client_kill_filter(_type="pubsub")
        recorder.until("lost")
        recorder.until("back", timeout=5)
        writer.set("after", Entry(b"v"))
        assert recorder.until("keys")[1].keys == ("after",)
    finally:
        raw.close()
        writer.close()
        watched.close()


# -- hostile messages -------------------------------------------------------------------------


ORIGIN = bytes(range(16))
GOOD = inv.keys_message(ORIGIN, ["a", "b\udc80"])


def test_messages_round_trip() -> None:
    assert read_message(GOOD) == Invalidation("keys", keys=("a", "b\udc80"), origin=ORIGIN)
    assert read_message(inv.keys_message(ORIGIN, [])) == Invalidation("keys", origin=ORIGIN)
    assert read_message(inv.prefix_message(ORIGIN, "p")) == Invalidation(
        "prefix", prefix="p", origin=ORIGIN)  # fmt: skip
    assert read_message(inv.prefix_message(ORIGIN, "", "t")) == Invalidation(
        "prefix", prefix="", tag="t", origin=ORIGIN)  # fmt: skip


MALFORMED = [
    b"", b"\x01", b"\x02" + GOOD[1:], GOOD[:17], GOOD[:-1], GOOD + b"\0", GOOD[:18] + b"\xff" * 4,
    GOOD[:17] + b"\x09" + GOOD[18:], bytes((1, *ORIGIN, 1)) + b"\x02\0\0\0\xff\xfe",
    bytes((1, *ORIGIN, 2)), bytes((1, *ORIGIN, 2)) + inv._strings(["a", "b"]),
    bytes((1, *ORIGIN, 3)) + inv._strings(["a"]), "text", None, 42,
]  # fmt: skip


@pytest.mark.parametrize("message", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_message_means_everything(message: object) -> None:
    assert read_message(message) == Invalidation("prefix", prefix="", origin=b"")


def test_no_damage_to_a_message_raises() -> None:
    rng = random.Random(7)
    messages = [GOOD, inv.prefix_message(ORIGIN, "p", "t")]
    for message in messages:
        for cut in range(len(message) + 1):
            assert isinstance(read_message(message[:cut]), Invalidation)
        for _ in range(2000):
            damaged = bytearray(message)
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            assert isinstance(read_message(bytes(damaged)), Invalidation)
    for _ in range(2000):
        assert isinstance(read_message(rng.randbytes(rng.randrange(64))), Invalidation)


def test_malformed_messages_on_the_channel_drop_everything_and_the_watch_goes_on(
    stores: tuple[RedisStore, RedisStore, Recorder], redis_url: str
) -> None:
    writer, watched, recorder = stores
    raw = redis.Redis.from_url(redis_url)
    try:
        sent = [m for m in MALFORMED if isinstance(m, bytes)] + [os.urandom(10_000)]
        for message in sent:
            raw.publish(b"inv:i", message)
        for _ in sent:
            assert recorder.next() == inv.EVERYTHING
        writer.set("still", Entry(b"v"))
        assert recorder.next().keys == ("still",)
        assert watched._watches[0].connected
    finally:
        raw.close()


# -- callbacks, close, threads, fork ---------------------------------------------------------


def test_a_raising_callback_is_logged_and_the_thread_goes_on(
    stores: tuple[RedisStore, RedisStore, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    writer, watched, recorder = stores

    def bad(event: Invalidation) -> None:
        recorder(event)
        raise RuntimeError("callback bug")

    watched.watch(bad)
    assert recorder.next().kind == "back"
    writer.set("k", Entry(b"v"))
    writer.set("k2", Entry(b"v"))
    seen = sorted(recorder.next().keys for _ in range(4))  # both watches, both writes
    assert seen == [("k",), ("k",), ("k2",), ("k2",)]
    assert "callback raised" in caplog.text


def test_close_is_quick_idempotent_and_leaves_no_thread(redis_url: str) -> None:
    before = len(_watch_threads())
    store = RedisStore(redis_url, prefix="inv:")
    recorder = Recorder()
    watch = store.watch(recorder)
    assert recorder.next().kind == "back"
    started = time.perf_counter()
    watch.close()
    assert time.perf_counter() - started < 0.5
    watch.close()
    assert not watch.connected and watch.closed
    assert len(_watch_threads()) <= before
    store.set("k", Entry(b"v"))
    time.sleep(0.1)
    assert recorder.quiet() == []  # nothing after close
    unreachable = RedisStore(f"redis://127.0.0.1:{_free_port()}/0")
    waiting = unreachable.watch(recorder)  # in its reconnect backoff
    assert recorder.next(timeout=2).kind == "lost"
    started = time.perf_counter()
    waiting.close()
    assert time.perf_counter() - started < 0.5
    several = [store.watch(lambda e: None) for _ in range(3)]
    store.close()  # closes its watches
    assert all(w.closed for w in several)
    assert len(_watch_threads()) <= before
    unreachable.close()


def _free_port() -> int:
    from tests._servers import free_port

    return free_port()


def test_close_from_the_callback_does_not_deadlock(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix="inv:")
    done = threading.Event()
    watches: list[Any] = []

    def close_on_back(event: Invalidation) -> None:
        if event.kind == "back":
            while not watches:
                time.sleep(0.001)
            watches[0].close()
            done.set()

    watches.append(store.watch(close_on_back))
    try:
        assert done.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while watches[0]._listener.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not watches[0]._listener.thread.is_alive()
    finally:
        store.close()


def test_the_thread_does_not_keep_the_interpreter_alive(redis_url: str) -> None:
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    script = (
        "import sys, time\n"
        "from tiers._stores._redis import RedisStore\n"
        "for url in sys.argv[1:]:\n"
        "    RedisStore(url).watch(lambda e: None)\n"
        "time.sleep(0.3)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script, redis_url, dead], timeout=20, check=False)
    assert done.returncode == 0
    assert time.monotonic() - started < 10


def _in_child(store: RedisStore, recorder: Recorder, conn: Any) -> None:
    """(A forked child.) What its copy of the parent's watch reports."""
    try:
        kinds = [recorder.until("lost")[1].kind, recorder.until("back")[1].kind]
        store.set("from-child", Entry(b"v"))
        kinds.append(recorder.until("keys")[1].keys[0])
        conn.send(kinds)
    except BaseException as exc:
        conn.send(repr(exc))
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_watches_again_with_a_connection_of_its_own(
    stores: tuple[RedisStore, RedisStore, Recorder],
) -> None:
    writer, watched, recorder = stores
    ours, theirs = multiprocessing.Pipe()
    with warnings.catch_warnings():  # Python 3.12 warns of fork() with threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        child = multiprocessing.get_context("fork").Process(
            target=_in_child, args=(watched, recorder, theirs)
        )
        child.start()
    try:
        assert ours.poll(10), "the child said nothing"
        assert ours.recv() == ["lost", "back", "from-child"]
    finally:
        child.join(10)
    assert recorder.until("keys")[1].keys == ("from-child",)  # the parent's watch is intact
    assert recorder.quiet() == []
    writer.set("after", Entry(b"v"))
    assert recorder.next().keys == ("after",)
