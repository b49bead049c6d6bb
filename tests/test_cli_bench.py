"""``tiers bench``, run as a real subprocess: rows, the stores it is given, ``--plot``, errors."""

from __future__ import annotations

import itertools
import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import tiers
from tests.test_cli import _entry_point
from tiers._cli._bench import label
from tiers._cli._stores import open_store

pytest.importorskip("rich")

TIMEOUT = 60
FAST = ("--seconds", "0.05", "--sizes", "1KB,64KB", "--no-progress")
OPS = {"set", "get-hit", "get-miss"}
THEIRS = {"alpha": [1, 2, 3], "tiers-bench/not-ours": "kept", "beta": b"\x00" * 5000}
"""Entries of the store's owner, in the default namespace: a bench must leave them alone."""


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


def bench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_entry_point(), "bench", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def bench_json(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """The rows of a ``--format json`` run that must succeed."""
    proc = bench(env, *FAST, "--format", "json", *args)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["command"] == "bench"
    assert document["serializer"] == "raw"
    assert 'serializer="raw"' in proc.stderr  # the prose line goes to stderr under JSON
    rows: list[dict[str, Any]] = document["rows"]
    return rows


def assert_measured(rows: list[dict[str, Any]], stores: set[str]) -> None:
    """One row per (store, size, op), each a plausible measurement."""
    cells = [(row["store"], row["size"], row["op"]) for row in rows]
    assert sorted(cells) == sorted(itertools.product(stores, (1000, 64000), OPS))
    for row in rows:
        assert 0 < row["p50"] <= row["p99"] < 10, row
        assert row["ops_per_s"] > 0, row
        if row["op"] == "get-miss":
            assert row["mb_per_s"] is None, row
        else:  # MB/s is ops/s times the value size
            expected = row["ops_per_s"] * row["size"] / 1e6  # ops/s is rounded to an int
            assert row["mb_per_s"] == pytest.approx(expected, rel=1e-3, abs=row["size"] / 1e6)
        # ops/s is 1 / mean latency, and half the operations took p50 or more
        assert row["ops_per_s"] <= 2 / row["p50"] * 1.001 + 1, row


def assert_one_error_line(proc: subprocess.CompletedProcess[str], status: int) -> str:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tiers: error: ")
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


# -- the stores a run measures ------------------------------------------------------------------


def test_default_stores_every_cell_and_the_temporary_directory_removed(
    env: dict[str, str],
) -> None:
    rows = bench_json(env)
    assert_measured(rows, {"MemoryStore", "DiskStore", "FolderStore"})
    assert list(Path(env["TMPDIR"]).iterdir()) == []
    assert list(Path(env["TIERS_CACHE_DIR"]).iterdir()) == []


def _store_spec(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "disk path":
        tiers.DiskStore(tmp_path / "disk").close()
        return str(tmp_path / "disk")
    if kind == "folder URL":
        tiers.FolderStore(tmp_path / "folder").close()
        return f"folder://{tmp_path / 'folder'}"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture(params=["disk path", "folder URL", "redis URL"])
def given_store(request: pytest.FixtureRequest, tmp_path: Path, env: dict[str, str]) -> str:
    """A store of someone's, holding `THEIRS`."""
    spec = _store_spec(request.param, tmp_path, request)
    with tiers.Cache(spec) as cache:
        for key, value in THEIRS.items():
            cache.set(key, value)
    return spec


def stored_keys(spec: str) -> set[str]:
    """Every key the store holds (as stored: namespace, colon, key)."""
    store = open_store(spec)
    try:
        return set(store.keys())
    finally:
        store.close()


def test_a_given_store_keeps_its_entries_and_is_left_without_bench_entries(
    env: dict[str, str], given_store: str
) -> None:
    before = stored_keys(given_store)
    assert len(before) == len(THEIRS)
    rows = bench_json(env, given_store)
    shown = given_store.split("?", maxsplit=1)[0]
    assert_measured(rows, {shown})
    assert stored_keys(given_store) == before
    with tiers.Cache(given_store) as cache:
        assert {key: cache.get(key) for key in THEIRS} == THEIRS


def test_a_memory_url_is_measured_in_the_process(env: dict[str, str]) -> None:
    rows = bench_json(env, "memory://?max_items=100000")
    assert_measured(rows, {"memory://"})


def test_hits_a_bounded_store_evicted_are_reported(env: dict[str, str]) -> None:
    proc = bench(env, *FAST, "--sizes", "1KB", "--format", "json", "memory://?max_items=10")
    assert proc.returncode == 0, proc.stderr
    (row,) = [r for r in json.loads(proc.stdout)["rows"] if r["op"] == "get-hit"]
    assert "get-hits of 1000 bytes found no entry (does the store evict them?)" in proc.stderr
    assert row["ops_per_s"] > 0


def test_ctrl_c_removes_the_bench_entries(env: dict[str, str], tmp_path: Path) -> None:
    spec = str(tmp_path / "disk")
    with tiers.Cache(spec) as cache:
        cache.set("alpha", 1)
    before = stored_keys(spec)
    proc = subprocess.Popen(
        [*_entry_point(), "bench", spec, "--seconds", "20", "--sizes", "1KB", "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not any(k.startswith("tiers-bench/") for k in stored_keys(spec)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the bench wrote nothing in 20 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert stored_keys(spec) == before


# -- the chart ----------------------------------------------------------------------------------


def test_plot_writes_a_png_chart(env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    chart = tmp_path / "out.png"
    proc = subprocess.run(
        [*_entry_point(), "bench", *FAST, "--plot", "out.png"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "chart written to out.png"
    assert proc.stdout.count("get-hit") == 6  # the table too: 3 stores x 2 sizes
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind, width, height = struct.unpack(">I4sII", data[8:24])
    assert (length, kind) == (13, b"IHDR")
    assert width >= 800 and height >= 400 and width > height, (width, height)
    assert len(data) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_plot_without_matplotlib_fails_before_measuring(
    env: dict[str, str], tmp_path: Path
) -> None:
    """As when matplotlib is not installed: a package of that name that cannot import."""
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    paths = [str(shadow.parent), env.get("PYTHONPATH", "")]
    env = {**env, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    started = time.monotonic()
    proc = bench(env, "--seconds", "5", "--plot", str(tmp_path / "out.png"))
    line = assert_one_error_line(proc, 1)
    assert line == 'tiers: error: tiers bench --plot needs matplotlib: pip install "tiers[plot]"'
    assert time.monotonic() - started < 5  # nothing was measured (that takes 3 x 4 x 3 x 5 s)
    assert not (tmp_path / "out.png").exists()


# -- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--sizes", ""], "--sizes is empty"),
        (["--sizes", "1KB,,64KB"], "empty item"),
        (["--sizes", "0"], "zero bytes"),
        (["--sizes", "0.1"], "zero bytes"),
        (["--sizes", "2GB"], "more than 1GB"),
        (["--sizes", "12XB"], "is not a size"),
        (["--seconds", "0"], "--seconds must be more than 0"),
        (["--seconds", "nan"], "--seconds must be more than 0"),
        (["--plot", "chart.jpg"], "name a .png, .svg or .pdf file"),
        (["--plot", "no/such/dir/chart.png"], "there is no directory"),
    ],
)
def test_bad_arguments_are_one_error_line(
    env: dict[str, str], tmp_path: Path, args: list[str], says: str
) -> None:
    proc = subprocess.run(
        [*_entry_point(), "bench", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    line = assert_one_error_line(proc, 2)
    assert says in line
    assert list(Path(env["TMPDIR"]).iterdir()) == []


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ("/var/cache/x", "/var/cache/x"),
        ("redis://alice:s3cret@db:6379/0?timeout=1", "redis://alice@db:6379/0"),
        ("rediss://:s3cret@db:6380", "rediss://db:6380"),
        ("s3://bucket/prefix?secret_access_key=s3cret", "s3://bucket/prefix"),
    ],
)
def test_a_store_is_named_without_its_credentials(spec: str, shown: str) -> None:
    assert label(spec) == shown
