"""Pushed invalidation: every write through a RedisStore announces what it changed on a
pub/sub channel, and `Watch` listens to it from a thread of its own (docs/redis.md).

Channel: ``<prefix>i`` (``<prefix>i.<db>`` on a database other than 0: channels are
server-wide, databases are not). A classic PUBLISH reaches the subscribers of the server, of
its replicas and of every node of a cluster, so one connection anywhere hears every write.

Message, little-endian: version (1 byte, = 1), the writer's origin (16 bytes), a kind byte,
then strings, each a uint32 length and its UTF-8 (surrogatepass) bytes:

- kind 1, keys: the store keys written or deleted (any number);
- kind 2, prefix: one string: every key under it may have changed (`clear`);
- kind 3, tag: prefix, then tag: the keys under prefix that carried tag (`evict`).

Anything else (another version, a length past the end, bytes left over, bad UTF-8) reads as
"everything may have changed": a receiver never trusts what it cannot read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import monotonic
from typing import Any, Literal

from . import _clients
from ._keys import decode, encode

log = logging.getLogger("tiers")

VERSION = 1
KEYS, PREFIX, TAG = 1, 2, 3
_HEAD = 18  # version, origin, kind

PING_EVERY = 0.5
"""Seconds between the listener's PINGs on its subscriber connection."""
PONG_WITHIN = 1.0
"""A PING unanswered this long means the channel is down ("lost" in at most 1.5 s)."""
RETRY_FIRST, RETRY_MAX = 0.05, 1.0
"""Reconnect backoff: the first retry at once, then 50 ms doubling to 1 s."""
CLOSE_WITHIN = 2.0
"""How long `Watch.close` waits for the thread (it ends sooner: its socket is shut down)."""


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What changed in a watched store. `kind`:

    - ``"keys"``: the store keys in `keys` were written or deleted;
    - ``"prefix"``: every key starting with `prefix` may have changed (with `tag`: only those
      that carried that tag; a receiver may drop just those, or everything under `prefix`);
    - ``"lost"``: the channel is down: messages may be missed from now on, so every copy is
      suspect until ``"back"``;
    - ``"back"``: subscribed (first, or again after ``"lost"``): what changed before is
      unknown, so drop every copy, then trust the channel again.

    `origin` is the writing store's `RedisStore.origin` (empty for lost, back, and messages
    that could not be read).
    """

    kind: Literal["keys", "prefix", "lost", "back"]
    keys: tuple[str, ...] = ()
    prefix: str = ""
    origin: bytes = b""
    tag: str | None = None


EVERYTHING = Invalidation("prefix")
LOST = Invalidation("lost")
BACK = Invalidation("back")


def channel(prefix: str, target: _clients.Target) -> bytes:
    """The channel a store's writes are announced on."""
    name = encode(prefix) + b"i"
    try:
        db = int(target.options.get("db") or 0)
    except (TypeError, ValueError):
        db = 0
    return name if db == 0 or target.cluster else name + b".%d" % db


# -- messages ------------------------------------------------------------------------------


def _strings(items: Iterable[str]) -> bytes:
    return b"".join(len(raw).to_bytes(4, "little") + raw for raw in map(encode, items))


def keys_message(origin: bytes, keys: list[str]) -> bytes:
    if len(keys) == 1:  # a set, a delete: written out
        raw = keys[0].encode("utf-8", "surrogatepass")
        return b"\x01" + origin + b"\x01" + len(raw).to_bytes(4, "little") + raw
    return bytes((VERSION,)) + origin + bytes((KEYS,)) + _strings(keys)


def prefix_message(origin: bytes, prefix: str, tag: str | None = None) -> bytes:
    if tag is None:
        return bytes((VERSION,)) + origin + bytes((PREFIX,)) + _strings((prefix,))
    return bytes((VERSION,)) + origin + bytes((TAG,)) + _strings((prefix, tag))


def read_message(message: object) -> Invalidation:
    """The event a message announces; `EVERYTHING` for anything malformed (never raises)."""
    try:
        return _parse(message)
    except Exception:
        return EVERYTHING


def _parse(message: object) -> Invalidation:
    if not isinstance(message, bytes) or len(message) < _HEAD or message[0] != VERSION:
        raise ValueError("not a version 1 message")
    strings = []
    at, end = _HEAD, len(message)
    while at < end:
        size = int.from_bytes(message[at : at + 4], "little")
        if at + 4 + size > end:
            raise ValueError("a string runs past the end")
        strings.append(decode(message[at + 4 : at + 4 + size]))
        at += 4 + size
    origin, kind = message[1:17], message[17]
    if kind == KEYS:
        return Invalidation("keys", keys=tuple(strings), origin=origin)
    if kind == PREFIX and len(strings) == 1:
        return Invalidation("prefix", prefix=strings[0], origin=origin)
    if kind == TAG and len(strings) == 2:
        return Invalidation("prefix", prefix=strings[0], tag=strings[1], origin=origin)
    raise ValueError("unknown kind")


# -- the listener --------------------------------------------------------------------------


class _Lost(Exception):
    """The subscriber connection is not trusted any more (no PONG, an unexpected reply)."""


class _Listener:
    """The thread behind a `Watch`: subscribe, deliver, health-check, reconnect.

    Reports "lost" as soon as the connection is suspected (a read fails, a PING goes
    unanswered for `PONG_WITHIN`) and before reconnecting; "back" once SUBSCRIBE is confirmed.
    """

    def __init__(
        self, target: _clients.Target, timeout: float, channel: bytes, on_change: Callable[..., Any]
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.channel = channel
        self.on_change = on_change
        self._fresh(lost_first=False)

    def _fresh(self, *, lost_first: bool) -> None:
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.connected = False
        self.conn: Any = None
        self.lost_first = lost_first
        self.reported_lost = False
        self.connected_since: float | None = None
        self.thread = threading.Thread(target=self._run, name="tiers-redis-watch", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, wait: float) -> None:
        """Stop the thread: its socket is shut down to wake it; join up to `wait` seconds."""
        with self.lock:
            self.stopping.set()
            conn = self.conn
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.shutdown(socket.SHUT_RDWR)  # not close: the thread still reads it
        thread = self.thread
        if wait and thread.ident is not None and thread is not threading.current_thread():
            thread.join(wait)

    def after_fork(self) -> None:
        """(In a forked child.) The thread is gone and the socket is the parent's: close our
        copy of it (no shutdown, which would cut the parent's too) and start again, with
        "lost" first: the copies the child inherited were made under the parent's watch."""
        sock = getattr(self.conn, "_sock", None)
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.close()
        if not self.stopping.is_set():
            self._fresh(lost_first=True)
            self.start()

    # -- on the thread -------------------------------------------------------------------

    def _run(self) -> None:
        connections = _clients.Subscribers(self.target, self.timeout, PONG_WITHIN)
        delay = 0.0
        try:
            if self.lost_first:
                self._lose("the process forked")
            while not self.stopping.is_set():
                try:
                    self._session(connections)
                except Exception as exc:
                    connections.failed()
                    self._lose(exc)
                since = self.connected_since
                if since is not None and monotonic() - since >= RETRY_MAX:
                    delay = 0.0  # it was up a while: retry at once, then back off
                else:
                    delay = min(max(delay * 2, RETRY_FIRST), RETRY_MAX)
                self.stopping.wait(delay)
        finally:
            self.connected = False
            connections.close()

    def _session(self, connections: _clients.Subscribers) -> None:
        """Subscribe and deliver until stopped (returns) or the connection fails (raises)."""
        self.connected_since = None
        conn = connections.make()
        with self.lock:
            if self.stopping.is_set():
                return
            self.conn = conn
        try:
            conn.connect()
            conn.send_command("SUBSCRIBE", self.channel, check_health=False)
            reply = conn.read_response()
            if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                raise _Lost(f"SUBSCRIBE answered {reply!r}")
            self.connected_since = monotonic()
            self.connected, self.reported_lost = True, False
            self._emit(BACK)
            self._listen(conn)
        finally:
            with self.lock:
                self.conn = None
            conn.disconnect()

    def _listen(self, conn: Any) -> None:
        pings: deque[float] = deque()
        next_ping = monotonic() + PING_EVERY
        while not self.stopping.is_set():
            now = monotonic()
            if pings and now - pings[0] >= PONG_WITHIN:
                raise _Lost(f"no reply to PING within {PONG_WITHIN} s")
            if now >= next_ping:
                conn.send_command("PING", check_health=False)
                pings.append(now)
                next_ping = now + PING_EVERY
            wake = min(next_ping, pings[0] + PONG_WITHIN) if pings else next_ping
            if not conn.can_read(timeout=max(wake - monotonic(), 0.0)):
                continue
            reply = conn.read_response()
            kind = reply[0] if isinstance(reply, list) and reply else None
            if kind == b"message" and len(reply) == 3:
                self._emit(read_message(reply[2]))
            elif kind == b"pong" and pings:
                pings.popleft()
            else:
                raise _Lost(f"unexpected reply {reply!r:.80}")

    def _lose(self, reason: object) -> None:
        if self.stopping.is_set():
            return
        was, self.connected = self.connected, False
        if self.reported_lost:
            log.debug("still no invalidations from Redis at %s: %s", self._where, reason)
            return
        self.reported_lost = True
        level = logging.WARNING if was else logging.INFO
        log.log(level, "invalidations from Redis at %s lost: %s", self._where, reason)
        self._emit(LOST)

    @property
    def _where(self) -> str:
        return f"{self.target.where} ({self.channel.decode('utf-8', 'replace')})"

    def _emit(self, event: Invalidation) -> None:
        """Call back; whatever it raises is logged, never the thread's end."""
        if self.stopping.is_set():
            return
        try:
            self.on_change(event)
        except BaseException:
            log.warning("an invalidation callback raised", exc_info=True)


_WATCHES: weakref.WeakSet[Watch] = weakref.WeakSet()


class Watch:
    """A store's invalidation channel, listened to by a daemon thread: see `RedisStore.watch`.

    In a forked child the thread starts again with a connection of its own, reporting "lost"
    first, then "back" once subscribed."""

    def __init__(
        self,
        target: _clients.Target,
        timeout: float,
        channel: bytes,
        on_change: Callable[[Invalidation], object],
    ) -> None:
        self._listener = _Listener(target, timeout, channel, on_change)
        _WATCHES.add(self)
        weakref.finalize(self, self._listener.stop, 0.0)  # dropped unclosed: stop the thread
        self._listener.start()

    @property
    def connected(self) -> bool:
        """Whether the channel is up: subscribed, and the last health check answered."""
        return self._listener.connected

    @property
    def closed(self) -> bool:
        return self._listener.stopping.is_set()

    def close(self) -> None:
        """Stop listening (idempotent): no callback after this returns (bounded by
        `CLOSE_WITHIN`, for a callback still running)."""
        _WATCHES.discard(self)
        self._listener.stop(CLOSE_WITHIN)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<Watch {self._listener._where} {state}>"


def _restart_in_child() -> None:
    for watch in list(_WATCHES):
        watch._listener.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_in_child)
