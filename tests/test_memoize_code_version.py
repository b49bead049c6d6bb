"""``memoize(version="code")``: results are keyed by a hash of the function's code (and of
its `depends`), so a docstring, comment or formatting edit keeps them, a logic edit
recomputes, and a revert finds the old results again, in this process and in a new one.

Each "edit" writes the module's new text to a file and imports it afresh over the same
DiskStore, as a restarted program would.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from tiers import Cache, DiskStore

V1 = '''
import tiers

RUNS = []
cache = tiers.Cache(tiers.DiskStore({store!r}))

def helper(x):
    """Scale."""
    return x * 10

@cache.memoize(version="code", depends=(helper,), name="lab.f")
def f(x):
    """Add one to the scaled value."""
    RUNS.append(x)
    return helper(x) + 1
'''

DOCS_AND_COMMENTS = V1.replace('"""Add one to the scaled value."""', '"""Rewritten."""').replace(
    "    return helper(x) + 1",
    "    # a comment\n\n    return (\n        helper(x)\n        + 1\n    )",
)
LOGIC = V1.replace("return helper(x) + 1", "return helper(x) + 2")
HELPER_DOC = V1.replace('"""Scale."""', '"""Scale by ten."""')
HELPER_LOGIC = V1.replace("return x * 10", "return x * 100")
DECORATOR = V1.replace('name="lab.f")', 'name="lab.f", ttl=3600)')


def load(tmp_path: Path, text: str, serial: list[int] = [0]) -> ModuleType:  # noqa: B006
    """Import `text` as a fresh module (a new module object each time, as a new run would)."""
    serial[0] += 1
    path = tmp_path / f"lab_{serial[0]}.py"
    path.write_text(textwrap.dedent(text).format(store=str(tmp_path / "store")))
    spec = importlib.util.spec_from_file_location(f"lab_{serial[0]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call(tmp_path: Path, text: str, x: int = 3) -> tuple[int, list[int]]:
    module = load(tmp_path, text)
    try:
        return module.f(x), module.RUNS
    finally:
        module.cache.close()


def test_edits_recompute_only_when_the_logic_changes(tmp_path: Path) -> None:
    assert call(tmp_path, V1) == (31, [3])  # computed
    assert call(tmp_path, V1) == (31, [])  # a hit
    assert call(tmp_path, DOCS_AND_COMMENTS) == (31, [])  # docstring, comment, wrapping
    assert call(tmp_path, DECORATOR) == (31, [])  # the decorator's own options
    assert call(tmp_path, HELPER_DOC) == (31, [])  # a helper's docstring
    assert call(tmp_path, LOGIC) == (32, [3])  # logic: recomputed
    assert call(tmp_path, HELPER_LOGIC) == (301, [3])  # a helper's logic: recomputed
    assert call(tmp_path, V1) == (31, [])  # reverted: the old result is found again
    assert call(tmp_path, LOGIC) == (32, [])  # and so is the other one


def test_old_versions_stay_until_they_age_out_and_clear_can_take_them(tmp_path: Path) -> None:
    call(tmp_path, V1)
    call(tmp_path, LOGIC)
    module = load(tmp_path, V1)
    with module.cache:
        assert len(list(module.f.entries())) == 1
        assert len(list(module.f.entries(all_versions=True))) == 2
        assert module.f.clear(all_versions=True) == 2
    assert call(tmp_path, LOGIC) == (32, [3])


def test_explain_and_provenance_name_the_code_hash(tmp_path: Path) -> None:
    call(tmp_path, V1)
    old = load(tmp_path, V1)
    new = load(tmp_path, LOGIC)
    with old.cache, new.cache:
        meta = old.cache.info(old.f.key(3)).meta
        code = old.f.__tiers_memo__.code
        assert meta["code"] == code and meta["version"] == f"code-{code}"
        told = new.f.explain(3)
        assert told.outcome == "miss" and "the code changed since" in told.reason
        assert code in told.reason and new.f.__tiers_memo__.code in told.reason
        assert old.f.explain(3).outcome == "hit"


def test_a_new_process_finds_the_results_again(tmp_path: Path) -> None:
    assert call(tmp_path, V1) == (31, [3])
    path = tmp_path / "again.py"
    path.write_text(textwrap.dedent(DOCS_AND_COMMENTS).format(store=str(tmp_path / "store")))
    script = (
        "import importlib.util, sys;"
        f"spec = importlib.util.spec_from_file_location('again', {str(path)!r});"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m);"
        "print(m.f(3), len(m.RUNS))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["31", "0"]  # a hit in another interpreter


def test_a_builtin_cannot_be_keyed_by_its_code(tmp_path: Path) -> None:
    refused = pytest.raises(TypeError, match="pass version= explicitly")
    with Cache(DiskStore(tmp_path / "d")) as cache, refused:
        cache.memoize(version="code")(len)
