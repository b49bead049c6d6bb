"""Per-user directories (where the default cache and the signing key live), and how tiers
creates directories: every one it makes is private (0700), parents included."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


def make_private_dirs(directory: Path) -> bool:
    """``mkdir -p`` where every directory created is 0700 whatever the umask, and synced into
    its parent; whether `directory` itself was created by this call."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    created = False
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            created = False
            continue
        os.chmod(path, 0o700)
        _sync_dir(path.parent)
        created = True
    return created


def _sync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def user_cache_dir() -> Path:
    """``$TIERS_CACHE_DIR``, else the platform's per-user cache directory + ``/tiers``."""
    override = os.environ.get("TIERS_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tiers"


def user_config_dir() -> Path:
    """``$TIERS_CONFIG_DIR``, else the platform's per-user config directory + ``/tiers``."""
    override = os.environ.get("TIERS_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif os.name == "nt":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tiers"
