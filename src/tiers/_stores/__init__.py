"""Stores: where entries live. One module (or package) per store."""

from ._disk import DiskStore
from ._folder import FolderStore
from ._memory import MemoryStore
from ._null import NullStore
from ._object import ObjectStore
from ._protocol import Entry, Store, StoreCounters
from ._redis import RedisStore

__all__ = [
    "DiskStore",
    "Entry",
    "FolderStore",
    "MemoryStore",
    "NullStore",
    "ObjectStore",
    "RedisStore",
    "Store",
    "StoreCounters",
]
