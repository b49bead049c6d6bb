"""``code_hash`` (the version of ``memoize(version="code")``) over real module files.

Each version of a module is written to its own file and imported under its own name, so
neither the import system, ``linecache`` nor the hash cache can serve an older version. What is
held: docstrings, comments, formatting and the function's own decorators never count; logic,
defaults and listed helpers do; a reverted edit gives the old hash back; the bytecode fallback
(lambdas, ``exec``) keeps the same promises; the hash is the same in every process.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import itertools
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

import pytest

from tiers._codeversion import code_hash

SRC = Path(__file__).resolve().parents[1] / "src"
_names = itertools.count()

BASE = '''
import functools


def deco(**options):
    return lambda fn: fn


def helper(x):
    """Helper doc."""
    return x + 1


def other(x):
    return x - 1


@deco(ttl=5)
def f(a, b=2):
    """Docstring."""
    def inner(y):
        """Inner doc."""
        return y * 3

    total = helper(a) * b + 1
    return inner(total) + 'a'.count("a")
'''


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Write `source` to a fresh file and import it under a fresh module name."""

    def load(source: str) -> ModuleType:
        name = f"codever_{os.getpid()}_{next(_names)}"
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)  # inspect finds classes through it
        spec.loader.exec_module(module)
        return module

    return load


def edit(old: str, new: str, source: str = BASE) -> str:
    assert old in source, old
    return source.replace(old, new)


def from_exec(source: str, name: str = "f") -> FunctionType:
    """A function with no source file: only the bytecode fallback can hash it."""
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(source), namespace)  # noqa: S102
    fn = namespace[name]
    with pytest.raises(OSError):
        inspect.getsource(fn)
    return fn  # type: ignore[no-any-return]


# -- what does not count -----------------------------------------------------------------------

SAME = {
    "docstring edited": edit('"""Docstring."""', '"""Another docstring, longer."""'),
    "docstring removed": edit('    """Docstring."""\n', ""),
    "nested docstring edited": edit('"""Inner doc."""', '"""Other inner doc."""'),
    "comment added": edit("    total =", "    # why: the total\n    total ="),
    "blank lines": edit("    total =", "\n\n    total =").replace("\n\ndef", "\n\n\n\ndef"),
    "arguments re-wrapped": edit("def f(a, b=2):", "def f(\n    a,\n    b = 2,\n):"),
    "expression re-wrapped": edit("helper(a) * b + 1", "(\n        helper(a)\n        * b\n + 1)"),
    "quote style": edit("""'a'.count("a")""", """"a".count('a')"""),
    "decorator arguments": edit("@deco(ttl=5)", "@deco(ttl=10)"),
    "decorator removed": edit("@deco(ttl=5)\n", ""),
    "renamed": edit("def f(", "def g("),
    "other function edited": edit("return x - 1", "return 0"),
}

DIFFERENT = {
    "constant": edit("* b + 1", "* b + 2"),
    "operator": edit("* b + 1", "* b - 1"),
    "called name": edit("total = helper(a)", "total = other(a)"),
    "default value": edit("b=2", "b=3"),
    "nested function": edit("return y * 3", "return y * 4"),
    "string constant": edit("""count("a")""", """count("b")"""),
    "async": edit("def f(a, b=2):", "async def f(a, b=2):"),
}


@pytest.mark.parametrize("source", SAME.values(), ids=SAME.keys())
def test_edits_that_keep_the_hash(load: Callable[[str], ModuleType], source: str) -> None:
    fn_name = "g" if "def g(" in source else "f"
    assert code_hash(getattr(load(source), fn_name)) == code_hash(load(BASE).f)


@pytest.mark.parametrize("source", DIFFERENT.values(), ids=DIFFERENT.keys())
def test_logic_edits_change_the_hash(load: Callable[[str], ModuleType], source: str) -> None:
    original = code_hash(load(BASE).f)
    edited = code_hash(load(source).f)
    reverted = code_hash(load(BASE).f)
    assert edited != original
    assert reverted == original  # old entries are found again
    assert len(original) == 16 and int(original, 16) >= 0


# -- depends -----------------------------------------------------------------------------------


def test_depends_helpers_and_constants(load: Callable[[str], ModuleType]) -> None:
    def hashed(source: str, *extra: object) -> str:
        module = load(source)
        return code_hash(module.f, depends=(module.helper, *extra))

    base = hashed(BASE)
    assert base != code_hash(load(BASE).f)  # the helper counts
    assert hashed(edit("return x + 1", "return x + 2")) != base  # helper's logic
    assert hashed(edit('"""Helper doc."""', '"""New doc."""')) == base  # helper's docstring
    assert hashed(BASE, "schema-1") != hashed(BASE, "schema-2")
    assert hashed(BASE, {"a": 1, "b": [1, 2]}) == hashed(BASE, {"b": [1, 2], "a": 1})
    assert hashed(BASE, 1, 2) != hashed(BASE, 2, 1)  # order of depends counts


def test_depends_are_not_followed(load: Callable[[str], ModuleType]) -> None:
    """Only the listed helpers count: a helper of a helper needs its own entry."""
    source = BASE + "\n\ndef outer(x):\n    return helper(x)\n"
    module = load(source)
    edited = load(edit("return x + 1", "return x + 5", source))
    assert code_hash(module.f, [module.outer]) == code_hash(edited.f, [edited.outer])
    assert code_hash(module.f, [module.outer, module.helper]) != code_hash(
        edited.f, [edited.outer, edited.helper]
    )


def test_depends_partial(load: Callable[[str], ModuleType]) -> None:
    module, again = load(BASE), load(BASE)
    one = code_hash(module.f, [functools.partial(module.helper, 1)])
    assert one == code_hash(again.f, [functools.partial(again.helper, 1)])
    assert one != code_hash(module.f, [functools.partial(module.helper, 2)])
    assert one != code_hash(module.f, [functools.partial(module.other, 1)])
    kw = code_hash(module.f, [functools.partial(module.helper, x=object())])  # type only
    assert kw == code_hash(module.f, [functools.partial(module.helper, x=object())])


CLASSES = """
class Shape:
    '''A shape.'''

    scale = 2

    def area(self, side):
        '''Area.'''
        return side * side * self.scale

    @staticmethod
    def unit():
        return 1

    @classmethod
    def make(cls):
        return cls()

    def perimeter(self, side):
        return 4 * side
"""


def test_methods_staticmethods_classmethods(load: Callable[[str], ModuleType]) -> None:
    base = load(CLASSES)
    same = load(CLASSES.replace("'''Area.'''", "# no doc").replace("4 * side", "5 * side"))
    changed = load(CLASSES.replace("side * side", "side ** 2").replace("return 1", "return 2"))
    getters: list[Callable[[Any], Any]] = [
        lambda m: m.Shape.area,
        lambda m: m.Shape().area,  # a bound method hashes its function
        lambda m: m.Shape.__dict__["unit"],
        lambda m: m.Shape.unit,
        lambda m: m.Shape.__dict__["make"],
        lambda m: m.Shape.make,
    ]
    for get in getters:
        assert code_hash(get(base)) == code_hash(get(same))
    assert code_hash(base.Shape.area) != code_hash(changed.Shape.area)
    assert code_hash(base.Shape.unit) != code_hash(changed.Shape.unit)
    assert code_hash(base.Shape.make) == code_hash(changed.Shape.make)
    assert code_hash(base.Shape.unit) == code_hash(base.Shape.__dict__["unit"])


def test_method_with_an_unindented_string(load: Callable[[str], ModuleType]) -> None:
    """A string continued at column 0 defeats dedent; the source path must still be used."""
    source = 'class K:\n    def text(self) -> str:\n        return """one\ntwo"""\n'
    base = load(source)
    assert code_hash(base.K.text) == code_hash(load(source.replace("(self)", "( self )")).K.text)
    assert code_hash(base.K.text) != code_hash(load(source.replace("two", "2")).K.text)
    # Annotations are not in the bytecode: only the source path sees this edit.
    assert code_hash(base.K.text) != code_hash(load(source.replace("-> str", "-> int")).K.text)


def test_depends_class_and_module(load: Callable[[str], ModuleType]) -> None:
    def hashed(source: str) -> str:
        module = load(source)
        return code_hash(module.Shape.area, [module.Shape, module])

    base = hashed(CLASSES)
    assert hashed(CLASSES.replace("'''A shape.'''", "'''Any shape.'''")) == base
    assert hashed(CLASSES.replace("scale = 2", "scale = 3")) != base  # class body
    assert hashed(CLASSES + "\nLIMIT = 3\n") != base  # module source


def test_wrapped_functions_hash_their_code(load: Callable[[str], ModuleType]) -> None:
    wrapping = """
    import functools

    def logged(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs)
        return wrapper

    @logged
    def helper(x):
        return x + 1
    """
    plain = load("def helper(x):\n    return x + 1\n")
    wrapped = load(wrapping)
    edited = load(wrapping.replace("x + 1", "x + 2"))
    assert wrapped.helper.__wrapped__ is not wrapped.helper
    assert code_hash(wrapped.helper) == code_hash(plain.helper)
    assert code_hash(plain.helper, [wrapped.helper]) != code_hash(plain.helper, [edited.helper])
    cached = functools.lru_cache(maxsize=4)(plain.helper)
    assert code_hash(cached) == code_hash(plain.helper)


# -- the bytecode fallback ---------------------------------------------------------------------


def test_lambdas(load: Callable[[str], ModuleType]) -> None:
    source = textwrap.dedent("""
        double = lambda x: x * 2
        triple = lambda x: x * 3
        pair = (lambda x: x + 1), (lambda x: x + 2)
        scaled = lambda x, n=2: x * n
    """)
    base = load(source)
    reformatted = load(source.replace("lambda x: x * 2", "(\n    lambda x:  x*2\n)"))
    assert code_hash(base.double) == code_hash(reformatted.double)
    assert code_hash(base.double) != code_hash(base.triple)
    assert code_hash(base.pair[0]) != code_hash(base.pair[1])
    assert code_hash(base.scaled) != code_hash(load(source.replace("n=2", "n=3")).scaled)
    assert code_hash(base.scaled) == code_hash(load(source).scaled)


FALLBACK = '''
def f(x, n=2):
    """Doc."""
    def inner(y):
        """Inner doc."""
        return y in {"a", "b", "c"}
    return inner(x) and x * n + 1
'''


def test_bytecode_fallback() -> None:
    base = code_hash(from_exec(FALLBACK))
    for old, new in [('"""Doc."""', '"""Edited."""'), ('"""Inner doc."""', '"""Edited."""')]:
        assert code_hash(from_exec(FALLBACK.replace(old, new))) == base
    assert code_hash(from_exec("\n\n# moved down\n" + FALLBACK)) == base  # line numbers
    for old, new in [("+ 1", "+ 2"), ("n=2", "n=3"), ('"c"', '"d"'), ("* n", "- n")]:
        assert code_hash(from_exec(FALLBACK.replace(old, new))) != base, new
    warm = from_exec(FALLBACK)
    for i in range(2000):  # specialized (adaptive) bytecode must not count
        warm(str(i))
    assert code_hash(warm) == base


def test_cache_follows_the_function_not_its_file(
    load: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    module = load(BASE)
    first = code_hash(module.f)
    Path(module.__file__ or "").write_text(textwrap.dedent(edit("* b + 1", "* b + 7")))
    assert code_hash(module.f) == first  # the source read first counts for this function
    fn = from_exec(FALLBACK)
    before = code_hash(fn)
    fn.__defaults__ = (5,)
    assert code_hash(fn) != before  # new defaults are seen
    fn.__defaults__ = (2,)
    assert code_hash(fn) == before
    fn.__code__ = from_exec(FALLBACK.replace("+ 1", "+ 9")).__code__
    assert code_hash(fn) != before
    start = time.perf_counter()
    for _ in range(1000):
        code_hash(module.f)
    per_call = (time.perf_counter() - start) / 1000
    assert per_call < 1e-3, per_call  # served from the cache: no source read or parse


# -- errors ------------------------------------------------------------------------------------


def test_builtins() -> None:
    with pytest.raises(TypeError, match=r'version="code" cannot read the code of builtins\.len'):
        code_hash(len)
    with pytest.raises(TypeError, match="pass version= explicitly"):
        code_hash(functools.partial(max, 1))
    with_len = code_hash(test_builtins, [len, str.lower])
    assert with_len == code_hash(test_builtins, [len, str.lower])
    assert with_len != code_hash(test_builtins, [abs, str.lower])


def test_bad_depends_item() -> None:
    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"depends item .*Opaque.* is not supported") as info:
        code_hash(test_bad_depends_item, [1, Opaque()])
    assert "hash_key" in str(info.value)


# -- stable across processes -------------------------------------------------------------------

PROBE = """
import importlib.util, sys
from tiers._codeversion import code_hash
spec = importlib.util.spec_from_file_location("probe", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["probe"] = module
spec.loader.exec_module(module)
namespace = {}
exec(sys.argv[2], namespace)
deps = (module.helper, {"k": frozenset({"x", "y", "z"})}, "v1")
print(code_hash(module.f, deps), code_hash(namespace["f"]))
"""


def test_stable_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "probe.py"
    path.write_text(textwrap.dedent(BASE))
    fallback = textwrap.dedent(FALLBACK)
    outputs = set()
    for seed in ("0", "4242"):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(path), fallback],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(SRC)},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.add(tuple(done.stdout.split()))
    spec = importlib.util.spec_from_file_location("probe_here", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    deps = (module.helper, {"k": frozenset({"x", "y", "z"})}, "v1")
    here = [code_hash(module.f, deps), code_hash(from_exec(FALLBACK))]
    assert outputs == {tuple(here)}
