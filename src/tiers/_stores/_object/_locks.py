"""Leased locks as plans: one small object per lock, ``token|deadline``.

Taking a free name is a create-only put (exactly one creator wins). Every other change — taking
over a lease that ran out, renewing, releasing — is a put conditional on the e_tag just read,
so of two racing writers one fails and no one ever removes a successor's lock. A released lock
stays as a tombstone (``|0``) for the next conditional put, until `sweep` (`clear`, `expire`)
removes it.

Deadlines are on the object store's clock (`ServerTime`): callers pass ``now`` as the server's
time, so machines whose clocks disagree still agree on when a lease ends.

`sweep` removes free locks (tombstones, lapsed leases, clock probes) without a conditional
delete (S3 has none for us): it first takes each free lock itself, with a put conditional on
the e_tag it read and a short lease of its own (`SWEEP_LEASE`), then deletes it. A caller that
took the lock between the read and that put makes the put fail, and the lock is kept; one
trying while the sweeper holds it waits, as for any holder, and creates it anew once deleted.
"""

from __future__ import annotations

import math

from ... import _rules
from ._paths import Layout
from ._requests import Delete, Found, Get, List, Many, Plan, Put

_ATTEMPTS = 4
SWEEPER = "~sweep"
"""The token `sweep` holds a free lock with while removing it (no caller's token: uuids)."""
SWEEP_LEASE = 15.0


def _body(token: str, deadline: float) -> bytes:
    return f"{token}|{deadline!r}".encode("utf-8", "surrogatepass")


def _state(found: Found) -> tuple[str | None, float]:
    """(holder's token, lease end); (None, 0) if free or unreadable (not UTF-8, no finite
    lease end: a planted lease of 'inf' must not hold a lock for ever)."""
    try:
        token, _bar, deadline = found.data.decode("utf-8", "surrogatepass").rpartition("|")
        until = float(deadline)
    except ValueError:  # (UnicodeDecodeError is one)
        return None, 0.0
    if not math.isfinite(until):
        return None, 0.0
    return (token or None), until


def holds(found: Found | None, token: str, now: float) -> bool:
    """Whether the lock read as `found` is `token`'s with a lease running at `now`."""
    return found is not None and _rules.holds(*_state(found), token, now)


def acquire(layout: Layout, name: str, token: str, lease: float, now: float) -> Plan[bool]:
    """Take the lock if it is free, ran out, or is `token`'s already."""
    path = layout.lock(name)
    body = _body(token, now + lease)
    for _attempt in range(_ATTEMPTS):
        if (yield Put(path, body, "create")):
            return True
        found = yield Get(path)
        if found is None:
            continue  # removed by hand between the two requests: create again
        if not _rules.may_take(*_state(found), token, now):
            return False
        return (yield from _swap(path, found, body))
    return False


def renew(layout: Layout, name: str, token: str, lease: float, now: float) -> Plan[bool]:
    """Extend `token`'s lease; False if it does not hold the lock."""
    return (yield from _rewrite(layout.lock(name), token, _body(token, now + lease)))


def release(layout: Layout, name: str, token: str) -> Plan[bool]:
    """Free the lock if `token` holds it."""
    return (yield from _rewrite(layout.lock(name), token, _body("", 0.0)))


def _rewrite(path: str, token: str, body: bytes) -> Plan[bool]:
    found = yield Get(path)
    if found is None or _state(found)[0] != token:
        return False
    return (yield from _swap(path, found, body))


def _swap(path: str, found: Found, body: bytes) -> Plan[bool]:
    """Replace the object read as `found` by `body`, unless someone changed it since."""
    if found.e_tag is None:
        return False  # nothing to make the put conditional on: never overwrite blindly
    return bool((yield Put(path, body, {"e_tag": found.e_tag})))


def sweep(layout: Layout, now: float, conditional: bool) -> Plan[int]:
    """Remove the free locks (and clock probes); how many. Without conditional puts (a local
    store, which offers no locks) what is free is simply deleted."""
    folder = layout.locks()
    paths = [path for path, _size in (yield List(folder, folder + "/"))]
    removed = 0
    for start in range(0, len(paths), 256):
        chunk = paths[start : start + 256]
        founds = yield Many(tuple(Get(path) for path in chunk))
        free = [
            (path, found)
            for path, found in zip(chunk, founds, strict=True)
            if found is not None and not _held(found, now)
        ]
        if conditional:
            free = [(path, found) for path, found in free if found.e_tag]
            body = _body(SWEEPER, now + SWEEP_LEASE)
            claims = (Put(path, body, {"e_tag": found.e_tag}) for path, found in free)
            taken = (yield Many(tuple(claims))) if free else []
            doomed = [path for (path, _f), ok in zip(free, taken, strict=True) if ok]
        else:
            doomed = [path for path, _found in free]
        if doomed:
            yield Delete(tuple(doomed))
        removed += len(doomed)
    return removed


def _held(found: Found, now: float) -> bool:
    holder, until = _state(found)
    return holder is not None and until > now
