"""Child processes a test starts: none outlives the block that started it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def running(*procs: Any, grace: float = 0.0) -> Iterator[None]:
    """Start the processes; whatever happens, none outlives the block: each may end on its
    own within `grace` seconds of the block's end, then is killed."""
    try:
        for p in procs:
            p.start()
        yield
    finally:
        for p in procs:
            if grace:
                p.join(timeout=grace)
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
