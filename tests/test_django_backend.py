"""tiers.django.TiersCache: Django's own cache tests (`BaseCacheTests` of the pinned Django, fetched
by scripts/fetch_django_tests.py) over memory+disk and over Redis, and the async methods, which
Django does not test for a third-party backend."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
import unittest
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

django = pytest.importorskip("django")

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / ".cache" / "django-tests"
BACKEND = "tiers.django.TiersCache"

# Tests of BaseCacheTests a TiersCache class overrides or skips, with the reason; each one is
# listed in docs/django.md. None.
OVERRIDDEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def django_tests() -> Iterator[ModuleType]:
    """Django set up as its own test settings do (tests/test_sqlite.py: sqlite in memory,
    USE_TZ=False), with its test databases, and Django's ``cache.tests`` module imported."""
    fetch = [sys.executable, str(ROOT / "scripts" / "fetch_django_tests.py"), "--dest", str(SUITE)]
    subprocess.run(fetch, check=True)
    assert (SUITE / "VERSION").read_text().strip() == django.get_version(), (
        "the fetched tests are not those of the installed Django: pip install -e '.[dev]'"
    )
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3"}},
            INSTALLED_APPS=["cache"],  # (Django's tests/cache/: the Poll model)
            SECRET_KEY="django_tests_secret_key",  # noqa: S106 (Django's test value)
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
            USE_TZ=False,
        )
    if str(SUITE) not in sys.path:
        sys.path.insert(0, str(SUITE))
    django.setup()
    from django.test.runner import DiscoverRunner

    runner = DiscoverRunner(verbosity=0, interactive=False)
    runner.setup_test_environment()
    databases = runner.setup_databases()
    try:
        import cache.tests  # type: ignore[import-not-found]

        yield cache.tests
    finally:
        runner.teardown_databases(databases)
        runner.teardown_test_environment()
        from tiers import django as backend

        backend._close_all()


def run_base_cache_tests(tests: ModuleType, name: str, location: object) -> None:
    """Run Django's BaseCacheTests as Django declares them for its own backends (as
    `LocMemCacheTests`: the class, with ``override_settings(CACHES=caches_setting_for_tests(
    BACKEND=..., LOCATION=...))``); fail unless every test ran and passed."""
    from django.test import TestCase, override_settings

    caches = tests.caches_setting_for_tests(BACKEND=BACKEND, LOCATION=location)
    case = override_settings(CACHES=caches)(
        type(name, (tests.BaseCacheTests, TestCase), {"__module__": __name__, **OVERRIDDEN})
    )
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    declared = unittest.defaultTestLoader.getTestCaseNames(tests.BaseCacheTests)
    out = io.StringIO()
    result = unittest.TextTestRunner(stream=out, verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    print(
        f"{name}: Django {django.get_version()} BaseCacheTests: ran {result.testsRun} of "
        f"{len(declared)}, skipped {len(result.skipped)}, overridden {len(OVERRIDDEN)}, "
        f"failed {failed}"
    )
    assert failed == 0, out.getvalue()
    assert result.testsRun == len(declared) >= 50  # (54 in Django 5.2)
    assert [test.id() for test, _reason in result.skipped] == []


def test_django_base_cache_tests_over_memory_and_disk(
    django_tests: ModuleType, tmp_path: Path
) -> None:
    location = ["memory://?max_items=10000", str(tmp_path / "disk")]
    run_base_cache_tests(django_tests, "TiersMemoryDiskCacheTests", location)


def test_django_base_cache_tests_over_redis(django_tests: ModuleType, redis_url: str) -> None:
    run_base_cache_tests(django_tests, "TiersRedisCacheTests", redis_url)


# -- the async methods, close(), shared stores ------------------------------------------------


@pytest.fixture(params=["memory+disk", "redis"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return ["memory://?max_items=1000", str(tmp_path / "disk")]


def backend(location: object, **params: Any) -> Any:
    from tiers.django import TiersCache

    return TiersCache(location, {"TIMEOUT": 300, **params})


@pytest.fixture
def no_sync_to_async(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make Django's `sync_to_async` fallback of BaseCache fail: every ``a*`` method must use
    tiers' own ``*_async`` methods."""
    from django.core.cache.backends import base

    def refused(*args: object, **kwargs: object) -> Any:
        raise AssertionError("a TiersCache async method went through sync_to_async")

    monkeypatch.setattr(base, "sync_to_async", refused)


@pytest.mark.usefixtures("no_sync_to_async")
def test_every_async_method_uses_tiers_async_methods(location: object) -> None:
    cache = backend(location)

    async def scenario() -> None:
        assert await cache.aget("absent") is None
        assert await cache.aget("absent", "default") == "default"
        await cache.aset("k", {"a": [1]})
        assert await cache.aget("k") == {"a": [1]}
        assert await cache.ahas_key("k") is True
        assert await cache.aadd("k", "other") is False
        assert await cache.aadd("new", "added") is True
        assert await cache.aget("new") == "added"
        assert await cache.aadd("never", "x", timeout=0) is True
        assert await cache.ahas_key("never") is False
        await cache.aset("gone", 1, timeout=-1)
        assert await cache.ahas_key("gone") is False

        await cache.aset("n", 41)
        assert await cache.aincr("n") == 42
        assert await cache.adecr("n", 2) == 40
        assert await cache.aget("n") == 40
        with pytest.raises(ValueError, match="not found"):
            await cache.aincr("no-counter")
        await cache.aset("text", "x")
        with pytest.raises(TypeError):
            await cache.aincr("text")

        assert await cache.aset_many({"m1": 1, "m2": [2]}) == []
        assert await cache.aget_many(["m1", "m2", "absent"]) == {"m1": 1, "m2": [2]}
        await cache.adelete_many(["m1", "m2"])
        assert await cache.aget_many(["m1", "m2"]) == {}

        assert await cache.atouch("k", timeout=None) is True
        assert await cache.atouch("absent") is False
        assert await cache.atouch("new", timeout=0) is True
        assert await cache.ahas_key("new") is False
        assert await cache.adelete("k") is True
        assert await cache.adelete("k") is False

        calls: list[int] = []

        async def compute() -> str:
            calls.append(1)
            return "computed"

        assert await cache.aget_or_set("lazy", compute) == "computed"
        assert await cache.aget_or_set("lazy", compute) == "computed"
        assert calls == [1]
        assert await cache.aget_or_set("plain", lambda: [1, 2]) == [1, 2]
        assert await cache.aget_or_set("value", 7, timeout=0) == 7
        assert await cache.ahas_key("value") is False

        await cache.aset("v", "one", version=1)
        assert await cache.aincr_version("v") == 2
        assert await cache.aget("v", version=2) == "one"
        assert await cache.ahas_key("v", version=1) is False
        assert await cache.adecr_version("v", version=2) == 1
        assert await cache.aget("v", version=1) == "one"

        await cache.aclose()
        assert await cache.aget("v") == "one"
        await cache.aclear()
        assert await cache.aget("v") is None
        assert await cache.aget("lazy") is None

    asyncio.run(scenario())


def test_async_increments_are_not_lost(location: object) -> None:
    cache = backend(location)
    cache.set("hits", 0)

    async def crowd() -> None:
        await asyncio.gather(*(cache.aincr("hits") for _ in range(50)))

    asyncio.run(crowd())
    threads = [threading.Thread(target=lambda: [cache.incr("hits") for _ in range(50)])]
    threads.append(threading.Thread(target=lambda: [cache.decr("hits") for _ in range(25)]))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get("hits") == 75


def test_values_read_are_copies(location: object) -> None:
    """As with Django's own backends, changing a value read (or written) never changes what
    the cache holds, even when a memory tier answers."""
    cache = backend(location)
    written = {"cookies": ["a"]}
    cache.set("response", written)
    written["cookies"].append("changed after set")
    read = cache.get("response")
    read["cookies"].append("changed after get")
    assert cache.get("response") == {"cookies": ["a"]}
    assert cache.get_many(["response"]) == {"response": {"cookies": ["a"]}}
    assert asyncio.run(cache.aget("response")) == {"cookies": ["a"]}


def test_json_values_read_from_memory_are_copies(tmp_path: Path) -> None:
    cache = backend(["memory://", str(tmp_path / "d")], OPTIONS={"serializer": "json"})
    cache.set("data", {"items": [1]})
    cache.get("data")["items"].append(2)
    assert cache.get("data") == {"items": [1]}
    assert cache.get("data") is not cache.get("data")


def test_safe_strings_stay_safe(location: object) -> None:
    """A template fragment (a `SafeString`, a str subclass) comes back safe, so the template
    that caches it does not escape it when it is read back."""
    from django.utils.safestring import SafeString, mark_safe

    cache = backend(location)
    cache.set("fragment", mark_safe("<b>bold</b>"))
    assert type(cache.get("fragment")) is SafeString
    assert type(asyncio.run(cache.aget("fragment"))) is SafeString


def test_close_after_a_request_keeps_the_cache_working(
    django_tests: ModuleType, tmp_path: Path
) -> None:
    from django.core import signals
    from django.core.cache import caches
    from django.test import override_settings

    location = ["memory://", str(tmp_path / "disk")]
    with override_settings(CACHES={"default": {"BACKEND": BACKEND, "LOCATION": location}}):
        cache = caches["default"]
        cache.set("session", "data")
        signals.request_finished.send(sender=None)  # Django closes every cache it opened
        cache.close()
        asyncio.run(cache.aclose())
        assert cache.get("session") == "data"
        cache.set("after", 1)
        assert caches["default"].get("after") == 1
        assert not cache.cache._closed


def test_aliases_with_one_location_share_one_store(
    django_tests: ModuleType, tmp_path: Path
) -> None:
    from django.core.cache import caches
    from django.test import override_settings

    location = ["memory://", str(tmp_path / "disk")]
    same = {"BACKEND": BACKEND, "LOCATION": location, "OPTIONS": {"namespace": "app"}}
    setting = {
        "default": same,
        "views": {**same, "TIMEOUT": 60, "KEY_PREFIX": "views"},
        "culled": {**same, "OPTIONS": {"namespace": "app", "MAX_ENTRIES": 1000}},
        "other": {**same, "OPTIONS": {"namespace": "other"}},
    }
    with override_settings(CACHES=setting):
        assert caches["default"].cache is caches["views"].cache is caches["culled"].cache
        assert caches["other"].cache is not caches["default"].cache
        caches["default"].set("k", "v")
        assert caches["culled"].get("k") == "v"
        assert caches["views"].get("k") is None  # (its KEY_PREFIX)
        assert caches["other"].get("k") is None
        seen: list[object] = []
        thread = threading.Thread(target=lambda: seen.append(caches["default"].cache))
        thread.start()
        thread.join()
        assert seen == [caches["default"].cache]  # (another thread, another TiersCache)


def test_max_entries_culls_only_when_set(tmp_path: Path) -> None:
    unbounded = backend(["memory://", str(tmp_path / "a")])
    unbounded.set_many({f"k{i}": i for i in range(320)})  # (Django's default MAX_ENTRIES: 300)
    assert len(unbounded.get_many([f"k{i}" for i in range(320)])) == 320
    bounded = backend(["memory://", str(tmp_path / "b")], OPTIONS={"MAX_ENTRIES": 10})
    for i in range(25):
        bounded.set(f"k{i}", i)
    assert len(list(bounded.cache.keys())) <= 10

    async def more() -> None:
        for i in range(25):
            await bounded.aset(f"a{i}", i)

    asyncio.run(more())
    assert 5 <= len(list(bounded.cache.keys())) <= 10
    assert bounded.get("a24") == 24


def test_options_are_checked(tmp_path: Path) -> None:
    from tiers.errors import ConfigError

    with pytest.raises(ConfigError, match="TIMEOUT"):
        backend(str(tmp_path / "d"), OPTIONS={"ttl": 5})
    with pytest.raises(TypeError, match="CLIENT_CLASS"):
        backend(str(tmp_path / "d"), OPTIONS={"CLIENT_CLASS": "django_redis.client.DefaultClient"})


def test_missing_django_names_the_extra() -> None:
    code = "import sys; sys.modules['django'] = None; import tiers.django"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "pip install 'tiers[django]'" in done.stderr
