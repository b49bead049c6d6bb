"""Who is writing: set by a `Cache` around its writes, read by stores that announce them.

A RedisStore's messages name their writer so that a listening cache can skip its own; several
caches may share one store object, so the store's own id would not tell them apart.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

WRITER: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("tiers_writer", default=None)
"""The 16-byte id of the cache writing in this context (thread or task), if any."""


@contextlib.contextmanager
def writing(writer: bytes) -> Iterator[None]:
    token = WRITER.set(writer)
    try:
        yield
    finally:
        WRITER.reset(token)
