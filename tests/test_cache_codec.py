"""Serializers, compression and the signed envelope, seen through a `Cache` over a real DiskStore.

Entries are inspected and tampered with through the store itself (``store.get`` / ``store.set``),
which keeps the DiskStore's own checksums valid: what is tested here is the cache's envelope.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests._tiers import store_of
from tiers import MISSING, Cache, DiskStore, MemoryStore
from tiers._stores import Entry
from tiers.errors import ConfigError, SerializationError

SIGNED, PASSTHROUGH, KEY_ID = 1, 2, 8
MAC = 32
KID = 8  # the key id signed entries carry (envelope revision 1.1)
COMPRESSORS = {"zlib": 1, "zstd": 2, "lz4": 3}
# Test secrets (not credentials).
FIRST, SECOND = "first secret 1234", "second secret 1234"
ENV_SECRET, PROCESS_SECRET = "a shared secret from the env", "process-shared secret value"


def header_of(store: DiskStore, key: str = "k") -> bytes:
    entry = store.get(":" + key)
    assert entry is not None, f"no entry for {key!r} in {store!r}"
    return entry.header


def body_of(store: DiskStore, key: str = "k") -> bytes:
    entry = store.get(":" + key)
    assert entry is not None, f"no entry for {key!r} in {store!r}"
    return bytes(entry.value)


def plant(store: DiskStore, header: bytes, body: bytes, key: str = "k") -> None:
    """Write an entry straight into the store, as someone with access to its files could."""
    store.set(":" + key, Entry(body, header, 0.0, None, (), None, len(header) + len(body)))


def make_header(flags: int, name: bytes, cid: int = 0, extra: bytes = b"") -> bytes:
    return bytes((1, flags, cid, len(name))) + name + extra


@pytest.fixture
def disk(store_dir: Path) -> DiskStore:
    return DiskStore(store_dir)


# -- serializers -------------------------------------------------------------------------------


JSON_VALUES = [{"a": [1, 2.5, None, True], "ü": "✓"}, [], "text", 3, None, 1e300]
MSGPACK_VALUES = [{1: b"\x00\xff", "s": [1, 2]}, b"bytes", -7, None, {"nested": {"x": 1.5}}]


@pytest.mark.parametrize(
    ("serializer", "values"),
    [("json", JSON_VALUES), ("msgpack", MSGPACK_VALUES), ("pickle", [{1, 2}, (1, "a"), b"x"])],
)
def test_builtin_serializers_round_trip_through_disk(
    disk: DiskStore, serializer: str, values: list[Any]
) -> None:
    cache = Cache(disk, serializer=serializer)
    for i, value in enumerate(values):
        cache.set(f"k{i}", value)
    fresh = Cache(DiskStore(disk.path), serializer=serializer)
    assert [fresh.get(f"k{i}", MISSING) for i in range(len(values))] == values
    header = header_of(disk, "k0")
    name = serializer.encode()
    assert header[3] == len(name) and header[4 : 4 + len(name)] == name
    if serializer == "pickle":
        assert header[1] & SIGNED and len(header) == 4 + len(name) + KID + MAC
    else:  # json and msgpack cannot run code while loading: unsigned
        assert header[1] == 0 and len(header) == 4 + len(name)


def test_json_turns_tuples_into_lists(disk: DiskStore) -> None:
    cache = Cache(disk, serializer="json")
    cache.set("k", (1, 2))
    assert cache.get("k") == [1, 2]


def test_raw_stores_bytes_as_they_are(disk: DiskStore) -> None:
    cache = Cache(disk, serializer="raw")
    cache.set("b", b"\x00\x01raw")
    cache.set("ba", bytearray(b"array"))
    cache.set("mv", memoryview(b"view"))
    assert cache.get("b") == b"\x00\x01raw"
    assert cache.get("ba") == b"array" and type(cache.get("ba")) is bytes
    assert cache.get("mv") == b"view"
    assert body_of(disk, "b") == b"\x00\x01raw"
    with pytest.raises(SerializationError, match="bytes only"):
        cache.set("s", "a str")
    assert cache.get("s", MISSING) is MISSING


class SharedDiskStore(DiskStore):
    """A DiskStore standing in for a shared tier: not private, so every entry is signed
    (on a private store, values that need no pickle are plain: tests/test_plain_encoding.py)."""

    private = False


def test_pickle_passes_bytes_through_unpickled_but_signed(store_dir: Path) -> None:
    disk = SharedDiskStore(store_dir)
    cache = Cache(disk)
    payload = os.urandom(100)
    cache.set("k", payload)
    assert body_of(disk) == payload  # stored as is, not pickled
    header = header_of(disk)
    assert header[1] == SIGNED | PASSTHROUGH | KEY_ID
    assert len(header) == 4 + len(b"pickle") + KID + MAC
    assert Cache(SharedDiskStore(disk.path)).get("k") == payload
    cache.set("ba", bytearray(b"ba"))  # only exact bytes pass through; the rest is pickled
    assert Cache(SharedDiskStore(disk.path)).get("ba") == bytearray(b"ba")
    assert not header_of(disk, "ba")[1] & PASSTHROUGH


class Reversed:
    """A custom serializer: UTF-8 text stored backwards."""

    name = "reversed-text"

    def dumps(self, value: Any) -> bytes:
        return str(value)[::-1].encode()

    def loads(self, data: bytes) -> Any:
        return data.decode()[::-1]


class UnsignedReversed(Reversed):
    name = "reversed-text-unsigned"
    signed = False


def test_custom_serializers_are_signed_unless_they_opt_out(disk: DiskStore) -> None:
    signed = Cache(disk, serializer=Reversed(), namespace="s")
    signed.set("k", "hello")
    assert signed.get("k") == "hello"
    entry = disk.get("s:k")
    assert entry is not None and bytes(entry.value) == b"olleh"
    assert entry.header[1] & SIGNED
    assert len(entry.header) == 4 + len(Reversed.name) + KID + MAC
    unsigned = Cache(disk, serializer=UnsignedReversed(), namespace="u")
    unsigned.set("k", "hello")
    entry = disk.get("u:k")
    assert entry is not None and entry.header[1] == 0
    assert len(entry.header) == 4 + len(UnsignedReversed.name)
    assert (
        Cache(DiskStore(disk.path), serializer=UnsignedReversed(), namespace="u").get("k")
        == "hello"
    )


def test_custom_signed_entries_do_not_verify_under_another_secret(disk: DiskStore) -> None:
    Cache(disk, serializer=Reversed(), secret="a" * 16).set("k", "v")
    reader = Cache(DiskStore(disk.path), serializer=Reversed(), secret="b" * 16)
    assert reader.get("k", MISSING) is MISSING
    assert reader.stats().foreign == 1  # intact, another secret's: left in place


def test_memory_tiers_hold_live_objects_under_pickle_and_what_others_give_back(
    store_dir: Path,
) -> None:
    """With pickle a memory tier holds the object itself; with any other serializer it holds
    what a byte tier would give back, and refuses what they refuse (the value read never
    depends on the tier that answered)."""
    obj = object()
    pickled = Cache(MemoryStore())
    pickled.set("k", obj)
    assert pickled.get("k") is obj
    raw = Cache(MemoryStore(), serializer="raw")
    with pytest.raises(SerializationError):
        raw.set("k", obj)
    raw.set("b", bytearray(b"xy"))
    assert raw.get("b") == b"xy"


# -- compression -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(COMPRESSORS))
def test_compression_applies_above_the_threshold_when_smaller(
    disk: DiskStore, algorithm: str
) -> None:
    cache = Cache(disk, compress=algorithm)
    big = "compressible " * 1000
    cache.set("big", big)
    header = header_of(disk, "big")
    assert header[2] == COMPRESSORS[algorithm]
    assert len(body_of(disk, "big")) < len(pickle.dumps(big, protocol=5)) // 5
    assert Cache(DiskStore(disk.path), compress=algorithm).get("big") == big
    cache.set("small", "tiny")
    assert header_of(disk, "small")[2] == 0
    noise = os.urandom(8000)
    cache.set("noise", noise)  # incompressible: stored as is
    assert header_of(disk, "noise")[2] == 0 and body_of(disk, "noise") == noise
    assert cache.get("noise") == noise


@pytest.mark.parametrize("writer", sorted(COMPRESSORS))
@pytest.mark.parametrize("reader", [None, "zlib"])
def test_the_compression_is_recorded_per_entry(
    disk: DiskStore, writer: str, reader: str | None
) -> None:
    value = {"rows": ["the same row"] * 2000}
    Cache(disk, compress=writer, serializer="json").set("k", value)
    assert header_of(disk)[2] == COMPRESSORS[writer]
    assert Cache(DiskStore(disk.path), compress=reader, serializer="json").get("k") == value


def test_compressed_signed_entries_reject_a_tampered_size(disk: DiskStore) -> None:
    cache = Cache(disk, compress="zlib")
    cache.set("k", "x" * 5000)
    header = bytearray(header_of(disk))
    header[4 + 6] ^= 1  # first byte of the recorded size
    plant(disk, bytes(header), body_of(disk))
    assert cache.get("k", MISSING) is MISSING
    assert disk.get(":k") is None


@pytest.mark.parametrize(
    ("cid", "size", "make_body"),
    [
        pytest.param(1, 0, zlib.compress, id="zlib-size-0"),
        pytest.param(1, 10, zlib.compress, id="zlib-size-10"),
        pytest.param(2, 10, "zstd", id="zstd-frame-declares-more"),
        pytest.param(2, 0, "zstd", id="zstd-size-0"),
        pytest.param(3, 10, "lz4", id="lz4-size-10"),
    ],
)
def test_a_planted_decompression_bomb_is_refused_without_inflating(
    disk: DiskStore, cid: int, size: int, make_body: Callable[[bytes], bytes] | str
) -> None:
    """Unsigned entries are not authenticated: their recorded size must still bound the work."""
    compress = {"zstd": _zstd, "lz4": _lz4}[make_body] if isinstance(make_body, str) else make_body
    body = compress(b"[" + b" " * 50_000_000 + b"]")
    plant(disk, make_header(0, b"json", cid, size.to_bytes(8, "little")), body)
    cache = Cache(disk, serializer="json")
    tracemalloc.start()
    try:
        assert cache.get("k", MISSING) is MISSING
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"decoding a forged entry allocated {peak / 1e6:.0f} MB"
    assert disk.get(":k") is None
    assert cache.stats().rejected == 1


def _zstd(raw: bytes) -> bytes:
    import zstandard

    out: bytes = zstandard.ZstdCompressor().compress(raw)
    return out


def _lz4(raw: bytes) -> bytes:
    import lz4.block

    out: bytes = lz4.block.compress(raw, store_size=False)
    return out


def test_an_unknown_compression_id_is_a_miss(disk: DiskStore) -> None:
    plant(disk, make_header(0, b"json", 9, (2).to_bytes(8, "little")), b"[]")
    cache = Cache(disk, serializer="json")
    assert cache.get("k", MISSING) is MISSING
    assert disk.get(":k") is None


# -- foreign, damaged and unauthenticated entries ----------------------------------------------


@pytest.mark.parametrize(
    ("writer", "reader"),
    [("json", "pickle"), ("pickle", "json"), ("msgpack", "raw"), ("json", "msgpack")],
)
def test_a_serializer_mismatch_is_a_counted_miss_and_removes_the_entry(
    disk: DiskStore, writer: str, reader: str
) -> None:
    Cache(disk, serializer=writer).set("k", b"data" if writer == "msgpack" else [1])
    other = Cache(DiskStore(disk.path), serializer=reader)
    assert other.get("k", MISSING) is MISSING
    assert other.stats().rejected == 1
    assert other.stats().misses == 1
    assert disk.get(":k") is None  # removed
    assert Cache(disk, serializer=writer).get("k", MISSING) is MISSING


def test_another_secret_is_a_miss_that_leaves_the_entry(
    disk: DiskStore, caplog: pytest.LogCaptureFixture
) -> None:
    """An intact entry signed with another secret is that process's: a miss, counted in
    `foreign` and said once, never removed (one misconfigured worker cannot empty a tier)."""
    Cache(disk, secret=FIRST).set("k", ["v"])  # (a value that needs pickle: signed)
    assert Cache(disk, secret=FIRST).get("k") == ["v"]
    other = Cache(DiskStore(disk.path), secret=SECOND)
    with caplog.at_level(logging.WARNING, logger="tiers"):
        assert other.get("k", MISSING) is MISSING
        assert other.get("k", MISSING) is MISSING
    assert (other.stats().foreign, other.stats().rejected) == (2, 0)
    assert caplog.text.count("signed with another secret") == 1
    assert disk.get(":k") is not None
    assert Cache(disk, secret=FIRST).get("k") == ["v"]


def test_a_pop_of_an_unauthenticated_entry_is_a_miss(disk: DiskStore) -> None:
    Cache(disk, secret=FIRST).set("k", ["v"])
    other = Cache(DiskStore(disk.path), secret=SECOND)
    with pytest.raises(KeyError):
        other.pop("k")  # (a pop removes what it reads: the entry goes all the same)
    assert other.stats().foreign == 1
    assert disk.get(":k") is None


def test_tiers_secret_is_shared_by_caches(monkeypatch: pytest.MonkeyPatch, disk: DiskStore) -> None:
    monkeypatch.setenv("TIERS_SECRET", ENV_SECRET)
    Cache(disk).set("k", {"v": 1})
    assert Cache(DiskStore(disk.path)).get("k") == {"v": 1}
    assert Cache(disk, secret=ENV_SECRET).get("k") == {"v": 1}
    monkeypatch.setenv("TIERS_SECRET", "another secret from the env")
    assert Cache(disk).get("k", MISSING) is MISSING


_WRITER = textwrap.dedent(
    """
    import sys
    from tiers import Cache
    Cache(sys.argv[1]).set("k", {"from": "child"})
    """
)


def _write_in_child(path: Path, config_dir: Path, secret: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TIERS_SECRET"}
    env["TIERS_CONFIG_DIR"] = str(config_dir)
    if secret is not None:
        env["TIERS_SECRET"] = secret
    subprocess.run([sys.executable, "-c", _WRITER, str(path)], env=env, check=True, timeout=60)


def test_tiers_secret_is_shared_by_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = PROCESS_SECRET
    _write_in_child(tmp_path / "with", tmp_path / "child-config", secret)
    monkeypatch.setenv("TIERS_SECRET", secret)
    assert Cache(tmp_path / "with").get("k") == {"from": "child"}
    # Without it, each process signs with the key file of its own config dir.
    monkeypatch.delenv("TIERS_SECRET")
    _write_in_child(tmp_path / "without", tmp_path / "child-config", None)
    assert Cache(tmp_path / "without").get("k", MISSING) is MISSING


def _signed_entry(disk: DiskStore, value: Any = "genuine") -> tuple[bytes, bytes]:
    Cache(disk).set("k", value)
    return header_of(disk), body_of(disk)


def _tampered(header: bytes, body: bytes) -> dict[str, tuple[bytes, bytes]]:
    def flip(data: bytes, i: int) -> bytes:
        out = bytearray(data)
        out[i] ^= 0x01
        return bytes(out)

    return {
        "body byte": (header, flip(body, len(body) // 2)),
        "body truncated": (header, body[:-1]),
        "body extended": (header, body + b"."),
        "flags": (flip(header, 1), body),
        "format": (flip(header, 0), body),
        "compression id": (flip(header, 2), body),
        "serializer name": (flip(header, 5), body),
        "mac byte": (flip(header, len(header) - 1), body),
        "mac missing": (header[:-MAC], body),
        "mac truncated": (header[:-1], body),
        "header extended": (header + b"\0", body),
        "empty header": (b"", body),
    }


@pytest.mark.parametrize(
    "damage", list(_tampered(b"\x01\x01\x00\x06pickle" + b"m" * MAC, b"bodybody"))
)
def test_a_tampered_entry_is_a_counted_miss_and_removed(disk: DiskStore, damage: str) -> None:
    header, body = _signed_entry(disk, {"value": list(range(20))})
    bad_header, bad_body = _tampered(header, body)[damage]
    plant(disk, bad_header, bad_body)
    cache = Cache(DiskStore(disk.path))
    assert cache.get("k", MISSING) is MISSING
    assert cache.stats().rejected == 1
    assert disk.get(":k") is None


def test_an_entry_moved_to_another_key_does_not_verify(disk: DiskStore) -> None:
    header, body = _signed_entry(disk, ["for k only"])
    plant(disk, header, body, key="other")
    cache = Cache(DiskStore(disk.path))
    assert cache.get("k") == ["for k only"]
    assert cache.get("other", MISSING) is MISSING
    assert disk.get(":other") is None


def test_a_tampered_passthrough_body_is_a_miss(store_dir: Path) -> None:
    disk = SharedDiskStore(store_dir)
    header, _body = _signed_entry(disk, b"raw bytes under pickle")
    assert header[1] & PASSTHROUGH
    plant(disk, header, b"Raw bytes under pickle")
    assert Cache(disk).get("k", MISSING) is MISSING


# -- planted pickles never run -----------------------------------------------------------------


class _Payload:
    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.canary,))


def _planted_headers(body: bytes) -> dict[str, tuple[bytes, bytes]]:
    size = len(body).to_bytes(8, "little")
    packed = zlib.compress(body)
    return {
        "claims signed, no mac": (make_header(SIGNED, b"pickle"), body),
        "claims signed, forged mac": (make_header(SIGNED, b"pickle") + os.urandom(MAC), body),
        "claims signed, zero mac": (make_header(SIGNED, b"pickle") + bytes(MAC), body),
        "claims unsigned": (make_header(0, b"pickle"), body),
        "claims unsigned with a mac-sized tail": (make_header(0, b"pickle") + bytes(MAC), body),
        "claims passthrough": (make_header(PASSTHROUGH, b"pickle"), body),
        "claims signed, compressed, forged mac": (
            make_header(SIGNED, b"pickle", 1, size) + os.urandom(MAC),
            packed,
        ),
        "claims unsigned, compressed": (make_header(0, b"pickle", 1, size), packed),
    }


PLANTED = list(_planted_headers(b"x"))


@pytest.mark.parametrize("how", PLANTED)
@pytest.mark.parametrize("operation", ["get", "pop", "get_or_set", "get_async", "memory+disk"])
def test_a_planted_pickle_is_never_loaded(
    tmp_path: Path, disk: DiskStore, how: str, operation: str
) -> None:
    canary = tmp_path / "canary"
    header, body = _planted_headers(pickle.dumps(_Payload(canary)))[how]
    plant(disk, header, body)
    cache = Cache(DiskStore(disk.path))
    if operation == "get":
        assert cache.get("k", MISSING) is MISSING
    elif operation == "pop":
        assert cache.pop("k", "absent") == "absent"
    elif operation == "get_or_set":
        assert cache.get_or_set("k", lambda: "computed") == "computed"
    elif operation == "get_async":
        import asyncio

        assert asyncio.run(cache.get_async("k", MISSING)) is MISSING
    else:
        layered = Cache(MemoryStore(), DiskStore(disk.path))
        assert layered.get("k", MISSING) is MISSING
        assert store_of(layered).get(":k") is None
    assert not canary.exists(), f"a planted pickle ({how}) was loaded"
    if operation != "get_or_set":
        assert disk.get(":k") is None


@pytest.mark.parametrize("how", PLANTED)
def test_a_planted_pickle_under_a_custom_signed_serializer_is_never_loaded(
    tmp_path: Path, disk: DiskStore, how: str
) -> None:
    class CustomPickle:
        name = "pickle"  # the same name as the builtin: must not change the rules

        def dumps(self, value: Any) -> bytes:
            return pickle.dumps(value)

        def loads(self, data: bytes) -> Any:
            return pickle.loads(data)

    canary = tmp_path / "canary"
    header, body = _planted_headers(pickle.dumps(_Payload(canary)))[how]
    plant(disk, header, body)
    assert Cache(disk, serializer=CustomPickle()).get("k", MISSING) is MISSING
    assert not canary.exists()


# -- the secret --------------------------------------------------------------------------------


def test_the_key_file_is_created_private_and_reused(disk: DiskStore) -> None:
    config = Path(os.environ["TIERS_CONFIG_DIR"])
    assert not config.exists()
    Cache(disk).set("k", ["v"])  # (a value that needs pickle: signed)
    key_file = config / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    assert len(key_file.read_bytes().strip()) >= 32
    before = key_file.read_bytes()
    assert Cache(DiskStore(disk.path)).get("k") == ["v"]
    assert key_file.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_readable_by_others_is_refused(disk: DiskStore, mode: int) -> None:
    Cache(disk).set("k", ["v"])  # (values that need pickle: signed)
    key_file = Path(os.environ["TIERS_CONFIG_DIR"]) / "secret.key"
    key_file.chmod(mode)
    cache = Cache(DiskStore(disk.path))
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        cache.set("j", ["w"])
    assert "\n" not in str(caught.value) and str(key_file) in str(caught.value)
    assert disk.get(":j") is None  # nothing written
    with pytest.raises(ConfigError):
        cache.get("k")
    assert disk.get(":k") is not None  # a configuration problem is not the entry's fault
    assert Cache(disk, serializer="json").get_or_set("j", lambda: 1) == 1  # unsigned: no key


@pytest.mark.parametrize("secret", ["short", b"15 bytes secret", "", "x" * 15])
def test_a_short_secret_is_refused(disk: DiskStore, secret: str | bytes) -> None:
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        Cache(disk, secret=secret)


def test_a_secret_of_16_bytes_or_more_is_accepted(disk: DiskStore) -> None:
    for secret in ("x" * 16, b"\x00" * 16, "ü" * 8, os.urandom(200)):
        cache = Cache(disk, secret=secret)
        cache.set("k", secret)
        assert cache.get("k") == secret


def test_a_secret_of_the_wrong_type_is_refused(disk: DiskStore) -> None:
    with pytest.raises(ConfigError, match="str or bytes"):
        Cache(disk, secret=1234567890123456789)  # type: ignore[arg-type]


def test_a_short_tiers_secret_is_refused_at_the_first_signed_write(
    monkeypatch: pytest.MonkeyPatch, disk: DiskStore
) -> None:
    monkeypatch.setenv("TIERS_SECRET", "too short")
    cache = Cache(disk)
    with pytest.raises(ConfigError, match="TIERS_SECRET"):
        cache.set("k", {1})  # (a value that needs pickle: signed)
    assert disk.get(":k") is None
    assert not (Path(os.environ["TIERS_CONFIG_DIR"]) / "secret.key").exists()


def test_stats_as_json_after_rejections(disk: DiskStore) -> None:
    Cache(disk, serializer="json").set("k", 1)
    cache = Cache(DiskStore(disk.path))
    cache.get("k")
    assert json.loads(json.dumps(cache.stats().as_dict()))["rejected"] == 1
