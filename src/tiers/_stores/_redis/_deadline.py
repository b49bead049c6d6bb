"""Per-call deadlines for redis-py: `timeout` bounds a whole store call, not each socket read.

redis-py's timeouts restart at every read (sync: each ``recv``; asyncio: each reply): a
server, or a proxy, that drips its reply holds a call for as long as it likes, and a call
that connects first gets the connect timeout on top. So every store call sets `DEADLINE`, a
monotonic time in a context variable, and the store's connections (these classes) give each
operation only the time left:

- sync: the socket itself (`FastSocket`, or `DeadlineSocket` around a TLS one) cuts the
  timeout of every ``recv`` and ``sendall``; ``_connect`` (TLS handshake included) too;
- asyncio: the connection's ``socket_timeout`` (read for each command sent and each reply)
  and ``socket_connect_timeout`` are the time left.

When no time is left redis-py times out as it would, dropping the connection: a reply read
in part is never left in the pool. A context variable costs ~0.1 µs; a timer per call
(``asyncio.timeout``) costs several µs, so it is kept for clients these classes cannot reach
(asyncio clusters build their own connections: `budget`).
"""

from __future__ import annotations

import socket
import sys
from contextvars import ContextVar
from time import monotonic
from typing import Any

if sys.version_info >= (3, 11):
    from asyncio import timeout as budget
else:  # redis-py depends on async-timeout below Python 3.11.3
    from async_timeout import timeout as budget  # type: ignore[import-not-found, unused-ignore]

__all__ = ["DEADLINE", "DeadlineSocket", "FastSocket", "budget", "connection_classes"]

DEADLINE: ContextVar[float | None] = ContextVar("tiers_redis_deadline", default=None)
"""When the current call must be over (``time.monotonic()``), or None: no deadline."""

_SLACK = 0.001
"""How far a socket's timeout may be off the time left before it is set again: setting it is
a system call, and a quick GET keeps the value its poll-and-restore just set."""

_EPSILON = 1e-6
"""The timeout given once the deadline has passed: redis-py then times out as usual."""


def _expired() -> TimeoutError:
    return TimeoutError("the call's deadline passed")


def _wanted(own: float | None, deadline: float | None) -> float | None:
    """The timeout an operation gets: the connection's own, cut to the time left."""
    if deadline is None:
        return own
    left = deadline - monotonic()
    if left <= 0:
        raise _expired()
    return left if own is None or left < own else own


def _off(current: float | None, wanted: float | None) -> bool:
    if current is None or wanted is None:
        return current is not wanted
    return abs(current - wanted) > _SLACK


_recv = socket.socket.recv
_recv_into = socket.socket.recv_into
_send = socket.socket.send
_sendall = socket.socket.sendall
_gettimeout = socket.socket.gettimeout
_now_deadline = DEADLINE.get


def _arm(sock: FastSocket, current: float) -> None:
    """Cut `sock`'s timeout (now `current`, not 0) to the time left; restore its own when
    there is no deadline."""
    deadline = _now_deadline()
    own = sock._own
    if deadline is None:
        if current != own:
            sock.settimeout(own)
        return
    left = deadline - monotonic()
    if left <= 0:
        raise _expired()
    if own is not None and own < left:
        left = own
    if abs(current - left) > _SLACK:
        sock.settimeout(left)


class FastSocket(socket.socket):
    """A plain TCP or Unix socket whose reads and writes end by `DEADLINE` (the C methods,
    after one check); a timeout of 0 (redis-py polling for stale data) is left alone."""

    __slots__ = ("_own",)
    _own: float | None

    def recv(self, size: int, flags: int = 0) -> bytes:
        current = _gettimeout(self)
        if current:  # the test of _arm, written out: this runs for every reply
            deadline = _now_deadline()
            if deadline is None or not -_SLACK <= deadline - monotonic() - current <= _SLACK:
                _arm(self, current)
        return _recv(self, size, flags)

    def recv_into(self, buffer: Any, size: int = 0, flags: int = 0) -> int:
        current = self.gettimeout()
        if current:
            _arm(self, current)
        return _recv_into(self, buffer, size, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        current = self.gettimeout()
        if current:
            _arm(self, current)
        return _send(self, data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        current = _gettimeout(self)
        if current:  # as in recv
            deadline = _now_deadline()
            if deadline is None or not -_SLACK <= deadline - monotonic() - current <= _SLACK:
                _arm(self, current)
        _sendall(self, data, flags)


def _fast(sock: socket.socket, own: float | None) -> FastSocket:
    """`sock` (connected, options set) as a `FastSocket`: the same descriptor."""
    timeout = sock.gettimeout()
    fast = FastSocket(sock.family, sock.type, sock.proto, sock.detach())
    fast.settimeout(timeout)
    fast._own = own
    return fast


class DeadlineSocket:
    """A socket (a TLS one: its class cannot change) whose reads and writes end by
    `DEADLINE`; anything else is the socket's. Tracks the timeout redis-py asks for."""

    __slots__ = ("_own", "_set", "_sock")

    def __init__(self, sock: Any, own: float | None) -> None:
        self._sock = sock
        self._own = own
        self._set: float | None = sock.gettimeout()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def settimeout(self, value: float | None) -> None:
        self._own = value
        self._set = value
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._own

    def _arm(self) -> None:
        if self._own == 0:
            return
        wanted = _wanted(self._own, DEADLINE.get())
        if _off(self._set, wanted):
            self._sock.settimeout(wanted)
            self._set = wanted

    def recv(self, size: int, flags: int = 0) -> bytes:
        self._arm()
        data: bytes = self._sock.recv(size, flags)
        return data

    def recv_into(self, buffer: Any, size: int = 0, flags: int = 0) -> int:
        self._arm()
        count: int = self._sock.recv_into(buffer, size, flags)
        return count

    def send(self, data: Any, flags: int = 0) -> int:
        self._arm()
        count: int = self._sock.send(data, flags)
        return count

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._arm()
        self._sock.sendall(data, flags)


class _Deadlined:
    """Mixed into a redis-py sync connection class: connect by the deadline (TLS handshake
    included: it runs inside ``_connect``), then keep the socket to it."""

    socket_timeout: float | None
    socket_connect_timeout: float | None

    def _connect(self) -> Any:
        own_read, own_connect = self.socket_timeout, self.socket_connect_timeout
        deadline = DEADLINE.get()
        self.socket_timeout = _wanted(own_read, deadline)
        self.socket_connect_timeout = _wanted(own_connect, deadline)
        try:
            sock = super()._connect()  # type: ignore[misc]
        finally:
            self.socket_timeout, self.socket_connect_timeout = own_read, own_connect
        if type(sock) is socket.socket:
            return _fast(sock, own_read)
        return DeadlineSocket(sock, own_read)


def _cut(own: float | None) -> float | None:
    """`own` cut to the time left (a tiny positive time once it has passed)."""
    deadline = DEADLINE.get()
    if deadline is None:
        return own
    left = max(deadline - monotonic(), _EPSILON)
    return left if own is None or left < own else own


class _AsyncDeadlined:
    """Mixed into a redis-py asyncio connection class: its timeouts, read as each command is
    sent, each reply read and each connect made, are cut to the time the call has left
    (properties: no coroutine wraps the hot path)."""

    _own_read: float | None = None
    _own_connect: float | None = None

    @property
    def socket_timeout(self) -> float | None:
        own = self._own_read  # _cut, written out: read for every command and reply
        deadline = _now_deadline()
        if deadline is None:
            return own
        left = deadline - monotonic()
        if left < _EPSILON:
            return _EPSILON
        return left if own is None or left < own else own

    @socket_timeout.setter
    def socket_timeout(self, value: float | None) -> None:
        self._own_read = value

    @property
    def socket_connect_timeout(self) -> float | None:
        return _cut(self._own_connect)

    @socket_connect_timeout.setter
    def socket_connect_timeout(self, value: float | None) -> None:
        self._own_connect = value


_CLASSES: dict[str, type] = {}


def connection_classes(redis: Any) -> dict[str, type]:
    """redis-py's connection classes with deadlines: "tcp", "ssl", "unix", "sentinel" (sync)
    and the same names with "async " in front."""
    if not _CLASSES:
        asynchronous = redis.asyncio.connection
        for kind, base, mixin in (
            ("tcp", redis.Connection, _Deadlined),
            ("ssl", redis.SSLConnection, _Deadlined),
            ("unix", redis.UnixDomainSocketConnection, _Deadlined),
            ("sentinel", redis.sentinel.SentinelManagedConnection, _Deadlined),
            ("async tcp", asynchronous.Connection, _AsyncDeadlined),
            ("async ssl", asynchronous.SSLConnection, _AsyncDeadlined),
            ("async unix", asynchronous.UnixDomainSocketConnection, _AsyncDeadlined),
            ("async sentinel", redis.asyncio.sentinel.SentinelManagedConnection, _AsyncDeadlined),
        ):
            _CLASSES[kind] = type(f"Deadline{base.__name__}", (mixin, base), {})
    return _CLASSES
