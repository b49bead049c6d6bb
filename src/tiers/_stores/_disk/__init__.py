"""DiskStore: sharded slot tables and record logs read with pread, one file per large value."""

from ._store import DiskStore

__all__ = ["DiskStore"]
