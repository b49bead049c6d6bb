"""Redis key names: entries, tag sets and locks under one prefix (pure functions, no I/O).

``<prefix>e:<key>`` holds an entry, ``<prefix>t:<digest of tag>`` the set of keys written with
that tag, ``<prefix>l:<name>`` a lock, ``<prefix>u`` the usage counters (a hash). Keys are
encoded UTF-8 with ``surrogatepass``, so any ``str`` (NUL, lone surrogates, 10 000
characters) is a distinct Redis key.
"""

from __future__ import annotations

import hashlib
import re

_GLOB_SPECIAL = frozenset(b"*?[]\\")


def encode(text: str) -> bytes:
    """`text` as bytes; lone surrogates kept, so every ``str`` has its own encoding."""
    return text.encode("utf-8", "surrogatepass")


def decode(raw: bytes) -> str:
    """The inverse of `encode`."""
    return raw.decode("utf-8", "surrogatepass")


def glob_escape(raw: bytes) -> bytes:
    """`raw` as a literal in a Redis MATCH pattern (``* ? [ ] \\`` escaped)."""
    if not _GLOB_SPECIAL.intersection(raw):
        return raw
    return b"".join(b"\\" + bytes((c,)) if c in _GLOB_SPECIAL else bytes((c,)) for c in raw)


def tag_marker(tag: str) -> bytes:
    """How `tag` appears inside a record's tag block (between NULs)."""
    return b"\0" + encode(tag) + b"\0"


class KeySpace:
    """The Redis names of one store's entries, tag sets and locks."""

    __slots__ = ("entries", "locks", "prefix", "tags", "usage")

    def __init__(self, prefix: str) -> None:
        self.prefix = encode(prefix)
        self.entries = self.prefix + b"e:"
        self.tags = self.prefix + b"t:"
        self.locks = self.prefix + b"l:"
        self.usage = self.prefix + b"u"

    def entry(self, key: str) -> bytes:
        return self.entries + encode(key)

    def lock(self, name: str) -> bytes:
        return self.locks + encode(name)

    def tag(self, tag: str) -> bytes:
        """The tag's set: a digest, so tags of any length or content make short names."""
        return self.tags + hashlib.blake2b(encode(tag), digest_size=16).hexdigest().encode()

    def user_key(self, redis_key: bytes) -> str:
        """The store key of an entry's Redis key."""
        return decode(redis_key[len(self.entries) :])

    def entry_pattern(self, key_prefix: str) -> bytes:
        """A MATCH pattern for the entries whose key starts with `key_prefix`."""
        return glob_escape(self.entries + encode(key_prefix)) + b"*"

    def tag_pattern(self) -> bytes:
        return glob_escape(self.tags) + b"*"

    def lock_pattern(self) -> bytes:
        return glob_escape(self.locks) + b"*"

    def is_tag_set(self, redis_key: bytes) -> bool:
        """Whether `redis_key` is a name `tag` gives (``t:`` and 32 hex digits)."""
        return redis_key.startswith(self.tags) and bool(
            _DIGEST.fullmatch(redis_key[len(self.tags) :])
        )

    def where(self, redis_key: bytes) -> str:
        """`redis_key` relative to the prefix, for messages (undecodable bytes escaped)."""
        return redis_key[len(self.prefix) :].decode("utf-8", "backslashreplace")


_DIGEST = re.compile(rb"[0-9a-f]{32}")
