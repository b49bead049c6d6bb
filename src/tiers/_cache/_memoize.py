"""Memoization: ``cache.memoize(...)`` and ``tiers.memoize(*tiers, ...)``.

An entry's key is ``name[@version]/hash`` inside the cache's namespace, where `hash` is the
`hash_key` of the *bound* arguments (defaults applied, `ignore`d names left out), so ``f(1)``,
``f(x=1)`` and ``f()`` with ``x=1`` by default are one entry. Its `meta` records provenance.

The memory-tier hit is kept cheap (see docs/decisions/0006-memoize-fast-path.md): for functions
whose parameters are all named (no ``*args``/``**kwargs``), the wrapper is generated with the
function's own parameter list, as dataclasses generate ``__init__``, so Python binds defaults.
A call first looks its arguments, each with its exact type, up in an index of the memory
tier's slots (`MemoryStore.link`); a hit costs one dict lookup and never computes the content
hash. Aliases are made only for arguments whose Python equality agrees with `hash_key`:
exactly str, bytes, int, bool, None and non-zero, non-NaN floats. Anything else, and every
miss, takes the full path: content hash, tiers, single-flight computation.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import math
import reprlib
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, cast, overload

from .._hashing import hash_key
from .._stores import Entry
from .._stores._memory import NEVER
from .._types import EntryInfo
from .._version import __version__
from ._async.prims import start_background_async
from ._explain import Explanation, entries, explain, prefixes
from ._freshness import BUSY_WAIT, fresh_until
from ._options import CODE
from ._sync.prims import start_background

if TYPE_CHECKING:
    from ._cache import Cache
    from ._freshness import Freshness
    from ._options import MemoOptions
    from ._tier import Tier

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
S = TypeVar("S")


class Memoized(Protocol[P, R_co]):
    """A memoized function: called as the original, plus `cache`, `key`, `invalidate`,
    `clear`, `explain` and `entries`."""

    __name__: str
    __qualname__: str
    __module__: str

    @property
    def cache(self) -> Cache: ...

    @property
    def __wrapped__(self) -> Callable[P, R_co]: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key (without the namespace) a call with these arguments uses."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the cached result of a call with these arguments; True if there was one."""
        ...

    def clear(self, *, all_versions: bool = False) -> int:
        """Delete every cached result of this function (this name and version; every
        version with `all_versions`) from every tier; return how many."""
        ...

    def explain(self, *args: P.args, **kwargs: P.kwargs) -> Explanation:
        """What a call with these arguments would do now, and why, without computing."""
        ...

    def entries(self, *, all_versions: bool = False) -> Iterator[EntryInfo]:
        """This function's live entries (this version, or every one), with provenance."""
        ...

    # A memoized method: read from the class, the wrapper itself (``Cls.f.key(obj, x)``);
    # from an instance, a bound method taking the parameters after ``self``.
    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Memoized[P, R_co]: ...

    @overload
    def __get__(
        self: Memoized[Concatenate[S, P2], R], instance: S, owner: type[Any] | None = None
    ) -> Callable[P2, R]: ...


_PLAIN = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
          inspect.Parameter.KEYWORD_ONLY)  # fmt: skip
_ALIASABLE = frozenset({str, bytes, int, bool, type(None), float})
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_ARGS_REPR_MAX = 200
_RETRY_MAX = 1024


class Memo:
    """Everything a memoized function needs besides its wrapper: key building, the full call
    path and the alias index of the memory tier."""

    __slots__ = (
        "__weakref__", "cache", "code", "fast_tier", "func", "hits", "index", "keyed", "name",
        "names", "options", "pending", "pending_lock", "plain", "prefix", "retry", "signature",
        "single", "stale_hits", "version",
    )  # fmt: skip

    def __init__(self, cache: Cache, func: Callable[..., Any], options: MemoOptions) -> None:
        self.cache = cache
        self.func = func
        self.options = options
        self.name = name = options.name or _default_name(func)
        version, ignore = options.version, options.ignore
        self.signature = inspect.signature(func)
        params = list(self.signature.parameters.values())
        self.names = [p.name for p in params]
        self.keyed = [p.name for p in params if p.name not in ignore]
        self.plain = all(p.kind in _PLAIN for p in params)
        self.single = len(self.keyed) == 1
        self.code: str | None = None  # with version="code": the hash of the code
        if version == CODE:
            from .._codeversion import code_hash  # (ast, only when asked for)

            self.code = code_hash(func, options.depends)
            version = f"code-{self.code}"
        self.version = version
        self.prefix = f"{name}@{version}/" if version is not None else f"{name}/"
        self.hits = 0  # fast-path hits (counted by the generated wrapper)
        # entries the fast path found due, by id (held, so ids are not reused): those a
        # worker refreshes now, and those to ask again about later (entry, when)
        self.pending: dict[int, Entry] = {}
        self.retry: dict[int, tuple[Entry, float]] = {}
        self.pending_lock = threading.Lock()
        self.stale_hits = 0  # stale values the fast path served (in the cache's stats)
        self.index: dict[Hashable, Any] = {}
        first = cache._tiers[0]
        self.fast_tier: Tier | None = first if first.can.link else None

    def __del__(self) -> None:
        # The function is gone; its fast-path hits stay in the cache's stats.
        cache = getattr(self, "cache", None)
        if cache is not None:
            cache._memo_hits += getattr(self, "hits", 0)
            cache._stale_served += getattr(self, "stale_hits", 0)

    # -- keys -------------------------------------------------------------------------------

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments of a call by parameter name, defaults applied."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        bound.apply_defaults()
        return bound.arguments

    def user_key(self, arguments: dict[str, Any]) -> str:
        """``name[@version]/hash`` for these bound arguments."""
        if self.options.key is not None:
            made = self.options.key(**arguments)
            try:
                return self.prefix + hash_key(made)
            except TypeError as exc:
                raise TypeError(
                    f"the key function of {self.name} returned a {type(made).__qualname__!r} "
                    f"that cannot be hashed: {exc}"
                ) from None
        pairs = tuple((n, _keyable(arguments[n])) for n in self.keyed)
        try:
            return self.prefix + hash_key(pairs)
        except TypeError:
            for param, value in pairs:
                try:
                    hash_key(value)
                except TypeError as exc:
                    raise TypeError(
                        f"{self.name}() cannot use argument {param!r} of type "
                        f"{type(value).__qualname__!r} in a cache key ({exc}); leave it out "
                        f"with ignore=({param!r},) or give the type a __cache_key__() method"
                    ) from None
            raise

    def provenance(self, arguments: dict[str, Any]) -> Callable[[float], dict[str, Any]]:
        """The entry's meta, completed with the computation's duration."""
        clock = self.cache._clock

        def meta(duration: float) -> dict[str, Any]:
            return {
                "function": self.name,
                "version": self.version,
                **({"code": self.code} if self.code is not None else {}),
                "duration_s": round(duration, 6),
                "computed_at": datetime.fromtimestamp(clock.time(), timezone.utc).isoformat(
                    timespec="milliseconds"
                ),
                "tiers_version": __version__,
                "args": _describe(self.name, arguments),
            }

        return meta

    # -- calls ------------------------------------------------------------------------------

    def split(self, arguments: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """(positional, keyword) arguments that call the function with `arguments`."""
        params = self.signature.parameters
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for name, value in arguments.items():
            kind = params[name].kind
            if kind == inspect.Parameter.VAR_POSITIONAL:
                positional.extend(value)
            elif kind == inspect.Parameter.VAR_KEYWORD:
                keywords.update(value)
            elif kind == inspect.Parameter.KEYWORD_ONLY:
                keywords[name] = value
            else:
                positional.append(value)
        return positional, keywords

    def _prepare(self, arguments: dict[str, Any]) -> tuple[str, Callable[[], Any], Any]:
        stored = self.cache._key(self.user_key(arguments))
        positional, keywords = self.split(arguments)
        func = self.func
        return stored, lambda: func(*positional, **keywords), self.provenance(arguments)

    def call(self, values: tuple[Any, ...], alias: Hashable | None, due: bool = False) -> Any:
        """The full path of a call whose arguments are `values` (in parameter order); `due`:
        the fast path found its value due for a refresh."""
        arguments = dict(zip(self.names, values, strict=True))
        stored, compute, meta = self._prepare(arguments)
        options, relink = self.options, self._relinker(alias, stored) if due else None
        value = self.cache._get_or_compute(
            stored, compute, options.ttl, options.tags, meta, options.lease, options.fresh, relink
        )
        self._link(alias, stored)
        return value

    async def call_async(
        self, values: tuple[Any, ...], alias: Hashable | None, due: bool = False
    ) -> Any:
        arguments = dict(zip(self.names, values, strict=True))
        stored, compute, meta = self._prepare(arguments)
        options, relink = self.options, self._relinker(alias, stored) if due else None
        value = await self.cache._get_or_compute_async(
            stored, compute, options.ttl, options.tags, meta, options.lease, options.fresh, relink
        )
        self._link(alias, stored)
        return value

    def call_bound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The full path for functions with ``*args``/``**kwargs`` (no fast path)."""
        arguments = self.bind(args, kwargs)
        stored, compute, meta = self._prepare(arguments)
        return self.cache._get_or_compute(
            stored,
            compute,
            self.options.ttl,
            self.options.tags,
            meta,
            self.options.lease,
            self.options.fresh,
        )

    async def call_bound_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        arguments = self.bind(args, kwargs)
        stored, compute, meta = self._prepare(arguments)
        return await self.cache._get_or_compute_async(
            stored,
            compute,
            self.options.ttl,
            self.options.tags,
            meta,
            self.options.lease,
            self.options.fresh,
        )

    # -- background refreshes from the fast path (stale=, early=) ---------------------------

    def refresh_later(self, values: tuple[Any, ...], alias: Hashable, entry: Entry) -> None:
        """(The fast path of a sync function.) `entry` is due for a refresh: hand it to a
        background worker, unless one has it, or tried less than `BUSY_WAIT` ago."""
        if self._claim(entry):
            start_background(lambda: self._refresh(values, alias, entry), "tiers-refresh")

    def refresh_later_async(self, values: tuple[Any, ...], alias: Hashable, entry: Entry) -> None:
        """`refresh_later` for a coroutine function: a task of the running loop."""
        if self._claim(entry):
            start_background_async(
                lambda: self._refresh_async(values, alias, entry), "tiers-refresh"
            )

    def _claim(self, entry: Entry) -> bool:
        with self.pending_lock:
            if id(entry) in self.pending:
                return False
            again = self.retry.get(id(entry))
            if again is not None and time.monotonic() < again[1]:
                return False
            self.pending[id(entry)] = entry
            return True

    def _refresh(self, values: tuple[Any, ...], alias: Hashable, entry: Entry) -> None:
        try:
            done = self.cache._refresh_claimed(*self._refresh_terms(values, alias, entry))
        except Exception as exc:  # (the arguments cannot be hashed any more, a closed cache)
            self.cache._refresh_failed(self.cache._prefix + self.prefix, exc)
            done = False
        self._refreshed(entry, done)

    async def _refresh_async(self, values: tuple[Any, ...], alias: Hashable, entry: Entry) -> None:
        try:
            terms = self._refresh_terms(values, alias, entry)
            done = await self.cache._refresh_claimed_async(*terms)
        except Exception as exc:
            self.cache._refresh_failed(self.cache._prefix + self.prefix, exc)
            done = False
        self._refreshed(entry, done)

    def _refresh_terms(self, values: tuple[Any, ...], alias: Hashable, entry: Entry) -> tuple[
        str, Callable[[], Any], Any, tuple[str, ...], Any, float, Freshness, float | None,
        Callable[[], None],
    ]:  # fmt: skip
        """The arguments of `Cache._refresh_claimed` for a refresh of `entry`."""
        stored, compute, meta = self._prepare(dict(zip(self.names, values, strict=True)))
        o = self.options
        return (
            stored, compute, o.ttl, o.tags, meta, o.lease, cast("Freshness", o.fresh),
            fresh_until(entry.meta), self._relinker(alias, stored),
        )  # fmt: skip

    def _refreshed(self, entry: Entry, stored: bool) -> None:
        """A worker is done with `entry`: if it stored no new value, the fast path asks
        again no sooner than `BUSY_WAIT` from now (the cache's own backoff applies too)."""
        with self.pending_lock:
            self.pending.pop(id(entry), None)
            if not stored:
                self.retry[id(entry)] = (entry, time.monotonic() + BUSY_WAIT)
                if len(self.retry) > _RETRY_MAX:  # entries long replaced: forget the oldest
                    for old in list(self.retry)[: len(self.retry) // 2]:
                        del self.retry[old]
            else:
                self.retry.pop(id(entry), None)

    def due(self, entry: Entry) -> bool:
        """(The fast path of a function with stale=/early=, for an entry whose freshness is
        not two floats.) Whether a hit on `entry` must take the full path: it is stale, or
        XFetch picks it (`Freshness.due` checks the values)."""
        fresh, cache = self.options.fresh, self.cache
        return fresh is not None and fresh.due(entry.meta, cache._clock.time(), cache._rng)

    def _relinker(self, alias: Hashable | None, stored: str) -> Callable[[], None]:
        return lambda: self._link(alias, stored)

    def _link(self, alias: Hashable | None, stored: str) -> None:
        """Let the fast path find `stored` by `alias` (typed raw arguments) from now on."""
        tier = self.fast_tier
        if alias is None or tier is None or not _aliasable(alias):
            return
        if tier.breaker.allow():
            if self.single:  # index[type][value]: the alias is (value, type)
                pair = cast("tuple[Hashable, type]", alias)
                tier.store.link(self.index.setdefault(pair[1], {}), pair[0], stored)
            else:
                tier.store.link(self.index, alias, stored)


def decorate(cache: Cache, func: Callable[..., Any], options: MemoOptions) -> Any:
    """The memoized version of `func` (staticmethod/classmethod objects are unwrapped and
    wrapped again)."""
    if isinstance(func, (staticmethod, classmethod)):
        return type(func)(decorate(cache, func.__func__, options))
    if not callable(func):
        raise TypeError(f"memoize needs a function, not {type(func).__qualname__!r}")
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError(
            f"memoize cannot cache the generator function {func.__qualname__}(); "
            "return a list instead"
        )
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError) as exc:
        raise TypeError(f"memoize cannot read the signature of {func!r}: {exc}") from None
    unknown = sorted(options.ignore - set(params))
    if unknown:
        raise ValueError(
            f"ignore names {unknown[0]!r}, but {_qualname(func)}() has no such parameter"
        )
    memo = Memo(cache, func, options)
    wrapper = _generate(memo) if _generatable(memo) else _generic(memo)
    functools.update_wrapper(wrapper, func)

    def key_of(*args: Any, **kwargs: Any) -> str:
        return memo.user_key(memo.bind(args, kwargs))

    def invalidate(*args: Any, **kwargs: Any) -> bool:
        return cache.delete(key_of(*args, **kwargs))

    def clear(*, all_versions: bool = False) -> int:
        _check_flag("all_versions", all_versions)
        return sum(cache._clear_under(p) for p in prefixes(memo, all_versions))

    def explain_call(*args: Any, **kwargs: Any) -> Explanation:
        return explain(memo, memo.bind(args, kwargs))

    def entries_of(*, all_versions: bool = False) -> Iterator[EntryInfo]:
        _check_flag("all_versions", all_versions)
        return entries(memo, all_versions)

    wrapper.cache = cache  # type: ignore[attr-defined]
    wrapper.key = key_of  # type: ignore[attr-defined]
    wrapper.invalidate = invalidate  # type: ignore[attr-defined]
    wrapper.clear = clear  # type: ignore[attr-defined]
    wrapper.explain = explain_call  # type: ignore[attr-defined]
    wrapper.entries = entries_of  # type: ignore[attr-defined]
    wrapper.__tiers_memo__ = memo  # type: ignore[attr-defined]
    cache._memos.add(memo)
    return wrapper


# -- wrappers ------------------------------------------------------------------------------

# The lookup is ``index[(a, type(a), b, type(b), ...)]``, or ``index[type(a)][a]`` for one
# keyed parameter (no tuple to build: the commonest case is the cheapest).
_FAST_PATH = """
{async_}def {name}({params}):
    try:
        _tiers_slot = {lookup}
    except KeyError:
        _tiers_slot = None
    except TypeError:  # an unhashable argument: the full path, no alias
        return {await_}_tiers_memo.{call}(({values}), None)
    if _tiers_slot is not None:
        _tiers_deadline = _tiers_slot.deadline
        if _tiers_deadline is _tiers_never or _tiers_deadline > _tiers_store.monotonic():
            _tiers_gens = _tiers_slot.gens
            if _tiers_gens is None or _tiers_gens.view[_tiers_slot.gslot] == _tiers_slot.gstamp:
{fresh_check}                _tiers_slot.touched = True
                _tiers_memo.hits += 1
                return _tiers_slot.value
    return {await_}_tiers_memo.{call}(({values}), {alias})
"""

# With stale=/early=: the hit is served; if its entry is stale, or XFetch picks it (one draw,
# inline), a background worker refreshes it (`Memo.refresh_later`: hashing the arguments, the
# locks and the computation all happen there). Values that are not floats (not written by
# tiers) go to `Memo.due`, which checks them, and then the full path.
_FRESH_CHECK = """\
                _tiers_entry = _tiers_slot._entry
                if _tiers_entry is not None and _tiers_entry.meta:
                    _tiers_until = _tiers_entry.meta.get("fresh_until")
                    if _tiers_until is not None:
                        _tiers_took = _tiers_entry.meta.get("duration_s", 0.0)
                        if _tiers_until.__class__ is float and _tiers_took.__class__ is float:
                            _tiers_now = _tiers_cache._clock.time()
                            if _tiers_now{xfetch} >= _tiers_until:
                                if _tiers_now >= _tiers_until:
                                    _tiers_memo.stale_hits += 1
                                if _tiers_id(_tiers_entry) not in _tiers_pending:
                                    _tiers_memo.{refresh}(({values}), {alias}, _tiers_entry)
                        elif _tiers_memo.due(_tiers_entry):
                            return {await_}_tiers_memo.{call}(({values}), {alias}, True)
"""
_XFETCH = " - _tiers_took * {beta!r} * _tiers_log(1.0 - _tiers_cache._rng.random())"

# Without a memory tier to index (or with a key= callable, which must run on every call): the
# same signature, so Python binds the arguments, straight to the full path.
_FULL_PATH = """
{async_}def {name}({params}):
    return {await_}_tiers_memo.{call}(({values}), None)
"""


def _generatable(memo: Memo) -> bool:
    return memo.plain and not any(
        n.startswith("_tiers_") or keyword.iskeyword(n) for n in memo.names
    )


def _generate(memo: Memo) -> Callable[..., Any]:
    """A wrapper with the function's own parameters (and, with a memory tier, the lock-free
    fast path)."""
    params = list(memo.signature.parameters.values())
    namespace: dict[str, Any] = {
        "_tiers_index": memo.index,
        "_tiers_memo": memo,
        "_tiers_cache": memo.cache,
        "_tiers_store": memo.fast_tier.store if memo.fast_tier else None,
        "_tiers_type": type,
        "_tiers_never": NEVER,
        "_tiers_log": math.log,
        "_tiers_id": id,
        "_tiers_pending": memo.pending,
    }
    rendered: list[str] = []
    seen_keyword_only = False
    for i, param in enumerate(params):
        if param.kind == param.KEYWORD_ONLY and not seen_keyword_only:
            rendered.append("*")
            seen_keyword_only = True
        text = param.name
        if param.default is not param.empty:
            namespace[f"_tiers_default_{i}"] = param.default
            text += f"=_tiers_default_{i}"
        rendered.append(text)
        if param.kind == param.POSITIONAL_ONLY and (
            i + 1 == len(params) or params[i + 1].kind != param.POSITIONAL_ONLY
        ):
            rendered.append("/")
    parts = "".join(f"{n}, _tiers_type({n}), " for n in memo.keyed)
    if memo.single:
        (only,) = memo.keyed
        lookup = f"_tiers_index[_tiers_type({only})][{only}]"
    else:
        lookup = f"_tiers_index[({parts})]"
    is_async = inspect.iscoroutinefunction(memo.func)
    fast = memo.fast_tier is not None and memo.options.key is None
    source = (_FAST_PATH if fast else _FULL_PATH).format(
        async_="async " if is_async else "",
        await_="await " if is_async else "",
        name="memoized",
        params=", ".join(rendered),
        lookup=lookup,
        alias=f"({parts})",
        call="call_async" if is_async else "call",
        values="".join(f"{n}, " for n in memo.names),
        fresh_check=_FRESH_CHECK.format(
            xfetch=_XFETCH.format(beta=memo.options.fresh.beta) if memo.options.fresh.beta else "",
            await_="await " if is_async else "",
            call="call_async" if is_async else "call",
            refresh="refresh_later_async" if is_async else "refresh_later",
            values="".join(f"{n}, " for n in memo.names),
            alias=f"({parts})",
        )
        if memo.options.fresh is not None
        else "",
    )
    exec(compile(source, f"<tiers memoize {memo.name}>", "exec"), namespace)  # noqa: S102
    made: Callable[..., Any] = namespace["memoized"]
    return made


def _generic(memo: Memo) -> Callable[..., Any]:
    """A wrapper for any signature: binds the arguments, then takes the full path."""
    if inspect.iscoroutinefunction(memo.func):

        async def memoized_async(*args: Any, **kwargs: Any) -> Any:
            return await memo.call_bound_async(args, kwargs)

        return memoized_async

    def memoized(*args: Any, **kwargs: Any) -> Any:
        return memo.call_bound(args, kwargs)

    return memoized


# -- helpers -------------------------------------------------------------------------------


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")


def _aliasable(alias: Hashable) -> bool:
    """Whether Python equality of these typed arguments implies equal content hashes."""
    if not isinstance(alias, tuple):
        return False
    for value, kind in zip(alias[::2], alias[1::2], strict=True):
        if kind not in _ALIASABLE:
            return False
        if kind is float and (value == 0.0 or math.isnan(value)):  # -0.0 == 0.0; NaN != NaN
            return False
    return True


def _keyable(value: Any) -> Any:
    """Classes (a classmethod's ``cls``) are keyed by their qualified name."""
    if isinstance(value, type):
        return ("tiers:class", value.__module__, value.__qualname__)
    return value


def _describe(name: str, arguments: dict[str, Any]) -> str:
    text = (
        f"{name.rsplit('.', 1)[-1]}("
        + ", ".join(f"{k}={_REPR.repr(v)}" for k, v in arguments.items())
        + ")"
    )
    return text if len(text) <= _ARGS_REPR_MAX else text[: _ARGS_REPR_MAX - 1] + "…"


def _qualname(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def _default_name(func: Callable[..., Any]) -> str:
    """``module.qualname``, deterministic across processes (never an address):

    - a lambda (all of a module's share one qualname) adds where it starts, ``:line:column``;
    - what carries bound state adds that state's content hash, as `self` is part of a method's
      key: a partial (``f(<hash of its arguments>)``), a bound method (``C.m[<hash of its
      object>]``), a callable object (``C[<hash of the object>]``). State that cannot be
      hashed is a TypeError asking for ``name=``.
    """
    if isinstance(func, functools.partial):
        bound = _state_hash(func, (func.args, func.keywords), "arguments")
        return f"{_default_name(func.func)}({bound})"
    if inspect.ismethod(func):
        return f"{_default_name(func.__func__)}[{_state_hash(func, func.__self__, 'object')}]"
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(qualname, str):  # an instance with __call__
        kind = type(func)
        return f"{kind.__module__}.{kind.__qualname__}[{_state_hash(func, func, 'state')}]"
    module = getattr(func, "__module__", None) or "?"
    name = f"{module}.{qualname}"
    code = getattr(func, "__code__", None)
    if "<lambda>" in name and code is not None:
        name += f":{code.co_firstlineno}"
        positions = getattr(code, "co_positions", None)  # Python 3.11+
        if positions is not None:
            name += ":" + str(min((p[2] for p in positions() if p[2]), default=0))
    return name


def _state_hash(func: Callable[..., Any], state: Any, what: str) -> str:
    try:
        return hash_key(_keyable(state))
    except TypeError as exc:
        raise TypeError(
            f"memoize cannot name {_qualname(type(func))} {_describe_callable(func)} "
            f"deterministically: its bound {what} cannot be hashed ({exc}); pass name=..."
        ) from None


def _describe_callable(func: Callable[..., Any]) -> str:
    inner = getattr(func, "func", None) or getattr(func, "__func__", None)
    return repr(getattr(inner, "__qualname__", type(func).__qualname__))
