"""Measuring the object store's clock: a tiny probe object written, read and deleted.

The server stamps the probe's ``Last-Modified`` while handling the PUT, so its clock read
that time between our local readings before and after the PUT. S3 gives whole seconds (the
server's time was in [LM, LM + 1)); obstore's local and memory stores give sub-second times
(taken as exact). The probe lives in the locks folder under a name no lock has, unique per
measurement, so a `clear` sweeps one left behind by a crash.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid

from ...errors import StoreError
from .._server_time import ServerTime
from ._paths import Layout
from ._requests import Delete, Get, Plan, Put


def measure(layout: Layout, server: ServerTime, budget: float) -> Plan[None]:
    """Measure `server`'s offset. A probe the store refuses (read-only credentials, no such
    bucket) leaves the last offset in place (`failed`); one that took half the call's
    `budget` (a server not answering) raises, as the call's own requests would fail too."""
    path = layout.probe(uuid.uuid4().hex)
    clock = server.clock
    started = time.monotonic()
    try:
        sent = clock.time()
        yield Put(path, b"")
        received = clock.time()
        found = yield Get(path)
    except StoreError:
        server.failed()
        if time.monotonic() - started >= budget / 2:
            raise
        return None
    with contextlib.suppress(StoreError):
        yield Delete((path,))
    if found is None or found.modified is None:
        server.failed()
        return None
    low = found.modified
    high = low + 1.0 if low == math.floor(low) else low  # whole seconds: HTTP dates
    server.measured(sent, received, low, high)
    return None
