"""Failures people can see and configuration that cannot go quietly wrong: S3 configured by
the environment alone, failing tiers logged at WARNING (rate-limited), health checks, hints
for other libraries' option names, values that do not depend on the tier, and memoized
functions that clear only their own entries on shared tiers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tiers
from tests._servers import CREDENTIALS, REGION
from tests._tiers import install_clock
from tiers import Cache, ObjectStore
from tiers._cache import _breaker
from tiers.testing import FakeClock


@pytest.fixture(params=["moto", "seaweed"])
def s3(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_s3")


def _environment_only(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """How people point tools at MinIO, localstack, SeaweedFS or moto: AWS_* variables."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")


def test_s3_configured_by_the_environment_alone_works(
    s3: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """AWS_ENDPOINT_URL, keys, region and AWS_ALLOW_HTTP=true: a bare URL works, and two
    caches share what they write (before: every call failed with "builder error")."""
    _environment_only(monkeypatch, s3.endpoint)
    bucket = s3.new_bucket()
    with Cache(f"s3://{bucket}/prefix/", on_tier_error="raise") as cache:
        cache.set("k", {"v": 1}, tags=("t",))
        assert cache.get("k") == {"v": 1}
    with Cache("memory://", f"s3://{bucket}/prefix/", on_tier_error="raise") as other:
        assert other.get("k") == {"v": 1}
        assert [h.ok for h in other.check()] == [True, True]


def test_a_wrong_endpoint_is_a_warning_on_the_first_failed_call(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Degrade mode keeps working from memory, but the first failed write is a WARNING that
    names the tier, without a doubled "tiers:" prefix."""
    from tests._servers import free_port

    _environment_only(monkeypatch, f"http://127.0.0.1:{free_port()}")
    with (
        caplog.at_level(logging.WARNING, logger="tiers"),
        Cache("memory://", "s3://nowhere/p/") as cache,
    ):
        cache.set("k", 1)
        assert cache.get("k") == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings, "a failing shared tier went unnoticed"
    first = warnings[0].getMessage()
    assert "s3://nowhere/p/" in first and "failed to set" in first
    assert not first.startswith("tiers:")


def test_failures_are_warned_once_per_operation_then_rate_limited(
    redis_process: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first failure of each operation is a WARNING; later ones are counted and told in
    the next WARNING; opening the breaker is a WARNING and its closing an INFO."""
    monkeypatch.setattr(_breaker, "THRESHOLD", 1000)  # (not opening: the rate limit alone)
    clock = FakeClock()
    with Cache("memory://", redis_process.url) as cache:
        install_clock(cache, clock, stores=False)
        redis_process.kill()
        with caplog.at_level(logging.DEBUG, logger="tiers"):
            for i in range(5):
                cache.set(f"k{i}", i)
            cache.delete("k0")
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len([m for m in warned if "failed to set" in m]) == 1
        (deleted,) = [m for m in warned if "failed to delete" in m]
        assert deleted.endswith("; 4 other failures since the last warning")
        cache.set("a", 1), cache.set("b", 2)  # (unsaid)
        caplog.clear()
        clock.advance(_breaker.QUIET)  # a minute later
        with caplog.at_level(logging.WARNING, logger="tiers"):
            cache.set("late", 1)
        assert "failed to set" in caplog.text
        assert "; 2 other failures since the last warning" in caplog.text


def test_the_breaker_says_when_it_opens_and_closes(
    redis_process: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    with Cache("memory://", redis_process.url) as cache:
        install_clock(cache, clock, stores=False)
        redis_process.freeze()
        try:
            with caplog.at_level(logging.INFO, logger="tiers"):
                for i in range(3):
                    cache.set(f"k{i}", i)
        finally:
            redis_process.thaw()
        clock.advance(_breaker.COOLDOWN)
        with caplog.at_level(logging.INFO, logger="tiers"):
            cache.set("after", 1)
    opened = [r for r in caplog.records if "skipping it" in r.getMessage()]
    closed = [r for r in caplog.records if "answers again" in r.getMessage()]
    assert [r.levelno for r in opened] == [logging.WARNING]
    assert [r.levelno for r in closed] == [logging.INFO]


def test_check_reports_each_tier(redis_process: Any, tmp_path: Path) -> None:
    """check(): per tier whether it answered, how fast, and why not (for readiness probes)."""
    with Cache("memory://", str(tmp_path / "d"), redis_process.url) as cache:
        health = cache.check()
        assert [h.ok for h in health] == [True, True, True]
        assert [h.tier for h in health] == [0, 1, 2]
        assert all(0 <= h.seconds < 1 and h.error is None for h in health)
        redis_process.kill()
        health = cache.check()
        assert [h.ok for h in health] == [True, True, False]
        assert "redis" in health[2].store.lower() and health[2].error


def test_check_async_reports_each_tier(tmp_path: Path) -> None:
    async def check() -> list[bool]:
        async with Cache("memory://", str(tmp_path / "d")) as cache:
            return [h.ok for h in await cache.check_async()]

    assert asyncio.run(check()) == [True, True]


@pytest.mark.parametrize(
    ("call", "hint"),
    [
        (lambda: Cache("memory://", expire=60), "Cache() got an unexpected keyword argument "
                                                "'expire'; use ttl="),
        (lambda: Cache("memory://", tag="x"), "use tags="),
        (lambda: Cache("memory://").set("k", 1, expire=3), "Cache.set() got an unexpected "
                                                           "keyword argument 'expire'; use ttl="),
        (lambda: Cache("memory://").get_or_set("k", int, expire=3), "use ttl="),
        (lambda: Cache("memory://").memoize(tag="t"), "Cache.memoize() got an unexpected "
                                                      "keyword argument 'tag'; use tags="),
        (lambda: Cache("memory://", maxsize=10), "max_items= of a MemoryStore tier"),
    ],
)  # fmt: skip
def test_other_libraries_option_names_say_what_to_use(call: Any, hint: str) -> None:
    """diskcache's expire=/tag=, cachetools' maxsize=: a TypeError naming the public call and
    tiers' option, never a private class."""
    with pytest.raises(TypeError) as raised:
        call()
    assert hint in str(raised.value)
    assert "Core" not in str(raised.value) and "Ops" not in str(raised.value)


@pytest.mark.parametrize("tiers_spec", [("memory://",), ("memory://", "DISK"), ("DISK",)])
def test_a_json_value_reads_the_same_from_every_tier(
    tiers_spec: tuple[str, ...], tmp_path: Path
) -> None:
    """With serializer="json", what a memory tier gives back is what the disk gives back
    (a tuple is a list, int keys are strings), and what the disk refuses memory refuses."""
    spec = [str(tmp_path / "d") if t == "DISK" else t for t in tiers_spec]
    with Cache(*spec, serializer="json") as cache:
        cache.set("t", (1, 2))
        cache.set("d", {1: "a"})
        assert cache.get("t") == [1, 2] and cache.get("d") == {"1": "a"}
        assert cache.get_or_set("g", lambda: (3, 4)) == [3, 4]
        assert cache.get("g") == [3, 4]
        with pytest.raises(tiers.errors.SerializationError):
            cache.set("s", {1, 2})
        assert "s" not in cache


@pytest.fixture
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    kind = request.param
    if kind == "redis":
        yield request.getfixturevalue("redis_url")
    else:
        s3 = request.getfixturevalue("moto_s3")
        yield ObjectStore(f"s3://{s3.new_bucket()}/p/", **s3.store_options())


@pytest.mark.parametrize("shared", ["redis", "s3"], indirect=True)
def test_a_memoized_function_clears_only_its_own_entries_on_a_shared_tier(shared: Any) -> None:
    """joblib's fit.clear() is fit.clear(): the other function's entries stay (before, the
    migration notes said fit.cache.clear(), which empties the whole store)."""
    with Cache("memory://", shared, serializer="json") as cache:

        @cache.memoize
        def double(x: int) -> int:
            return 2 * x

        @cache.memoize
        def square(x: int) -> int:
            return x * x

        for x in range(5):
            double(x), square(x)
        assert double.clear() == 5
        assert all(square.key(x) in cache for x in range(5))
        assert not any(double.key(x) in cache for x in range(5))


def test_diskcache_add_is_get_or_set(tmp_path: Path) -> None:
    """The migration note: diskcache's add(key, value) stores only if absent, as
    get_or_set(key, lambda: value) does; tiers' add(value) keys a value by its content."""
    with Cache(str(tmp_path / "d")) as cache:
        assert cache.get_or_set("k", lambda: "first") == "first"
        assert cache.get_or_set("k", lambda: "second") == "first"
        key = cache.add("content")
        assert cache.get(key) == "content" and cache.add("content") == key
        with pytest.raises(TypeError):
            cache.add("k", "v")  # type: ignore[call-arg]
