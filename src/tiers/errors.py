"""Exceptions raised by tiers.

Every error tiers raises on purpose derives from `TiersError`; where the meaning matches a
builtin exception, the error inherits it too, so ``except OSError`` or ``except ValueError``
keeps working::

    TiersError
    ├── ConfigError (ValueError)            bad option, URL, serializer name or secret
    ├── SerializationError (TypeError)      a value the serializer cannot encode
    ├── MissingDependencyError (ImportError) an optional extra is not installed
    └── StoreError                          a store failed
        ├── StoreFullError (OSError)        no space left; nothing partial was written
        ├── StorePermissionError (PermissionError)  a store path we must not use
        └── TierUnavailableError            a tier failed and on_tier_error="raise"

Backend errors are translated at the store boundary with ``raise ... from exc``, so the
original error is always available as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "TiersError",
    "ConfigError",
    "SerializationError",
    "MissingDependencyError",
    "StoreError",
    "StoreFullError",
    "StorePermissionError",
    "TierUnavailableError",
]


class TiersError(Exception):
    """Root of every exception tiers raises on purpose."""


class ConfigError(TiersError, ValueError):
    """An option, URL, serializer name or secret is not valid."""


class SerializationError(TiersError, TypeError):
    """A value cannot be encoded by the cache's serializer."""


class MissingDependencyError(TiersError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class StoreError(TiersError):
    """A store could not complete an operation."""


class StoreFullError(StoreError, OSError):
    """The store ran out of space; the write left nothing partial behind."""


class StorePermissionError(StoreError, PermissionError):
    """A store path is unsafe to use (owned by another user, a symlink, wrong type)."""


class TierUnavailableError(StoreError):
    """A tier failed and the cache was configured with ``on_tier_error="raise"``.

    The failing store's error is attached as ``__cause__``; `tier` is its position.
    """

    def __init__(self, message: str, *, tier: int = -1) -> None:
        super().__init__(message)
        self.tier = tier
