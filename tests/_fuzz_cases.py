"""Every decoder of bytes from outside the process, as fuzz cases: one registry shared by the
deterministic tests (tests/test_fuzz_decoders.py) and the atheris targets (tests/fuzz/).

The rule: damage at rest is a miss, never a crash, a hang, another exception, unbounded work
or a wrong value. A `Case` says how one decoder keeps it: bytes in (`decode`), the exceptions
it documents for damage (`damage`), what any value it returns must look like (`well_formed`),
and which values a damaged copy of its representative input may decode to (`acceptable`:
the original value, unless the format has no integrity check over the bytes hit).

To add a decoder: append a `Case` to `CASES` with a small valid
input (every bit of it is flipped on every run: keep it under ~1 KB), name a `target` (an
existing one, or a new ``tests/fuzz/fuzz_<target>.py`` copied from another) and write its seed
with ``python tests/fuzz/run.py --write-seeds``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiers._codec import Codec, Rejected, _envelope, resolve_compressor, resolve_serializer
from tiers._stores import Entry, _fs, _wire
from tiers._stores._folder import _metadata
from tiers._stores._folder._naming import data_file
from tiers.errors import ConfigError, StorePermissionError

SECRET = b"fuzz-cases secret, not a credential"
# (looked up, not imported: the cases also run against trees from before padding existed,
# which is how the regressions of tests/fuzz/regressions/ were found)
PADDED = getattr(_envelope, "PADDED", 4)


class Unavailable(Exception):
    """The decoder is not in this tree (a case for code being rewritten): skipped."""


class KnownIssue(AssertionError):
    """A wrong value the case's decoder is known to return (see the case's `known`)."""


@dataclass(frozen=True, slots=True)
class Mutation:
    """One damaged copy of a valid input: a bit flipped, or the input cut short."""

    kind: str  # "flip" or "truncate"
    at: int  # the byte flipped, or how many bytes are kept
    bit: int = 0

    def apply(self, data: bytes) -> bytes:
        if self.kind == "truncate":
            return data[: self.at]
        out = bytearray(data)
        out[self.at] ^= 1 << self.bit
        return bytes(out)

    def __str__(self) -> str:
        if self.kind == "truncate":
            return f"truncated to {self.at} bytes"
        return f"bit {self.bit} of byte {self.at} flipped"


def mutations(valid: bytes) -> Iterator[Mutation]:
    """Every truncation and every single-bit flip of `valid`."""
    for at in range(len(valid)):
        yield Mutation("truncate", at)
    for at in range(len(valid)):
        for bit in range(8):
            yield Mutation("flip", at, bit)


def _same(a: Any, b: Any) -> bool:
    """Equal, counting NaN as equal to NaN and 0.0 apart from -0.0 (repr for floats)."""
    return bool(a == b) or repr(a) == repr(b)


def _equal(result: Any, expected: Any, valid: bytes, mutation: Mutation) -> bool:
    return _same(result, expected)


def _any(result: Any) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Case:
    """One decoder, with a representative valid input and what it may decode to."""

    name: str
    target: str
    make_valid: Callable[[], bytes]
    decode: Callable[[bytes], Any]
    damage: tuple[type[BaseException], ...]
    well_formed: Callable[[Any], None] = _any
    acceptable: Callable[[Any, Any, bytes, Mutation], bool] = _equal
    authenticated: bool = False  # any decoded value is the valid input's (a MAC covers it all)
    reencode: Callable[[Any], bytes] | None = None  # a decoded value back to bytes
    embed: Callable[[bytes], bytes] | None = None  # a JSON document where the decoder reads one
    hostile: Callable[[], list[tuple[str, bytes]]] = list  # inputs of this format, planted
    known: tuple[tuple[type[BaseException], str], ...] = ()
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def valid(self) -> bytes:
        if "valid" not in self._cache:
            self._cache["valid"] = self.make_valid()
        data: bytes = self._cache["valid"]
        return data

    def expected(self) -> Any:
        if "expected" not in self._cache:
            self._cache["expected"] = self.decode(self.valid())
        return self._cache["expected"]

    def known_reason(self, exc: BaseException) -> str | None:
        """Why `exc` is a known issue of this case (to fix outside tiers' owned files)."""
        for kind, reason in self.known:
            if isinstance(exc, kind):
                return reason
        return None


def outcome(case: Case, data: bytes) -> tuple[bool, Any]:
    """(True, value) or (False, None) for documented damage; any other exception, or an
    ill-formed value (AssertionError), propagates."""
    try:
        result = case.decode(data)
    except case.damage:
        return False, None
    case.well_formed(result)
    if case.reencode is not None:  # what a decoder accepts, its encoder writes back the same
        again = case.decode(case.reencode(result))
        assert _same(again, result), f"{case.name}: {result!r} re-encodes as {again!r}"
    return True, result


def fuzz_one(case: Case, data: bytes) -> None:
    """One atheris input: damage or a well-formed value (the valid one, if authenticated);
    known issues (of files tiers' fuzzing does not own) are tolerated."""
    try:
        decoded, result = outcome(case, data)
        if decoded and case.authenticated:
            assert _same(result, case.expected()), f"{case.name}: forged {result!r}"
    except Unavailable:
        return
    except Exception as exc:
        if case.known_reason(exc) is None:
            raise


# -- scratch directories (the file-based decoders read real files) ---------------------------

_SCRATCH: dict[str, Path] = {}


def scratch(name: str) -> Path:
    """A directory of this process for `name`, removed at exit."""
    if not _SCRATCH:
        base = Path(tempfile.mkdtemp(prefix="tiers-fuzz-"))
        _SCRATCH[""] = base
        atexit.register(shutil.rmtree, base, True)
    path = _SCRATCH.get(name)
    if path is None:
        path = _SCRATCH[name] = _SCRATCH[""] / name
        path.mkdir()
    return path


# -- hostile JSON documents ------------------------------------------------------------------


def hostile_documents() -> list[tuple[str, bytes]]:
    """JSON (and not quite JSON) a hostile writer plants where tiers reads a document."""
    return [
        ("3k nested arrays", b"[" * 3_000 + b"]" * 3_000),  # small enough to seed atheris
        ("200k nested arrays", b"[" * 200_000 + b"]" * 200_000),
        ("200k open arrays", b"[" * 200_000),
        ("100k nested objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        ("deep inside an object", b'{"meta":' + b"[" * 5_000 + b"]" * 5_000 + b"}"),
        ("brackets in strings only", b'{"s":"' + b"[" * 100_000 + b'"}'),
        ("unterminated escapes", b'"\\' * 50_000 + b"[" * 200),  # quadratic for naive regexes
        ("1M-digit int", b'{"n":' + b"7" * 1_000_000 + b"}"),
        ("huge exponent", b'{"n":1e999999999}'),
        ("5 MB string", b'{"s":"' + b"x" * 5_000_000 + b'"}'),
        ("array", b"[]"),
        ("number", b"12"),
        ("string", b'"text"'),
        ("null", b"null"),
        ("NaN", b"NaN"),
        ("invalid UTF-8", b'{"s":"\xff\xfe"}'),
        ("UTF-16", '{"a": 1}'.encode("utf-16")),
        ("lone surrogate escape", b'{"\\ud800":1}'),
        ("empty", b""),
        ("NUL bytes", bytes(64)),
    ]


# -- the portable record (_stores/_wire.py: RedisStore, ObjectStore) --------------------------

_WIRE_VALUE = {"v": [1, 2.5, None, True], "s": "\u00fc" * 3}
_WIRE_KEY = "k:\u00fc"
_WIRE_CODEC = Codec(resolve_serializer("pickle"), None, lambda: SECRET)


def _wire_entry(meta: dict[str, Any] | None = None) -> Entry:
    header, body = _WIRE_CODEC.encode(_WIRE_KEY, _WIRE_VALUE)
    return Entry(
        body, header, 1_700_000_000.25, 1_700_003_600.5, ("t1", "\u00fcber"),
        {"m": [1, "x"]} if meta is None else meta, 0,
    )  # fmt: skip


def _wire_valid() -> bytes:
    return _wire.pack(_wire_entry(), _WIRE_KEY)


@dataclass(frozen=True, slots=True)
class WireRead:
    """What a RedisStore/ObjectStore read makes of a record: its fields, and the value the
    signed codec gives its header and body ("rejected" if they do not verify; None when only
    the record's head was read)."""

    created: float
    expires: float | None
    tags: tuple[str, ...]
    meta: dict[str, Any] | None
    key: str | None
    size: int
    header: bytes
    value: Any
    body: bytes = field(default=b"", compare=False, repr=False)


def _wire_decode(data: bytes) -> WireRead:
    entry, key = _wire.unpack(data)
    body = bytes(entry.value)
    try:
        value = _WIRE_CODEC.decode(_WIRE_KEY, entry.header, body)
    except Rejected:
        value = "rejected"
    return WireRead(entry.created_at, entry.expires_at, entry.tags, entry.meta,
                    key, entry.size, entry.header, value, body)  # fmt: skip


def _wire_head_decode(data: bytes) -> WireRead:
    """What `info` and scans do: `head_length` from the fixed part, then `unpack_head` of
    that many bytes (the record's size being the input's)."""
    need = _wire.head_length(data)
    entry, key = _wire.unpack_head(data[:need], len(data))
    assert entry.value is None
    return WireRead(entry.created_at, entry.expires_at, entry.tags, entry.meta,
                    key, entry.size, entry.header, None)  # fmt: skip


def _wire_well_formed(read: WireRead) -> None:
    assert type(read.created) is float and math.isfinite(read.created)
    expires = read.expires
    assert expires is None or (type(expires) is float and math.isfinite(expires) and expires)
    assert type(read.tags) is tuple and all(type(t) is str for t in read.tags)
    assert read.meta is None or type(read.meta) is dict
    assert read.key is None or (type(read.key) is str and read.key)
    assert type(read.size) is int and read.size >= len(read.header)
    assert read.value in ("rejected", None) or isinstance(read.value, dict), read.value


def _wire_regions(valid: bytes) -> dict[str, range]:
    """The byte ranges of a record's fields (of the valid input: where a flip lands)."""
    head_len, tags_len, meta_len, key_len = _wire.FIXED.unpack_from(valid)[4:]
    bounds = {"magic": 2, "flags": 1, "pad": 1, "created": 8, "expires": 8, "lengths": 14,
              "header": head_len, "tags": tags_len, "meta": meta_len, "key": key_len}  # fmt: skip
    regions, start = {}, 0
    for name, length in bounds.items():
        regions[name] = range(start, start + length)
        start += length
    regions["body"] = range(start, len(valid))
    return regions


# Which fields may differ when a byte of each region is flipped. The record has no checksum
# (Redis patches the expiry in place), so a flip in a field's own bytes can read as another
# well-formed value of that field, and a flip in a length moves the fields after it. The
# value never differs: a signed entry's MAC covers the key, the header and the body.
_MAY_DIFFER = {
    "created": {"created"}, "expires": {"expires"}, "tags": {"tags"}, "meta": {"meta"},
    "key": {"key"}, "header": {"header"}, "lengths": {"tags", "meta", "key", "size", "header"},
}  # fmt: skip
_FIELDS = ("created", "expires", "tags", "meta", "key", "size", "header")


def _wire_acceptable(read: Any, expected: Any, valid: bytes, mutation: Mutation) -> bool:
    if read.value not in ("rejected", expected.value):
        return False  # (a dict compares by value; "rejected" is never the valid value)
    if mutation.kind == "truncate":  # only the body was cut: its size follows
        free = {"size"}
    else:
        region = next(name for name, span in _wire_regions(valid).items() if mutation.at in span)
        free = _MAY_DIFFER.get(region, set())
    return all(
        name in free or _same(getattr(read, name), getattr(expected, name)) for name in _FIELDS
    )


def _wire_reencode(read: WireRead) -> bytes:
    entry = Entry(read.body, read.header, read.created, read.expires, read.tags, read.meta)
    return _wire.pack(entry, read.key)


def _wire_head_reencode(read: WireRead) -> bytes:
    body = bytes(read.size - len(read.header))
    entry = Entry(body, read.header, read.created, read.expires, read.tags, read.meta)
    return _wire.pack(entry, read.key)


def _wire_embed(document: bytes) -> bytes:
    """A valid record whose meta is `document` (its length recorded right)."""
    record = _wire.pack(_wire_entry(meta={}), _WIRE_KEY)
    head_len, tags_len, meta_len, _key_len = _wire.FIXED.unpack_from(record)[4:]
    start = _wire.FIXED.size + head_len + tags_len
    fixed = bytearray(record[: _wire.FIXED.size])
    fixed[26:30] = len(document).to_bytes(4, "little")
    return bytes(fixed) + record[_wire.FIXED.size : start] + document + record[start + meta_len :]


def _wire_hostile() -> list[tuple[str, bytes]]:
    valid = _wire_valid()
    lengths = bytearray(valid)
    lengths[22:34] = b"\xff" * 12  # every length as large as it goes
    times = bytearray(valid)
    times[4:20] = bytes.fromhex("000000000000f87f000000000000f07f")  # NaN, inf
    tags = bytearray(valid)
    start = _wire_regions(valid)["tags"].start
    tags[start + 1] = 0xFF  # not UTF-8
    return [
        ("every length at its maximum", bytes(lengths)),
        ("NaN and inf times", bytes(times)),
        ("tags not UTF-8", bytes(tags)),
        ("flags set", valid[:2] + b"\x01" + valid[3:]),
        ("only the fixed part", valid[: _wire.FIXED.size]),
    ]


# -- the codec envelope (_codec/_envelope.py): every serializer x compression -----------------

_ROWS = [f"row {i:02d} of the table" for i in range(6)]
_VALUES: dict[str, Any] = {
    "pickle": {"rows": _ROWS, "n": 42, "b": b"\x00\xff"},
    "passthrough": b"raw bytes " * 12,  # bytes under pickle: stored as they are, signed
    "json": {"rows": _ROWS, "n": 42, "f": 2.5, "u": "\u00fc"},
    "msgpack": {"rows": _ROWS, "n": 42, "b": b"\x00\xff"},
    "raw": b"raw bytes " * 12,
    "raw-padded": bytes(2048),  # compresses > MAX_EXPANSION times: stored padded
    "json-padded": [0] * 1024,
}


@dataclass(frozen=True, slots=True)
class _CodecConfig:
    """One codec, its value, and how its cases frame (header, body) as one input: the header
    length in a byte, the header, the body (as a store keeps the two apart)."""

    variant: str
    compression: str | None

    @property
    def name(self) -> str:
        return f"codec-{self.variant}-{self.compression or 'none'}"

    @property
    def serializer(self) -> str:
        variant = self.variant.split("-")[0]
        return "pickle" if variant == "passthrough" else variant

    def codec(self) -> Codec:
        # The key doubles as the case's own secret: a signed input of one case never
        # verifies in another (so `authenticated` holds across a target's cases).
        secret = SECRET + self.name.encode()
        return _codec_for(self.serializer, self.compression, secret)

    def frame(self, header: bytes, body: bytes) -> bytes:
        return bytes((len(header),)) + header + body

    def valid(self) -> bytes:
        return self.frame(*_as_bytes(self.codec().encode(self.name, _VALUES[self.variant])))

    def decode(self, data: bytes) -> Any:
        if not data:
            raise Rejected("no header length")
        n = data[0]
        return self.codec().decode(self.name, data[1 : 1 + n], data[1 + n :])

    def reencode(self, value: Any) -> bytes:
        return self.frame(*_as_bytes(self.codec().encode(self.name, value)))

    def reference(self, valid: bytes, mutated: bytes) -> Any:
        """What the serializer loads from a damaged body under the writer's own header (no
        tiers code: the libraries themselves); `_NONE` if it loads nothing."""
        n = valid[0]
        header = valid[1 : 1 + n]
        if mutated[: 1 + n] != valid[: 1 + n]:
            return _NONE
        body = mutated[1 + n :]
        flags, cid, name_len = header[1], header[2], header[3]
        try:
            if cid:
                pos = 4 + name_len
                size = int.from_bytes(header[pos : pos + 8], "little")
                if flags & PADDED:
                    packed = int.from_bytes(header[pos + 8 : pos + 16], "little")
                    if body[packed:].strip(b"\0") or len(body) < packed:
                        return _NONE
                    body = body[:packed]
                body = _reference_inflate(cid, body, size)
            return resolve_serializer(self.serializer).loads(body)
        except Exception:
            return _NONE


_NONE = object()
_CODECS: dict[tuple[str, str | None, bytes], Codec] = {}


def _codec_for(serializer: str, compression: str | None, secret: bytes) -> Codec:
    key = (serializer, compression, secret)
    if key not in _CODECS:
        _CODECS[key] = Codec(
            resolve_serializer(serializer), resolve_compressor(compression), lambda: secret,
            threshold=64,
        )  # fmt: skip
    return _CODECS[key]


def _as_bytes(encoded: tuple[bytes, Any]) -> tuple[bytes, bytes]:
    return encoded[0], bytes(encoded[1])


def _reference_inflate(cid: int, data: bytes, size: int) -> bytes:
    if cid == 1:
        out = zlib.decompress(data)
    elif cid == 2:
        import zstandard

        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    else:
        import lz4.block

        out = lz4.block.decompress(data, uncompressed_size=size)
    if len(out) != size:
        raise ValueError("not the recorded size")
    out_bytes: bytes = out
    return out_bytes


def _codec_case(config: _CodecConfig) -> Case:
    signed = config.serializer == "pickle"

    def acceptable(result: Any, expected: Any, valid: bytes, mutation: Mutation) -> bool:
        # Unsigned entries carry no checksum of the codec's (the stores checksum them): a
        # damaged body may load as another value, but only as the one those bytes hold.
        if _same(result, expected):
            return True
        return not signed and _same(result, config.reference(valid, mutation.apply(valid)))

    def hostile() -> list[tuple[str, bytes]]:
        return _codec_hostile(config)

    return Case(
        config.name, "codec", config.valid, config.decode, (Rejected,),
        acceptable=acceptable, authenticated=signed, reencode=config.reencode,
        embed=(lambda doc: config.frame(b"\x01\x00\x00\x04json", doc))
        if config.serializer == "json" and config.compression is None else None,
        hostile=hostile,
    )  # fmt: skip


def _codec_hostile(config: _CodecConfig) -> list[tuple[str, bytes]]:
    """Bombs and forged headers for this codec's serializer and compression."""
    name = config.serializer.encode()
    out: list[tuple[str, bytes]] = []
    huge = (2**63).to_bytes(8, "little")
    for cid, label in ((1, "zlib"), (2, "zstd"), (3, "lz4")):
        bomb = _bomb(cid)
        for size in (2**29, 2**64 - 1, 0):
            head = bytes((1, 0, cid, len(name))) + name + size.to_bytes(8, "little")
            out.append((f"{label} bomb claiming {size} bytes", config.frame(head, bomb)))
        padded = bytes((1, PADDED, cid, len(name))) + name + (2**29).to_bytes(8, "little")
        out.append((f"{label} padded past its body", config.frame(padded + huge, bomb)))
    out.append(("msgpack nested 200k deep", config.frame(
        bytes((1, 0, 0, len(name))) + name, b"\x91" * 200_000 + b"\xc0")))  # fmt: skip
    out.append(("msgpack array claiming 4G items", config.frame(
        bytes((1, 0, 0, len(name))) + name, b"\xdd\xff\xff\xff\xff")))  # fmt: skip
    out.append(("passthrough flag", config.frame(bytes((1, 2, 0, len(name))) + name, b"x")))
    out.append(("unknown flag", config.frame(bytes((1, 64, 0, len(name))) + name, b"[]")))
    return out


def zlib_bomb(prefix: bytes, chunk: bytes, count: int, suffix: bytes) -> bytes:
    """A zlib stream of `prefix`, `count` times `chunk`, `suffix`, built without compressing
    it all: one deflated copy of `chunk` (byte-aligned by a full flush) repeated."""
    parts = []
    for data, mode in ((prefix, zlib.Z_FULL_FLUSH), (chunk, zlib.Z_FULL_FLUSH),
                       (suffix, zlib.Z_FINISH)):  # fmt: skip
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts.append(deflate.compress(data) + deflate.flush(mode))
    check = zlib.adler32(prefix)
    for _ in range(count):
        check = zlib.adler32(chunk, check)
    check = zlib.adler32(suffix, check)
    return b"\x78\xda" + parts[0] + parts[1] * count + parts[2] + check.to_bytes(4, "big")


def zstd_bomb(prefix: bytes, chunk: bytes, count: int, suffix: bytes) -> bytes:
    """A zstd frame of `prefix`, `count` times `chunk`, `suffix`, without its content size."""
    import zstandard

    writer = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    parts = [writer.compress(prefix)] + [writer.compress(chunk) for _ in range(count)]
    return b"".join([*parts, writer.compress(suffix), writer.flush()])


def _bomb(cid: int) -> bytes:
    """512 MiB of JSON (``[`` spaces ``]``), compressed without recording its size."""
    key = f"bomb-{cid}"
    if key not in _BOMBS:
        chunk = b" " * 2**20
        if cid == 1:
            _BOMBS[key] = zlib_bomb(b"[", chunk, 512, b"]")
        elif cid == 2:
            _BOMBS[key] = zstd_bomb(b"[", chunk, 512, b"]")
        else:  # an lz4 block holds at most ~255 times its size: 16 MiB is plenty
            import lz4.block

            _BOMBS[key] = lz4.block.compress(b"[" + chunk * 16 + b"]", store_size=False)
    return _BOMBS[key]


_BOMBS: dict[str, bytes] = {}
_CODEC_CONFIGS = (
    [
        _CodecConfig(variant, compression)
        for variant in ("pickle", "passthrough", "json", "msgpack", "raw")
        for compression in (None, "zlib", "zstd", "lz4")
    ]
    + [_CodecConfig("raw-padded", compression) for compression in ("zlib", "zstd", "lz4")]
    + [_CodecConfig("json-padded", "zstd")]
)


# -- FolderStore's metadata.json (_stores/_folder/_metadata.py) -------------------------------

_FOLDER_HEADER = _WIRE_CODEC.encode("k", "v")[0]


def _metadata_valid() -> bytes:
    return _metadata.encode(
        _metadata.Metadata(
            "k:\u00fc", _FOLDER_HEADER, 1_700_000_000.25, 1_700_003_600.5, ("t1", "\u00fcber"),
            {"function": "f", "args": [1, 2.5, None, True], "nested": {"a": {"b": [1]}}},
            data_file(_FOLDER_HEADER), 1234, "0123456789abcdef",
        )
    )  # fmt: skip


def _metadata_well_formed(m: _metadata.Metadata) -> None:
    assert type(m.key) is str and type(m.header) is bytes and type(m.data) is str
    assert math.isfinite(m.created_at) and (m.expires_at is None or math.isfinite(m.expires_at))
    assert type(m.size) is int and m.size >= 0 and len(m.checksum) == 16
    assert all(type(t) is str for t in m.tags) and (m.meta is None or type(m.meta) is dict)


def _whole_file(document: bytes) -> bytes:
    return document  # the whole file is the JSON document


# -- store format markers (_stores/_fs.py: read_or_write_marker) ------------------------------

_FOLDER_MARKER = {"format": "tiers-folder", "version": 1}


def _folder_marker_decode(data: bytes) -> dict[str, Any]:
    """Open a real FolderStore root whose marker holds `data`; the marker it accepted."""
    from tiers._stores._folder._root import MARKER, open_folder_root

    root = scratch("folder-root")
    (root / MARKER).write_bytes(data)
    open_folder_root(root)  # ConfigError unless the marker is a FolderStore's of this version
    fd = os.open(root, os.O_RDONLY)
    try:
        return _fs.read_or_write_marker(fd, root, MARKER, {})
    finally:
        os.close(fd)


def _disk_layout() -> Any:
    try:
        from tiers._stores._disk import _layout
    except ImportError as exc:  # (the DiskStore engine is being rewritten)
        raise Unavailable(f"the DiskStore layout moved: {exc}") from exc
    if not hasattr(_layout, "_read_or_write_marker"):
        raise Unavailable("the DiskStore marker reader moved")
    return _layout


def _disk_marker_valid() -> bytes:
    layout = _disk_layout()
    content = {"format": layout.FORMAT, "version": layout.VERSION, "shards": layout.SHARDS}
    return json.dumps(content).encode() + b"\n"


def _disk_marker_decode(data: bytes) -> int:
    """The shard count a DiskStore opens with when its marker (tiers-store.json) holds
    `data`: `read_or_write_marker` and the DiskStore's checks of what it returns."""
    root = scratch("disk-root")
    (root / "tiers-store.json").write_bytes(data)
    fd = os.open(root, os.O_RDONLY)
    try:
        shards: int = _disk_layout()._read_or_write_marker(fd, root)
    finally:
        os.close(fd)
    return shards


def _disk_marker_acceptable(result: Any, expected: Any, valid: bytes, mutation: Mutation) -> bool:
    # A damaged marker of a DiskStore is ours: the store is emptied and opens with its count.
    return bool(result == expected)


# A marker that is not JSON of its store is a ConfigError; one that is not a small regular file
# (a link, 64 KiB or more) a StorePermissionError: the store refuses to open either way.
_MARKER_DAMAGE = (ConfigError, StorePermissionError)


# -- locks: FolderStore lock files, ObjectStore lock objects ----------------------------------


def _folder_lock_decode(data: bytes) -> tuple[str | None, float]:
    from tiers._stores._folder import _locks

    path = scratch("folder-lock") / "lock"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        return _locks._state(fd)
    finally:
        os.close(fd)


def _object_lock_decode(data: bytes) -> tuple[str | None, float]:
    from tiers._stores._object import _locks
    from tiers._stores._object._requests import Found

    return _locks._state(Found(data, "e-tag", len(data)))


def _lock_well_formed(result: tuple[str | None, float]) -> None:
    token, deadline = result
    assert token is None or type(token) is str
    assert type(deadline) is float
    if not math.isfinite(deadline):
        raise KnownIssue(f"lease end {deadline}")


def _lock_acceptable(result: Any, expected: Any, valid: bytes, mutation: Mutation) -> bool:
    # Lock bodies carry no checksum: a damaged one reads as free, or as a lock of another
    # token or lease end, which its lease bounds. Never anything but that (well_formed).
    return True


# -- the DiskStore engine: slots, table header, records, lock files ---------------------------


def _disk_format() -> Any:
    from tiers._stores._disk import _format

    return _format


def _disk_slot_valid() -> bytes:
    f = _disk_format()
    slot = f.Slot(0x1234_5678_9ABC_DEF1, 3, 4096, 1100, f.LIVE | f.IN_FILE, 0x0102,
                  1_700_000_000_123_456, 1_700_000_060.5, 5196, 1_700_000_000_123_400)  # fmt: skip
    return bytes(f.pack_slot(slot, 77))


def _disk_slot_decode(data: bytes) -> Any:
    return _disk_format().unpack_slot(data, 0, 77)


def _disk_slot_well_formed(slot: Any) -> None:
    assert slot.khash and slot.flags & 3 and not math.isnan(slot.expires)


def _disk_header_valid() -> bytes:
    f = _disk_format()
    header = f.Header(5, 1024, 300, 400_000, 310, 10, 7, 3, 2, 12, 1_700_000_100.0,
                      [f.Segment(9, 70_000, 10_000), f.Segment(11, 5_000, 4_000)])  # fmt: skip
    return bytes(f.pack_header(header))


def _disk_header_decode(data: bytes) -> Any:
    return _disk_format().unpack_header(data, 5)


def _disk_header_well_formed(header: Any) -> None:
    assert header.capacity & (header.capacity - 1) == 0 and header.items <= header.used
    assert all(seg.live <= seg.end for seg in header.segments)


def _disk_record_valid() -> bytes:
    f = _disk_format()
    name = f.value_file_name(5, 0xAB, 12, 99)
    rec = f.Record(b"", b"H1", 1_700_000_000.25, None, ("t1", "t2"), {"fn": "f", "n": [1, 2]},
                   0, b":long/key", 70_000, 42, "x" * 3, name)  # fmt: skip
    return bytes(f.pack_record(rec))


def _disk_record_decode(data: bytes) -> Any:
    f = _disk_format()
    rec = f.unpack_record(data)
    assert f.record_key(data, 0)[0] == len(data), "a record that decodes has its own length"
    return rec


def _disk_record_well_formed(rec: Any) -> None:
    assert rec.file_name is None or (len(rec.file_name) == 42 and "/" not in rec.file_name)
    assert rec.file_name is not None or len(rec.value) == rec.body_size


def _disk_entry_valid() -> bytes:
    f = _disk_format()
    rec = f.Record(b"value " * 20, b"H1", 1_700_000_000.25, None, (), None, 0, b":key", 120, 42,
                   None, None)  # fmt: skip
    return bytes(f.pack_record(rec))


def _disk_entry_decode(data: bytes) -> Any:
    """A read's decoder (`unpack_entry`): what it accepts, `unpack_record` accepts the same."""
    f = _disk_format()
    if not hasattr(f, "unpack_entry"):
        raise Unavailable("no unpack_entry in this tree")
    entry = f.unpack_entry(data, b":key")
    try:
        rec = f.unpack_record(data, b":key")
    except f.Damaged as exc:
        raise AssertionError(f"unpack_entry took a record unpack_record refuses: {exc}") from None
    fields = ("value", "header", "created_at", "expires_at", "tags", "meta", "size")
    assert all(_same(getattr(entry, n), getattr(rec, n)) for n in fields), (entry, rec)
    return entry


def _disk_lock_decode(data: bytes) -> Any:
    from tiers._stores._disk import _io, _locks

    folder = scratch("disk-locks")
    (folder / _locks.lock_file(b"lock")).write_bytes(data)
    fd = _io.Fd(os.open(folder, os.O_RDONLY))
    return _locks.read(fd, b"lock")


def _disk_lock_valid() -> bytes:
    from tiers._stores._disk import _io, _locks

    folder = scratch("disk-locks")
    fd = _io.Fd(os.open(folder, os.O_RDONLY))
    _locks.write(fd, b"lock", b"3f2a9c41d0e8b7a6", 1_700_000_030.5)
    return (folder / _locks.lock_file(b"lock")).read_bytes()


def _disk_damage() -> tuple[type[BaseException], ...]:
    return (_disk_format().Damaged,)


_DISK_CASES = [
    Case("disk-slot", "disk", _disk_slot_valid, _disk_slot_decode, _disk_damage(),
         well_formed=_disk_slot_well_formed),
    Case("disk-header", "disk", _disk_header_valid, _disk_header_decode, _disk_damage(),
         well_formed=_disk_header_well_formed),
    Case("disk-record", "disk", _disk_record_valid, _disk_record_decode, _disk_damage(),
         well_formed=_disk_record_well_formed),
    # a lock file that does not verify is a free lock (None), never another holder's
    Case("disk-lock", "disk", _disk_lock_valid, _disk_lock_decode, (),
         acceptable=lambda result, expected, valid, mutation: result in (None, expected)),
    Case("disk-entry", "disk", _disk_entry_valid, _disk_entry_decode, _disk_damage()),
]  # fmt: skip


# -- the registry ----------------------------------------------------------------------------

CASES: list[Case] = [
    Case(
        "wire-record", "wire_record", _wire_valid, _wire_decode, (_wire.DamagedRecord,),
        well_formed=_wire_well_formed, acceptable=_wire_acceptable, reencode=_wire_reencode,
        embed=_wire_embed, hostile=_wire_hostile,
    ),
    Case(
        "wire-head", "wire_head", _wire_valid, _wire_head_decode, (_wire.DamagedRecord,),
        well_formed=_wire_well_formed,
        acceptable=_wire_acceptable, reencode=_wire_head_reencode, embed=_wire_embed,
        hostile=_wire_hostile,
    ),
    *(_codec_case(config) for config in _CODEC_CONFIGS),
    Case(
        "folder-metadata", "folder_metadata", _metadata_valid, _metadata.decode,
        (_metadata.DamagedMetadata,), well_formed=_metadata_well_formed,
        reencode=_metadata.encode, embed=_whole_file, hostile=hostile_documents,
    ),
    Case(
        "folder-marker", "marker", lambda: json.dumps(_FOLDER_MARKER).encode() + b"\n",
        _folder_marker_decode, _MARKER_DAMAGE, embed=_whole_file,
    ),
    Case(
        "disk-marker", "marker", _disk_marker_valid, _disk_marker_decode, _MARKER_DAMAGE,
        acceptable=_disk_marker_acceptable, embed=_whole_file,
    ),
    *_DISK_CASES,
    Case(
        "folder-lock", "lock",
        lambda: json.dumps({"token": "3f2a9c41d0e8b7a6", "expires": 1_700_000_030.5}).encode(),
        _folder_lock_decode, (), well_formed=_lock_well_formed, acceptable=_lock_acceptable,
        embed=_whole_file, hostile=lambda: [
            ("expires 1e999", b'{"token": "t", "expires": 1e999}'),
            ("expires NaN", b'{"token": "t", "expires": NaN}'),
        ],
    ),
    Case(
        "object-lock", "lock", lambda: b"3f2a9c41d0e8b7a6|1700000030.5", _object_lock_decode,
        (), well_formed=_lock_well_formed, acceptable=_lock_acceptable,
        hostile=lambda: [("not UTF-8", b"\xff\xfe|12.5"), ("inf", b"t|inf"), ("nan", b"t|nan")],
    ),
]  # fmt: skip
CASES_BY_NAME = {case.name: case for case in CASES}
TARGETS: dict[str, list[Case]] = {}
for _case in CASES:
    TARGETS.setdefault(_case.target, []).append(_case)


def import_decoders() -> None:
    """Import the modules the cases load lazily (for atheris to instrument them with the rest)."""
    import tiers._stores._disk._format
    import tiers._stores._disk._locks
    import tiers._stores._folder._locks
    import tiers._stores._folder._root
    import tiers._stores._object._locks  # noqa: F401

    with contextlib.suppress(Unavailable):
        _disk_layout()


def target_input(case: Case, data: bytes) -> bytes:
    """`data` as an input of the case's atheris target (a first byte picks the case)."""
    return bytes((TARGETS[case.target].index(case),)) + data


def run_target_input(target: str, data: bytes) -> None:
    """One atheris input of `target` (its first byte picks the case)."""
    if data:
        cases = TARGETS[target]
        fuzz_one(cases[data[0] % len(cases)], data[1:])
