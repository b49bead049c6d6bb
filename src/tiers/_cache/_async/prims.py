"""Primitives the async orchestration uses; `_sync/prims.py` has their blocking twins."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..._flight import Flight, wait_async

_T = TypeVar("_T")


async def sleep_async(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def wait_flight_async(flight: Flight) -> Any:
    return await wait_async(flight)


async def call_factory_async(factory: Callable[[], Any]) -> Any:
    result = factory()
    if inspect.isawaitable(result):
        result = await result
    return result


_BACKGROUND: set[asyncio.Task[object]] = set()  # referenced until done (else collectable)


def start_background_async(run: Callable[[], Coroutine[Any, Any, object]], name: str) -> None:
    """Run the coroutine `run()` makes as a task of the running loop, not awaited."""
    task: asyncio.Task[object] = asyncio.get_running_loop().create_task(run(), name=name)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def to_thread_async(fn: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.to_thread(fn, *args)


class Renewer:
    """Calls `renew` every `interval` seconds until stopped (keeps a lock's lease alive)."""

    def __init__(self, renew: Callable[[], Awaitable[bool]], interval: float) -> None:
        self._task = asyncio.ensure_future(self._run(renew, interval))

    @staticmethod
    async def _run(renew: Callable[[], Awaitable[bool]], interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                if not await renew():
                    return

    def stop(self) -> None:
        self._task.cancel()


def start_renewer_async(renew: Callable[[], Awaitable[bool]], interval: float) -> Renewer:
    return Renewer(renew, interval)
