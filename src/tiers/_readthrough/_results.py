"""The GetResult handed out for reads served by the read-through store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from ._buffers import to_buffer

if TYPE_CHECKING:
    from obstore import Bytes

_CHUNK = 10 * 2**20


class CachedGetResult:
    """An immutable object body with the origin's metadata (obspec GetResult and GetResultAsync)."""

    __slots__ = ("_attributes", "_data", "_meta", "_range")

    def __init__(
        self, data: bytes, meta: Any, byte_range: tuple[int, int], attributes: Any = None
    ) -> None:
        self._data = to_buffer(data)
        self._meta = meta
        self._range = byte_range
        self._attributes = dict(attributes or {})

    @property
    def attributes(self) -> dict[str, Any]:
        """The object's attributes as the origin returned them ({} when served from `cache=`)."""
        return self._attributes

    @property
    def meta(self) -> Any:
        """The origin's ObjectMeta (path, last_modified, size, e_tag, version)."""
        return self._meta

    @property
    def range(self) -> tuple[int, int]:
        """The [start, end) of the object this body holds."""
        return self._range

    def buffer(self) -> Bytes:
        """The body (immutable, zero-copy)."""
        return self._data

    async def buffer_async(self) -> Bytes:
        """The body (immutable, zero-copy)."""
        return self._data

    def bytes(self) -> Bytes:
        """The body, as obstore's GetResult.bytes() returns it."""
        return self._data

    async def bytes_async(self) -> Bytes:
        """The body, as obstore's GetResult.bytes_async() returns it."""
        return self._data

    def stream(self, min_chunk_size: int = _CHUNK) -> _Chunks:
        """The body in chunks of `min_chunk_size` bytes (sync and async iterable)."""
        return _Chunks(self._data, min_chunk_size)

    def __iter__(self) -> Iterator[Bytes]:
        return iter(self.stream())

    def __aiter__(self) -> AsyncIterator[Bytes]:
        return self.stream().__aiter__()


class _Chunks:
    """Chunks of an immutable body, iterable with `for` and `async for`."""

    def __init__(self, data: Bytes, size: int) -> None:
        self._data = data
        self._size = max(int(size), 1)

    def __iter__(self) -> Iterator[Bytes]:
        for offset in range(0, len(self._data), self._size):
            yield self._data[slice(offset, offset + self._size, 1)]

    async def __aiter__(self) -> AsyncIterator[Bytes]:
        for chunk in self:
            yield chunk
