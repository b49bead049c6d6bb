"""Shared test set-up: every test runs with its own config and cache directories."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", default=False, help="run the long soak tests too"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove the shared-memory generation tables of the stores this session made (their
    directories stay for inspection, so the library's own sweep would keep the tables)."""
    from tiers._stores._generations import sweep

    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        sweep(only_under=Path(os.path.realpath(factory.getbasetemp())))


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the signing key and the default cache out of the real home directory."""
    base = tmp_path_factory.mktemp("user")
    saved = {name: os.environ.get(name) for name in ("TIERS_CONFIG_DIR", "TIERS_CACHE_DIR")}
    os.environ["TIERS_CONFIG_DIR"] = str(base / "config")
    os.environ["TIERS_CACHE_DIR"] = str(base / "cache")
    os.environ.pop("TIERS_SECRET", None)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A path for a new DiskStore (not created yet)."""
    return tmp_path / "store"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs mounted for the test, to fill a disk for real (needs root on Linux)."""
    if sys.platform != "linux" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# -- real servers (tests/_servers.py), started when a test asks for them -------------------------


def _started(make: Callable[[], Any]) -> Any:
    """Start a server; a missing binary fails under `make test`, else skips with the reason."""
    from tests._servers import ServerMissing

    try:
        return make()
    except ServerMissing as exc:
        if os.environ.get("TIERS_REQUIRE_SERVERS"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One redis-server for the session; `redis_url` empties it before each test."""
    from tests._servers import RedisServer

    server = _started(lambda: RedisServer(tmp_path_factory.mktemp("redis")).start())
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return str(redis_server.url)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A 6-node Redis Cluster (3 primaries, 3 replicas) for the session."""
    from tests._servers import RedisCluster

    cluster = _started(lambda: RedisCluster(tmp_path_factory.mktemp("cluster")).start())
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[Any]:
    """A redis-server of the test's own, to kill, freeze or restart empty."""
    from tests._servers import RedisServer

    server = _started(lambda: RedisServer(tmp_path / "redis").start())
    yield server
    server.kill()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[Any]:
    """moto's S3 server in a thread for the session; `new_bucket()` gives a fresh bucket."""
    from tests._servers import MotoS3

    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweed_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """SeaweedFS (weed mini) for the session: a second, real S3 server."""
    from tests._servers import SeaweedS3

    server = _started(lambda: SeaweedS3(tmp_path_factory.mktemp("seaweed") / "data").start())
    yield server
    server.kill()


@pytest.fixture
def s3_process(tmp_path: Path) -> Iterator[Any]:
    """An S3 server of the test's own (seaweedfs), to kill, freeze or restart empty."""
    from tests._servers import SeaweedS3

    server = _started(lambda: SeaweedS3(tmp_path / "seaweed").start())
    yield server
    server.kill()
