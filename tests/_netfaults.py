"""Network faults for the remote-store tests, on loopback only.

- `FaultProxy`: a TCP proxy in front of a real server (Redis), switchable at run time to add
  latency, limit bandwidth, reset connections (RST), blackhole them (accept, forward nothing),
  leave them half-open (server side gone, client side kept), drip replies N bytes every T s,
  or close after N more reply bytes.
- `FaultyS3`: moto's S3 app behind a WSGI middleware that answers chosen requests with 503
  SlowDown, 500, a truncated body or a slow one.

Both run in the test process on threads of their own: faults are switched by a plain method
call that returns once they are in force (no IPC to get wrong), and teardown joins every thread.
The proxy is one asyncio loop on one thread (timers for latency and drips without a thread per
connection); the test's clients are blocked in socket calls or their own loop meanwhile, so the
GIL costs the proxy a few microseconds per chunk, far below the margins the tests allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

_CHUNK = 65536
_JOIN = 10.0  # seconds a thread gets to stop at teardown


@dataclass(frozen=True)
class Faults:
    """What the proxy does now. `drip` and `close_after` act on replies (server to client)."""

    latency: float = 0.0
    """Seconds added to every chunk, both directions."""
    bandwidth: float | None = None
    """Bytes per second, each direction."""
    reset: bool = False
    """RST every connection: open ones at once, new ones when accepted."""
    blackhole: bool = False
    """Accept connections and read them, forward nothing either way."""
    half_open: bool = False
    """Close the server side of every connection, keep the client side open and silent."""
    drip: tuple[int, float] | None = None
    """Replies go out `n` bytes every `t` seconds."""
    close_after: int | None = None
    """Close each connection once this many more reply bytes went through."""

    @property
    def silent(self) -> bool:
        return self.blackhole or self.half_open


class _Link:
    """One client connection and its server side."""

    def __init__(self, client: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.client_reader, self.client_writer = client
        self.server_reader: asyncio.StreamReader | None = None
        self.server_writer: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.reply_bytes = 0
        self.counted_for: Faults | None = None
        self.cut_after: int | None = None  # `FaultProxy.cut_open`: this connection only

    def reset(self) -> None:
        """RST both sides (SO_LINGER 0): nothing still queued reaches either."""
        for writer in (self.client_writer, self.server_writer):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    def drop_server(self) -> None:
        if self.server_writer is not None:
            self.server_writer.transport.abort()

    def close(self) -> None:
        self.client_writer.transport.abort()
        self.drop_server()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 forwarding to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.faults = Faults()
        self.accepted = 0
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy")
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FaultProxy:
        self._thread.start()
        try:
            self._server = self._call(self._listen())
        except BaseException:
            self.stop()
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def set(self, **changes: Any) -> None:
        """Switch faults (fields of `Faults`); in force for every byte after this returns."""
        self._call(self._apply(dataclasses.replace(self.faults, **changes)))

    def clear(self) -> None:
        """No faults (connections already reset, blackholed or half-open stay dead)."""
        self._call(self._apply(Faults()))

    def cut_open(self, after: int = 0) -> None:
        """Close the connections open now once `after` more reply bytes went through (the
        next reply is lost on its way back); new connections are left alone."""
        self._call(self._cut_open(after))

    async def _cut_open(self, after: int) -> None:
        for link in self._links:
            link.cut_after, link.reply_bytes = after, 0

    def stop(self) -> None:
        """Close every connection and the listener, stop the loop and join its thread."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_JOIN)
            assert not self._thread.is_alive(), "the fault proxy's thread did not stop"
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_JOIN)

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _apply(self, faults: Faults) -> None:
        self.faults = faults
        for link in list(self._links):
            if faults.reset:
                link.reset()
            elif faults.half_open:
                link.drop_server()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        links, self._links = list(self._links), set()
        for link in links:
            link.close()
        tasks = [task for link in links for task in link.tasks]
        await asyncio.gather(*tasks, *self._handlers, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link((reader, writer))
        self._links.add(link)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        try:
            if self.faults.reset:
                link.reset()
                return
            if not self.faults.silent:
                try:
                    link.server_reader, link.server_writer = await asyncio.open_connection(
                        *self.upstream
                    )
                except OSError:
                    link.reset()
                    return
            await self._pump(link)
        finally:
            self._links.discard(link)
            link.close()

    async def _pump(self, link: _Link) -> None:
        """Both directions until either side ends (or teardown cancels them)."""
        up = asyncio.ensure_future(self._forward(link, link.client_reader, upstream=True))
        link.tasks.append(up)
        if link.server_reader is None:  # a silent connection: read the client, send nothing
            await asyncio.gather(up, return_exceptions=True)
            return
        down = asyncio.ensure_future(self._forward(link, link.server_reader, upstream=False))
        link.tasks.append(down)
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        if self.faults.silent:  # the server side went (half-open): the client's stays
            await asyncio.gather(up, return_exceptions=True)

    async def _forward(self, link: _Link, reader: asyncio.StreamReader, *, upstream: bool) -> None:
        """Read chunks (until EOF) and pass each on under the faults in force when it goes."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(64)
        sender = asyncio.ensure_future(self._send(link, queue, upstream=upstream))
        link.tasks.append(sender)
        try:
            while not reader.at_eof():
                chunk = await reader.read(_CHUNK)
                if not chunk:
                    break
                await queue.put((time.monotonic(), chunk))
            await queue.put((time.monotonic(), b""))
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()

    async def _send(self, link: _Link, queue: asyncio.Queue[tuple[float, bytes]], *,
                    upstream: bool) -> None:  # fmt: skip
        while True:  # ends at the EOF marker, an error, or cancellation
            arrived, chunk = await queue.get()
            if not chunk:
                break
            faults = self.faults
            due = arrived + faults.latency - time.monotonic()
            if due > 0:
                await asyncio.sleep(due)
            writer = link.server_writer if upstream else link.client_writer
            if writer is None or self.faults.silent:
                continue  # blackholed, or the server side is gone
            if not await self._write(link, writer, chunk, upstream=upstream):
                break
        target = link.server_writer if upstream else link.client_writer
        if self.faults.silent or target is None or target.is_closing():
            return  # a silent connection tells the other side nothing, not even its end
        if target.can_write_eof():
            with contextlib.suppress(OSError):
                target.write_eof()

    async def _write(self, link: _Link, writer: asyncio.StreamWriter, chunk: bytes, *,
                     upstream: bool) -> bool:  # fmt: skip
        """Write `chunk` under the current faults; False once the connection is closed."""
        view = memoryview(chunk)
        while view:  # each pass writes at least one byte
            faults = self.faults
            if faults.silent:
                return True
            if faults.reset:
                link.reset()
                return False
            size, pause = len(view), 0.0
            if not upstream and faults.drip is not None:
                size, pause = max(1, faults.drip[0]), faults.drip[1]
            if faults.bandwidth:
                size = max(1, min(size, int(faults.bandwidth * 0.01)))
                pause = max(pause, size / faults.bandwidth)
            limit = None if upstream else _reply_limit(link, faults)
            if limit is not None:
                size = min(size, limit - link.reply_bytes)
                if size <= 0:
                    link.close()
                    return False
                link.reply_bytes += size
            writer.write(bytes(view[:size]))
            await writer.drain()
            view = view[size:]
            if pause and view:
                await asyncio.sleep(pause)
        return True


def _reply_limit(link: _Link, faults: Faults) -> int | None:
    """How many reply bytes `link` may still pass in all (None: no limit)."""
    if link.cut_after is not None:
        return link.cut_after
    if faults.close_after is None:
        return None
    if link.counted_for is not faults:
        link.counted_for, link.reply_bytes = faults, 0
    return faults.close_after


# -- S3: moto behind a fault middleware --------------------------------------------------------


SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>tiers-test</RequestId>"
    b"</Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message>"
    b"<RequestId>tiers-test</RequestId></Error>"
)


@dataclass
class Rule:
    """Requests to spoil: `method` (None: any), `path` (a regex searched in the path, None:
    any), the `nth` matching request only (1-based; None: every one), at most `times` times.

    `action`: "slowdown" (503 SlowDown), "error" (500 InternalError), "truncate" (the real
    response's headers and half its body, then the connection closes), "slow" (the real
    response after `delay` s) or "drip" (its body one byte every `delay` s).
    """

    action: str
    method: str | None = None
    path: str | None = None
    nth: int | None = None
    times: int | None = None
    delay: float = 0.0
    seen: int = 0
    used: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        self.seen += 1
        if self.nth is not None and self.seen != self.nth:
            return False
        if self.times is not None and self.used >= self.times:
            return False
        self.used += 1
        return True


@dataclass
class _Middleware:
    app: Callable[..., Iterable[bytes]]
    rules: list[Rule] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[tuple[str, str]] = field(default_factory=list)
    spoiled: list[tuple[str, str, str]] = field(default_factory=list)
    busy: int = 0
    settled: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with self.settled:
            self.busy += 1
        try:
            yield from self._answer(environ, start_response)
        finally:
            with self.settled:
                self.busy -= 1
                self.settled.notify_all()

    def idle(self, timeout: float = _JOIN) -> None:
        """Wait until no request is being answered (ones a client gave up on included)."""
        with self.settled:
            assert self.settled.wait_for(lambda: self.busy == 0, timeout), "requests hang"

    def _answer(self, environ: dict[str, Any], start_response: Callable[..., Any]
                ) -> Iterable[bytes]:  # fmt: skip
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        with self.lock:
            self.requests.append((method, path))
            rule = next((r for r in self.rules if r.matches(method, path)), None)
            if rule is not None:
                self.spoiled.append((rule.action, method, path))
        if rule is None:
            return self.app(environ, start_response)
        if rule.action in ("slowdown", "error"):
            _drain(environ)
            status, body = ("503 Slow Down", SLOWDOWN) if rule.action == "slowdown" else (
                "500 Internal Server Error", INTERNAL)  # fmt: skip
            start_response(status, [("Content-Type", "application/xml"),
                                    ("Content-Length", str(len(body)))])  # fmt: skip
            return [body]
        return self._spoil(rule, environ, start_response)

    def _spoil(self, rule: Rule, environ: dict[str, Any], start_response: Callable[..., Any]
               ) -> Iterator[bytes]:  # fmt: skip
        """The real response, delayed, dripped or cut short."""
        captured: list[Any] = []
        body = b"".join(self.app(environ, lambda status, headers, *_: captured.extend(
            [status, headers])))  # fmt: skip
        status, headers = (
            captured[0],
            [(k, v) for k, v in captured[1] if k.lower() not in ("content-length", "connection")],
        )
        headers.append(("Content-Length", str(len(body))))
        if rule.action == "truncate":
            headers.append(("Connection", "close"))  # the server closes after what it sends
            start_response(status, headers)
            yield body[: len(body) // 2]
            return
        if rule.action == "slow":
            time.sleep(rule.delay)
            start_response(status, headers)
            yield body
            return
        start_response(status, headers)  # drip
        for index in range(len(body)):
            yield body[index : index + 1]
            time.sleep(rule.delay)


def _drain(environ: dict[str, Any]) -> None:
    """Read the request body, so the connection stays in step."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)


class FaultyS3:
    """moto's S3 app served by werkzeug on 127.0.0.1, behind `_Middleware`."""

    def __init__(self) -> None:
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""
        self._middleware: _Middleware | None = None

    def start(self) -> FaultyS3:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class Quiet(MotoRequestHandler):  # type: ignore[misc, valid-type]
            def log(self, *_args: Any) -> None:
                """No line per request on stderr."""

        self._middleware = _Middleware(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            "127.0.0.1", 0, self._middleware, threaded=True, request_handler=Quiet
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-s3")
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(_JOIN)
            assert not self._thread.is_alive(), "the S3 server's thread did not stop"
            self._thread = None

    @property
    def middleware(self) -> _Middleware:
        assert self._middleware is not None
        return self._middleware

    def fail(self, action: str, **match: Any) -> Rule:
        """Spoil the requests `match` describes (see `Rule`) from now on."""
        rule = Rule(action, **match)
        with self.middleware.lock:
            self.middleware.rules.append(rule)
        return rule

    def heal(self) -> None:
        with self.middleware.lock:
            self.middleware.rules.clear()

    def new_bucket(self) -> str:
        from tests._servers import _s3_client

        name = "tiers-" + uuid.uuid4().hex[:12]
        _s3_client(self.endpoint).create_bucket(Bucket=name)
        return name

    def store_options(self) -> dict[str, Any]:
        from tests._servers import CREDENTIALS, REGION

        return {
            "endpoint": self.endpoint,
            "access_key_id": CREDENTIALS["aws_access_key_id"],
            "secret_access_key": CREDENTIALS["aws_secret_access_key"],
            "region": REGION,
            "client_options": {"allow_http": True},
        }
