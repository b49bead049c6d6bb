"""Plain entries (envelope 1.2, decision 0013): under the default signed pickle, a value that
needs no pickle is stored unsigned and code-free on a private store (DiskStore, FolderStore in
a directory only its user can write), verified by the store's checksum, and refused from every
other tier. All real stores: DiskStore, FolderStore, a Redis server (tests/_servers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import math
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests._tiers import tier_of
from tiers import MISSING, Cache, DiskStore, FolderStore, MemoryStore
from tiers._codec import Codec, Rejected, resolve_compressor, resolve_serializer
from tiers._codec._envelope import KEY_ID, PADDED, PASSTHROUGH, PLAIN, SIGNED, TAMPERED
from tiers._stores import Entry
from tiers._stores._redis import RedisStore
from tiers.errors import ConfigError

SECRET = "plain-encoding test secret"  # noqa: S105 (not a credential)
MAC = 32


class Kind(enum.IntEnum):
    ONE = 1


class Text(str):
    pass


class Grid(np.ndarray):
    pass


PLAIN_VALUES: dict[str, Any] = {
    "bytes": b"\x00\xffbytes",
    "empty bytes": b"",
    "bytearray": bytearray(b"\x00mutable"),
    "str": "text ü \U0001f600",
    "lone surrogate": "\udc80",
    "empty str": "",
    "int": 42,
    "zero": 0,
    "negative": -129,
    "huge int": -(2**200) + 7,
    "float": 2.5,
    "minus zero": -0.0,
    "inf": -math.inf,
    "true": True,
    "false": False,
    "none": None,
    "float64 2d": np.arange(12, dtype=np.float64).reshape(3, 4),
    "big-endian int32": np.arange(6, dtype=">i4").reshape(2, 3),
    "uint8 3d": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    "bool": np.array([True, False, True]),
    "complex": np.array([1 + 2j, -3j], dtype=np.complex64),
    "float16": np.array([1.5, -2.0], dtype=np.float16),
    "0-d": np.array(3.25),
    "empty": np.zeros((0, 5), dtype=np.int64),
    "datetime64": np.array(["2024-01-02T03:04:05"], dtype="datetime64[ns]"),
    "timedelta64": np.array([5, -7], dtype="timedelta64[ms]"),
    "fortran order": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "strided": np.arange(30, dtype=np.int16)[::3],
    "transposed slice": np.arange(24.0).reshape(4, 6)[1:, ::2].T,
}

PICKLED_VALUES: dict[str, Any] = {
    "tuple": (1, "a"),
    "dict": {"a": [1, 2]},
    "IntEnum (an int subclass)": Kind.ONE,
    "str subclass": Text("sub"),
    "set": {1, 2},
    "memoryview-free list of bytes": [b"x"],
    "object array": np.array([1, "a", None], dtype=object),
    "structured array": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
    "unicode array": np.array(["ab", "c"]),
    "ndarray subclass": np.arange(3).view(Grid),
    "numpy scalar": np.float64(1.5),
}


def same(got: Any, want: Any) -> bool:
    """Exactly the value: its type, and for arrays dtype, shape and elements."""
    if type(got) is not type(want):
        return False
    if isinstance(want, np.ndarray):
        return (
            got.dtype == want.dtype
            and got.dtype.str == want.dtype.str
            and got.shape == want.shape
            and bool(np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"))
        )
    if isinstance(want, float):
        return math.copysign(1, got) == math.copysign(1, want) and (
            got == want or (math.isnan(got) and math.isnan(want))
        )
    return bool(got == want)


def flags_of(store: Any, key: str = "k") -> int:
    entry = store.get(":" + key)
    assert entry is not None, f"no entry {key!r}"
    return int(entry.header[1])


@pytest.fixture(params=["disk", "folder"])
def private_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    store: Any = (
        DiskStore(tmp_path / "s") if request.param == "disk" else FolderStore(tmp_path / "s")
    )
    yield store
    store.close()


def reopened(store: Any) -> Any:
    return type(store)(store.directory)


# -- private stores: plain round trips ---------------------------------------------------------


def test_private_stores_are_private(private_store: Any) -> None:
    assert tier_of(Cache(private_store, secret=SECRET)).private


def test_every_plain_value_round_trips_exactly(private_store: Any) -> None:
    cache = Cache(private_store, secret=SECRET)
    for i, value in enumerate(PLAIN_VALUES.values()):
        cache.set(f"k{i}", value)
    fresh = Cache(reopened(private_store), secret=SECRET)
    for i, (name, value) in enumerate(PLAIN_VALUES.items()):
        header = private_store.get(f":k{i}").header
        assert header[1] == PLAIN and len(header) < 4 + 6 + 1 + 3 + 64 * 8 + 20, name  # no MAC
        got = fresh.get(f"k{i}", MISSING)
        assert same(got, value), (name, got, value)
        if isinstance(value, np.ndarray):
            assert got.flags.writeable and got.flags.owndata, name  # as an unpickled one
    assert fresh.get(f"k{list(PLAIN_VALUES).index('fortran order')}").flags.f_contiguous
    nan = float("nan")
    cache.set("nan", nan)
    got_nan = fresh.get("nan")
    assert type(got_nan) is float and math.isnan(got_nan)


def test_plain_values_read_back_through_every_read(private_store: Any) -> None:
    cache = Cache(private_store, secret=SECRET)
    cache.set_many({"a": b"bytes", "b": "text", "c": np.arange(3)})
    fresh = Cache(reopened(private_store), secret=SECRET)
    assert fresh.get_many(["a", "b"]) == {"a": b"bytes", "b": "text"}
    assert asyncio.run(fresh.get_async("b")) == "text"
    assert same(fresh.pop("c"), np.arange(3))
    assert fresh.get_or_set("a", lambda: b"computed") == b"bytes"


def test_values_that_need_pickle_stay_signed(private_store: Any) -> None:
    cache = Cache(private_store, secret=SECRET)
    fresh = Cache(reopened(private_store), secret=SECRET)
    for name, value in PICKLED_VALUES.items():
        cache.set("k", value)
        assert flags_of(private_store) == SIGNED | KEY_ID, name
        got = fresh.get("k")
        assert type(got) is type(value), name
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and np.array_equal(got, value), name
        else:
            assert got == value, name


def test_compressed_plain_entries_round_trip(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "s")
    cache = Cache(store, secret=SECRET, compress="zlib")
    text, zeros = " ".join(str(i * 7919) for i in range(3000)), bytes(1 << 20)
    cache.set("text", text)
    cache.set("zeros", zeros)
    cache.set("array", np.zeros((256, 256)))
    assert flags_of(store, "text") == PLAIN and store.get(":text").header[2] == 1
    assert flags_of(store, "zeros") == PLAIN | PADDED  # past 64x: padded, as unsigned entries
    fresh = Cache(DiskStore(store.directory), secret=SECRET, compress="zlib")
    assert fresh.get("text") == text and fresh.get("zeros") == zeros
    assert same(fresh.get("array"), np.zeros((256, 256)))


def test_another_secret_reads_plain_entries_of_a_private_store(tmp_path: Path) -> None:
    """What the secret protected was authenticity against others; a private store's plain
    entries are this user's whatever its secret (decision 0013)."""
    store = DiskStore(tmp_path / "s")
    Cache(store, secret=SECRET).set("k", "text")
    Cache(store, secret=SECRET).set("p", ["pickled"])
    other = Cache(DiskStore(store.directory), secret="another secret, 16+ bytes")  # noqa: S106
    assert other.get("k") == "text"
    assert other.get("p", MISSING) is MISSING and other.stats().foreign == 1


def test_a_wrong_secret_shows_at_the_first_signed_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERS_SECRET", "too short")
    cache = Cache(DiskStore(tmp_path / "s"))
    cache.set("k", "plain: no secret needed")
    assert cache.get("k") == "plain: no secret needed"
    with pytest.raises(ConfigError, match="TIERS_SECRET"):
        cache.set("p", ["needs pickle"])


# -- damage on a private store: the checksum ----------------------------------------------------


def _flip_where(root: Path, needle: bytes) -> Path:
    """Flip a byte of `needle` in the one file under `root` that holds it."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = bytearray(path.read_bytes())
            at = data.find(needle)
            if at >= 0:
                data[at + len(needle) // 2] ^= 0x01
                path.write_bytes(bytes(data))
                return path
    raise AssertionError("the value is in no file")


@pytest.mark.parametrize("size", [100, 100_000], ids=["inline", "value file"])
def test_a_flipped_byte_in_a_plain_entry_is_a_miss(private_store: Any, size: int) -> None:
    value = os.urandom(size)
    cache = Cache(private_store, secret=SECRET)
    cache.set("k", value)
    assert flags_of(private_store) == PLAIN
    _flip_where(Path(private_store.directory), value[size // 4 : size // 4 + 32])
    fresh = Cache(reopened(private_store), secret=SECRET)
    assert fresh.get("k", MISSING) is MISSING
    assert private_store.get(":k") is None  # removed


# -- stores that are not private: plain entries refused ----------------------------------------


class Proxy:
    """A custom store: forwards everything to a DiskStore (through `__getattr__`), claiming
    nothing of its own, so it is not private."""

    holds_objects = False

    def __init__(self, inner: DiskStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _plain_entry(value: Any) -> Entry:
    codec = Codec(resolve_serializer("pickle"), None, SECRET.encode)
    encoded = codec.encode_plain(value)
    assert encoded is not None
    header, body = encoded
    return Entry(bytes(body), header, 0.0, None, (), None, len(header) + len(bytes(body)))


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, prefix="plain:")
    yield store
    store.close()


def test_a_plain_entry_planted_in_redis_is_a_removed_miss(redis_store: RedisStore) -> None:
    cache = Cache(redis_store, secret=SECRET)
    assert not tier_of(cache).private
    redis_store.set(":k", _plain_entry(b"planted"))
    assert cache.get("k", MISSING) is MISSING
    assert cache.stats().rejected == 1 and redis_store.get(":k") is None
    cache.set("k", b"written")  # what a cache writes there is signed
    assert flags_of(redis_store) == SIGNED | PASSTHROUGH | KEY_ID
    assert Cache(redis_store, secret=SECRET).get("k") == b"written"


def test_a_plain_entry_behind_a_custom_store_is_a_removed_miss(tmp_path: Path) -> None:
    disk = DiskStore(tmp_path / "s")
    disk.set(":k", _plain_entry("planted"))
    cache = Cache(Proxy(disk), secret=SECRET)
    assert not tier_of(cache).private
    assert cache.get("k", MISSING) is MISSING
    assert cache.stats().rejected == 1 and disk.get(":k") is None


def test_codec_refuses_plain_entries_unless_private() -> None:
    codec = Codec(resolve_serializer("pickle"), None, SECRET.encode)
    entry = _plain_entry("value")
    with pytest.raises(Rejected) as caught:
        codec.decode("k", entry.header, entry.value)
    assert caught.value.reason == TAMPERED
    assert codec.decode("k", entry.header, entry.value, private=True) == "value"
    json_codec = Codec(resolve_serializer("json"), None, SECRET.encode)
    assert json_codec.encode_plain("value") is None  # only pickle writes plain entries
    with pytest.raises(Rejected):
        json_codec.decode("k", entry.header, entry.value, private=True)


@pytest.mark.parametrize(
    ("root_mode", "parent_mode", "private"),
    [(0o700, 0o755, True), (0o777, 0o755, False), (0o720, 0o755, False),
     (0o700, 0o777, False), (0o700, 0o1777, True)],
)  # fmt: skip
def test_a_folder_store_is_private_only_if_no_one_else_may_write_it(
    tmp_path: Path, root_mode: int, parent_mode: int, private: bool
) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "s").mkdir()
    os.chmod(parent / "s", root_mode)  # an existing directory: the store keeps its mode
    os.chmod(parent, parent_mode)
    folder = FolderStore(parent / "s")
    disk = DiskStore(parent / "d")  # (its files must be this user's: private wherever it is)
    cache = Cache(folder, secret=SECRET)
    assert tier_of(cache).private is private and tier_of(Cache(disk, secret=SECRET)).private
    cache.set("k", "text")
    assert flags_of(folder) == (PLAIN if private else SIGNED | KEY_ID)
    assert Cache(FolderStore(parent / "s"), secret=SECRET).get("k") == "text"
    os.chmod(parent, 0o700)


# -- tiers that differ: each gets its own form, copies are re-encoded -------------------------


def test_a_write_gives_each_tier_its_form(tmp_path: Path, redis_store: RedisStore) -> None:
    disk = DiskStore(tmp_path / "s")
    cache = Cache(MemoryStore(), disk, redis_store, secret=SECRET, coherence="none")
    cache.set("k", "text")
    cache.set("p", ("needs", "pickle"))
    assert flags_of(disk) == PLAIN
    assert flags_of(redis_store) == SIGNED | KEY_ID
    assert flags_of(disk, "p") == flags_of(redis_store, "p") == SIGNED | KEY_ID
    assert Cache(redis_store, secret=SECRET).get("k") == "text"
    assert Cache(DiskStore(disk.directory), secret=SECRET).get("k") == "text"


def test_promotion_from_disk_into_a_faster_shared_tier_signs(
    tmp_path: Path, redis_store: RedisStore
) -> None:
    disk = DiskStore(tmp_path / "s")
    Cache(disk, secret=SECRET).set("k", "from disk")
    assert flags_of(disk) == PLAIN
    layered = Cache(redis_store, DiskStore(disk.directory), secret=SECRET)
    assert layered.get("k") == "from disk"
    assert flags_of(redis_store) == SIGNED | KEY_ID  # copied up re-signed, never plain
    assert Cache(redis_store, secret=SECRET).get("k") == "from disk"


def test_promotion_from_a_shared_tier_into_a_private_one_is_plain(
    tmp_path: Path, redis_store: RedisStore
) -> None:
    Cache(redis_store, secret=SECRET).set("k", b"from redis")
    disk = DiskStore(tmp_path / "s")
    layered = Cache(disk, redis_store, secret=SECRET, coherence="none")  # (no channel wait)
    assert layered.get("k") == b"from redis"
    assert flags_of(disk) == PLAIN
    assert Cache(DiskStore(disk.directory), secret=SECRET).get("k") == b"from redis"


# -- the format: old entries read, plain ones never run code -----------------------------------


def _entry_of_01(key: str, value: Any, *, key_id: bool = True) -> tuple[bytes, bytes]:
    """An entry as tiers 0.1 wrote it (envelope 1.1, or 1.0 without a key id), built here with
    the standard library alone: signed pickle, bytes passed through."""
    secret = SECRET.encode()
    passthrough = type(value) is bytes
    body = value if passthrough else pickle.dumps(value, protocol=5)
    flags = SIGNED | (PASSTHROUGH if passthrough else 0) | (KEY_ID if key_id else 0)
    head = bytes((1, flags, 0, 6)) + b"pickle"
    if key_id:
        head += hmac.new(secret, b"tiers-key-id-v1\0", hashlib.sha256).digest()[:8]
    kb = key.encode()
    message = b"tiers-entry-mac-v1\0" + len(kb).to_bytes(4, "little") + kb + head + body
    return head + hmac.new(secret, message, hashlib.sha256).digest(), body


@pytest.mark.parametrize("value", [b"old bytes", "old text", {"old": [1]}])
@pytest.mark.parametrize("key_id", [True, False], ids=["1.1", "1.0"])
def test_entries_written_by_01_still_read(private_store: Any, value: Any, key_id: bool) -> None:
    header, body = _entry_of_01(":k", value, key_id=key_id)
    private_store.set(":k", Entry(body, header, 0.0, None, (), None, len(header) + len(body)))
    assert Cache(private_store, secret=SECRET).get("k") == value
    assert PLAIN & (SIGNED | PASSTHROUGH | PADDED | KEY_ID) == 0  # 0.1 refuses it: a miss


def _mutations(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        for change in (0x01, 0x80, 0xFF):
            out = bytearray(data)
            out[i] ^= change
            yield bytes(out)
    for cut in range(len(data)):
        yield data[:cut]
    yield data + b"\x00"


@pytest.mark.parametrize(
    "value",
    ["text", 7, 2.5, True, None, b"bytes", bytearray(b"ba"), np.arange(6).reshape(2, 3)],
    ids=lambda v: type(v).__name__,
)
def test_damaged_plain_entries_are_rejected_never_another_error(value: Any) -> None:
    """Every byte of the header flipped, every truncation: a value or `Rejected`, nothing
    else (the plain decoder takes bytes from outside the process)."""
    codec = Codec(resolve_serializer("pickle"), resolve_compressor("zlib"), lambda: b"s" * 16)
    encoded = codec.encode_plain(value)
    assert encoded is not None
    header, body = encoded[0], bytes(encoded[1])
    decode: Callable[[bytes, bytes], Any] = lambda h, b: codec.decode("k", h, b, private=True)  # noqa: E731
    for bad in _mutations(header):
        with contextlib.suppress(Rejected):
            decode(bad, body)
    for bad in _mutations(body):
        with contextlib.suppress(Rejected):
            decode(header, bad)


def test_a_plain_array_header_never_makes_an_object_array() -> None:
    codec = Codec(resolve_serializer("pickle"), None, lambda: b"s" * 16)
    encoded = codec.encode_plain(np.arange(2, dtype=np.int64))
    assert encoded is not None
    header, body = encoded[0], bytes(encoded[1])
    for dtype in (b"|O8", b"<O8", b"|V16", b"<U2", b"i8,i8"):
        forged = header.replace(b"<i8", dtype) if len(dtype) == 3 else header
        if len(dtype) != 3:
            start = header.index(b"<i8")
            forged = header[: start - 1] + bytes((len(dtype),)) + dtype + header[start + 3 :]
        with pytest.raises(Rejected):
            codec.decode("k", forged, body, private=True)
