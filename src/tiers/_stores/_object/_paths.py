"""Object names for keys, tags and locks: pure functions, no I/O.

A name is the hex of the UTF-8 (``surrogatepass``) bytes, so any key is a safe object name
and a key prefix is a name prefix. Names end in ``_``; past `PLAIN_BYTES` bytes a name is the
hex of the first `PLAIN_BYTES` bytes, ``~`` and a BLAKE2b digest of the whole (the record keeps
the full key, so listings map such names back). Names are cut into segments of `SEGMENT`
characters (``/`` between them) so every segment is a valid file name on local disks too,
and a name prefix stays a path prefix. A tag is the hex of tags up to `TAG_BYTES` bytes, else
``~`` and a digest, so a marker's path stays within S3's 1024 bytes::

    <prefix>/e/<name>              one object per entry (a `_wire` record)
    <prefix>/t/<tag>/<name>        an empty marker: the entry <name> carried the tag
    <prefix>/l/<name>              a lock: ``token|deadline`` (deadline on the server's clock)
    <prefix>/l/~clock.<nonce>      a clock probe, written, read and deleted (`_probe`)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

PLAIN_BYTES = 400
SEGMENT = 200
TAG_BYTES = 32
ENTRIES, TAGS, LOCKS = "e", "t", "l"


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _cut(flat: str) -> str:
    return "/".join(flat[i : i + SEGMENT] for i in range(0, len(flat), SEGMENT))


def name(text: str) -> str:
    """The object name of a key, tag or lock name (non-empty segments, distinct per text)."""
    raw = _raw(text)
    if len(raw) <= PLAIN_BYTES:
        return _cut(raw.hex() + "_")
    return _cut(raw[:PLAIN_BYTES].hex() + "~" + _digest(raw))


def _digest(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


_NAME = re.compile(rf"(?:[0-9a-f]{{2}})*_|[0-9a-f]{{{2 * PLAIN_BYTES}}}~[0-9a-f]{{32}}")
_TAG = re.compile(rf"(?:[0-9a-f]{{2}}){{0,{TAG_BYTES}}}_|~[0-9a-f]{{32}}")
_PROBE = re.compile(r"~clock\.[0-9a-f]{32}")


def is_name(cut: str) -> bool:
    """Whether `cut` (a path's part after its folder) is a name `name` gives."""
    flat = cut.replace("/", "")
    return bool(_NAME.fullmatch(flat)) and _cut(flat) == cut


def is_tag_name(part: str) -> bool:
    """Whether `part` is the folder name of a tag (`Layout.tag_folder`'s last part)."""
    return bool(_TAG.fullmatch(part))


def is_probe(part: str) -> bool:
    """Whether `part` is a clock probe's name (`Layout.probe`, with a uuid4 hex nonce)."""
    return bool(_PROBE.fullmatch(part))


@dataclass(frozen=True, slots=True)
class Layout:
    """The paths of one store under `root` ("" or a path without leading/trailing slashes)."""

    root: str = ""

    def _join(self, *parts: str) -> str:
        return "/".join((self.root, *parts)) if self.root else "/".join(parts)

    def entry(self, key: str) -> str:
        return self._join(ENTRIES, name(key))

    def entries(self) -> str:
        """The folder listed for entries."""
        return self._join(ENTRIES)

    def scan_offset(self, prefix: str) -> tuple[str | None, str, bool]:
        """(list offset, path start to keep, exact) for the entries whose key starts with
        `prefix`; not `exact`: names only narrow it down, check the key in each record."""
        raw = _raw(prefix)
        start = self._join(ENTRIES, _cut(raw[:PLAIN_BYTES].hex()))
        # one character short: an offset naming a whole segment (a "directory") makes some
        # servers (SeaweedFS) skip everything inside it
        offset = start[:-1] if raw else None
        return offset, start, len(raw) <= PLAIN_BYTES

    def tags(self) -> str:
        """The folder listed for tag markers."""
        return self._join(TAGS)

    def relative(self, path: str) -> str:
        """`path` relative to the store's root (for messages)."""
        return path[len(self.root) + 1 :] if self.root else path

    def tag_folder(self, tag: str) -> str:
        raw = _raw(tag)
        short = len(raw) <= TAG_BYTES
        return self._join(TAGS, raw.hex() + "_" if short else "~" + _digest(raw))

    def marker(self, tag: str, entry_path: str) -> str:
        return self.tag_folder(tag) + entry_path[len(self.entries()) :]

    def entry_of_marker(self, tag_folder: str, marker_path: str) -> str:
        return self.entries() + marker_path[len(tag_folder) :]

    def lock(self, lock_name: str) -> str:
        return self._join(LOCKS, name(lock_name))

    def locks(self) -> str:
        """The folder listed for locks (and clock probes)."""
        return self._join(LOCKS)

    def probe(self, nonce: str) -> str:
        """A clock probe's path: in the locks folder, never a lock's name (those are hex)."""
        return self._join(LOCKS, "~clock." + nonce)
