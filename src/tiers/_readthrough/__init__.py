"""Read-through caching of obspec object stores (`CachingReadableStore`)."""

from ._store import CachingReadableStore

__all__ = ["CachingReadableStore"]
