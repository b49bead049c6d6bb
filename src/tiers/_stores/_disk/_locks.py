"""Leased single-flight locks of a shard: one small file per lock in ``locks/``.

Every change happens under the shard lock, so a lock is read, decided on and rewritten as
one step. A lock file holds its token and lease end with a checksum; one that does not verify
(torn by a crash, or damaged) is a free lock. Who may take a lock is `_rules.may_take`; only
the holder's token renews or releases.
"""

from __future__ import annotations

import contextlib
import os
import struct

import xxhash

from ..._fileio import pread_exact
from ._io import Fd, NotOurs, open_or_replace, open_ours, pwrite_all, remove_name

DIRECTORY = "locks"
_UNTIL = struct.Struct("<d")
_CHECK = struct.Struct("<Q")
_MAX = 4096


def lock_file(lkey: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(lkey)


def read(directory: Fd, lkey: bytes) -> tuple[bytes, float] | None:
    """(token, lease end) of the lock, None when free (absent, or not a lock we wrote)."""
    try:
        file = open_ours(directory.fd, lock_file(lkey))
    except (FileNotFoundError, NotOurs):
        return None
    raw = pread_exact(file.fd, _MAX, 0)
    end = len(raw) - _CHECK.size
    if (
        end < _UNTIL.size + 1
        or xxhash.xxh3_64_intdigest(raw[:end]) != _CHECK.unpack_from(raw, end)[0]
    ):
        return None
    token, until = raw[: end - _UNTIL.size - 1], _UNTIL.unpack_from(raw, end - _UNTIL.size)[0]
    return token, until


def write(directory: Fd, lkey: bytes, token: bytes, until: float) -> None:
    body = token + b"\0" + _UNTIL.pack(until)
    data = body + _CHECK.pack(xxhash.xxh3_64_intdigest(body))
    file = open_or_replace(directory.fd, lock_file(lkey))
    pwrite_all(file.fd, data, 0)
    os.ftruncate(file.fd, len(data))


def remove(directory: Fd, lkey: bytes) -> None:
    with contextlib.suppress(OSError):
        remove_name(directory.fd, lock_file(lkey))


def remove_expired(directory: Fd, now: float) -> None:
    """Delete the files of locks whose lease ended (they would be free anyway)."""
    for name in os.listdir(directory.fd):
        if len(name) != 32:
            continue
        try:
            file = open_ours(directory.fd, name)
        except (FileNotFoundError, NotOurs):
            continue
        raw = pread_exact(file.fd, _MAX, 0)
        end = len(raw) - _CHECK.size
        valid = (
            end > _UNTIL.size
            and xxhash.xxh3_64_intdigest(raw[:end]) == (_CHECK.unpack_from(raw, end)[0])
        )
        if not valid or _UNTIL.unpack_from(raw, end - _UNTIL.size)[0] <= now:
            with contextlib.suppress(OSError):
                remove_name(directory.fd, name)
