"""Store operations written once, as generators of Redis requests, run sync or async.

A plan yields `Call`, `Batch` (one pipeline, no transaction), `Scan` (every key matching a
pattern, over all primaries of a cluster) or `Members` (a set's members) and is sent back the
reply; its return value is the operation's result. `run` and `run_async` drive a plan on a
redis-py client of either kind.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
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
    """Commands sent in one pipeline (split by node on a cluster); replies in order."""

    calls: list[Call]


@dataclass(slots=True)
class Scan:
    match: bytes


@dataclass(slots=True)
class Members:
    key: bytes


Request: TypeAlias = Call | Batch | Scan | Members
Plan = Generator[Request, Any, T]


def chunks(items: list[T]) -> Iterator[list[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _queue(pipe: Any, call: Call) -> None:
    """Add `call` to a pipeline (a cluster pipeline has no ``eval`` method, only commands)."""
    if call.name == "eval":
        pipe.execute_command("EVAL", *call.args)
    else:
        getattr(pipe, call.name)(*call.args, **call.kwargs)


def _method(client: Any, call: Call, cluster: bool) -> Any:
    if cluster and call.name == "mget":
        return client.mget_nonatomic
    return getattr(client, call.name)


def run(plan: Plan[T], client: Any, cluster: bool) -> T:
    """Drive `plan` on a sync client."""
    return drive(plan, lambda request: _do(request, client, cluster))


def _do(request: Request, client: Any, cluster: bool) -> Any:
    if isinstance(request, Call):
        return _method(client, request, cluster)(*request.args, **request.kwargs)
    if isinstance(request, Batch):
        if not request.calls:
            return []
        with client.pipeline(transaction=False) as pipe:
            for call in request.calls:
                _queue(pipe, call)
            return pipe.execute()
    if isinstance(request, Scan):
        return list(client.scan_iter(match=request.match, count=CHUNK))
    return list(client.sscan_iter(request.key, count=CHUNK))


async def run_async(plan: Plan[T], client: Any, cluster: bool) -> T:
    """Drive `plan` on an asyncio client."""
    return await drive_async(plan, lambda request: _do_async(request, client, cluster))


async def _do_async(request: Request, client: Any, cluster: bool) -> Any:
    if isinstance(request, Call):
        return await _method(client, request, cluster)(*request.args, **request.kwargs)
    if isinstance(request, Batch):
        if not request.calls:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for call in request.calls:
                _queue(pipe, call)
            return await pipe.execute()
    if isinstance(request, Scan):
        return [key async for key in client.scan_iter(match=request.match, count=CHUNK)]
    return [member async for member in client.sscan_iter(request.key, count=CHUNK)]
