"""The requests of the store's plans: operations written once as generators (`_ops`), run
sync or async by `tiers._plans.run` / `run_async` with a performer from `_perform`.

A plan yields `Call`, `Batch` (one pipeline; a transaction if `atomic`, on a single server),
`Scan` (every key matching a pattern, over all primaries of a cluster), `Members` (a set's
members), `Cursor` (the next page of either, for walks that keep memory bounded) or `Pause`
(a wait before a retry) and is sent back the reply; its return value is the operation's
result.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

T = TypeVar("T")
CHUNK = 1000
PAGE = 500
"""Keys a `Cursor` gives at a time (one pipeline of reads each)."""


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
    """Every key matching `match` (``SCAN``, over all primaries of a cluster)."""

    match: bytes


@dataclass(slots=True)
class Members:
    """The members of the set at `key` (``SSCAN``)."""

    key: bytes


@dataclass(slots=True, eq=False)
class Cursor:
    """A walk a page at a time: each time a plan yields it, the next (up to `PAGE`) keys
    matching `match` (``SCAN``, over all primaries of a cluster), or members of the set at
    `members` (``SSCAN``); ``[]`` once `done`. The performer keeps its place in `handle`.
    Like SCAN, it may give an item twice (the server resized its table meanwhile)."""

    match: bytes = b""
    members: bytes | None = None
    handle: Any = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait `seconds` before trying again (an update that lost a race); reply: None. The
    call's deadline moves on by a timeout: each attempt gets its own."""

    seconds: float


Request: TypeAlias = Call | Batch | Scan | Members | Cursor | Pause
Plan = Generator[Request, Any, T]


def script(source: str, key: bytes, *args: Any) -> Call:
    """An EVAL of `source` on the one key `key`."""
    return Call("eval", (source, 1, key, *args))


def chunks(items: list[T]) -> Iterator[list[T]]:
    """`items` in lists of `CHUNK` (a pipeline each, or a command's arguments)."""
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
