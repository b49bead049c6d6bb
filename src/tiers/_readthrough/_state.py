"""In-memory bookkeeping of the read-through store: every method holds the lock only briefly."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._flight import Flights
from ._buffers import to_buffer
from ._lru import ByteLRU

if TYPE_CHECKING:
    from obstore import Bytes

_PREFIX = "tiers-readthrough"


@dataclass(frozen=True)
class Body:
    """A whole object as the origin returned it: immutable bytes plus the origin's metadata."""

    raw: bytes
    view: Bytes
    meta: Any
    attributes: Any

    @classmethod
    def of(cls, raw: bytes, meta: Any, attributes: Any = None) -> Body:
        return cls(raw, to_buffer(raw), meta, dict(attributes or {}))


def store_identity(store: Any) -> str:
    """A name for the origin that is the same in every process for the same remote store."""
    text = repr(store)
    if " at 0x" in text:  # the default repr: an in-process store, never shared
        text = f"{type(store).__qualname__}@{id(store):x}"
    config = getattr(store, "config", None)
    if isinstance(config, dict):
        parts = (f"{k}={config[k]}" for k in ("endpoint", "region", "url") if k in config)
        text = ";".join((text, *parts))
    return text


def version_of(meta: Any) -> str:
    """The object's version: e_tag (and version id) when known, else last_modified and size."""
    tag, version = meta.get("e_tag"), meta.get("version")
    if tag or version:
        return f"{tag}|{version}"
    return f"{meta['last_modified'].isoformat()}|{meta['size']}"


Token = tuple[int, int]
"""(clear epoch, path generation) when a fetch started: stale fetches are not admitted."""


class ReadState:
    """The LRU of bodies and blocks, cached heads, generations and flights of one store."""

    def __init__(self, store: Any, max_size: int, block_size: int | None, level: Any) -> None:
        self.store, self.max_size, self.block_size, self.level = store, max_size, block_size, level
        self.identity = store_identity(store)
        self.lock = threading.Lock()
        self.lru: ByteLRU[Any] = ByteLRU(max_size)
        self.heads: dict[str, Any] = {}
        self.generations: dict[str, int] = {}
        self.epoch = 0
        self.flights = Flights()

    @property
    def block(self) -> int:
        """The block size (only asked for in block mode)."""
        if self.block_size is None:
            raise RuntimeError("this store caches whole objects, not blocks")
        return self.block_size

    # -- lookups and admission ---------------------------------------------------------------

    def token(self, path: str) -> Token:
        with self.lock:
            return self.epoch, self.generations.get(path, 0)

    def _current(self, path: str, token: Token) -> bool:
        return token == (self.epoch, self.generations.get(path, 0))

    def body(self, path: str) -> Body | None:
        with self.lock:
            found: Body | None = self.lru.get(("obj", path))
            return found

    def blocks(self, path: str, indices: Iterable[int]) -> dict[int, bytes]:
        with self.lock:
            found = ((i, self.lru.get(("blk", path, i))) for i in indices)
            return {i: data for i, data in found if data is not None}

    def head(self, path: str) -> Any:
        with self.lock:
            return self.heads.get(path)

    def admit_head(self, path: str, meta: Any, token: Token) -> None:
        with self.lock:
            if self._current(path, token):
                self.heads[path] = meta

    def admit_body(self, path: str, body: Body, token: Token) -> None:
        with self.lock:
            if self._current(path, token):
                self.heads[path] = body.meta
                self.lru.put(("obj", path), body, len(body.raw))

    def admit_blocks(self, path: str, blocks: dict[int, bytes], token: Token) -> None:
        with self.lock:
            if self._current(path, token):
                for index, data in blocks.items():
                    self.lru.put(("blk", path, index), data, len(data))

    def oversize(self, path: str) -> bool:
        """Whether the object is known to be larger than `max_size` (never admitted whole)."""
        meta = self.head(path)
        return meta is not None and meta["size"] > self.max_size

    # -- invalidation and listing ------------------------------------------------------------

    def forget(self, path: str) -> None:
        """Drop everything held for `path`; fetches already under way are not admitted."""
        with self.lock:
            self.generations[path] = self.generations.get(path, 0) + 1
            self.heads.pop(path, None)
            for key in self.lru.ordered():
                if isinstance(key, tuple) and key[1] == path:
                    self.lru.pop(key)

    def clear(self) -> None:
        with self.lock:
            self.epoch += 1
            self.lru.clear()
            self.heads.clear()

    def paths(self) -> list[str]:
        """Cached paths, least recently used first."""
        with self.lock:
            keys = self.lru.ordered()
        order: dict[str, None] = {}
        for key in keys:
            path = key[1]  # type: ignore[index]
            order.pop(path, None)
            order[path] = None
        return list(order)

    def size(self) -> int:
        with self.lock:
            return self.lru.size

    # -- keys in the `cache=` level ----------------------------------------------------------

    def level_key(self, path: str, meta: Any, index: int | None) -> str:
        part = "obj" if index is None else f"blk{self.block_size}:{index}"
        return f"{_PREFIX}|{self.identity}|{path}|{version_of(meta)}|{part}"

    def level_tag(self, path: str) -> str:
        digest = hashlib.sha256(f"{self.identity}|{path}".encode()).hexdigest()[:32]
        return f"{_PREFIX}:{digest}"
