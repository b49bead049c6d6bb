"""Options, declared and checked once: the cache's (`CacheOptions`), memoize's (their names and
types, `MemoizeOptions`, what the decorators accept; their checked form, `MemoOptions`, what a
memoized function keeps), and the error for an option tiers does not take."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from .._codec import resolve_secret
from .._rules import positive_seconds
from .._types import MISSING
from .._units import parse_ttl
from ..errors import ConfigError
from . import _coherence as coherence_rules
from ._freshness import Freshness

if TYPE_CHECKING:
    from ._cache import Cache

_POLICIES = ("degrade", "raise")

_RENAMED = {
    "expire": "ttl", "timeout": "ttl", "default_timeout": "ttl", "expire_after": "ttl",
    "tag": "tags", "maxsize": "max_items= of a MemoryStore tier",
    "size_limit": "max_size= of a DiskStore tier",
}  # fmt: skip
"""Options of other caching libraries, and what tiers calls them."""


def unexpected_options(call: str, unexpected: Mapping[str, object]) -> str:
    """The one-sentence TypeError message for keyword arguments `call` does not take."""
    name = next(iter(unexpected))
    hint = _RENAMED.get(name)
    use = f"; use {hint}" if hint is None or "=" in hint else f"; use {hint}="
    return f"{call} got an unexpected keyword argument {name!r}" + (use if hint else "")


@dataclass(frozen=True, slots=True)
class CacheOptions:
    """The options of `Cache()` as given, each checked here, before any tier opens (a bad
    one is a one-sentence error); kept to rebuild the cache when it is unpickled."""

    ttl: float | timedelta | None
    serializer: object
    compress: str | None
    namespace: str
    secret: str | bytes | None
    on_tier_error: str
    lease: float
    coherence: str
    max_age: float
    name: str | None

    def __post_init__(self) -> None:
        parse_ttl(self.ttl)
        coherence_rules.check(self.coherence, self.max_age)
        namespace, name = self.namespace, self.name
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, not {type(namespace).__qualname__!r}")
        if ":" in namespace:
            raise ConfigError(f"namespace must not contain ':' (got {namespace!r})")
        if name is not None and (not isinstance(name, str) or not name.isprintable() or not name):
            raise ConfigError(f"name must be a non-empty printable str, not {name!r}")
        if self.on_tier_error not in _POLICIES:
            raise ConfigError(
                f"on_tier_error must be 'degrade' or 'raise', not {self.on_tier_error!r}"
            )
        positive_seconds("lease", self.lease)
        if self.secret is not None:
            resolve_secret(self.secret)  # a bad secret is reported now, not at the first write

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of `Cache()`."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


class MemoizeOptions(TypedDict, total=False):
    """Keyword options of `Cache.memoize`, `tiers.memoize` and `tiers.dask.memoize`
    (docs/memoize.md)."""

    ttl: Any  # seconds, a timedelta or None; default: the cache's
    tags: Iterable[str] | str
    name: str | None  # default: module.qualname
    version: str | int | None
    ignore: Iterable[str] | str  # parameters left out of the key
    key: Callable[..., Any] | None  # replaces the content hash of the arguments
    lease: float | None  # single-flight lease; default: the cache's
    stale: Any  # seconds a value is served past its ttl while one caller refreshes it
    early: bool | float  # XFetch: refresh hot values before they expire (True or a beta)
    depends: Iterable[Any]  # with version="code": helpers (and constants) the code uses


NAMES = frozenset(MemoizeOptions.__annotations__)
CODE = "code"
"""``version="code"``: the version is a hash of the function's code (and its `depends`)."""


def check_names(call: str, options: Mapping[str, object]) -> None:
    """TypeError (with what tiers calls it, if known) for a keyword `call` does not take."""
    unknown = [name for name in options if name not in NAMES]
    if unknown:
        raise TypeError(unexpected_options(call, {name: options[name] for name in unknown}))


@dataclass(frozen=True, slots=True)
class MemoOptions:
    """`MemoizeOptions` checked against a cache (each bad one is a one-sentence error)."""

    ttl: Any
    tags: tuple[str, ...]
    name: str | None
    version: str | int | None
    ignore: frozenset[str]
    key: Callable[..., Any] | None
    lease: float
    fresh: Freshness | None
    depends: tuple[Any, ...]

    @classmethod
    def check(cls, cache: Cache, call: str, options: Mapping[str, Any]) -> MemoOptions:
        check_names(call, options)
        ttl = options.get("ttl", MISSING)
        cache._expires_at(ttl)
        name = options.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty str or None, not {name!r}")
        version = options.get("version")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, (str, int))
        ):
            kind = type(version).__qualname__
            raise TypeError(f"version must be a str, an int or None, not {kind!r}")
        ignore = options.get("ignore", ())
        if isinstance(ignore, str):
            ignore = (ignore,)
        if not isinstance(ignore, Iterable) or not all(isinstance(n, str) for n in ignore):
            raise TypeError(f"ignore must be parameter names (strings), not {ignore!r}")
        key = options.get("key")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable or None, not {type(key).__qualname__!r}")
        depends = options.get("depends", ())
        if not isinstance(depends, (tuple, list)):
            depends = (depends,)
        if depends and version != CODE:
            raise ValueError('depends= is used only with version="code"')
        fresh = cache._check_freshness(ttl, options.get("stale"), options.get("early", False), call)
        return cls(
            ttl=ttl, tags=cache._check_tags(options.get("tags", ())), name=name,
            version=version, ignore=frozenset(ignore), key=key,
            lease=cache._check_lease(options.get("lease")), fresh=fresh, depends=tuple(depends),
        )  # fmt: skip
