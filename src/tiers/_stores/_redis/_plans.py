"""Store operations written once, as generators of Redis requests, run sync or async.

A plan yields `Call`, `Batch` (one pipeline; a transaction if `atomic`, on a single server),
`Scan` (every key matching a pattern, over all primaries of a cluster) or `Members` (a set's
members) and is sent back the reply; its return value is the operation's result. `run` and
`run_async` drive a plan on a redis-py client of either kind. Given `extend`, they call it
for every page of work past the first (each further pipeline, each further `CHUNK` keys of a
scan): an O(n) operation gets its timeout once more per page (`_deadline`), any other call
just one.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

from ..._plans import run as drive
from ..._plans import run_async as drive_async

T = TypeVar("T")
CHUNK = 1000


@dataclass(slots=True)
class Call:
    """One command: ``client.<name>(*args, **kwargs)``."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """Commands sent in one pipeline (split by node on a cluster); replies in order.
    `atomic`: in a MULTI/EXEC transaction on a single server (all or nothing, even when the
    server refuses a write for memory); a cluster cannot, across slots."""

    calls: list[Call]
    atomic: bool = False


@dataclass(slots=True)
class Scan:
    match: bytes


@dataclass(slots=True)
class Members:
    key: bytes


Request: TypeAlias = Call | Batch | Scan | Members
Plan = Generator[Request, Any, T]
Extend: TypeAlias = Callable[[], object] | None


def chunks(items: list[T]) -> Iterator[list[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


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


def run(plan: Plan[T], client: Any, cluster: bool, extend: Extend = None) -> T:
    """Drive `plan` on a sync client."""
    batches = 0

    def perform(request: Request) -> Any:
        nonlocal batches
        if extend is not None and isinstance(request, Batch):
            batches += 1
            if batches > 1:
                extend()
        return _do(request, client, cluster, extend)

    return drive(plan, perform)


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
    return _collect(client.sscan_iter(request.key, count=CHUNK), extend)


def _collect(items: Iterator[T], extend: Extend) -> list[T]:
    """Every item; with `extend`, the deadline moves on by a timeout per `CHUNK` items."""
    found = []
    for item in items:  # as long as the scan: it ends when the server's cursor does
        found.append(item)
        if extend is not None and len(found) % CHUNK == 0:
            extend()
    return found


async def run_async(plan: Plan[T], client: Any, cluster: bool, extend: Extend = None) -> T:
    """Drive `plan` on an asyncio client."""
    batches = 0

    async def perform(request: Request) -> Any:
        nonlocal batches
        if extend is not None and isinstance(request, Batch):
            batches += 1
            if batches > 1:
                extend()
        return await _do_async(request, client, cluster, extend)

    return await drive_async(plan, perform)


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
