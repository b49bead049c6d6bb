"""The Cache: state (_core), tiers (_tier), rules (_policy), I/O (_async, generated _sync), face
(_cache); see docs/architecture.md."""

from ._cache import Cache

__all__ = ["Cache"]
