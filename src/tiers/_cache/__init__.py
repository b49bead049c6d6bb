"""The Cache: configuration (_core), operations (_async_ops, generated _sync_ops), face (_cache)."""

from ._cache import Cache

__all__ = ["Cache"]
