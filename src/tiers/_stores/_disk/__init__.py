"""DiskStore: LMDB index shards plus one file per large value."""

from ._store import DiskStore

__all__ = ["DiskStore"]
