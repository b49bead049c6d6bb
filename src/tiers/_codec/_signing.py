"""HMAC-SHA256 signing of entries, and where the secret comes from.

The secret is, in order: the ``secret=`` argument, ``$TIERS_SECRET``, or a random 256-bit key
kept in a per-user file (mode 0600, created on first use) in the user's config directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from .._paths import make_private_dirs, user_config_dir
from ..errors import ConfigError

MAC_SIZE = 32
_MIN_SECRET = 16
_KEY_FILE = "secret.key"


class Signer:
    """HMAC-SHA256 with the key's inner and outer pads hashed once (fast for small entries)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret: bytes) -> None:
        if len(secret) > 64:
            secret = hashlib.sha256(secret).digest()
        padded = secret.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

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
            return _load_or_create_key_file(user_config_dir() / _KEY_FILE)
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


def _load_or_create_key_file(path: Path) -> bytes:
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    make_private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secrets.token_hex(32).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process created it first: then use theirs
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise ConfigError(f"the signing key file {path} belongs to another user; remove it")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigError(
                f"the signing key file {path} is readable by others; run: chmod 600 {path}"
            )
        data = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    if len(data) < _MIN_SECRET:
        raise ConfigError(f"the signing key file {path} is too short; delete it to make a new one")
    return data
