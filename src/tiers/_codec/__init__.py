"""Serialization, compression and signing of entries for byte stores."""

from ._compression import Compressor, resolve_compressor
from ._envelope import Body, Codec, Rejected
from ._serializers import Serializer, resolve_serializer
from ._signing import resolve_secret

__all__ = [
    "Body",
    "Codec",
    "Compressor",
    "Rejected",
    "Serializer",
    "resolve_compressor",
    "resolve_secret",
    "resolve_serializer",
]
