"""The buffer type handed to callers: obstore's `Bytes`, as obstore's own reads return.

Imported on first use, so ``import tiers`` works without the ``s3`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError

if TYPE_CHECKING:
    from obstore import Bytes


def to_buffer(data: Any) -> Bytes:
    """`data` (bytes-like, not copied) as an `obstore.Bytes`."""
    try:
        from obstore import Bytes
    except ImportError as exc:
        raise MissingDependencyError(
            'CachingReadableStore needs obstore: pip install "tiers[s3]"'
        ) from exc
    return Bytes(data)
