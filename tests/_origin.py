"""An origin store for read-through tests: counts requests and bytes, adds optional latency."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Sequence
from typing import Any

import obstore

_BODY_METHODS = frozenset({"get", "get_range", "get_ranges"})


class TracingStore:
    """Wraps an obstore/obspec store; counts origin requests and bytes; optional latency."""

    def __init__(self, store: Any, *, latency: float = 0.0) -> None:
        self.store = store
        self.latency = latency
        self.requests: collections.Counter[str] = collections.Counter()
        self.bytes_fetched = 0
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as a fresh tracer (zero counts) over the same store and latency."""
        return _rebuild, (self.store, self.latency)

    def __repr__(self) -> str:
        return f"TracingStore({self.store!r})"

    def reset(self) -> None:
        """Forget every count and call recorded so far."""
        with self._lock:
            self.requests.clear()
            self.bytes_fetched = 0
            self.calls.clear()

    # -- bookkeeping -------------------------------------------------------------------------

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests[method] += 1
            self.calls.append((method, path))

    def _count_bytes(self, size: int) -> None:
        with self._lock:
            self.bytes_fetched += size

    def _before(self, method: str, path: str) -> None:
        self._record(method, path)
        if self.latency:
            time.sleep(self.latency)

    async def _before_async(self, method: str, path: str) -> None:
        self._record(method, path)
        if self.latency:
            await asyncio.sleep(self.latency)

    # -- reads -------------------------------------------------------------------------------

    def get(self, path: str, *, options: Any = None) -> Any:
        """Obstore's real GetResult; its body is counted when the result is returned."""
        self._before("get", path)
        result = obstore.get(self.store, path, options=options)
        start, end = result.range
        self._count_bytes(end - start)
        return result

    async def get_async(self, path: str, *, options: Any = None) -> Any:
        """Async form of `get`."""
        await self._before_async("get", path)
        result = await obstore.get_async(self.store, path, options=options)
        start, end = result.range
        self._count_bytes(end - start)
        return result

    def get_range(
        self, path: str, *, start: int, end: int | None = None, length: int | None = None
    ) -> Any:
        """One byte range from the origin."""
        self._before("get_range", path)
        data = obstore.get_range(self.store, path, start=start, end=end, length=length)
        self._count_bytes(len(memoryview(data)))
        return data

    async def get_range_async(
        self, path: str, *, start: int, end: int | None = None, length: int | None = None
    ) -> Any:
        """Async form of `get_range`."""
        await self._before_async("get_range", path)
        data = await obstore.get_range_async(self.store, path, start=start, end=end, length=length)
        self._count_bytes(len(memoryview(data)))
        return data

    def get_ranges(
        self,
        path: str,
        *,
        starts: Sequence[int],
        ends: Sequence[int] | None = None,
        lengths: Sequence[int] | None = None,
    ) -> Any:
        """Several byte ranges from the origin in one request."""
        self._before("get_ranges", path)
        parts = obstore.get_ranges(self.store, path, starts=starts, ends=ends, lengths=lengths)
        self._count_bytes(sum(len(memoryview(part)) for part in parts))
        return parts

    async def get_ranges_async(
        self,
        path: str,
        *,
        starts: Sequence[int],
        ends: Sequence[int] | None = None,
        lengths: Sequence[int] | None = None,
    ) -> Any:
        """Async form of `get_ranges`."""
        await self._before_async("get_ranges", path)
        parts = await obstore.get_ranges_async(
            self.store, path, starts=starts, ends=ends, lengths=lengths
        )
        self._count_bytes(sum(len(memoryview(part)) for part in parts))
        return parts

    def head(self, path: str) -> Any:
        """The origin's metadata for `path`."""
        self._before("head", path)
        return obstore.head(self.store, path)

    async def head_async(self, path: str) -> Any:
        """Async form of `head`."""
        await self._before_async("head", path)
        return await obstore.head_async(self.store, path)

    def list(self, prefix: str | None = None, **kwargs: Any) -> Any:
        """The origin's listing (a stream of metadata chunks)."""
        self._before("list", prefix or "")
        return obstore.list(self.store, prefix, **kwargs)

    def list_async(self, prefix: str | None = None, **kwargs: Any) -> Any:
        """The same stream, iterated with ``async for`` (no latency added)."""
        self._record("list", prefix or "")
        return obstore.list(self.store, prefix, **kwargs)

    # -- writes ------------------------------------------------------------------------------

    def put(self, path: str, file: Any, **kwargs: Any) -> Any:
        """Write `file` (bytes or a file-like object) to the origin."""
        self._before("put", path)
        return obstore.put(self.store, path, file, **kwargs)

    async def put_async(self, path: str, file: Any, **kwargs: Any) -> Any:
        """Async form of `put`."""
        await self._before_async("put", path)
        return await obstore.put_async(self.store, path, file, **kwargs)

    def delete(self, paths: str | Sequence[str]) -> None:
        """Delete one path or several."""
        self._before("delete", paths if isinstance(paths, str) else ",".join(paths))
        obstore.delete(self.store, paths)

    async def delete_async(self, paths: str | Sequence[str]) -> None:
        """Async form of `delete`."""
        await self._before_async("delete", paths if isinstance(paths, str) else ",".join(paths))
        await obstore.delete_async(self.store, paths)

    def copy(self, from_: str, to: str, *, overwrite: bool = True) -> None:
        """Copy one object to another path."""
        self._before("copy", from_)
        obstore.copy(self.store, from_, to, overwrite=overwrite)

    async def copy_async(self, from_: str, to: str, *, overwrite: bool = True) -> None:
        """Async form of `copy`."""
        await self._before_async("copy", from_)
        await obstore.copy_async(self.store, from_, to, overwrite=overwrite)

    def rename(self, from_: str, to: str, *, overwrite: bool = True) -> None:
        """Move one object to another path."""
        self._before("rename", from_)
        obstore.rename(self.store, from_, to, overwrite=overwrite)

    async def rename_async(self, from_: str, to: str, *, overwrite: bool = True) -> None:
        """Async form of `rename`."""
        await self._before_async("rename", from_)
        await obstore.rename_async(self.store, from_, to, overwrite=overwrite)

    def data_requests(self) -> int:
        """How many requests fetched object bodies (get, get_range, get_ranges)."""
        with self._lock:
            return sum(self.requests[name] for name in _BODY_METHODS)


def _rebuild(store: Any, latency: float) -> TracingStore:
    return TracingStore(store, latency=latency)
