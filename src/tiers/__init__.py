"""tiers: one cache API over memory, disk, folders, Redis and object storage.

>>> import tiers
>>> cache = tiers.Cache("memory://", "/tmp/my-cache")   # memory over disk
>>> cache.set("answer", 42, ttl=3600)
>>> cache.get("answer")
42
"""

from ._cache import Cache
from ._cache._explain import Explanation
from ._defaults import default_cache, memoize
from ._hashing import hash_key
from ._public import publish
from ._readthrough import CachingReadableStore
from ._stores import DiskStore, FolderStore, MemoryStore, NullStore, ObjectStore, RedisStore
from ._types import MISSING, EntryInfo, Stats
from ._version import __version__

__all__ = [
    "Cache",
    "memoize",
    "hash_key",
    "MISSING",
    "EntryInfo",
    "Explanation",
    "Stats",
    "MemoryStore",
    "DiskStore",
    "FolderStore",
    "RedisStore",
    "ObjectStore",
    "NullStore",
    "CachingReadableStore",
    "default_cache",
    "__version__",
]

publish(__name__, globals(), __all__)
del publish
