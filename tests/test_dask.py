"""tiers on a real Dask LocalCluster (2 worker processes): one cache per worker through
`tiers.dask.CachePlugin`, and one computation per key across workers through a shared tier."""

from __future__ import annotations

import pickle
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

import tiers  # noqa: E402
import tiers.dask  # noqa: E402
from tests import _dask_tasks as tasks  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=4, host="127.0.0.1",
        dashboard_address=None, scheduler_port=0, silence_logs=50,
    ) as local:  # fmt: skip
        yield local


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster) as connected:
        yield connected


def shared_tiers(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[object, ...]:
    """A memory tier over a tier every worker process shares (started on demand)."""
    if kind == "disk":
        return (tiers.MemoryStore(), tiers.DiskStore(tmp_path / "shared"))
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        return (tiers.MemoryStore(), tiers.RedisStore(url, prefix=f"dask-{uuid.uuid4().hex}:"))
    if kind == "s3":
        s3 = request.getfixturevalue("moto_s3")
        shared = tiers.ObjectStore(f"s3://{s3.new_bucket()}/cache", **s3.store_options())
        return (tiers.MemoryStore(), shared)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["disk", "redis", "s3"])
@pytest.mark.parametrize(
    "task", [tasks.with_get_or_set, tasks.with_memoize], ids=["get_or_set", "memoize"]
)
def test_forty_tasks_over_ten_keys_compute_ten_times(
    client: Any,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kind: str,
    task: Callable[[int, str], int],
) -> None:
    """40 tasks over 10 keys, each computation 0.3 s, on 2 worker processes: exactly 10 runs."""
    log = tmp_path / "computations.log"
    shared = shared_tiers(kind, request, tmp_path)
    client.register_plugin(tiers.dask.CachePlugin(*shared, lease=10))
    futures = client.map(task, range(40), log=str(log), pure=False)
    results = client.gather(futures)
    assert results == [(i % 10) ** 2 for i in range(40)]
    lines = log.read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in lines) == list(range(10)), lines
    pids = {line.split()[1] for line in lines}
    assert len(pids) == 2, "both workers computed (so the single-flight crossed processes)"


def test_each_worker_keeps_one_cache(client: Any, tmp_path: Path) -> None:
    client.register_plugin(tiers.dask.CachePlugin("memory://", name="local"))

    def identity() -> int:
        return id(tiers.dask.worker_cache("local"))

    seen = client.gather(client.map(lambda _i: identity(), range(20), pure=False))
    assert len(set(seen)) == 2  # one Cache object per worker, reused by every task


def test_worker_cache_outside_a_worker() -> None:
    assert tiers.dask.worker_cache() is tiers.default_cache()
    with pytest.raises(RuntimeError, match="outside a Dask worker"):
        tiers.dask.worker_cache("other")


def test_unregistered_cache_is_a_clear_error(client: Any) -> None:
    future = client.submit(tiers.dask.worker_cache, "missing", pure=False)
    with pytest.raises(RuntimeError, match="register it first"):
        future.result()


def test_the_plugin_travels_without_a_cache(tmp_path: Path) -> None:
    plugin = tiers.dask.CachePlugin(tmp_path / "d", ttl=5)
    plugin.setup(worker=None)
    assert plugin.cache is not None
    copy = pickle.loads(pickle.dumps(plugin))
    assert copy.cache is None and copy.cache_options == {"ttl": 5}
    plugin.teardown(worker=None)


def test_memoize_outside_a_worker_uses_the_default_cache(tmp_path: Path) -> None:
    log = tmp_path / "log"
    assert tasks.memoized_square(3, str(log)) == 9
    assert tasks.memoized_square(3, str(log)) == 9
    assert log.read_text().count("\n") == 1
    assert tiers.default_cache().info(tasks.memoized_square.key(3, str(log))) is not None


def test_missing_distributed_names_the_extra() -> None:
    code = "import sys; sys.modules['distributed'] = None; import tiers.dask"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert 'pip install "tiers[dask]"' in done.stderr
