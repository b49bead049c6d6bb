"""The ``STORE`` argument: a path or a URL, opened as `Cache(...)` would open it.

A plain path must exist (a command that inspects a store never creates one by a typo) unless
the command writes there (``copy``'s destination); an existing directory is opened as the
store its marker file names: a FolderStore's ``.tiers-folder.json``, else a DiskStore.
``memory://`` and ``null://`` are refused: nothing outlives the process that holds them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._stores._url import tier_opener
from ..errors import ConfigError
from ._errors import USAGE, CLIError

FOLDER_MARKER = ".tiers-folder.json"
DISK_MARKER = "tiers-store.json"
_IN_PROCESS = {
    "memory": "a memory:// store lives inside one process, so there is nothing for a command "
    "to open; give a path or a disk://, folder://, redis:// or s3:// URL",
    "null": "a null:// store keeps nothing, so there is nothing to open; give a path or a "
    "disk://, folder://, redis:// or s3:// URL",
}


def open_store(spec: str, *, create: bool = False) -> Any:
    """The store `spec` names (a path or a URL); `create` allows a new local directory."""
    if not isinstance(spec, str) or not spec.strip():
        raise CLIError("STORE must be a path or a URL, not an empty string", USAGE)
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in _IN_PROCESS:
        raise CLIError(f"{spec}: {_IN_PROCESS[scheme]}", USAGE)
    local = _local_directory(spec, scheme)
    if local is not None and not create and not local.exists():
        raise CLIError(f"{spec}: no such store (the directory {local} does not exist)")
    if local is not None and not create and not local.is_dir():
        raise CLIError(f"{spec}: not a directory, so not a store")
    if scheme == "" and (Path(spec) / FOLDER_MARKER).exists():
        spec = "folder://" + str(Path(spec).resolve())
    elif scheme == "disk" and local is not None and (local / FOLDER_MARKER).exists():
        raise CLIError(f"{spec}: this directory is a FolderStore; write folder://{local}", USAGE)
    elif scheme == "folder" and local is not None and (local / DISK_MARKER).exists():
        raise CLIError(f"{spec}: this directory is a DiskStore; write disk://{local}", USAGE)
    try:
        store, _owned = tier_opener(spec)()
    except ConfigError as exc:
        raise CLIError(str(exc), USAGE) from None
    except ImportError as exc:
        extra = "redis" if scheme.startswith(("redis", "rediss", "unix")) else "s3"
        raise CLIError(f'{spec}: needs {exc.name or extra}: pip install "tiers[{extra}]"') from None
    return store


@contextlib.contextmanager
def opened(spec: str, *, create: bool = False) -> Iterator[Any]:
    """`open_store` as a context manager that closes the store."""
    store = open_store(spec, create=create)
    try:
        yield store
    finally:
        with contextlib.suppress(Exception):
            store.close()


def describe(store: Any) -> str:
    """The store as it prints itself (its class and where it is)."""
    return repr(store)


def _local_directory(spec: str, scheme: str) -> Path | None:
    if scheme == "":
        return Path(os.path.expanduser(spec))
    if scheme in ("disk", "folder"):
        rest = spec.split("://", 1)[1].split("?", 1)[0]
        return Path(rest) if rest.startswith("/") else None
    return None
