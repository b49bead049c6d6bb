"""The ``_async`` twins of a blocking store's methods, declared: ``get_async = in_thread(get)``.

Every store offers each operation as a method and as its coroutine twin (docs/decisions/
0012-one-house.md). A store whose work blocks on files runs a twin `in_thread`
(`asyncio.to_thread`); work that never waits, or only for a few small reads, runs `inline`, in
the event loop's thread. `inline_iter` and `iter_in_thread` do the same for a method that
returns an iterator (``keys``), giving an async iterator. A twin calls its method by name, as
``self.get(key)`` would, so a subclass that overrides ``get`` changes ``get_async`` too.

A twin's code is generated with its method's own parameters, as `dataclasses` generates
``__init__``: it is then the very code one would write by hand (``return self.get(key)``),
where a ``*args, **kwargs`` wrapper makes ``await MemoryStore().get_async(k)`` half as slow
again (370 → 560 ns on Python 3.11).
"""

from __future__ import annotations

import asyncio
import inspect
import linecache
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from types import FunctionType
from typing import Any, Concatenate, ParamSpec, TypeVar

S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# the twins' bodies (`_twin` fills in the method's name and arguments)
_INLINE = "return self.{name}({args})"
_IN_THREAD = "return await _to_thread(self.{name}, {args})"
_INLINE_ITER = "for item in self.{name}({args}):\n        yield item"
_ITER_IN_THREAD = "for item in await _to_thread(_listed, self.{name}, {args}):\n        yield item"


def inline(
    method: Callable[Concatenate[S, P], R],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """The coroutine twin of `method`, run in the event loop's thread."""
    return _twin(method, _INLINE)


def in_thread(
    method: Callable[Concatenate[S, P], R],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """The coroutine twin of `method`, run in a worker thread (`asyncio.to_thread`)."""
    return _twin(method, _IN_THREAD)


def inline_iter(
    method: Callable[Concatenate[S, P], Iterator[T]],
) -> Callable[Concatenate[S, P], AsyncIterator[T]]:
    """The async-iterator twin of `method`, its iterator read in the event loop's thread."""
    return _twin(method, _INLINE_ITER, returns=False)


def iter_in_thread(
    method: Callable[Concatenate[S, P], Iterator[T]],
) -> Callable[Concatenate[S, P], AsyncIterator[T]]:
    """The async-iterator twin of `method`, its iterator read to the end in a worker thread
    (a scan of files) before the first item is given."""
    return _twin(method, _ITER_IN_THREAD, returns=False)


def _listed(method: Callable[..., Iterable[T]], *args: Any) -> list[T]:
    return list(method(*args))


def _twin(method: Callable[..., Any], body: str, *, returns: bool = True) -> Callable[..., Any]:
    """``async def <name>_async(self, <method's parameters>): <body>``, for a method with
    positional-or-keyword parameters only (as store methods have: anything else raises)."""
    name = method.__name__
    params, args = ["self"], []
    namespace: dict[str, Any] = {"_to_thread": asyncio.to_thread, "_listed": _listed}
    for param in list(inspect.signature(method).parameters.values())[1:]:
        if param.kind is not param.POSITIONAL_OR_KEYWORD:
            raise TypeError(f"{method.__qualname__}: a twin passes plain parameters only")
        if param.default is param.empty:
            params.append(param.name)
        else:
            namespace[f"_default_{param.name}"] = param.default
            params.append(f"{param.name}=_default_{param.name}")
        args.append(param.name)
    code = body.format(name=name, args=", ".join(args))
    source = f"async def {name}_async({', '.join(params)}):\n    {code}\n"
    filename = f"<async twin {method.__module__}.{method.__qualname__}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102  (our own template)
    twin: FunctionType = namespace[f"{name}_async"]
    twin.__module__ = method.__module__
    twin.__qualname__ = f"{method.__qualname__}_async"
    twin.__doc__ = f"The ``async`` twin of `{name}`."
    twin.__annotations__ = {
        key: hint for key, hint in method.__annotations__.items() if returns or key != "return"
    }
    return twin
