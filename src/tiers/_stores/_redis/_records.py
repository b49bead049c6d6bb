"""Expiry arithmetic for records kept in Redis (pure functions, no I/O).

The logical expiry is the record's ``expires_at`` on the store's clock; the server's own TTL
(``PX``) is only there to reclaim memory, so it runs `slack` seconds past it (clock skew
between machines, a fake clock in tests).
"""

from __future__ import annotations

import struct

from ... import _rules
from .. import _wire
from .._protocol import Entry

FAR = 2.0**31
"""Past this many seconds away, the server keeps the record without a TTL (no PX overflow)."""

_EXPIRES = struct.Struct("<d")


def server_ttl_ms(expires_at: float | None, now: float, slack: float) -> int | None:
    """The ``PX`` for a record expiring at `expires_at`; None for no server TTL."""
    if expires_at is None:
        return None
    remaining = expires_at - now + slack
    if remaining >= FAR:
        return None
    return max(1, int(remaining * 1000))


def live_expiry(raw: bytes, now: float) -> bool:
    """Whether the 8 expiry bytes of a record (``GETRANGE 12 19``) say it is live."""
    if len(raw) != 8:
        return False
    expires: float = _EXPIRES.unpack(raw)[0]
    return _rules.live(expires or None, now)  # (0.0: never)


def is_expired(raw: bytes, now: float) -> bool:
    """Whether the 8 expiry bytes of a record say it expired (False if not a record)."""
    return len(raw) == 8 and not live_expiry(raw, now)


def read(data: bytes, now: float) -> Entry | None:
    """The live entry in `data`; None if expired. `_wire.DamagedRecord` if not a record."""
    entry, _key = _wire.unpack(data)
    return None if expired(entry, now) else entry


def read_head(head: bytes, size: int, now: float) -> Entry | None:
    """The live entry, without its value, from a record's first bytes (all but the body, or
    more) and its size; None if expired. `_wire.DamagedRecord` if not a record."""
    entry, _key = _wire.unpack_head(head, size)
    return None if expired(entry, now) else entry


def expired(entry: Entry, now: float) -> bool:
    return not _rules.live(entry.expires_at, now)


def clock_arg(now: float) -> bytes:
    """A time as a script argument Lua's ``tonumber`` reads back exactly."""
    return repr(float(now)).encode()
