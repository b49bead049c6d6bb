"""HMAC-SHA256 signing of entries, and where the secret comes from.

The secret is, in order: the ``secret=`` argument, ``$TIERS_SECRET``, or a random 256-bit key
kept in a per-user file (mode 0600, created on first use) in the user's config directory.
A key file that cannot be created or read is a `ConfigError` saying so, and what to do.

Each key has a *key id*: the first `KEY_ID_SIZE` bytes of HMAC-SHA256(key, `_KEY_ID_DOMAIN`).
Signed entries carry it, so that a reader tells "signed with another key" from "tampered with".
Like any MAC, it reveals nothing of the key (HMAC is a pseudorandom function of the key); it
lets someone holding a guess of the key check that guess, which every signed entry's MAC
already does, and no entry MAC can be forged from it (its input is domain-separated from theirs).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from .._fileio import pread_exact
from .._paths import make_private_dirs, user_config_dir
from ..errors import ConfigError

MAC_SIZE = 32
KEY_ID_SIZE = 8
_KEY_ID_DOMAIN = b"tiers-key-id-v1\0"  # entry MACs start with b"tiers-entry-mac-": never equal
_MIN_SECRET = 16
_KEY_FILE = "secret.key"


class Signer:
    """HMAC-SHA256 with the key's inner and outer pads hashed once (fast for small entries)."""

    __slots__ = ("_inner", "_outer", "key_id")

    def __init__(self, secret: bytes) -> None:
        if len(secret) > 64:
            secret = hashlib.sha256(secret).digest()
        padded = secret.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
        self.key_id = self.sign((_KEY_ID_DOMAIN,))[:KEY_ID_SIZE]
        """Names the key among others, revealing nothing of it (see the module docstring)."""

    def sign(self, parts: Iterable[bytes | bytearray | memoryview]) -> bytes:
        inner = self._inner.copy()
        for part in parts:
            inner.update(part)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def verify(
        self, mac: bytes | memoryview, parts: Iterable[bytes | bytearray | memoryview]
    ) -> bool:
        return hmac.compare_digest(bytes(mac), self.sign(parts))


def resolve_secret(secret: str | bytes | None) -> bytes:
    """The signing key: the argument, ``$TIERS_SECRET`` or the per-user key file."""
    if secret is None:
        env = os.environ.get("TIERS_SECRET")
        if env is None:
            return _load_or_create_key_file(_key_file_path())
        secret, origin = env, "TIERS_SECRET"
    else:
        origin = "secret"
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes):
        raise ConfigError(f"{origin} must be str or bytes, not {type(secret).__qualname__!r}")
    if len(secret) < _MIN_SECRET:
        raise ConfigError(
            f"{origin} must be at least {_MIN_SECRET} bytes long (got {len(secret)}); "
            "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return secret


_REMEDY = "set TIERS_SECRET or pass secret="


def _key_file_path() -> Path:
    try:
        return user_config_dir() / _KEY_FILE
    except (RuntimeError, KeyError, OSError) as exc:  # Path.home(): no HOME, no passwd entry
        raise ConfigError(
            f"cannot locate the signing key file: no config directory ({_reason(exc)}); "
            f"{_REMEDY} (or TIERS_CONFIG_DIR)"
        ) from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _load_or_create_key_file(path: Path) -> bytes:
    """The key in `path`, created first if there is none; `ConfigError` if that fails."""
    try:
        return _read_key_file(path)
    except (FileNotFoundError, NotADirectoryError):  # (a parent that is a file: fails below)
        pass
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    try:
        _create_key_file(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the signing key file {path} ({_reason(exc)}); {_REMEDY}"
        ) from exc
    try:
        return _read_key_file(path)
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot read the signing key file {path} ({_reason(exc)}); fix or delete it, or {_REMEDY}"
    )


def _create_key_file(path: Path) -> None:
    """Write a new random key to `path` unless another process got there first (then theirs
    is kept); `OSError` if the directory or the file cannot be made."""
    make_private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            data = secrets.token_hex(32).encode("ascii")
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # fails if another process created it first: then use theirs
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _read_key_file(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(
                f"the signing key file {path} is not a regular file; remove it, or {_REMEDY}"
            )
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise ConfigError(f"the signing key file {path} belongs to another user; remove it")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigError(
                f"the signing key file {path} is readable by others; run: chmod 600 {path}"
            )
        data = pread_exact(fd, 4096, 0).strip()  # (whole: a short read is a shorter key)
    finally:
        os.close(fd)
    if len(data) < _MIN_SECRET:
        raise ConfigError(
            f"the signing key file {path} is too short ({len(data)} bytes, damaged); "
            f"delete it to make a new one, or {_REMEDY}"
        )
    return data
