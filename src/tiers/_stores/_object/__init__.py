"""ObjectStore: one object per entry in S3, GCS, Azure, a local folder or memory (obstore),
or any obspec store."""

from ._store import ObjectStore

__all__ = ["ObjectStore"]
