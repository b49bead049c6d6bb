"""The usage counters of a RedisStore: one hash, ``<prefix>u`` (`KeySpace.usage`), shared by
every process. `add` is one script (`USAGE_ADD`: an HINCRBY per count and an HSETNX of
``since``, atomic on one key, so on a cluster too); `since` is kept on the server's clock."""

from __future__ import annotations

import math
import re

from .._protocol import Usage
from .._server_time import ServerTime
from . import _scripts as lua
from ._keys import KeySpace
from ._plans import Call, Plan, script
from ._records import clock_arg

COUNTS = ("hits", "misses", "sets", "deletes", "errors")
"""The integer fields, in `USAGE_ADD`'s order (``since`` is the other field)."""


def add(keys: KeySpace, usage: Usage, now: float, time: ServerTime) -> Plan[None]:
    """Add `usage` (nothing when it counts nothing); ``since`` is set, if not yet, to
    ``usage.since`` or else `now` (the server's time)."""
    if not usage:
        return
    since = time.to_server(usage.since)
    counts = [str(int(getattr(usage, name))).encode() for name in COUNTS]
    yield script(lua.USAGE_ADD, keys.usage, clock_arg(now if since is None else since), *counts)


def read(keys: KeySpace, time: ServerTime) -> Plan[Usage]:
    """The counters (a field set by hand to something else reads as 0)."""
    fields: dict[bytes, bytes] = yield Call("hgetall", (keys.usage,))
    counts = {name: _count(fields.get(name.encode())) or 0 for name in COUNTS}
    return Usage(**counts, since=time.to_local(since(fields.get(b"since"))))


def reset(keys: KeySpace) -> Plan[None]:
    yield Call("delete", (keys.usage,))


def sound(field: bytes, value: bytes) -> bool:
    """Whether a field of the hash is one `USAGE_ADD` writes (others are damage: `verify`)."""
    if field == b"since":
        return since(value) is not None
    return field in _FIELDS and _count(value) is not None


def since(raw: bytes | None) -> float | None:
    """The ``since`` field's time; None if missing or not a finite number."""
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_FIELDS = frozenset(name.encode() for name in COUNTS)
_INTEGER = re.compile(rb"-?[0-9]{1,19}")  # what HINCRBY takes (a 64-bit integer)


def _count(raw: bytes | None) -> int | None:
    if raw is None or not _INTEGER.fullmatch(raw):
        return None
    return int(raw)
