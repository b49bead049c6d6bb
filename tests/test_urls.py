"""Tier specs given as strings: a URL means what it says or is refused, never a folder named
after it. ``disk:///abs`` and ``folder:///abs`` are the URL forms of local stores (three
slashes); ``disk:/x``, ``disk://rel`` and ``word:...`` strings that look like a URL of a scheme
tiers does not know are errors; a plain path, and anything that already exists, is a path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tiers
from tests._tiers import store_of
from tiers import DiskStore, FolderStore
from tiers._stores._url import SCHEMES, tier_opener
from tiers.errors import ConfigError


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (where a misread URL used to become a folder)."""
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    return here


def _open(spec: object) -> object:
    store, _owned = tier_opener(spec)()
    return store


@pytest.mark.parametrize("spec", ["disk:/var/cache/x", "folder:/srv/results"])
def test_one_slash_is_refused_and_names_the_three_slash_form(cwd: Path, spec: str) -> None:
    scheme, path = spec.split(":", 1)
    with pytest.raises(ConfigError) as caught:
        tiers.Cache(spec)
    assert f"{scheme}://{path}" in str(caught.value)  # disk:///var/cache/x
    assert list(cwd.iterdir()) == [], "a folder was made for a URL"


@pytest.mark.parametrize("spec", ["disk://rel", "folder://rel", "disk://rel/sub?max_size=1MB"])
def test_two_slashes_and_a_relative_path_are_refused(cwd: Path, spec: str) -> None:
    with pytest.raises(ConfigError, match="three slashes before an absolute path") as caught:
        tier_opener(spec)
    assert ". " not in str(caught.value)  # one sentence
    assert list(cwd.iterdir()) == []


def test_three_slashes_open_the_absolute_path(cwd: Path, tmp_path: Path) -> None:
    disk = _open(f"disk://{tmp_path}/d?max_size=1MB")
    folder = _open(f"folder://{tmp_path}/f")
    try:
        assert isinstance(disk, DiskStore) and disk.directory == (tmp_path / "d").resolve()
        assert isinstance(folder, FolderStore) and folder.directory == (tmp_path / "f").resolve()
    finally:
        disk.close()
        folder.close()
    assert list(cwd.iterdir()) == []


def test_a_unix_socket_url_is_a_redis_tier(cwd: Path) -> None:
    pytest.importorskip("redis")
    from tiers import RedisStore

    cache = tiers.Cache("memory://", "unix:///run/redis/redis.sock?db=1")  # never connects
    try:
        assert isinstance(store_of(cache, 1), RedisStore)
    finally:
        cache.close()
    with pytest.raises(ConfigError, match="unix://"):
        tier_opener("unix:/run/redis/redis.sock")  # one slash: not a URL


def _listed(message: str) -> list[str]:
    return re.findall(r"([a-z0-9+.-]+)://", message.split("; use ", 1)[1])


def test_the_unknown_scheme_error_lists_every_accepted_scheme(cwd: Path) -> None:
    with pytest.raises(ConfigError, match="unknown store URL scheme 'bogus'") as caught:
        tier_opener("bogus://x")
    listed = _listed(str(caught.value))
    assert listed == list(SCHEMES)
    for scheme in ("rediss+cluster", "s3a", "azure", "unix"):
        assert scheme in listed


def test_every_scheme_the_stores_accept_is_listed_and_every_listed_one_is_accepted() -> None:
    pytest.importorskip("redis")
    from tiers._stores._object._backend import REMOTE_SCHEMES
    from tiers._stores._redis._clients import _SCHEMES as REDIS_SCHEMES

    assert set(REDIS_SCHEMES) <= set(SCHEMES)
    assert REMOTE_SCHEMES | {"file", "memory"} <= set(SCHEMES)
    refused = []
    for scheme in SCHEMES:
        try:
            tier_opener(f"{scheme}://host/x")
        except ConfigError as exc:  # refused for its host or path, never for its scheme
            refused.append(str(exc))
    assert not [message for message in refused if "unknown" in message]


@pytest.mark.parametrize("spec", ["foo:bar", "C:cache", "cache:2024/run"])
def test_a_word_and_colon_that_is_no_known_scheme_is_refused(cwd: Path, spec: str) -> None:
    with pytest.raises(ConfigError, match="unknown scheme") as caught:
        tiers.Cache(spec)
    assert f"./{spec}" in str(caught.value)  # says how to mean a directory
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("spec", ["memory:", "redis:localhost:6379", "null:"])
def test_a_known_scheme_without_slashes_is_refused(cwd: Path, spec: str) -> None:
    scheme = spec.split(":", 1)[0]
    with pytest.raises(ConfigError, match=f"starts with {scheme}://"):
        tier_opener(spec)


def test_paths_with_colons_that_are_meant_as_paths_still_work(cwd: Path, tmp_path: Path) -> None:
    (cwd / "notes:2024").mkdir()  # exists: a path, whatever it looks like
    specs = ["notes:2024", "./foo:bar", str(tmp_path / "abs:dir"), "sub/x:y", Path("p:q")]
    for spec in specs:
        store = _open(spec)
        assert isinstance(store, DiskStore)
        store.close()
    assert (cwd / "foo:bar").is_dir() and (cwd / "sub" / "x:y").is_dir()
    assert (cwd / "p:q").is_dir() and (tmp_path / "abs:dir").is_dir()


def test_an_empty_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="must not be empty"):
        tier_opener("")
