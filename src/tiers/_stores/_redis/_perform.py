"""How a plan's requests (`_plans`) are carried out on a redis-py client, sync or asyncio.

`perform` and `perform_async` give the step performer that `tiers._plans.run` and
`run_async` drive a plan with. Given `extend`, it is called for every page of work past the
first (each further pipeline, each further `CHUNK` keys of a scan) and for every `Pause`
(each further attempt of an update): an O(n) operation gets its timeout once more per page
(`_deadline`), an update once more per attempt, any other call just one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from itertools import islice
from typing import Any, TypeAlias, TypeVar

from ._plans import CHUNK, PAGE, Batch, Call, Cursor, Pause, Request, Scan

T = TypeVar("T")
Extend: TypeAlias = Callable[[], object] | None


def perform(client: Any, cluster: bool, extend: Extend = None) -> Callable[[Request], Any]:
    """The performer of requests on a sync client."""
    batches = 0

    def one(request: Request) -> Any:
        nonlocal batches
        if extend is not None and isinstance(request, Pause):
            extend()
        if extend is not None and isinstance(request, (Batch, Cursor)):
            batches += 1
            if batches > 1:
                extend()
        return _do(request, client, cluster, extend)

    return one


def perform_async(
    client: Any, cluster: bool, extend: Extend = None
) -> Callable[[Request], Awaitable[Any]]:
    """The performer of requests on an asyncio client."""
    batches = 0

    async def one(request: Request) -> Any:
        nonlocal batches
        if extend is not None and isinstance(request, Pause):
            extend()
        if extend is not None and isinstance(request, (Batch, Cursor)):
            batches += 1
            if batches > 1:
                extend()
        return await _do_async(request, client, cluster, extend)

    return one


def _queue(pipe: Any, call: Call) -> None:
    """Add `call` to a pipeline (a cluster pipeline has no ``eval`` method, only commands)."""
    if call.name == "eval":
        pipe.execute_command("EVAL", *call.args)
    else:
        getattr(pipe, call.name)(*call.args, **call.kwargs)


def _gets(call: Call) -> Batch:
    """An MGET on a cluster, as one pipeline of GETs (split by node): an MGET of keys in a
    slot being migrated, some moved and some not, is refused (TRYAGAIN) until the move
    ends, while each GET is redirected to wherever its key is (ASK)."""
    return Batch([Call("get", (key,)) for key in call.args[0]])


def _do(request: Request, client: Any, cluster: bool, extend: Extend) -> Any:
    if isinstance(request, Call):
        if cluster and request.name == "mget":
            return _do(_gets(request), client, cluster, extend)
        return getattr(client, request.name)(*request.args, **request.kwargs)
    if isinstance(request, Batch):
        if not request.calls:
            return []
        with client.pipeline(transaction=request.atomic and not cluster) as pipe:
            for call in request.calls:
                _queue(pipe, call)
            return pipe.execute()
    if isinstance(request, Scan):
        return _collect(client.scan_iter(match=request.match, count=CHUNK), extend)
    if isinstance(request, Pause):
        time.sleep(request.seconds)
        return None
    if isinstance(request, Cursor):
        if request.handle is None:
            request.handle = _walk(client, request)
        page = list(islice(request.handle, PAGE))
        request.done = len(page) < PAGE
        return page
    return _collect(client.sscan_iter(request.key, count=CHUNK), extend)


async def _page_async(client: Any, cursor: Cursor) -> list[bytes]:
    if cursor.handle is None:
        cursor.handle = _walk(client, cursor)
    page: list[bytes] = []
    while len(page) < PAGE:
        try:
            page.append(await anext(cursor.handle))
        except StopAsyncIteration:
            cursor.done = True
            break
    return page


def _walk(client: Any, cursor: Cursor) -> Any:
    """redis-py's iterator (sync) or async iterator over what `cursor` walks."""
    if cursor.members is not None:
        return client.sscan_iter(cursor.members, count=PAGE)
    return client.scan_iter(match=cursor.match, count=PAGE)


def _collect(items: Iterator[T], extend: Extend) -> list[T]:
    """Every item; with `extend`, the deadline moves on by a timeout per `CHUNK` items."""
    found = []
    for item in items:  # as long as the scan: it ends when the server's cursor does
        found.append(item)
        if extend is not None and len(found) % CHUNK == 0:
            extend()
    return found


async def _do_async(request: Request, client: Any, cluster: bool, extend: Extend) -> Any:
    if isinstance(request, Call):
        if cluster and request.name == "mget":
            return await _do_async(_gets(request), client, cluster, extend)
        return await getattr(client, request.name)(*request.args, **request.kwargs)
    if isinstance(request, Batch):
        if not request.calls:
            return []
        async with client.pipeline(transaction=request.atomic and not cluster) as pipe:
            for call in request.calls:
                _queue(pipe, call)
            return await pipe.execute()
    if isinstance(request, Cursor):
        return await _page_async(client, request)
    if isinstance(request, Pause):
        await asyncio.sleep(request.seconds)
        return None
    if isinstance(request, Scan):
        items = client.scan_iter(match=request.match, count=CHUNK)
    else:
        items = client.sscan_iter(request.key, count=CHUNK)
    found = []
    async for item in items:
        found.append(item)
        if extend is not None and len(found) % CHUNK == 0:
            extend()
    return found
