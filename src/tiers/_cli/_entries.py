"""Entries as the command line shows them, and their values decoded for ``get`` and ``verify``.

Keys: a `Cache` stores ``key`` under ``namespace + ":" + key``. Commands take and print keys
of one namespace (``--namespace``, default ``""`` as in `Cache`), so what ``ls -q`` prints is
what ``rm`` and ``get`` take.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from .._cache._tier import _private
from .._codec import Codec, resolve_serializer
from .._codec._envelope import FORMAT, KEY_ID, PLAIN, SIGNED, Rejected
from .._codec._signing import resolve_secret
from .._stores._protocol import Entry, SupportsScan, implements
from ..errors import ConfigError
from ._errors import CLIError
from ._output import Column

NO_READS = (
    "this store does not record when entries are read (a DiskStore does with max_size: give "
    "disk://PATH?max_size=SIZE as your application opens it); use age or --older-than instead"
)
NAMESPACE_HELP = "the cache's namespace, as Cache(namespace=...) (default: none)"

LS_COLUMNS = [
    Column("key"),
    Column("name"),
    Column("size", "bytes"),
    Column("created", "time"),
    Column("accessed", "time", "last access"),
    Column("expires", "expiry"),
    Column("tags", "list"),
    Column("serializer"),
]
"""``tiers ls``'s columns (and its JSON row schema: times ISO 8601 UTC or null). `key` is
what ``show``, ``get`` and ``rm`` take; `name` is what people read: a memoized entry's call,
``function@version(args)``, else the key again. A table shows `name` under "key"."""
TABLE_COLUMNS = [Column("name", "text", "key"), *LS_COLUMNS[2:]]


def prefix_of(namespace: str) -> str:
    return namespace + ":"


def shown(stored: str | None) -> str | None:
    """A stored key as commands print it when they walk every namespace: the default
    namespace's keys without their leading ``:``, the others as ``namespace:key``."""
    return stored[1:] if stored is not None and stored.startswith(":") else stored


def scan(store: Any, namespace: str, prefix: str = "", tag: str | None = None) -> Iterator[
    tuple[str, Entry]
]:  # fmt: skip
    """(user key, entry) of the namespace, from the store's `scan`."""
    if not implements(store, SupportsScan):
        raise CLIError(f"{store!r} cannot list its entries (it has no scan)")
    head = prefix_of(namespace)
    cut = len(head)
    for stored, entry in store.scan(head + prefix, tag):
        yield stored[cut:], entry


def row(key: str, entry: Entry) -> dict[str, Any]:
    """An entry as ``ls`` shows it (raw values: bytes, epoch seconds, None for unknown)."""
    return {
        "key": key,
        "name": readable(key, entry.meta),
        "size": entry.size,
        "created": entry.created_at,
        "accessed": entry.accessed_at,
        "expires": entry.expires_at,
        "tags": list(entry.tags),
        "serializer": serializer_of(entry.header, entry.value),
    }


def readable(key: str, meta: Mapping[str, Any] | None) -> str:
    """A memoized entry as ``function@version(args)``; any other key as itself."""
    if not meta or not isinstance(meta.get("function"), str):
        return key
    function = str(meta["function"])
    version = meta.get("version")
    name = function + (f"@{version}" if version not in (None, "") else "")
    args = meta.get("args")
    if isinstance(args, str) and "(" in args:
        return name + args[args.index("(") :]
    return name + "(...)"


def serializer_of(header: bytes, value: Any = None) -> str:
    """The serializer an entry was written with, as its header says: ``pickle+plain`` for
    the code-free form private stores keep, ``object`` for a live object in memory."""
    if not header:
        return "object" if value is not None else "-"
    if len(header) < 4 or header[0] != FORMAT or len(header) < 4 + header[3]:
        return "unknown"
    name = header[4 : 4 + header[3]].decode("ascii", "replace")
    return f"{name}+plain" if header[1] & PLAIN else name


def header_facts(header: bytes) -> dict[str, Any]:
    """What a header says, for ``show``."""
    if len(header) < 4 or header[0] != FORMAT:
        return {"format": "unknown"}
    flags = header[1]
    return {
        "serializer": serializer_of(header),
        "signed": bool(flags & SIGNED),
        "signed_with_key_id": bool(flags & KEY_ID),
        "plain": bool(flags & PLAIN),
        "compression": {0: None, 1: "zlib", 2: "zstd", 3: "lz4"}.get(header[2], "unknown"),
    }


def expired(entry: Entry, now: float) -> bool:
    return entry.expires_at is not None and entry.expires_at <= now


def never(expires_at: float | None) -> bool:
    return expires_at is None or not math.isfinite(expires_at)


class Decoder:
    """Decodes entries of any serializer, verifying signatures first (the secret is
    ``--secret``, else ``$TIERS_SECRET``, else this user's key file, as in `Cache`)."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret
        self._codecs: dict[str, Codec] = {}

    def codec(self, name: str) -> Codec:
        found = self._codecs.get(name)
        if found is None:
            try:
                serializer = resolve_serializer(name)
            except ConfigError:
                raise Rejected(f"written with the serializer {name!r}, unknown here") from None
            found = Codec(serializer, None, lambda: resolve_secret(self._secret))
            self._codecs[name] = found
        return found

    def decode(self, stored_key: str, entry: Entry, *, private: bool) -> Any:
        """The value, or `Rejected` with the reason (tampered, another secret, damaged...)."""
        if not entry.header:
            return entry.value  # a live object
        name = serializer_of(entry.header).removesuffix("+plain")
        return self.codec(name).decode(stored_key, entry.header, entry.value, private)


def is_private(store: Any) -> bool:
    """Whether only this user can have written the store (its plain entries are readable)."""
    return _private(store)
