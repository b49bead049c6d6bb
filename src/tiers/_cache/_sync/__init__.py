"""The cache's I/O, blocking: generated from ``_async`` by scripts/unasync.py (but ``prims``)."""
