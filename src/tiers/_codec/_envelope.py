"""The envelope: a small header stored with each encoded entry, and the codec that uses it.

Header layout (version 1)::

    0      format version (1)
    1      flags: 1 = signed, 2 = value is raw bytes passed through the pickle serializer
    2      compression id (0 none, 1 zlib, 2 zstd, 3 lz4)
    3      n = length of the serializer name
    4..    serializer name (ASCII)
    +8     uncompressed size, little-endian (only when compressed)
    +32    HMAC-SHA256 (only when signed), over: domain, key, the header before it, body

Encoding and decoding are pure: bytes in, bytes or values out, no I/O.
"""

from __future__ import annotations

from typing import Any

from ._compression import NONE_ID, Compressor, compressor_for_id
from ._serializers import PickleSerializer, Serializer, is_signed
from ._signing import MAC_SIZE, Signer

FORMAT = 1
SIGNED = 1
PASSTHROUGH = 2
_DOMAIN = b"tiers-entry-mac-v1\0"

Body = bytes | bytearray | memoryview


class Rejected(Exception):
    """An encoded entry that must not be used (damaged, unauthenticated or foreign)."""


class Codec:
    """Encodes values for byte stores and decodes them, verifying signatures first."""

    __slots__ = (
        "_compressor", "_loads", "_plain", "_serializer", "_signer", "_signer_source",
        "_threshold", "name",
    )  # fmt: skip

    def __init__(
        self,
        serializer: Serializer,
        compressor: Compressor | None,
        signer_source: Any,
        *,
        threshold: int = 1024,
    ) -> None:
        self._serializer = serializer
        self._compressor = compressor
        self._threshold = threshold
        self._signer: Signer | None = None
        self._signer_source = signer_source  # callable returning the secret, resolved lazily
        self.name = serializer.name
        name = serializer.name.encode("ascii")
        # The header of an uncompressed entry of an unsigned serializer: the common case,
        # decoded without parsing. Signed serializers never take this path: their entries
        # are loaded only after the MAC verifies (a header without one is refused).
        self._plain = None if self.signed else bytes((FORMAT, 0, NONE_ID, len(name))) + name
        self._loads = serializer.loads

    @property
    def signed(self) -> bool:
        return is_signed(self._serializer)

    def _get_signer(self) -> Signer:
        if self._signer is None:
            self._signer = Signer(self._signer_source())
        return self._signer

    def encode(self, key: str, value: Any) -> tuple[bytes, Body]:
        """(header, body) for `value` stored under `key`."""
        flags = 0
        if type(value) is bytes and isinstance(self._serializer, PickleSerializer):
            body: Body = value
            flags |= PASSTHROUGH
        else:
            body = self._serializer.dumps(value)
        cid, extra = NONE_ID, b""
        comp = self._compressor
        if comp is not None and len(body) >= self._threshold:
            packed = comp.compress(bytes(body))
            if len(packed) < len(body):
                cid, extra = comp.id, len(body).to_bytes(8, "little")
                body = packed
        name = self._serializer.name.encode("ascii")
        signed = self.signed
        if signed:
            flags |= SIGNED
        head = bytes((FORMAT, flags, cid, len(name))) + name + extra
        if signed:
            head += self._get_signer().sign(_mac_parts(key, head, body))
        return head, body

    def decode(self, key: str, header: bytes, body: Body) -> Any:
        """The value, or `Rejected` if the entry is damaged, unauthenticated or foreign."""
        if header == self._plain and type(body) is bytes:  # unsigned, uncompressed: hot path
            try:
                return self._loads(body)
            except Exception as exc:
                raise Rejected(f"entry payload does not load: {exc!r}") from exc
        return self._decode(key, header, body)

    def _decode(self, key: str, header: bytes, body: Body) -> Any:
        if len(header) < 4 or header[0] != FORMAT:
            raise Rejected("unknown entry format")
        flags, cid, n = header[1], header[2], header[3]
        name = header[4 : 4 + n]
        if name != self._serializer.name.encode("ascii"):
            raise Rejected(
                f"entry was written with serializer {name.decode('ascii', 'replace')!r}, "
                f"this cache uses {self._serializer.name!r}"
            )
        pos = 4 + n
        size = 0
        if cid != NONE_ID:
            size = int.from_bytes(header[pos : pos + 8], "little")
            pos += 8
        if self.signed:
            if not flags & SIGNED or len(header) != pos + MAC_SIZE:
                raise Rejected("entry is not signed")
            mac = header[pos:]
            if not self._get_signer().verify(mac, _mac_parts(key, header[:pos], body)):
                raise Rejected("entry signature does not verify (another secret, or tampered)")
        elif len(header) != pos + (MAC_SIZE if flags & SIGNED else 0):
            raise Rejected("entry header is damaged")
        if cid != NONE_ID:
            try:
                body = compressor_for_id(cid).decompress(bytes(body), size)
            except (ValueError, MemoryError) as exc:
                raise Rejected(f"entry payload does not decompress: {exc}") from exc
        if flags & PASSTHROUGH:
            return body if isinstance(body, bytes) else bytes(body)
        try:
            return self._serializer.loads(body if isinstance(body, bytes) else bytes(body))
        except Exception as exc:
            raise Rejected(f"entry payload does not load: {exc!r}") from exc


def _mac_parts(key: str, head: bytes, body: Body) -> tuple[bytes, bytes, bytes, Body]:
    kb = key.encode("utf-8", "surrogatepass")
    return _DOMAIN + len(kb).to_bytes(4, "little"), kb, head, body
