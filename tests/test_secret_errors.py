"""The signing key file fails clearly: a config directory (or HOME) that cannot be written, or a
key file that cannot be read or is damaged, is a one-sentence `ConfigError` naming the file,
what failed and what to do ("set TIERS_SECRET or pass secret="), never a raw `OSError`.

Tests run as root, which file modes do not stop: unwritable directories are made with a regular
file where a directory should be, or in a child process that drops to ``nobody``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import tiers
from tiers._codec import resolve_secret
from tiers.errors import ConfigError

REMEDY = "set TIERS_SECRET or pass secret="
ENV_SECRET = "a secret from the env, not a credential"  # noqa: S105


@pytest.fixture
def config_dir() -> Path:
    return Path(os.environ["TIERS_CONFIG_DIR"])  # per test: tests/conftest.py


def check_message(exc: ConfigError, key_file: Path, *fragments: str) -> None:
    text = str(exc)
    assert "\n" not in text and str(key_file) in text, text
    for fragment in fragments:
        assert fragment in text, text
    assert isinstance(exc, ValueError)  # ConfigError keeps `except ValueError` working


def test_a_config_dir_under_a_regular_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    monkeypatch.setenv("TIERS_CONFIG_DIR", str(blocker / "tiers"))
    with pytest.raises(ConfigError) as caught:
        resolve_secret(None)
    key_file = blocker / "tiers" / "secret.key"
    check_message(caught.value, key_file, "cannot create the signing key file", REMEDY)
    assert isinstance(caught.value.__cause__, OSError)  # the original error is kept
    assert str(caught.value).startswith(f"cannot create the signing key file {key_file} (")


def test_a_config_dir_that_is_a_regular_file_is_a_config_error(config_dir: Path) -> None:
    config_dir.parent.mkdir(parents=True, exist_ok=True)
    config_dir.write_text("a file where the config directory should be")
    with pytest.raises(ConfigError) as caught:
        resolve_secret(None)
    check_message(caught.value, config_dir / "secret.key", "cannot create", REMEDY)


def test_through_a_cache_the_error_comes_at_the_first_signed_use(
    tmp_path: Path, config_dir: Path
) -> None:
    config_dir.parent.mkdir(parents=True, exist_ok=True)
    config_dir.write_text("in the way")
    with tiers.Cache(tiers.DiskStore(tmp_path / "d"), secret=ENV_SECRET) as other:
        other.set("k", ["v"])
    store = tiers.DiskStore(tmp_path / "d")
    cache = tiers.Cache(store)
    with pytest.raises(ConfigError, match="cannot create the signing key file"):
        cache.set("j", ["w"])  # (a value that needs pickle: signed)
    with pytest.raises(ConfigError, match="TIERS_SECRET"):
        cache.get("k")
    assert store.get(":k") is not None  # a configuration problem is not the entry's fault
    json_cache = tiers.Cache(tiers.DiskStore(tmp_path / "j"), serializer="json")
    assert json_cache.get_or_set("k", lambda: 1) == 1  # unsigned: no key needed
    cache.close()
    json_cache.close()


def test_the_remedies_work_where_the_key_file_cannot_be_made(
    tmp_path: Path, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir.parent.mkdir(parents=True, exist_ok=True)
    config_dir.write_text("in the way")
    with tiers.Cache(tiers.DiskStore(tmp_path / "a"), secret=ENV_SECRET) as cache:
        cache.set("k", "v")
        assert cache.get("k") == "v"
    monkeypatch.setenv("TIERS_SECRET", ENV_SECRET)
    with tiers.Cache(tiers.DiskStore(tmp_path / "a")) as cache:
        assert cache.get("k") == "v"


def test_a_failed_write_leaves_no_temporary_file(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(ConfigError) as caught:
        resolve_secret(None)
    check_message(caught.value, config_dir / "secret.key", "(No space left on device)", REMEDY)
    assert list(config_dir.iterdir()) == []
    monkeypatch.undo()
    assert len(resolve_secret(None)) >= 32  # and the next try makes it


def test_no_home_directory_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    for name in ("TIERS_CONFIG_DIR", "XDG_CONFIG_HOME", "APPDATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    with pytest.raises(ConfigError) as caught:
        resolve_secret(None)
    assert "cannot locate the signing key file" in str(caught.value)
    assert REMEDY in str(caught.value) and "\n" not in str(caught.value)


# -- a key file that cannot be read, or is damaged ---------------------------------------------


def test_a_key_file_that_is_a_directory_is_a_config_error(config_dir: Path) -> None:
    (config_dir / "secret.key").mkdir(parents=True)
    with pytest.raises(ConfigError) as caught:
        resolve_secret(None)
    check_message(caught.value, config_dir / "secret.key", "not a regular file", REMEDY)


def test_a_key_file_that_is_a_symlink_is_a_config_error(config_dir: Path) -> None:
    config_dir.mkdir(parents=True)
    target = config_dir / "elsewhere"
    target.write_text("x" * 64)
    target.chmod(0o600)
    (config_dir / "secret.key").symlink_to(target)
    with pytest.raises(ConfigError) as caught:
        resolve_secret(None)
    check_message(caught.value, config_dir / "secret.key", "cannot read the signing key", REMEDY)


@pytest.mark.parametrize("content", [b"", b"\n", b"short", b"   15 bytes!!!!  \n"])
def test_a_damaged_key_file_is_a_config_error(config_dir: Path, content: bytes) -> None:
    config_dir.mkdir(parents=True)
    key_file = config_dir / "secret.key"
    key_file.write_bytes(content)
    key_file.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        resolve_secret(None)
    check_message(caught.value, key_file, "too short", "delete it", REMEDY)
    assert key_file.read_bytes() == content  # not replaced behind the user's back


def test_a_good_key_file_still_reads(config_dir: Path) -> None:
    first = resolve_secret(None)
    assert resolve_secret(None) == first == (config_dir / "secret.key").read_bytes().strip()


# -- for real, as an unprivileged user ---------------------------------------------------------

_AS_NOBODY = textwrap.dedent(
    """
    import os, sys
    from tiers._codec import resolve_secret
    from tiers.errors import ConfigError

    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    try:
        resolve_secret(None)
    except ConfigError as exc:
        print("ConfigError:", exc)
    except BaseException as exc:
        print("other:", type(exc).__name__, exc)
    else:
        print("no error")
    """
)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory `nobody` can reach (pytest's own are private to root)."""
    if not hasattr(os, "setuid") or os.geteuid() != 0:
        pytest.skip("dropping privileges needs root")
    base = Path(tempfile.mkdtemp(prefix="tiers-secret-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _as_nobody(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TIERS_", "XDG_"))}
    done = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY], env={**clean, **env}, cwd="/",
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_read_only_home_is_a_config_error(shared_tmp: Path) -> None:
    """The reported case: no TIERS_SECRET, HOME not writable: ~/.config/tiers cannot be made."""
    home = shared_tmp / "home"
    home.mkdir(mode=0o555)
    out = _as_nobody({"HOME": str(home)})
    key_file = home / ".config" / "tiers" / "secret.key"
    assert out == (
        f"ConfigError: cannot create the signing key file {key_file} (Permission denied); {REMEDY}"
    )


def test_an_unwritable_config_dir_is_a_config_error(shared_tmp: Path) -> None:
    config = shared_tmp / "config"
    config.mkdir(mode=0o555)
    out = _as_nobody({"TIERS_CONFIG_DIR": str(config)})
    assert out.startswith(f"ConfigError: cannot create the signing key file {config}/secret.key")
    assert out.endswith(f"(Permission denied); {REMEDY}")


def test_an_unreadable_key_file_is_a_config_error(shared_tmp: Path) -> None:
    config = shared_tmp / "config"
    config.mkdir(mode=0o755)
    key_file = config / "secret.key"
    key_file.write_text("k" * 64)
    os.chown(key_file, 65534, 65534)
    key_file.chmod(0o000)
    out = _as_nobody({"TIERS_CONFIG_DIR": str(config)})
    assert out == (
        f"ConfigError: cannot read the signing key file {key_file} (Permission denied); "
        f"fix or delete it, or {REMEDY}"
    )


def test_the_secret_from_the_env_needs_no_key_file(shared_tmp: Path) -> None:
    home = shared_tmp / "home"
    home.mkdir(mode=0o555)
    assert _as_nobody({"HOME": str(home), "TIERS_SECRET": ENV_SECRET}) == "no error"
    assert not (home / ".config").exists()
