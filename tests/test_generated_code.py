"""`_cache/_sync/*.py` are generated from `_cache/_async/*.py` by scripts/unasync.py and kept
up to date."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tiers import Cache
from tiers._cache._async.operations import AsyncOps
from tiers._cache._async.single_flight import AsyncSingleFlight
from tiers._cache._async.tiering import AsyncTiering
from tiers._cache._sync.operations import SyncOps
from tiers._cache._sync.single_flight import SyncSingleFlight
from tiers._cache._sync.tiering import SyncTiering

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "unasync.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_sync_ops_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        f"_cache/_sync is stale; run: python scripts/unasync.py\n{result.stderr}"
    )


def test_check_fails_on_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_script()
    stale = tmp_path / "tiering.py"
    stale.write_text((script.TARGET / "tiering.py").read_text("utf-8") + "# edited\n", "utf-8")
    (tmp_path / "operations.py").write_text("# stale\n", "utf-8")
    monkeypatch.setattr(script, "TARGET", tmp_path)
    monkeypatch.setattr(sys, "argv", ["unasync.py", "--check"])
    assert script.main() == 1
    monkeypatch.setattr(sys, "argv", ["unasync.py"])
    assert script.main() == 0  # regenerates the (temporary) targets
    monkeypatch.setattr(sys, "argv", ["unasync.py", "--check"])
    assert script.main() == 0
    assert {p.name for p in tmp_path.iterdir()} == {
        "operations.py",
        "single_flight.py",
        "tiering.py",
    }  # the hand-written prims.py and __init__.py are not generated


@pytest.mark.parametrize("name", ["operations.py", "single_flight.py", "tiering.py"])
def test_the_generated_code_has_no_async_left(name: str) -> None:
    text = (ROOT / "src/tiers/_cache/_sync" / name).read_text("utf-8")
    assert text.startswith(f"# Generated from _async/{name}")
    for word in ("await ", "async def", "async with", "async for", "AsyncOps", "AsyncTiering"):
        assert word not in text, word


def test_the_transformation_rules() -> None:
    script = load_script()
    source = (
        '"""doc"""\n'
        "from .prims import sleep_async\n"
        "class AsyncOps:\n"
        "    async def get_async(self):\n"
        '        """Keeps "await x_async" inside strings."""\n'
        "        async with self.lock_async() as held:  # await in a comment stays\n"
        "            async for item in self.items_async():\n"
        "                await sleep_async(0)\n"
        "        return await self._inner_async(_async=1)\n"
    )
    out = script.unasync(source)
    assert "from .prims import sleep\n" in out
    assert "class SyncOps:" in out
    assert "    def get(self):" in out
    assert '"""Keeps "await x_async" inside strings."""' in out
    assert "        with self.lock() as held:  # await in a comment stays" in out
    assert "            for item in self.items():" in out
    assert "                sleep(0)" in out
    assert "        return self._inner(_async=1)" in out


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("__")
    }


@pytest.mark.parametrize(
    ("async_cls", "sync_cls"),
    [(AsyncOps, SyncOps), (AsyncSingleFlight, SyncSingleFlight), (AsyncTiering, SyncTiering)],
)
def test_every_async_operation_has_a_sync_twin_with_the_same_parameters(
    async_cls: type, sync_cls: type
) -> None:
    async_methods = _public_methods(async_cls)
    sync_methods = _public_methods(sync_cls)
    assert {n.removesuffix("_async") for n in async_methods} == set(sync_methods)
    for name, signature in async_methods.items():
        twin = sync_methods[name.removesuffix("_async")]
        assert list(signature.parameters) == list(twin.parameters), name
        not_coroutines = ("getfile_async", "_refresh_soon_async")  # (a context manager; starts one)
        assert inspect.iscoroutinefunction(getattr(async_cls, name)) or name in not_coroutines


def test_the_cache_exposes_each_io_method_in_both_forms() -> None:
    io = [
        "get", "set", "add", "pop", "delete", "has", "touch", "expire", "evict", "clear",
        "info", "keys", "get_or_set", "getfile", "stats", "close",
    ]  # fmt: skip
    for name in io:
        assert callable(getattr(Cache, name)), name
        assert callable(getattr(Cache, name + "_async")), name + "_async"
