"""Logic written once as *plans*: generators that yield the I/O steps they need and are sent
each step's result (or have its exception thrown in, to handle or let through).

`run` performs the steps blocking, `run_async` awaits them; the caller says how one step is
performed. RedisStore, ObjectStore and CachingReadableStore write their operations this way
(see docs/decisions/0008-read-through.md).

The two loops differ only by the ``await``, and are written twice on purpose: sharing the
resumption of the plan costs a call per step (+30 to 50% for the driver of a 3-step plan),
and `run` stepping `run_async` by hand three to four times as much.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

S = TypeVar("S")
T = TypeVar("T")


def run(plan: Generator[S, Any, T], perform: Callable[[S], Any]) -> T:
    """Drive `plan` to its return value, performing each step with `perform`."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = plan.send(reply) if error is None else plan.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            reply, error = perform(step), None
        except BaseException as exc:
            reply, error = None, exc


async def run_async(plan: Generator[S, Any, T], perform: Callable[[S], Awaitable[Any]]) -> T:
    """Drive `plan` to its return value, awaiting each step's `perform`."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = plan.send(reply) if error is None else plan.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            reply, error = await perform(step), None
        except BaseException as exc:
            reply, error = None, exc
