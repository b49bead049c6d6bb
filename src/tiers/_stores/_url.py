"""Turn a tier given as a store object, a path or a URL into a store."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .._units import parse_size
from ..errors import ConfigError
from ._disk import DiskStore
from ._folder import FolderStore
from ._memory import MemoryStore
from ._null import NullStore

_CORE_METHODS = ("get", "set", "delete", "clear", "stats", "close")
_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
_OBJECT_SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "file")
_SCHEMES = (
    "memory://, disk://, folder://, redis://, rediss://, redis+cluster://, s3://, gs://, "
    "az://, file://, null://, or a plain path"
)


def plan_tier(spec: object) -> Callable[[], tuple[Any, bool]]:
    """Check `spec` completely and return what opens it, as ``(store, owned)``: `owned` when
    built here from a path or URL. Nothing is created before the call, so a cache whose last
    tier is misspelt leaves no directory behind for the first."""
    if isinstance(spec, Path) or (isinstance(spec, str) and "://" not in spec):
        if not str(spec):
            raise ConfigError("a tier path must not be empty")
        return lambda: (DiskStore(spec), True)
    if isinstance(spec, os.PathLike):
        path = os.fspath(spec)
        return lambda: (DiskStore(path), True)
    if isinstance(spec, str):
        opener = _from_url(spec)
        return lambda: (opener(), True)
    if isinstance(spec, type):
        raise TypeError(f"a tier must be a store instance, not the class {spec.__qualname__!r}")
    missing = [m for m in _CORE_METHODS if not callable(getattr(spec, m, None))]
    if missing or not hasattr(spec, "holds_objects"):
        raise TypeError(
            f"a tier must be a store, a path or a URL, not {type(spec).__qualname__!r}"
            + (f" (it lacks {', '.join(missing)})" if missing else "")
        )
    return lambda: (spec, False)


def _from_url(url: str) -> Callable[[], Any]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options = _options(url, parts.query)
    if scheme == "memory":
        if parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(f"{url!r}: a memory:// URL takes no host or path, only options")
        kwargs = _take(url, options, "max_size", "max_items")
        return lambda: MemoryStore(**kwargs)
    if scheme == "disk":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ConfigError(f"{url!r}: a disk:// URL needs a path, as in disk:///var/cache/x")
        kwargs = _take(url, options, "max_size", "durable")
        if "durable" in kwargs:
            kwargs["durable"] = _flag(url, "durable", kwargs["durable"])
        return lambda: DiskStore(path, **kwargs)
    if scheme == "folder":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ConfigError(f"{url!r}: a folder:// URL needs a path, as in folder:///srv/results")
        _take(url, options)
        return lambda: FolderStore(path)
    if scheme == "null":
        _take(url, options)
        return NullStore
    if scheme in _REDIS_SCHEMES:
        from ._redis import RedisStore

        redis_store = RedisStore(url)  # checks the URL now; connects on first use
        return lambda: redis_store
    if scheme in _OBJECT_SCHEMES:
        from ._object import ObjectStore

        object_store = ObjectStore(url)  # checks the URL now; no request until first use
        return lambda: object_store
    raise ConfigError(f"{url!r}: unknown store URL scheme {scheme!r}; use {_SCHEMES}")


def _options(url: str, query: str) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
    options: dict[str, str] = {}
    for name, value in pairs:
        if name in options:
            raise ConfigError(f"{url!r}: option {name!r} is given twice")
        options[name] = value
    return options


def _take(url: str, options: dict[str, str], *allowed: str) -> dict[str, Any]:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) or "none"
        raise ConfigError(f"{url!r}: unknown option {unknown[0]!r} (expected: {expected})")
    out: dict[str, Any] = {}
    for name, value in options.items():
        out[name] = value
        if name == "max_items":
            if not value.isdigit():
                raise ConfigError(f"{url!r}: max_items must be a whole number, not {value!r}")
            out[name] = int(value)
        elif name == "max_size":
            try:
                out[name] = parse_size(value)
            except ConfigError as exc:
                raise ConfigError(f"{url!r}: {exc}") from None
    return out


def _flag(url: str, name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{url!r}: {name} must be true or false, not {value!r}")
