"""The ``tiers`` store commands, run as the installed command in subprocesses against real
stores: a DiskStore, a FolderStore, a redis-server and an S3 server (moto) on loopback."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tiers
from tests.test_cli import _entry_point

TIMEOUT = 60
KINDS = ("disk", "folder", "redis", "s3")


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_entry_point(), *args], env=env, input=stdin, capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )  # fmt: skip


def run_json(env: dict[str, str], *args: str, status: int = 0) -> Any:
    proc = run(env, *args, "--format", "json")
    assert proc.returncode == status, proc.stderr
    return json.loads(proc.stdout)


def one_error(proc: subprocess.CompletedProcess[str], status: int) -> str:
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tiers: error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """This process's environment (same signing key file) for the subprocesses."""
    found = dict(os.environ)
    for name in ("FORCE_COLOR", "COLUMNS", "LINES", "TIERS_SECRET"):
        found.pop(name, None)
    (tmp_path / "tmp").mkdir()
    found["TMPDIR"] = str(tmp_path / "tmp")
    return found


@pytest.fixture(params=KINDS)
def spec(request: pytest.FixtureRequest, tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    """A STORE argument of each kind, with its server's settings in `env`."""
    kind = request.param
    if kind == "disk":
        yield str(tmp_path / "disk")
    elif kind == "folder":
        yield f"folder://{tmp_path / 'folder'}"
    elif kind == "redis":
        yield request.getfixturevalue("redis_url")
    else:
        s3 = request.getfixturevalue("moto_s3")
        options = s3.store_options()
        env.update(
            AWS_ENDPOINT_URL=options["endpoint"], AWS_ACCESS_KEY_ID=options["access_key_id"],
            AWS_SECRET_ACCESS_KEY=options["secret_access_key"], AWS_REGION=options["region"],
            AWS_ALLOW_HTTP="true",
        )  # fmt: skip
        yield f"s3://{s3.new_bucket()}/team-cache"


def open_cache(spec: str, env: dict[str, str]) -> tiers.Cache:
    """A cache over the store, configured as the subprocesses see it."""
    if spec.startswith("s3://"):
        store = tiers.ObjectStore(
            spec, endpoint=env["AWS_ENDPOINT_URL"], access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_REGION"],
            client_options={"allow_http": True},
        )  # fmt: skip
        return tiers.Cache(store)
    if not spec.startswith(("redis", "folder")):
        Path(spec).mkdir(parents=True, exist_ok=True)
    return tiers.Cache(spec)


def fill(spec: str, env: dict[str, str]) -> dict[str, Any]:
    """Five entries: bytes, text, two tagged, one expiring, one memoized; a hit and a miss."""
    values: dict[str, Any] = {
        "blob": os.urandom(3000),
        "note": "hello\n",
        "report:1": {"rows": [1, 2, 3]},
        "report:2": {"rows": [4]},
        "short": 42,
    }
    with open_cache(spec, env) as cache:
        cache.set("blob", values["blob"])
        cache.set("note", values["note"])
        cache.set("report:1", values["report:1"], tags=["reports"])
        cache.set("report:2", values["report:2"], tags=["reports"])
        cache.set("short", values["short"], ttl=3600)

        @cache.memoize(name="demo.square")
        def square(x: int) -> int:
            return x * x

        assert square(7) == 49
        assert cache.get("blob") == values["blob"]
        assert cache.get("absent") is None
    return values


def keys_of(listing: dict[str, Any]) -> set[str]:
    return {row["key"] for row in listing["entries"]}


def test_every_command_on_every_store(spec: str, env: dict[str, str]) -> None:
    """One store of each kind, filled by a cache, walked and emptied by the commands."""
    values = fill(spec, env)
    listing = run_json(env, "ls", spec)
    assert listing["command"] == "ls"
    rows = {row["key"]: row for row in listing["entries"]}
    assert set(values) <= set(rows) and len(rows) == 6
    assert all(rows[k]["name"] == k for k in values)
    memo = [r for r in rows.values() if r["key"].startswith("demo.square")]
    assert [r["name"] for r in memo] == ["demo.square(x=7)"]
    assert rows["report:1"]["tags"] == ["reports"]
    assert rows["blob"]["size"] >= 3000
    assert rows["short"]["expires"] is not None and rows["blob"]["expires"] is None
    assert all(row["created"].endswith("Z") for row in rows.values())
    if spec.startswith("s3://"):
        assert all(row["accessed"] is None for row in rows.values())  # S3 cannot know
    assert keys_of(run_json(env, "ls", spec, "--tag", "reports")) == {"report:1", "report:2"}

    found = run_json(env, "stats", spec)["stores"][0]
    assert found["entries"] == 6 and found["bytes"] > 3000 and found["serializers"]
    if spec.startswith("s3://"):
        assert found["hits"] is None  # an object store keeps no counters: unknown
    else:
        assert found["hits"] >= 1 and found["misses"] >= 2 and found["sets"] == 6
        assert 0 < found["hit_ratio"] < 1
        assert run(env, "stats", spec, "--reset").returncode == 0
        assert run_json(env, "stats", spec)["stores"][0]["sets"] == 0

    shown = run_json(env, "show", spec, memo[0]["key"])
    assert shown["name"] == "demo.square(x=7)" and shown["meta"]["function"] == "demo.square"
    assert shown["tags"] == [] and shown["serializer"].startswith("pickle")
    blob = subprocess.run(
        [*_entry_point(), "get", spec, "blob"], env=env, capture_output=True,
        timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert blob.returncode == 0, blob.stderr
    assert blob.stdout == values["blob"]
    assert run(env, "get", spec, "report:1").stdout.strip() == repr(values["report:1"])

    report = run_json(env, "verify", spec)
    assert report["problems"] == [] and report["checked"] == 6 and report["damaged"] == 0

    dry = run_json(env, "evict", spec, "--tag", "reports", "--dry-run")
    assert dry["dry_run"] is True and dry["removed"] == 2 and dry["bytes"] > 0
    ls = subprocess.Popen(
        [*_entry_point(), "ls", spec, "--tag", "reports", "-q"], env=env, stdout=subprocess.PIPE
    )  # fmt: skip
    rm = subprocess.run(
        [*_entry_point(), "rm", spec, "-", "--format", "json"], env=env, stdin=ls.stdout,
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert ls.stdout is not None
    ls.stdout.close()
    assert ls.wait(TIMEOUT) == 0
    assert rm.returncode == 0, rm.stderr
    removed = json.loads(rm.stdout)
    assert removed["removed"] == 2 and removed["bytes"] == dry["bytes"]
    assert {r["key"] for r in removed["entries"]} == {"report:1", "report:2"}
    assert run(env, "rm", spec, "report:1").returncode == 4

    one_error(run(env, "clear", spec), 2)
    cleared = run_json(env, "clear", spec, "--yes")
    assert cleared["removed"] == 4
    assert keys_of(run_json(env, "ls", spec)) == set()


def test_listing_options_filters_and_values(tmp_path: Path, env: dict[str, str]) -> None:
    spec = str(tmp_path / "disk")
    values = fill(spec, env)
    assert keys_of(run_json(env, "ls", spec, "--prefix", "report:")) == {"report:1", "report:2"}
    assert keys_of(run_json(env, "ls", spec, "--filter", "size>2kB")) == {"blob"}
    assert keys_of(run_json(env, "ls", spec, "--sort", "size:desc", "--limit", "1")) == {"blob"}
    none = run(env, "ls", spec, "--filter", "size>1GB", "--format", "json")
    assert none.returncode == 4
    assert json.loads(none.stdout)["entries"] == []
    saved = Path(env["TMPDIR"]) / "blob.bin"
    assert run(env, "get", spec, "blob", "-o", str(saved)).returncode == 0
    assert saved.read_bytes() == values["blob"]
    one_error(run(env, "get", spec, "nope"), 4)
    wrong = run(env, "get", spec, "report:1", "--secret", "not-the-secret-of-the-writers")
    assert "another secret" in one_error(wrong, 1)
    other = "another-secret-entirely-0123"
    foreign = run(env, "verify", spec, "--secret", other, "--format", "json")
    assert foreign.returncode == 0, foreign.stderr  # not damage: another secret's entries
    assert json.loads(foreign.stdout)["counts"].get("foreign", 0) >= 1
    dry = run_json(env, "clear", spec, "--dry-run")
    assert dry["removed"] == 6 and len(keys_of(run_json(env, "ls", spec))) == 6


def test_copy_seeds_a_shared_store_and_reruns_copy_nothing(
    tmp_path: Path, env: dict[str, str], moto_s3: Any
) -> None:
    disk = str(tmp_path / "laptop")
    values = fill(disk, env)
    options = moto_s3.store_options()
    env.update(
        AWS_ENDPOINT_URL=options["endpoint"], AWS_ACCESS_KEY_ID=options["access_key_id"],
        AWS_SECRET_ACCESS_KEY=options["secret_access_key"], AWS_REGION=options["region"],
        AWS_ALLOW_HTTP="true",
    )  # fmt: skip
    team = f"s3://{moto_s3.new_bucket()}/team"
    first = run_json(env, "copy", disk, team)
    assert first["copied"] == 6 and first["up_to_date"] == 0
    again = run_json(env, "copy", disk, team)
    assert again["copied"] == 0 and again["up_to_date"] == 6
    with open_cache(team, env) as cache:
        for key, value in values.items():
            assert cache.get(key) == value  # plain entries were signed for the shared store
        assert cache.info("report:1").tags == ("reports",)
        assert cache.info("short").expires_at is not None
    back = str(tmp_path / "pulled")
    pulled = run_json(env, "copy", team, back, "--tag", "reports")
    assert pulled["copied"] == 2
    assert keys_of(run_json(env, "ls", back)) == {"report:1", "report:2"}


def test_prune_by_age_and_down_to_a_size(tmp_path: Path, env: dict[str, str]) -> None:
    disk = str(tmp_path / "disk")
    with open_cache(disk, env) as cache:
        for i in range(10):
            cache.set(f"k{i}", os.urandom(1000))
            time.sleep(0.01)
    dry = run_json(env, "prune", disk, "--max-size", "5kB", "--dry-run")
    assert dry["dry_run"] and dry["removed"] >= 5
    pruned = run_json(env, "prune", disk, "--max-size", "5kB")
    assert pruned["removed"] == dry["removed"]
    left = run_json(env, "ls", disk)
    assert sum(r["size"] for r in left["entries"]) <= 5000
    assert "k9" in keys_of(left) and "k0" not in keys_of(left)  # the oldest went first
    kept = run_json(env, "prune", disk, "--older-than", "1h")
    assert kept["removed"] == 0
    time.sleep(0.05)
    gone = run_json(env, "prune", disk, "--older-than", "0.01s")
    assert gone["removed"] == len(left["entries"])
    one_error(run(env, "prune", disk), 2)


def test_verify_finds_damage_and_fix_leaves_a_clean_store(
    tmp_path: Path, env: dict[str, str]
) -> None:
    disk = tmp_path / "disk"
    with open_cache(str(disk), env) as cache:
        for i in range(5):
            cache.set(f"big{i}", os.urandom(200_000))  # value files
    files = sorted(p for p in (disk / "data").rglob("*") if p.is_file())
    assert files
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0x01
    files[0].write_bytes(bytes(data))
    with open(files[1], "r+b") as f:
        f.truncate(100)
    (disk / "data" / "planted-orphan").write_bytes(b"x" * 10)
    damaged = run(env, "verify", str(disk), "--format", "json")
    assert damaged.returncode == 3, damaged.stderr
    report = json.loads(damaged.stdout)
    problems = {p["problem"] for p in report["problems"]}
    assert {"checksum", "truncated"} <= problems, report
    fixed = run_json(env, "verify", str(disk), "--fix")
    assert fixed["fixed"] == fixed["damaged"] >= 2
    clean = run_json(env, "verify", str(disk))
    assert clean["problems"] == [] and clean["checked"] == 3


def test_store_arguments_that_make_no_sense_are_refused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    assert "memory://" in one_error(run(env, "ls", "memory://"), 2)
    missing = one_error(run(env, "stats", str(tmp_path / "nowhere")), 1)
    assert "does not exist" in missing
    assert not (tmp_path / "nowhere").exists()  # never created by a typo
    one_error(run(env, "ls", str(tmp_path), "--filter", "bogus>1"), 2)
    one_error(run(env, "ls", str(tmp_path), "--sort", "colour"), 2)


def test_a_terminal_shows_a_table_and_a_progress_bar(tmp_path: Path, env: dict[str, str]) -> None:
    disk = str(tmp_path / "disk")
    fill(disk, env)
    listing = _on_a_terminal(env, "ls", disk)
    assert "key" in listing and "report:1" in listing and "─" in listing  # a rich table
    verified = _on_a_terminal(env, "verify", disk)
    assert "━" in verified  # rich's progress bar, drawn on the terminal
    assert "no damage" in verified


def test_clear_on_a_terminal_asks_first(tmp_path: Path, env: dict[str, str]) -> None:
    disk = str(tmp_path / "disk")
    fill(disk, env)
    declined = _on_a_terminal(env, "clear", disk, answer=b"n\n", status=1)
    assert "Remove 6 entries" in declined and "cancelled" in declined
    assert len(keys_of(run_json(env, "ls", disk))) == 6
    accepted = _on_a_terminal(env, "clear", disk, answer=b"y\n")
    assert "removed 6 entries" in accepted
    assert keys_of(run_json(env, "ls", disk)) == set()


def _on_a_terminal(env: dict[str, str], *args: str, answer: bytes = b"", status: int = 0) -> str:
    """Run the command on a pseudo-terminal (stdin, stdout and stderr), typing `answer`;
    all it wrote."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [*_entry_point(), *args], env={**env, "COLUMNS": "120", "TERM": "xterm-256color"},
        stdin=child, stdout=child, stderr=child, close_fds=True,
    )  # fmt: skip
    os.close(child)
    if answer:
        os.write(main, answer)
    chunks: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    os.close(main)
    assert proc.wait(TIMEOUT) == status, b"".join(chunks)
    return b"".join(chunks).decode("utf-8", "replace")


def test_prune_unused_for_needs_a_store_that_records_reads(
    tmp_path: Path, env: dict[str, str]
) -> None:
    path = tmp_path / "bounded"
    store = tiers.DiskStore(path, max_size="10MB")
    with tiers.Cache(store) as cache:
        cache.set("read", b"r")
        cache.set("unread", b"u")
        time.sleep(2.3)  # a read restamps an entry whose stamp is over a second old
        assert cache.get("read") == b"r"
    store.close()  # (the stamps of reads are written at the latest when the store closes)
    bounded = f"disk://{path}?max_size=10MB"
    # at once, then listed: "read" was read well under 2 s ago even on a loaded machine
    pruned = run_json(env, "prune", bounded, "--unused-for", "2s")
    assert [r["key"] for r in pruned["entries"]] == ["unread"]  # never read: since written
    listed = {r["key"]: r for r in run_json(env, "ls", bounded)["entries"]}
    assert list(listed) == ["read"] and listed["read"]["accessed"] is not None
    refused = one_error(run(env, "prune", str(path), "--unused-for", "1s"), 1)
    assert "max_size" in refused


def test_verify_a_damaged_folder_store(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "folder"
    with tiers.Cache(f"folder://{root}") as cache:
        for i in range(4):
            cache.set(f"doc{i}", os.urandom(5000))
    data = sorted(root.glob("doc0-*/data.*"))[0]
    flipped = bytearray(data.read_bytes())
    flipped[100] ^= 0x40
    data.write_bytes(bytes(flipped))
    os.truncate(sorted(root.glob("doc1-*/data.*"))[0], 10)
    spec = f"folder://{root}"
    damaged = run(env, "verify", spec, "--format", "json")
    assert damaged.returncode == 3, damaged.stderr
    found = {(p["problem"], p["key"]) for p in json.loads(damaged.stdout)["problems"]}
    assert found == {("checksum", "doc0"), ("truncated", "doc1")}
    assert run_json(env, "verify", spec, "--fix", "--dry-run", status=3)["fixed"] == 0
    assert run_json(env, "verify", spec, "--fix")["fixed"] == 2
    assert run_json(env, "verify", spec)["checked"] == 2
