"""Compressors, each with a one-byte id stored per entry. zlib always; zstd/lz4 when installed."""

from __future__ import annotations

import zlib
from typing import Protocol

from ..errors import ConfigError, MissingDependencyError

NONE_ID = 0


class Compressor(Protocol):
    id: int
    name: str

    def compress(self, data: bytes) -> bytes: ...

    def decompress(self, data: bytes, size: int) -> bytes:
        """Inflate to exactly `size` bytes; raise ValueError on anything else (bombs too)."""
        ...


class ZlibCompressor:
    id = 1
    name = "zlib"

    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data, 6)

    def decompress(self, data: bytes, size: int) -> bytes:
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(data, max(size, 1))  # a max_length of 0: "no limit"
        except zlib.error as exc:  # (not a ValueError)
            raise ValueError(f"zlib payload is damaged: {exc}") from exc
        rest = inflater.unconsumed_tail or inflater.unused_data
        if len(out) != size or rest or not inflater.eof:
            raise ValueError("zlib payload does not inflate to its recorded size")
        return out


class ZstdCompressor:
    id = 2
    name = "zstd"

    def __init__(self) -> None:
        try:
            import zstandard
        except ImportError as exc:
            raise MissingDependencyError(
                'compress="zstd" needs the zstandard package: pip install "tiers[zstd]"'
            ) from exc
        self._zstd = zstandard

    def compress(self, data: bytes) -> bytes:
        # The frame's checksum (4 bytes) makes damage detectable where no store checksums
        # the entry (Redis, object storage); frames written without one still read.
        out: bytes = self._zstd.ZstdCompressor(level=3, write_checksum=True).compress(data)
        return out

    def decompress(self, data: bytes, size: int) -> bytes:
        try:
            # A frame that records its own content size is inflated to that size, whatever
            # max_output_size says: check it against the size the entry recorded first.
            declared = self._zstd.frame_content_size(data)
            if declared not in (-1, size) or size <= 0:
                raise ValueError("zstd frame does not match its recorded size")
            out: bytes = self._zstd.ZstdDecompressor().decompress(data, max_output_size=size)
        except self._zstd.ZstdError as exc:
            raise ValueError(f"zstd payload is damaged: {exc}") from exc
        if len(out) != size:
            raise ValueError("zstd payload does not inflate to its recorded size")
        return out


class Lz4Compressor:
    id = 3
    name = "lz4"

    def __init__(self) -> None:
        try:
            import lz4.block
        except ImportError as exc:
            raise MissingDependencyError(
                'compress="lz4" needs the lz4 package: pip install "tiers[lz4]"'
            ) from exc
        self._block = lz4.block

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._block.compress(data, store_size=False)
        return out

    def decompress(self, data: bytes, size: int) -> bytes:
        try:
            out: bytes = self._block.decompress(data, uncompressed_size=size)
        except self._block.LZ4BlockError as exc:
            raise ValueError(f"lz4 payload is damaged: {exc}") from exc
        if len(out) != size:
            raise ValueError("lz4 payload does not inflate to its recorded size")
        return out


_BY_NAME: dict[str, type[ZlibCompressor] | type[ZstdCompressor] | type[Lz4Compressor]] = {
    "zlib": ZlibCompressor,
    "zstd": ZstdCompressor,
    "lz4": Lz4Compressor,
}
_BY_ID = {cls.id: cls for cls in _BY_NAME.values()}
_loaded: dict[int, Compressor] = {}


def resolve_compressor(spec: object) -> Compressor | None:
    """None for no compression, else the compressor with that name."""
    if spec is None:
        return None
    if not isinstance(spec, str) or spec not in _BY_NAME:
        raise ConfigError(f"compress must be None, 'zlib', 'zstd' or 'lz4', not {spec!r}")
    return _BY_NAME[spec]()


def compressor_for_id(cid: int) -> Compressor:
    """The compressor an entry was written with (entries remember their compression)."""
    found = _loaded.get(cid)
    if found is None:
        cls = _BY_ID.get(cid)
        if cls is None:
            raise ValueError(f"unknown compression id {cid}")
        found = _loaded[cid] = cls()
    return found
