"""Read-through orchestration written once: plans are generators yielding `Call`s.

`run` performs each call blocking, `run_async` awaits its ``<name>_async`` twin; a call's
result is sent back into the plan and its exception thrown into it. Locks are held only inside
`ReadState` methods, never while a call is under way.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import _flight
from .._flight import STALLS, Flight
from .._plans import run as drive
from .._plans import run_async as drive_async
from . import _blocks
from ._blocks import Span
from ._buffers import to_buffer
from ._results import CachedGetResult
from ._state import Body, ReadState, Token

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One I/O step: ``target.<name>(*args, **kwargs)`` or its ``<name>_async`` form."""

    target: Any
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


Plan = Generator[Call, Any, T]


def run(plan: Plan[T]) -> T:
    """Drive a plan with blocking calls."""
    return drive(plan, _perform)


async def run_async(plan: Plan[T]) -> T:
    """Drive a plan with awaited calls."""
    return await drive_async(plan, _perform_async)


def _perform(step: Call) -> Any:
    return getattr(step.target, step.name)(*step.args, **step.kwargs)


async def _perform_async(step: Call) -> Any:
    return await getattr(step.target, step.name + "_async")(*step.args, **step.kwargs)


class Origin:
    """Whole-object reads from the origin, as one call with a sync and an async form."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def fetch(self, path: str) -> Body:
        result = self.store.get(path)
        return Body.of(bytes(result.buffer()), result.meta, result.attributes)

    async def fetch_async(self, path: str) -> Body:
        result = await self.store.get_async(path)
        return Body.of(bytes(await result.buffer_async()), result.meta, result.attributes)


# -- single-flight -------------------------------------------------------------------------------


def single(state: ReadState, key: Hashable, make: Callable[[], Plan[T]]) -> Plan[T]:
    """Run `make()` once per key among concurrent callers; the others get its outcome."""
    flight, lead = state.flights.join(key)
    if not lead:
        value = yield Call(_flight, "wait", (flight,))
        return (yield from make()) if value is STALLS else value
    try:
        value = yield from make()
    except BaseException as exc:
        _land(state, key, flight, error=exc)
        raise
    _land(state, key, flight, value)
    return value


def _land(
    state: ReadState, key: Hashable, flight: Flight, value: Any = None,
    error: BaseException | None = None,
) -> None:  # fmt: skip
    """End a flight this caller leads with its outcome, waking every waiter."""
    if error is None:
        flight.set_result(value)
    elif isinstance(error, Exception):
        flight.set_exception(error)
    else:  # an interruption of the leader: the waiters get an error they can handle
        interrupted = f"the request that other readers waited for was interrupted ({error!r})"
        flight.set_exception(RuntimeError(interrupted))
    state.flights.finish(key, flight)


# -- head ----------------------------------------------------------------------------------------


def head(state: ReadState, path: str) -> Plan[Any]:
    """The origin's ObjectMeta for `path`, asked once and remembered."""
    meta = state.head(path)
    if meta is not None:
        return meta

    def fetch() -> Plan[Any]:
        token = state.token(path)
        found = state.head(path)
        if found is None:
            found = yield Call(state.store, "head", (path,))
            state.admit_head(path, found, token)
        return found

    return (yield from single(state, ("head", path, None), fetch))


# -- whole objects -------------------------------------------------------------------------------


def body(state: ReadState, path: str) -> Plan[Body]:
    """The whole object, from memory, the `cache=` level or the origin (once per path)."""
    found = state.body(path)
    if found is not None:
        return found
    return (yield from single(state, ("obj", path, None), lambda: _fetch_body(state, path)))


def _fetch_body(state: ReadState, path: str) -> Plan[Body]:
    token = state.token(path)
    found = state.body(path)
    if found is not None:
        return found
    if state.level is not None:
        meta = yield from head(state, path)
        data = yield Call(state.level, "get", (state.level_key(path, meta, None),))
        if isinstance(data, bytes) and len(data) == meta["size"]:
            found = Body.of(data, meta)
            state.admit_body(path, found, token)
            return found
    fetched: Body = yield Call(Origin(state.store), "fetch", (path,))
    state.admit_body(path, fetched, token)
    if state.level is not None and len(fetched.raw) <= state.max_size:
        key = state.level_key(path, fetched.meta, None)
        yield Call(state.level, "set", (key, fetched.raw), {"tags": (state.level_tag(path),)})
    return fetched


# -- blocks --------------------------------------------------------------------------------------


def blocks(state: ReadState, path: str, meta: Any, indices: list[int]) -> Plan[dict[int, bytes]]:
    """The blocks `indices` of `path`: cached ones, ones others fetch, and the rest fetched here."""
    token = state.token(path)
    have = state.blocks(path, indices)
    mine: dict[int, Flight] = {}  # the blocks this caller fetches
    theirs: dict[int, Flight] = {}  # the blocks others are fetching
    for index in indices:
        if index in have:
            continue
        flight, lead = state.flights.join(("blk", path, index))
        (mine if lead else theirs)[index] = flight
    try:
        got = yield from _fetch_blocks(state, path, meta, list(mine), token)
    except BaseException as exc:
        for index, flight in mine.items():
            _land(state, ("blk", path, index), flight, error=exc)
        raise
    for index, flight in mine.items():
        _land(state, ("blk", path, index), flight, got[index])
    have.update(got)
    bypassed = []
    for index, flight in theirs.items():
        value = yield Call(_flight, "wait", (flight,))
        if value is STALLS:
            bypassed.append(index)
        else:
            have[index] = value
    if bypassed:
        have.update((yield from _fetch_blocks(state, path, meta, bypassed, token)))
    return have


def _fetch_blocks(
    state: ReadState, path: str, meta: Any, indices: list[int], token: Token
) -> Plan[dict[int, bytes]]:
    got = state.blocks(path, indices)
    rest = [i for i in indices if i not in got]
    if rest and state.level is not None:
        found = yield from _level_blocks(state, path, meta, rest)
        state.admit_blocks(path, found, token)
        got.update(found)
        rest = [i for i in rest if i not in found]
    if rest:
        fetched = yield from _origin_blocks(state, path, meta, rest)
        state.admit_blocks(path, fetched, token)
        got.update(fetched)
        if state.level is not None:
            items = {state.level_key(path, meta, i): data for i, data in fetched.items()}
            yield Call(state.level, "set_many", (items,), {"tags": (state.level_tag(path),)})
    return got


def _level_blocks(
    state: ReadState, path: str, meta: Any, indices: list[int]
) -> Plan[dict[int, bytes]]:
    keys = {state.level_key(path, meta, i): i for i in indices}
    found = yield Call(state.level, "get_many", (list(keys),))
    out = {}
    for key, index in keys.items():
        data = found.get(key)
        expected = min(state.block, meta["size"] - index * state.block)
        if isinstance(data, bytes) and len(data) == expected:
            out[index] = data
    return out


def _origin_blocks(
    state: ReadState, path: str, meta: Any, indices: list[int]
) -> Plan[dict[int, bytes]]:
    """Missing blocks in one origin request: adjacent blocks merged into one range each."""
    size, runs = meta["size"], _blocks.runs(indices)
    spans = [_blocks.run_span(run, state.block, size) for run in runs]
    if len(spans) == 1:
        start, end = spans[0]
        parts = [(yield Call(state.store, "get_range", (path,), {"start": start, "end": end}))]
    else:
        starts, ends = [s for s, _ in spans], [e for _, e in spans]
        kwargs = {"starts": starts, "ends": ends}
        parts = list((yield Call(state.store, "get_ranges", (path,), kwargs)))
    out: dict[int, bytes] = {}
    for run, part in zip(runs, parts, strict=True):
        out.update(_blocks.split_run(bytes(part), run[0], state.block))
    return out


# -- public reads --------------------------------------------------------------------------------


def ranges(state: ReadState, path: str, spans: list[Span], single_range: bool) -> Plan[Any]:
    """Byte ranges of `path` (validated spans); a list, or one buffer when `single_range`."""
    if state.block_size is None and state.oversize(path):
        return (yield _pass_ranges(state, path, spans, single_range))
    if state.block_size is not None:
        meta = yield from head(state, path)
        clipped = _blocks.clip(spans, meta["size"])
        if clipped is None:  # out of bounds: the origin gives its own error
            return (yield _pass_ranges(state, path, spans, single_range))
        needed = _blocks.covering(clipped, state.block_size)
        have = yield from blocks(state, path, meta, needed)
        out = [to_buffer(_blocks.assemble(s, have, state.block_size)) for s in clipped]
    else:
        whole = yield from body(state, path)
        clipped = _blocks.clip(spans, len(whole.raw))
        if clipped is None:
            return (yield _pass_ranges(state, path, spans, single_range))
        out = [whole.view[slice(start, end, 1)] for start, end in clipped]
    return out[0] if single_range else out


def _pass_ranges(state: ReadState, path: str, spans: Sequence[Span], single_range: bool) -> Call:
    if single_range:
        start, end = spans[0]
        return Call(state.store, "get_range", (path,), {"start": start, "end": end})
    kwargs = {"starts": [s for s, _ in spans], "ends": [e for _, e in spans]}
    return Call(state.store, "get_ranges", (path,), kwargs)


def get(state: ReadState, path: str, options: Any) -> Plan[Any]:
    """A GetResult for `path`; options other than `range` go to the origin uncached."""
    options = dict(options or {})
    wanted = options.pop("range", None)
    if any(value is not None for value in options.values()):
        return (yield Call(state.store, "get", (path,), {"options": options | _range(wanted)}))
    if state.block_size is not None:
        meta = yield from head(state, path)
        if meta["size"] > state.max_size:
            return (yield Call(state.store, "get", (path,), {"options": _range(wanted) or None}))
        indices = list(range(-(-meta["size"] // state.block_size)))
        have = yield from blocks(state, path, meta, indices)
        whole = Body.of(b"".join(have[i] for i in indices), meta)
    else:
        whole = yield from body(state, path)
    size = len(whole.raw)
    span = (0, size) if wanted is None else _blocks.option_span(wanted, size)
    if span is None:  # an invalid range: the origin gives its own error
        return (yield Call(state.store, "get", (path,), {"options": _range(wanted)}))
    data = whole.raw if span == (0, size) else whole.raw[span[0] : span[1]]
    return CachedGetResult(data, whole.meta, span, whole.attributes)


def _range(wanted: Any) -> dict[str, Any]:
    return {} if wanted is None else {"range": wanted}


# -- writes --------------------------------------------------------------------------------------


def write(
    state: ReadState, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], paths: list[str]
) -> Plan[Any]:
    """Forward a write to the origin, then drop what is held for `paths` here and in `cache=`."""
    for path in paths:
        state.forget(path)
    try:
        result = yield Call(state.store, name, args, kwargs)
    finally:
        for path in paths:
            state.forget(path)
    if state.level is not None:
        for path in paths:
            yield Call(state.level, "evict", (state.level_tag(path),))
    return result
