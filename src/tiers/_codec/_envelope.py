"""The envelope: a small header stored with each encoded entry, and the codec that uses it.

Header layout (format 1, revision 1.2)::

    0      format (1)
    1      flags: 1 = signed, 2 = value is raw bytes passed through the pickle serializer,
           4 = padded (see below), 8 = key id (see below), 16 = plain (see below); any other
           bit: an entry of a later format, refused
    2      compression id (0 none, 1 zlib, 2 zstd, 3 lz4)
    3      n = length of the serializer name
    4..    serializer name (ASCII)
    +8     uncompressed size, little-endian (only when compressed)
    +8     compressed length, little-endian (only when padded); the body is that many bytes
           of compressed payload followed by zero bytes
    +8     key id of the secret that signed the entry (only with flag 8, only when signed)
    +32    HMAC-SHA256 (only when signed), over: domain, key, the header before it, body
    +1..   (only when plain, never signed) the plain kind and its descriptor (`_plain`)

Format history. Byte 0 names the layout of the fixed prefix (bytes 0..3 and the name), which
has not changed; revisions add flags, which readers of an earlier revision refuse (the rule
above). 1.0: flags 1, 2, 4. 1.1: flag 8, set on every signed entry written: its key id
(`_signing.Signer.key_id`, 8 bytes that reveal nothing of the secret). A 1.0 reader refuses
(and so removes) a 1.1 signed entry: upgrade every process sharing a tier together. A 1.1
reader reads 1.0 entries as before; a 1.0 signed entry that does not verify is `TAMPERED`,
as it always was (its key is unknown). Unsigned entries did not change (still 1.0).
1.2 (tiers 0.2): flag 16, *plain*: what the pickle serializer writes to a private tier
(`Codec.encode_plain`: a DiskStore or FolderStore, whose files only this user can have
written) for a value that needs no pickle — bytes, bytearray, str, int, float, bool, None and
numeric NumPy arrays — in a code-free encoding (`_plain`), unsigned: the store's checksum
verifies it. Everything else is written as in 1.1. A 1.2 reader reads 1.0 and 1.1 entries as
before. A 1.1 reader (tiers 0.1) refuses a plain entry as a flag it does not know
(`FORMAT_UNKNOWN`): a miss, and removed, never an error. A 1.2 reader refuses a plain entry
from any tier that is not private (`TAMPERED`: Redis, object storage, a custom store), so
whoever can write a shared tier cannot plant values there without the secret.
See docs/decisions/0013-plain-values-on-private-stores.md.

Why a rejection. `Rejected.reason` tells the cache what to do with the entry:
`FOREIGN_KEY`: signed with another secret (its key id is not this cache's): intact, another
process's, a miss that leaves the entry where it is (`Rejected.foreign_key`). Anything
else (`TAMPERED`: same key id, or none, and the MAC does not verify, or a MAC missing;
`FORMAT`, `SERIALIZER`, `DAMAGED`) is not usable by anyone sharing this cache's
configuration: a miss, and the entry is removed.

Encoding and decoding are pure: bytes in, bytes or values out, no I/O.

Decompression bombs. A signed entry's recorded size is trusted only after its MAC verifies.
An unsigned entry (json, msgpack, raw) is authenticated by nothing, so its recorded size is
bounded by what its stored bytes may legitimately produce: at most `MAX_EXPANSION` times the
body's length, else the entry is `Rejected` before anything is inflated. A planted entry thus
makes a reader allocate at most `MAX_EXPANSION` bytes per byte planted (64: the order of what
parsing JSON or msgpack into Python objects already costs per byte), however the size is
forged. The writer keeps the same rule, so what it writes always reads back: a value that
compresses better than that is stored padded with zero bytes up to 1/64 of its size (still
far smaller than uncompressed; signed entries are never padded).
"""

from __future__ import annotations

from typing import Any

from . import _plain
from ._compression import NONE_ID, Compressor, compressor_for_id
from ._serializers import PickleSerializer, Serializer, is_signed
from ._signing import KEY_ID_SIZE, MAC_SIZE, Signer

FORMAT = 1
REVISION = (1, 2)
"""Of the header layout this version writes (module docstring, "Format history")."""
SIGNED = 1
PASSTHROUGH = 2
PADDED = 4
KEY_ID = 8  # revision 1.1
PLAIN = 16  # revision 1.2
_KNOWN_FLAGS = SIGNED | PASSTHROUGH | PADDED | KEY_ID | PLAIN
MAX_EXPANSION = 64
"""An unsigned compressed entry inflates to at most this many times its stored body."""
_DOMAIN = b"tiers-entry-mac-v1\0"

Body = bytes | bytearray | memoryview


FOREIGN_KEY = "foreign-key"
"""Signed with another secret: intact, someone else's; a miss that leaves the entry alone."""
TAMPERED = "tampered"
"""Claims this cache's secret (or no key id) but does not verify, or claims no signature
(a plain entry on a tier that is not private included)."""
FORMAT_UNKNOWN = "format"
"""A format, revision or flag this version does not know (written by a later one, or damaged)."""
SERIALIZER = "serializer"
"""Written with another serializer."""
DAMAGED = "damaged"
"""Anything else: a payload that does not decompress or load, a damaged header, a bomb."""
REASONS = frozenset((FOREIGN_KEY, TAMPERED, FORMAT_UNKNOWN, SERIALIZER, DAMAGED))


class Rejected(Exception):
    """An encoded entry that must not be used (damaged, unauthenticated or foreign).

    `reason` is one of `REASONS`; `foreign_key` is true for an entry signed with another
    secret, which a cache must leave in place (it is intact, another process's)."""

    def __init__(self, message: str, *, reason: str = DAMAGED) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def foreign_key(self) -> bool:
        return self.reason == FOREIGN_KEY

    def __reduce__(self) -> tuple[Any, ...]:  # keeps `reason` across pickling
        return _rejected, (str(self), self.reason)


def _rejected(message: str, reason: str) -> Rejected:
    return Rejected(message, reason=reason)


class Codec:
    """Encodes values for byte stores and decodes them, verifying signatures first."""

    __slots__ = (
        "_bytes_head", "_compressor", "_loads", "_name", "_passes", "_serializer", "_signer",
        "_signer_source", "_threshold", "_unsigned_head", "name", "plain",
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
        self._name = name
        # The header of an uncompressed entry of an unsigned serializer: the common case,
        # decoded without parsing. Signed serializers never take this path: their entries
        # are loaded only after the MAC verifies (a header without one is refused).
        signed = self.signed
        self._unsigned_head = None if signed else bytes((FORMAT, 0, NONE_ID, len(name))) + name
        self._loads = serializer.loads
        self._passes = isinstance(serializer, PickleSerializer)  # bytes pass through unpickled
        self.plain = signed and self._passes
        """Whether `encode_plain` may give a plain form (pickle: values that need none)."""
        # The header of uncompressed plain bytes: read from a private tier without parsing
        self._bytes_head = bytes((FORMAT, PLAIN, NONE_ID, len(name))) + name + bytes((0,))

    @property
    def signed(self) -> bool:
        return is_signed(self._serializer)

    def _get_signer(self) -> Signer:
        if self._signer is None:
            self._signer = Signer(self._signer_source())
        return self._signer

    def encode(self, key: str, value: Any) -> tuple[bytes, Body]:
        """(header, body) for `value` stored under `key`: the serializer's form, signed if the
        serializer is (what every tier may hold)."""
        flags = 0
        if type(value) is bytes and self._passes:
            body: Body = value
            flags |= PASSTHROUGH
        else:
            body = self._serializer.dumps(value)
        signed = self.signed
        flags, cid, extra, body = self._compress(flags, body, signed)
        if not signed:
            return bytes((FORMAT, flags, cid, len(self._name))) + self._name + extra, body
        signer = self._get_signer()
        head = bytes((FORMAT, flags | SIGNED | KEY_ID, cid, len(self._name))) + self._name + extra
        head += signer.key_id
        return head + signer.sign(_mac_parts(key, head, body)), body

    def encode_plain(self, value: Any) -> tuple[bytes, Body] | None:
        """(header, body) of `value` in the plain, unsigned encoding (`_plain`: code-free) if
        this codec writes plain entries (`plain`) and the value needs no pickle; else None.
        Only for private tiers: a plain entry read from any other is refused."""
        if not self.plain:
            return None
        found = _plain.encode(value)
        if found is None:
            return None
        kind, body = found
        if kind == b"\x00" and self._compressor is None:  # bytes: the common case
            return self._bytes_head, body
        flags, cid, extra, body = self._compress(PLAIN, body, False)
        return bytes((FORMAT, flags, cid, len(self._name))) + self._name + extra + kind, body

    def _compress(self, flags: int, body: Body, signed: bool) -> tuple[int, int, bytes, Body]:
        """(flags, compression id, header fields, body): `body` compressed when asked and
        worth it; an unsigned one padded so that the reader's bound holds (module docstring)."""
        comp = self._compressor
        if comp is None or memoryview(body).nbytes < self._threshold:
            return flags, NONE_ID, b"", body
        size = memoryview(body).nbytes
        packed = comp.compress(bytes(body))
        if len(packed) >= size:
            return flags, NONE_ID, b"", body
        extra = size.to_bytes(8, "little")
        if not signed and size > MAX_EXPANSION * len(packed):
            extra += len(packed).to_bytes(8, "little")
            return (
                flags | PADDED,
                comp.id,
                extra,
                packed + bytes(-(-size // MAX_EXPANSION) - len(packed)),
            )
        return flags, comp.id, extra, packed

    @property
    def key_id(self) -> bytes | None:
        """The key id this codec signs with (None if unsigned); resolves the secret."""
        return self._get_signer().key_id if self.signed else None

    @staticmethod
    def is_plain(header: bytes) -> bool:
        """Whether `header` claims a plain entry (what it holds is for `decode` to say)."""
        return len(header) > 1 and bool(header[1] & PLAIN)

    def decode(self, key: str, header: bytes, body: Body, private: bool = False) -> Any:
        """The value, or `Rejected` if the entry is damaged, unauthenticated or foreign.

        `private`: the entry comes from a tier only this user can write (a DiskStore or a
        FolderStore), the only kind whose plain (unsigned) entries a signed codec reads."""
        if header == self._unsigned_head and type(body) is bytes:  # unsigned: hot path
            try:
                return self._loads(body)
            except Exception as exc:
                raise Rejected(f"entry payload does not load: {exc!r}") from exc
        if private and header == self._bytes_head and type(body) is bytes:  # plain bytes
            return body
        return self._decode(key, header, body, private)

    def _decode(self, key: str, header: bytes, body: Body, private: bool) -> Any:
        flags, cid, pos, size, packed = self._parse(header)
        if flags & PLAIN:
            return self._decode_plain(header, body, private, cid, pos, size, packed)
        if self.signed:
            if not flags & SIGNED or len(header) != pos + MAC_SIZE:
                raise Rejected("entry is not signed", reason=TAMPERED)
            signer = self._get_signer()
            if flags & KEY_ID:
                key_id = header[pos - KEY_ID_SIZE : pos]
                if key_id != signer.key_id:
                    raise Rejected(
                        f"entry was signed with another secret (key id {key_id.hex()}, this "
                        f"cache's is {signer.key_id.hex()})",
                        reason=FOREIGN_KEY,
                    )
            if not signer.verify(header[pos:], _mac_parts(key, header[:pos], body)):
                raise Rejected(
                    "entry signature does not verify (tampered)"
                    if flags & KEY_ID  # else written before key ids: the key is unknown
                    else "entry signature does not verify (another secret, or tampered)",
                    reason=TAMPERED,
                )
        elif len(header) != pos + (MAC_SIZE if flags & SIGNED else 0):
            raise Rejected("entry header is damaged")
        else:
            _check_expansion(cid, body, size)
        if cid != NONE_ID:
            body = _inflate(cid, body, size, packed)
        if flags & PASSTHROUGH:
            return body if isinstance(body, bytes) else bytes(body)
        try:
            return self._serializer.loads(body if isinstance(body, bytes) else bytes(body))
        except Exception as exc:
            raise Rejected(f"entry payload does not load: {exc!r}") from exc

    def _decode_plain(
        self, header: bytes, body: Body, private: bool, cid: int, pos: int, size: int,
        packed: int,
    ) -> Any:  # fmt: skip
        """A plain entry's value: refused unless it comes from a private tier (when this
        codec signs), bounded as every unsigned entry is, and decoded without running code."""
        if self.signed and not private:
            raise Rejected(
                "entry is plain (unsigned) on a tier others may write: only a private tier "
                "(DiskStore, FolderStore) holds plain entries",
                reason=TAMPERED,
            )
        _check_expansion(cid, body, size)
        if cid != NONE_ID:
            body = _inflate(cid, body, size, packed)
        try:
            return _plain.decode(header[pos:], body)
        except (ValueError, TypeError, OverflowError, MemoryError) as exc:
            raise Rejected(f"plain entry does not decode: {exc!r}") from exc

    def _parse(self, header: bytes) -> tuple[int, int, int, int, int]:
        """(flags, compression id, where the MAC (or a plain entry's kind) starts, after the
        key id if any, uncompressed size, compressed length or -1 if not padded) of a header
        of this cache's serializer; `Rejected` if not one."""
        if len(header) < 4 or header[0] != FORMAT:
            raise Rejected("unknown entry format", reason=FORMAT_UNKNOWN)
        flags, cid, n = header[1], header[2], header[3]
        if flags & ~_KNOWN_FLAGS:
            raise Rejected(
                f"entry has flags this version does not know ({flags:#04x})",
                reason=FORMAT_UNKNOWN,
            )
        name = header[4 : 4 + n]
        if name != self._name:
            raise Rejected(
                f"entry was written with serializer {name.decode('ascii', 'replace')!r}, "
                f"this cache uses {self._serializer.name!r}",
                reason=SERIALIZER,
            )
        if flags & (PASSTHROUGH | PLAIN) and not self._passes:
            raise Rejected("entry passes values through a serializer that never does")
        if flags & PADDED and cid == NONE_ID:
            raise Rejected("entry is padded but not compressed")
        if flags & KEY_ID and not flags & SIGNED:
            raise Rejected("entry has a key id but no signature")
        if flags & PLAIN and flags & (SIGNED | PASSTHROUGH):
            raise Rejected("entry is plain and signed or passed through at once")
        pos, size, packed = 4 + n, 0, -1
        if cid != NONE_ID:
            size = int.from_bytes(header[pos : pos + 8], "little")
            pos += 8
        if flags & PADDED:
            packed = int.from_bytes(header[pos : pos + 8], "little")
            pos += 8
        if flags & KEY_ID:
            pos += KEY_ID_SIZE
        return flags, cid, pos, size, packed


def _check_expansion(cid: int, body: Body, size: int) -> None:
    """An unsigned entry claims to inflate past `MAX_EXPANSION` times its body: `Rejected`,
    before anything is inflated (see the module docstring)."""
    if cid != NONE_ID and size > MAX_EXPANSION * memoryview(body).nbytes:
        raise Rejected(
            f"entry claims to inflate {memoryview(body).nbytes} bytes to {size}, more than "
            f"{MAX_EXPANSION} times: a planted decompression bomb"
        )


def _inflate(cid: int, body: Body, size: int, packed: int) -> bytes:
    """The `size` bytes `body` inflates to (its first `packed` bytes, the rest zeros, if
    `packed` >= 0); `Rejected` for anything else."""
    data = bytes(body)
    if packed >= 0:
        if packed > len(data) or data.count(0, packed) != len(data) - packed:
            raise Rejected("entry padding is damaged")
        data = data[:packed]
    try:
        return compressor_for_id(cid).decompress(data, size)
    except Exception as exc:  # ValueError, MemoryError, OverflowError, a library's own
        raise Rejected(f"entry payload does not decompress: {exc!r}") from exc


def _mac_parts(key: str, head: bytes, body: Body) -> tuple[bytes, bytes, bytes, Body]:
    kb = key.encode("utf-8", "surrogatepass")
    return _DOMAIN + len(kb).to_bytes(4, "little"), kb, head, body
