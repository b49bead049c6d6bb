"""Who is writing: set by a `Cache` around its writes, read by stores that announce them.

A RedisStore's messages name their writer so that a listening cache can skip its own; several
caches may share one store object, so the store's own id would not tell them apart.
"""

from __future__ import annotations

import contextvars
from types import TracebackType

WRITER: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("tiers_writer", default=None)
"""The 16-byte id of the cache writing in this context (thread or task), if any."""


class writing:  # (lowercase: used like a function, ``with writing(me):``)
    """Name `writer` as the writer within the block (None: leave it as it is)."""

    __slots__ = ("_token", "_writer")

    def __init__(self, writer: bytes | None) -> None:
        self._writer = writer
        self._token: contextvars.Token[bytes | None] | None = None

    def __enter__(self) -> None:
        if self._writer is not None:
            self._token = WRITER.set(self._writer)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            WRITER.reset(self._token)
