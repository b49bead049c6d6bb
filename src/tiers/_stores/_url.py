"""Turn a tier given as a store object, a path or a URL into a store."""

from __future__ import annotations

import os
import re
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
_LOCAL_SCHEMES = ("memory", "disk", "folder", "null")
_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel")
_OBJECT_SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "file")
SCHEMES = (*_LOCAL_SCHEMES, *_REDIS_SCHEMES, *_OBJECT_SCHEMES)
"""Every URL scheme a tier may be given with (the error for an unknown one lists them)."""
_ACCEPTED = ", ".join(f"{scheme}://" for scheme in SCHEMES) + ", or a plain path"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")  # RFC 3986: a scheme, then ":"


def tier_opener(spec: object) -> Callable[[], tuple[Any, bool]]:
    """Check `spec` completely and return what opens it, as ``(store, owned)``: `owned` when
    built here from a path or URL. Nothing is created before the call, so a cache whose last
    tier is misspelt leaves no directory behind for the first."""
    if isinstance(spec, str) and not _is_path(spec):
        opener = _from_url(spec)
        return lambda: (opener(), True)
    if isinstance(spec, (str, os.PathLike)):
        path = spec if isinstance(spec, (str, Path)) else os.fspath(spec)
        if not str(path):
            raise ConfigError("a tier path must not be empty")
        return lambda: (DiskStore(path), True)
    if isinstance(spec, type):
        raise TypeError(f"a tier must be a store instance, not the class {spec.__qualname__!r}")
    missing = [m for m in _CORE_METHODS if not callable(getattr(spec, m, None))]
    if missing or not hasattr(spec, "holds_objects"):
        raise TypeError(
            f"a tier must be a store, a path or a URL, not {type(spec).__qualname__!r}"
            + (f" (it lacks {', '.join(missing)})" if missing else "")
        )
    return lambda: (spec, False)


def _is_path(spec: str) -> bool:
    """Whether the string `spec` is a plain path: it does not start with ``scheme:``, or it
    names something that exists (a directory called ``notes:2024``). Any other ``word:...``
    is taken for a URL, so that ``disk:/x`` or ``unix:/run/redis.sock`` is an error naming
    the form meant instead of a folder named after it in the working directory."""
    found = _SCHEME.match(spec)
    if found is None:
        return True
    if spec[found.end() : found.end() + 2] == "//":
        return False  # scheme://...: always a URL
    if os.name == "nt" and len(found.group(1)) == 1:
        return True  # a drive letter: C:\\cache
    return os.path.lexists(spec)


def _from_url(url: str) -> Callable[[], Any]:
    found = _SCHEME.match(url)
    scheme = found.group(1).lower() if found else ""
    if found and url[found.end() : found.end() + 2] != "//":
        raise ConfigError(_not_a_url(url, found.group(1), url[found.end() :]))
    parts = urlsplit(url)
    options = _options(url, parts.query)
    if scheme == "memory":
        if parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(f"{url!r}: a memory:// URL takes no host or path, only options")
        kwargs = _take(url, options, "max_size", "max_items")
        return lambda: MemoryStore(**kwargs)
    if scheme == "disk":
        path = _local_path(url, scheme, parts.netloc, parts.path, "/var/cache/x")
        kwargs = _take(url, options, "max_size", "durable")
        if "durable" in kwargs:
            kwargs["durable"] = _flag(url, "durable", kwargs["durable"])
        return lambda: DiskStore(path, **kwargs)
    if scheme == "folder":
        path = _local_path(url, scheme, parts.netloc, parts.path, "/srv/results")
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
    raise ConfigError(f"{url!r}: unknown store URL scheme {scheme!r}; use {_ACCEPTED}")


def _not_a_url(spec: str, typed: str, rest: str) -> str:
    """The message for ``scheme:rest`` without the ``//`` of a URL (and not an existing path)."""
    scheme = typed.lower()
    if scheme in ("disk", "folder"):
        absolute = "/" + rest.lstrip("/")
        return (
            f"{spec!r} is neither a URL nor a path: write {scheme}://{absolute} (three slashes "
            f"before an absolute path) or the path {absolute} itself"
        )
    if scheme in SCHEMES:
        return f"{spec!r} is not a URL: a {scheme} URL starts with {scheme}://"
    return (
        f"{spec!r} starts like a URL of the unknown scheme {typed!r}: use {_ACCEPTED} "
        f"(write ./{spec} for a directory of that name)"
    )


def _local_path(url: str, scheme: str, netloc: str, path: str, example: str) -> str:
    """The absolute path of a ``disk:///...`` or ``folder:///...`` URL."""
    if netloc:
        raise ConfigError(
            f"{url!r}: a {scheme}:// URL needs three slashes before an absolute path, as in "
            f"{scheme}://{example}; for a relative path, give the path itself, not a URL"
        )
    path = unquote(path)
    if not path:
        raise ConfigError(f"{url!r}: a {scheme}:// URL needs a path, as in {scheme}://{example}")
    return path


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
