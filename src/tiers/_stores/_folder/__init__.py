"""FolderStore: one human-browsable folder per entry (data file + metadata.json)."""

from ._store import FolderStore

__all__ = ["FolderStore"]
