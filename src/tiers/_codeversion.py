"""A hash of a function's code, for ``memoize(version="code")`` (``code_hash``).

The hash follows what the code *does*, not how it is written: editing the logic gives a new
hash, while docstrings, comments, blank lines, formatting, quote style, the decorators on the
function itself (``@cache.memoize(ttl=5)`` → ``ttl=10``) and the function's name do not count
(renaming is what memoize's ``name=`` is for), and reverting an edit gives the old hash back.

* **Source first.** The function's source (``inspect.getsource``) is parsed and its AST dumped
  without positions, docstrings (its own and those of nested defs and classes), the outermost
  name and the outermost decorators. Default values and annotations count as written.
* **Bytecode fallback** for lambdas (whose source is a whole line that may hold several) and for
  functions without readable source (built by ``exec``, shipped without ``.py`` files): the
  code object's bytecode, names, argument counts, flags and constants (nested code objects
  likewise), never its file name or line numbers. Docstrings of functions are left out, so
  editing one keeps the hash, but adding or removing one moves other constants and changes it.
  Defaults are values here: hashed with ``hash_key``; one it cannot hash counts by its type.
* The two methods give different hashes for the same function, and both depend on the Python
  implementation and minor version (``sys.version_info[:2]``): bytecode and ASTs change between
  minor versions, so upgrading Python from 3.11 to 3.12 recomputes entries once.

What is *not* covered: globals, closure values and helpers the function calls. List the ones
that matter in ``depends``: a function (or method, staticmethod, classmethod, or
``functools.partial``: its function plus its arguments) is hashed like ``func``, a class by the
AST of its body (its decorators count), a module by the AST of its source, a builtin or C
callable by its qualified name (it changes only with a Python or library upgrade), and any other
value (a schema version, a config dict) by ``hash_key``. Helpers' own helpers are not followed:
only what is listed counts. ``functools.wraps`` chains (``__wrapped__``) are unwrapped first.

Hashes are cached per function object (a ``WeakKeyDictionary``, checked against its current
``__code__`` and defaults), not per code object: equal code objects from two files may differ in
source, e.g. in their default values. Source read at the first hash is what counts: a file
edited while the process runs is seen once the function is defined again (reload, new process).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import reprlib
import sys
import weakref
from collections.abc import Callable, Iterable
from types import CodeType, FunctionType, MethodType, ModuleType
from typing import Any

from ._hashing import hash_key

__all__ = ["code_hash"]

_HEADER = "tiers-code-v1 {} {}.{}".format(sys.implementation.name, *sys.version_info[:2])
_CO_HAS_DOCSTRING: int = getattr(inspect, "CO_HAS_DOCSTRING", 0)  # Python 3.14+
_CACHE: weakref.WeakKeyDictionary[Any, tuple[tuple[object, ...], bytes]] = (
    weakref.WeakKeyDictionary()
)


def code_hash(func: Callable[..., Any], depends: Iterable[object] = ()) -> str:
    """Return 16 hex characters that change when the code of `func` or of a `depends` item does.

    `func` must be a Python function (methods, staticmethod/classmethod objects, partials and
    ``functools.wraps`` wrappers are unwrapped); a builtin or C function raises ``TypeError``.
    `depends` items are functions, classes, modules, builtins or ``hash_key``-able values; see
    the module docstring for what each contributes. A bad item raises ``TypeError``.
    """
    h = hashlib.blake2b(_HEADER.encode(), digest_size=8)
    h.update(_digest_of(func, strict=True))
    for item in depends:
        h.update(_digest_of(item, strict=False))
    return h.hexdigest()


def _digest_of(obj: object, strict: bool) -> bytes:
    """The 16-byte digest of `func` (strict: Python code only) or of one `depends` item."""
    target = _unwrap(obj)
    if isinstance(target, functools.partial):
        inner = _digest_of(target.func, strict)
        return _digest(b"P", inner, _values(target.args, target.keywords))
    if isinstance(target, FunctionType):
        return _cached(target, _function_state(target), _function_digest)
    if strict:
        raise TypeError(
            f'version="code" cannot read the code of {_qualified(target)}, which is not a '
            "Python function (builtins and C functions have none); pass version= explicitly"
        )
    if isinstance(target, type):
        return _cached(target, (), _class_digest)
    if isinstance(target, ModuleType):
        return _cached(target, (), _module_digest)
    if callable(target) and hasattr(target, "__name__"):  # builtin, C function, ufunc
        return _digest(b"b", _qualified(target))
    try:
        return _digest(b"V", hash_key(target))
    except TypeError:
        raise TypeError(
            f"depends item {reprlib.repr(obj)} of type {_qualified(type(obj))} is not supported: "
            "pass functions, classes, modules or values that hash_key accepts"
        ) from None


def _unwrap(obj: object) -> object:
    """Follow methods, staticmethod/classmethod objects and ``__wrapped__`` to the code."""
    for _ in range(100):  # bounded: a proxy may answer every attribute
        if isinstance(obj, (staticmethod, classmethod, MethodType)):
            obj = obj.__func__
        elif not isinstance(obj, type) and getattr(obj, "__wrapped__", None) is not None:
            obj = obj.__wrapped__  # type: ignore[attr-defined]
        else:
            break
    return obj


def _cached(obj: Any, state: tuple[object, ...], compute: Callable[[Any], bytes]) -> bytes:
    """``compute(obj)``, remembered while `obj` lives and its `state` items stay the same."""
    hit = _CACHE.get(obj)
    if hit is not None and len(hit[0]) == len(state) and all(map(_same, hit[0], state)):
        return hit[1]
    digest = compute(obj)
    _CACHE[obj] = (state, digest)
    return digest


def _same(a: object, b: object) -> bool:
    return a is b


def _function_state(fn: FunctionType) -> tuple[object, ...]:
    return (fn.__code__, fn.__defaults__, fn.__kwdefaults__)


def _function_digest(fn: FunctionType) -> bytes:
    code = fn.__code__
    node = None
    if code.co_name != "<lambda>":
        node = _source_node(fn, (ast.FunctionDef, ast.AsyncFunctionDef), code.co_name)
    if node is not None:
        node.decorator_list = []
        return _digest(b"F", _dump(node))
    return _digest(b"B", _code_digest(code), _values(fn.__defaults__ or (), fn.__kwdefaults__))


def _class_digest(cls: type) -> bytes:
    node = _source_node(cls, (ast.ClassDef,), cls.__name__)
    if node is not None:
        return _digest(b"C", _dump(node))
    # No source (a builtin, a C type, or built by exec): its name and its Python functions.
    methods = [
        _digest(b"m", name, _digest_of(value, strict=False))
        for name, value in sorted(vars(cls).items())
        if isinstance(_unwrap(value), FunctionType)
    ]
    return _digest(b"c", _qualified(cls), *methods)


def _module_digest(module: ModuleType) -> bytes:
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError, ValueError):  # builtin or extension module
        return _digest(b"b", module.__name__)
    return _digest(b"M", _dump(tree))


def _source_node(obj: object, kinds: tuple[type[Any], ...], name: str) -> Any:
    """The def/class node of `obj`'s source, or None when unavailable or not as expected."""
    try:
        source = inspect.getsource(obj)  # type: ignore[arg-type]
        indented = source[:1].isspace()  # a method or nested def: parse inside a block
        tree = ast.parse("if 1:\n" + source if indented else source)
    except (OSError, TypeError, SyntaxError, ValueError):
        return None
    node = tree.body[0]
    if indented and isinstance(node, ast.If):
        node = node.body[0]
    if not isinstance(node, kinds) or getattr(node, "name", None) != name:
        return None  # the file changed under the running code, or an unusual definition
    return node


_SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _dump(node: ast.AST) -> str:
    """The AST without positions, docstrings, string prefixes or the outermost name."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        node.name = ""
    for sub in ast.walk(node):
        if isinstance(sub, _SCOPES) and sub.body and _is_docstring(sub.body[0]):
            sub.body = sub.body[1:] or [ast.Pass()]
        elif isinstance(sub, ast.Constant):
            sub.kind = None  # u"x" is "x"
    return ast.dump(node, include_attributes=False)


def _is_docstring(stmt: ast.stmt) -> bool:
    value = getattr(stmt, "value", None)
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(value, ast.Constant)
        and isinstance(value.value, str)
    )


def _code_digest(code: CodeType) -> bytes:
    """Bytecode, names, counts, flags and constants; never file names or line numbers."""
    consts = list(code.co_consts)
    if consts and _has_docstring(code):
        consts[0] = None
    flags = code.co_flags & 0xFFFF  # not __future__ flags: their effects are in the bytecode
    fields = (
        (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, flags),
        (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars),
        [_const(c) for c in consts],
    )
    exceptions: bytes = getattr(code, "co_exceptiontable", b"")  # 3.11+: offsets only
    return _digest(b"K", code.co_code, exceptions, hash_key(fields))


def _has_docstring(code: CodeType) -> bool:
    if _CO_HAS_DOCSTRING:
        return bool(code.co_flags & _CO_HAS_DOCSTRING)
    # Before 3.14 a function's first constant is its docstring if it is a string.
    return (
        bool(code.co_flags & inspect.CO_OPTIMIZED)  # a function, not a class body or module
        and not code.co_name.startswith("<")  # nor a lambda or comprehension
        and isinstance(code.co_consts[0], str)
    )


@dataclasses.dataclass(frozen=True)
class _Const:
    """A constant ``hash_key`` has no encoding for: a nested code object, ``...``, a slice."""

    kind: str
    value: str


def _const(value: object) -> object:
    if isinstance(value, CodeType):
        return _Const("code", _code_digest(value).hex())
    if isinstance(value, tuple):
        return tuple(map(_const, value))
    if isinstance(value, frozenset):
        return frozenset(map(_const, value))
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return value
    return _Const(_qualified(type(value)), repr(value))


def _values(args: Iterable[object], kwargs: dict[str, Any] | None) -> str:
    """``hash_key`` of defaults or partial arguments; one it cannot hash counts by its type."""
    return hash_key(([_value(v) for v in args], {k: _value(v) for k, v in (kwargs or {}).items()}))


def _value(value: object) -> str:
    try:
        return hash_key(value)
    except TypeError:
        return f"unhashable {_qualified(type(value))}"


def _qualified(obj: object) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
    return f"{getattr(obj, '__module__', None) or ''}.{name}".lstrip(".")


def _digest(tag: bytes, *parts: bytes | str) -> bytes:
    """16 bytes over `tag` and length-prefixed `parts` (so no two part lists collide)."""
    h = hashlib.blake2b(tag, digest_size=16)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()
