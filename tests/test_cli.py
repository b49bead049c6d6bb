"""The ``tiers`` command, run as a real subprocess (entry point and ``python -m tiers._cli``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tiers
from tiers._cli._app import NEEDS_RICH
from tiers._cli._demo import KEY, LIMIT, primes_below

MARKER = "new process: served from tier 1 (DiskStore), not recomputed, hash_key matches"
TIMEOUT = 30


def _entry_point() -> list[str]:
    """The installed ``tiers`` script next to this interpreter (else ``python -m``)."""
    script = Path(sys.executable).with_name("tiers")
    found = str(script) if script.exists() else shutil.which("tiers")
    return [found] if found else [sys.executable, "-m", "tiers._cli"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Private config, cache and temp directories, shared with this process (same secret)."""
    for name in ("config", "cache", "tmp"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("TIERS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("TIERS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    for name in ("FORCE_COLOR", "COLUMNS", "LINES", "TIERS_SECRET"):
        monkeypatch.delenv(name, raising=False)
    return dict(os.environ)


def run(env: dict[str, str], *args: str, module: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tiers._cli"] if module else _entry_point()
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def assert_one_error_line(proc: subprocess.CompletedProcess[str], status: int) -> str:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tiers: error: ")
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def stored_value(directory: Path) -> object:
    """The demo's entry, read back by reopening its disk store in this process."""
    disk = tiers.DiskStore(directory)
    try:
        with tiers.Cache(disk) as cache:
            assert list(cache.keys()) == [KEY]
            return cache.get(KEY)
    finally:
        disk.close()


# -- demo ----------------------------------------------------------------------------------


def test_demo_serves_from_memory_then_from_disk_in_a_new_process(env: dict[str, str]) -> None:
    pytest.importorskip("rich")
    proc = run(env, "demo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    assert "tier 0 MemoryStore" in out
    assert "tier 1 DiskStore" in out
    assert MARKER in out
    assert f"{len(primes_below(LIMIT)):,} primes" in out
    # the temporary directory is gone and the user's cache was not touched
    tmp = Path(env["TMPDIR"])
    assert list(tmp.iterdir()) == []
    assert "removed " + str(tmp) in out
    assert list(Path(env["TIERS_CACHE_DIR"]).iterdir()) == []


def test_demo_keep_keeps_the_temporary_directory(env: dict[str, str]) -> None:
    pytest.importorskip("rich")
    proc = run(env, "demo", "--keep", module=True)
    assert proc.returncode == 0, proc.stderr
    (kept,) = Path(env["TMPDIR"]).iterdir()
    assert kept.name.startswith("tiers-demo-")
    assert f"the data stays in {kept}" in proc.stdout
    assert stored_value(kept) == primes_below(LIMIT)


def test_demo_dir_uses_and_keeps_that_directory(env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("rich")
    directory = tmp_path / "store"
    proc = run(env, "demo", "--dir", str(directory))
    assert proc.returncode == 0, proc.stderr
    assert MARKER in proc.stdout
    assert f"the data stays in {directory}" in proc.stdout
    assert stored_value(directory) == primes_below(LIMIT)
    # a second run on the same directory starts cold again and still reads from disk
    again = run(env, "demo", "--dir", str(directory))
    assert again.returncode == 0, again.stderr
    assert "deleted the entry of an earlier run" in again.stdout
    assert MARKER in again.stdout


def test_demo_dir_that_is_a_file_is_one_error_line(env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("rich")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    line = assert_one_error_line(run(env, "demo", "--dir", str(not_a_dir)), 1)
    assert str(not_a_dir) in line
    inside = assert_one_error_line(run(env, "demo", "--dir", str(not_a_dir / "sub")), 1)
    assert "Not a directory" in inside


def test_demo_without_rich_says_how_to_install_it(env: dict[str, str]) -> None:
    code = "import sys; sys.modules['rich'] = None; from tiers._cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "demo"],
        env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip() == NEEDS_RICH
    assert proc.stdout == ""


def test_primes_below() -> None:
    assert primes_below(30) == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert primes_below(2) == []


# -- skeleton ------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [False, True])
def test_version(env: dict[str, str], module: bool) -> None:
    proc = run(env, "--version", module=module)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"tiers {tiers.__version__}"


def test_help_lists_the_demo(env: dict[str, str]) -> None:
    proc = run(env, "--help")
    assert proc.returncode == 0
    assert "demo" in proc.stdout
    assert "--child" not in run(env, "demo", "--help").stdout


@pytest.mark.parametrize("args", [["nope"], [], ["demo", "--bogus"], ["demo", "--child"]])
def test_usage_errors_are_one_line_and_exit_2(env: dict[str, str], args: list[str]) -> None:
    proc = run(env, *args)
    assert_one_error_line(proc, 2)
    assert proc.stdout == ""
