"""Names in a FolderStore, all pure: entry folders, data files, temporary and lock names.

An entry folder is ``<slug>-<hash>``: the slug a readable rendering of the key (lowercase ASCII
letters, digits, ``-``, ``_`` and ``.``, at most 48 characters, never empty, never starting with
``.``), the hash 32 hex characters of BLAKE2b-128 over the whole key. Distinct keys never share
a folder, and no key can name anything outside the root or collide with the reserved names,
which all start with a dot.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import unicodedata

SLUG_MAX = 48
METADATA = "metadata.json"
ENTRY_DIR = re.compile(r"[a-z0-9_][a-z0-9._-]*-[0-9a-f]{32}\Z")
DATA_FILE = re.compile(r"data\.[0-9a-f]{8}\.[a-z0-9]{1,8}(\.[a-z0-9]{1,8})?\Z")

SERIALIZER_SUFFIX = {"pickle": "pkl", "json": "json", "msgpack": "msgpack", "raw": "bin"}
COMPRESSION = {1: "zlib", 2: "zstd", 3: "lz4"}
COMPRESSION_SUFFIX = {"zlib": "zlib", "zstd": "zst", "lz4": "lz4"}
_HEADER_FORMAT = 1  # byte 0 of a codec header (tiers/_codec/_envelope.py)
_KEPT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def key_hash(key: str, *, person: bytes = b"") -> str:
    data = key.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16, person=person).hexdigest()


def slug(key: str) -> str:
    """A readable, safe rendering of `key`: ``":user:42"`` → ``"user-42"``."""
    out: list[str] = []
    for char in unicodedata.normalize("NFKD", key[: SLUG_MAX * 4]).lower():
        if char in _KEPT:
            out.append(char)
        elif not unicodedata.combining(char) and (not out or out[-1] != "-"):
            out.append("-")  # accents go (é → e); anything else becomes one dash
    text = re.sub(r"-{2,}", "-", "".join(out)).strip("-.")
    return text[:SLUG_MAX].rstrip("-.") or "key"


def entry_dir(key: str) -> str:
    """The folder holding `key`'s entry."""
    return f"{slug(key)}-{key_hash(key)}"


def lock_file(name: str) -> str:
    """The file (in ``.locks/``) of the lock `name`; lock names are a namespace of their own."""
    return key_hash(name, person=b"tiers-lock") + ".lock"


def describe(header: bytes) -> tuple[str | None, str | None]:
    """(serializer name, compression name) a codec header records, None where unknown."""
    if len(header) < 4 or header[0] != _HEADER_FORMAT or len(header) < 4 + header[3]:
        return None, None
    try:
        name = header[4 : 4 + header[3]].decode("ascii")
    except UnicodeDecodeError:
        name = None
    cid = header[2]
    return name, (COMPRESSION.get(cid, f"unknown-{cid}") if cid else None)


def data_file(header: bytes) -> str:
    """A new, unique data file name whose extension follows the header: ``data.1a2b3c4d.json``,
    ``data.1a2b3c4d.pkl.zst``; ``.dat`` for a serializer it does not know."""
    serializer, compression = describe(header)
    name = f"data.{secrets.token_hex(4)}.{SERIALIZER_SUFFIX.get(serializer or '', 'dat')}"
    if compression is not None:
        name += "." + COMPRESSION_SUFFIX.get(compression, "cmp")
    return name


def temp_name() -> str:
    """A name for ``.tmp/`` or ``.trash/`` carrying this process's pid (see `writer_pid`)."""
    return f"{os.getpid()}.{secrets.token_hex(6)}"


def writer_pid(name: str) -> int | None:
    """The pid in a `temp_name`; None for names that are not ours."""
    head, _, rest = name.partition(".")
    return int(head) if head.isdigit() and len(rest) == 12 else None
