"""Key ids (envelope revision 1.1): a signed entry names the secret that signed it, so that an
entry signed with another secret (`Rejected.foreign_key`: a miss that leaves it alone) is told
from a tampered one (removed), over the codec and over real Redis and S3 tiers.

Secrets here are test values, not credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tiers
from tiers import MISSING
from tiers._codec import Codec, Rejected, resolve_compressor, resolve_serializer
from tiers._codec._envelope import (
    DAMAGED,
    FOREIGN_KEY,
    FORMAT,
    FORMAT_UNKNOWN,
    KEY_ID,
    PASSTHROUGH,
    REASONS,
    REVISION,
    SERIALIZER,
    SIGNED,
    TAMPERED,
    _mac_parts,
)
from tiers._codec._signing import KEY_ID_SIZE, MAC_SIZE, Signer

TEAM = b"the team's shared secret, 32 b.."
STRANGER = b"a stranger's secret, also 32 b.."
KEY = "k:\u00fc"
VALUE = {"rows": [f"row {i}" for i in range(40)], "n": 42, "b": b"\x00\xff"}

secrets_st = st.binary(min_size=16, max_size=100)
values_st = st.one_of(
    st.binary(max_size=300),  # bytes under pickle: passed through, still signed
    st.text(max_size=200),
    st.lists(st.integers(), max_size=50),
    st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False), max_size=8),
)
keys_st = st.text(min_size=1, max_size=40)


def codec(secret: bytes, serializer: str = "pickle", compress: str | None = None) -> Codec:
    return Codec(
        resolve_serializer(serializer), resolve_compressor(compress), lambda: secret, threshold=64
    )


def reason_of(c: Codec, key: str, header: bytes, body: Any) -> str:
    with pytest.raises(Rejected) as caught:
        c.decode(key, header, body)
    assert caught.value.reason in REASONS
    assert caught.value.foreign_key == (caught.value.reason == FOREIGN_KEY)
    return caught.value.reason


def legacy_signed(secret: bytes, key: str, value: Any) -> tuple[bytes, bytes]:
    """An entry as tiers wrote signed entries before key ids (envelope 1.0)."""
    body = pickle.dumps(value, protocol=5)
    head = bytes((1, SIGNED, 0, 6)) + b"pickle"
    return head + Signer(secret).sign(_mac_parts(key, head, body)), body


# -- the key id ------------------------------------------------------------------------------


@given(secret=secrets_st)
def test_the_key_id_is_an_hmac_of_a_fixed_domain_truncated(secret: bytes) -> None:
    key_id = Signer(secret).key_id
    assert len(key_id) == KEY_ID_SIZE == 8
    assert key_id == hmac.new(secret, b"tiers-key-id-v1\0", hashlib.sha256).digest()[:8]
    assert key_id == Signer(secret).key_id  # the same for every process holding the secret
    # nothing of the secret in it: not a prefix of the secret, nor of a plain hash of it
    assert key_id not in secret
    assert key_id != hashlib.sha256(secret).digest()[:8]


@given(a=secrets_st, b=secrets_st)
def test_different_secrets_have_different_key_ids(a: bytes, b: bytes) -> None:
    if len(a) <= 64 and len(b) <= 64 and a.ljust(64, b"\0") != b.ljust(64, b"\0"):
        # (HMAC pads keys with zeros to 64 bytes, and hashes longer ones)
        assert Signer(a).key_id != Signer(b).key_id


def test_a_long_secret_has_the_key_id_of_hmac_with_that_secret() -> None:
    secret = b"x" * 200
    assert Signer(secret).key_id == hmac.new(secret, b"tiers-key-id-v1\0", "sha256").digest()[:8]


def test_the_codec_reports_its_key_id() -> None:
    assert codec(TEAM).key_id == Signer(TEAM).key_id
    assert codec(TEAM, "json").key_id is None


# -- the header ------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [None, "zlib", "zstd", "lz4"])
@pytest.mark.parametrize("value", [VALUE, b"raw bytes " * 20], ids=["pickled", "passthrough"])
def test_signed_entries_carry_the_key_id_before_the_mac(compress: str | None, value: Any) -> None:
    c = codec(TEAM, compress=compress)
    header, body = c.encode(KEY, value)
    assert header[0] == FORMAT == 1 and REVISION == (1, 2)  # (1.2 added plain entries only)
    assert header[1] & SIGNED and header[1] & KEY_ID
    assert bool(header[1] & PASSTHROUGH) == isinstance(value, bytes)
    key_id = header[-MAC_SIZE - KEY_ID_SIZE : -MAC_SIZE]
    assert key_id == Signer(TEAM).key_id
    fixed = 4 + header[3] + (8 if header[2] else 0)
    assert len(header) == fixed + KEY_ID_SIZE + MAC_SIZE
    assert c.decode(KEY, header, body) == value


@pytest.mark.parametrize("serializer", ["json", "msgpack", "raw"])
def test_unsigned_entries_are_unchanged(serializer: str) -> None:
    header, _ = codec(TEAM, serializer).encode(KEY, b"bytes" if serializer == "raw" else [1])
    name = serializer.encode()
    assert header == bytes((1, 0, 0, len(name))) + name  # envelope 1.0, as before


def test_a_key_id_flag_without_a_signature_is_damage() -> None:
    c = codec(TEAM, "json")
    header = bytes((1, KEY_ID, 0, 4)) + b"json" + bytes(8)
    assert reason_of(c, KEY, header, b"[1]") == DAMAGED


def test_a_key_id_flag_on_a_signed_entry_is_known_to_unsigned_readers() -> None:
    """A json cache reading a pickle entry refuses it for its serializer, not its flags."""
    header, body = codec(TEAM).encode(KEY, VALUE)
    assert reason_of(codec(TEAM, "json"), KEY, header, body) == SERIALIZER


# -- another secret, tampering ---------------------------------------------------------------


@settings(max_examples=60)
@given(writer=secrets_st, reader=secrets_st, key=keys_st, value=values_st)
def test_an_entry_of_another_secret_is_a_foreign_key_rejection(
    writer: bytes, reader: bytes, key: str, value: Any
) -> None:
    header, body = codec(writer).encode(key, value)
    assert codec(writer).decode(key, header, body) == value
    if Signer(writer).key_id == Signer(reader).key_id:
        return  # the same secret (as HMAC keys go)
    with pytest.raises(Rejected) as caught:
        codec(reader).decode(key, header, body)
    assert caught.value.foreign_key and caught.value.reason == FOREIGN_KEY
    assert Signer(writer).key_id.hex() in str(caught.value)
    assert Signer(reader).key_id.hex() in str(caught.value)


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.mark.parametrize("compress", [None, "zlib"])
def test_every_bit_flip_outside_the_key_id_is_a_removable_rejection(compress: str | None) -> None:
    """Same key id, bad MAC: tampered (removed), never foreign; flipping the key id itself
    makes an entry of "another key" (a miss left alone; it is never loaded either)."""
    c = codec(TEAM, compress=compress)
    header, body = c.encode(KEY, VALUE)
    body = bytes(body)
    key_id_at = range(len(header) - MAC_SIZE - KEY_ID_SIZE, len(header) - MAC_SIZE)
    for bit in range(len(header) * 8):
        reason = reason_of(c, KEY, _flip(header, bit), body)
        assert (reason == FOREIGN_KEY) == (bit // 8 in key_id_at), (bit, reason)
    for bit in range(0, len(body) * 8, 7):
        assert reason_of(c, KEY, header, _flip(body, bit)) == TAMPERED
    assert reason_of(c, KEY, header[:-1], body) == TAMPERED
    assert reason_of(c, KEY, header + b"\0", body) == TAMPERED
    assert reason_of(c, KEY, header[:-MAC_SIZE], body) == TAMPERED
    assert reason_of(c, "another key", header, body) == TAMPERED  # moved: same key id


@settings(max_examples=40)
@given(secret=secrets_st, key=keys_st, value=values_st, data=st.data())
def test_a_tampered_entry_of_this_key_is_never_foreign(
    secret: bytes, key: str, value: Any, data: st.DataObject
) -> None:
    c = codec(secret)
    header, body = c.encode(key, value)
    body = bytes(body)
    mac_at = len(header) - MAC_SIZE
    where = data.draw(st.sampled_from(["mac", "body"]) if body else st.just("mac"))
    if where == "mac":
        header = _flip(header, data.draw(st.integers(mac_at * 8, len(header) * 8 - 1)))
    else:
        body = _flip(body, data.draw(st.integers(0, len(body) * 8 - 1)))
    assert reason_of(c, key, header, body) == TAMPERED


def test_a_forged_key_id_does_not_make_a_planted_entry_load() -> None:
    """Someone who copies the team's key id into a planted entry gets a rejection."""
    body = pickle.dumps("planted")
    head = bytes((1, SIGNED | KEY_ID, 0, 6)) + b"pickle" + Signer(TEAM).key_id
    assert reason_of(codec(TEAM), KEY, head + bytes(MAC_SIZE), body) == TAMPERED


# -- entries written before key ids (envelope 1.0) -------------------------------------------


@given(key=keys_st, value=values_st)
def test_entries_signed_before_key_ids_still_read(key: str, value: Any) -> None:
    header, body = legacy_signed(TEAM, key, value)
    assert codec(TEAM).decode(key, header, body) == value


def test_a_legacy_entry_of_another_secret_or_tampered_is_tampered_as_before() -> None:
    header, body = legacy_signed(TEAM, KEY, VALUE)
    assert reason_of(codec(STRANGER), KEY, header, body) == TAMPERED  # the key is unknown
    assert reason_of(codec(TEAM), KEY, _flip(header, len(header) * 8 - 1), body) == TAMPERED
    assert reason_of(codec(TEAM), KEY, header, body[:-1]) == TAMPERED


def test_a_legacy_entry_cannot_be_relabelled_with_a_key_id() -> None:
    header, body = legacy_signed(TEAM, KEY, VALUE)
    fixed, mac = header[:-MAC_SIZE], header[-MAC_SIZE:]
    relabelled = bytes((1, SIGNED | KEY_ID)) + fixed[2:] + Signer(TEAM).key_id + mac
    assert reason_of(codec(TEAM), KEY, relabelled, body) == TAMPERED


# -- the other reasons, and `Rejected` itself --------------------------------------------------


def test_other_rejections_carry_their_reason() -> None:
    header, body = codec(TEAM).encode(KEY, VALUE)
    assert reason_of(codec(TEAM), KEY, b"\x02" + header[1:], body) == FORMAT_UNKNOWN
    assert reason_of(codec(TEAM), KEY, header[:1] + b"\x41" + header[2:], body) == FORMAT_UNKNOWN
    json_header, json_body = codec(TEAM, "json").encode(KEY, [1])
    assert reason_of(codec(TEAM), KEY, json_header, json_body) == SERIALIZER
    assert reason_of(codec(TEAM, "json"), KEY, json_header, b"[1") == DAMAGED
    unsigned = bytes((1, 0, 0, 6)) + b"pickle"
    assert reason_of(codec(TEAM), KEY, unsigned, pickle.dumps(1)) == TAMPERED


def test_rejected_defaults_to_damage_and_keeps_its_reason_when_pickled() -> None:
    plain = Rejected("damaged somehow")
    assert plain.reason == DAMAGED and not plain.foreign_key and str(plain) == "damaged somehow"
    foreign = Rejected("another key", reason=FOREIGN_KEY)
    copy = pickle.loads(pickle.dumps(foreign))
    assert type(copy) is Rejected and copy.foreign_key and str(copy) == "another key"
    assert {FOREIGN_KEY, TAMPERED, FORMAT_UNKNOWN, SERIALIZER, DAMAGED} == REASONS


# -- through a Cache: DiskStore (today's behaviour), Redis and S3 ----------------------------


def test_a_wrong_secret_cache_misses_and_counts_a_foreign_entry(tmp_path: Any) -> None:
    with tiers.Cache(tiers.DiskStore(tmp_path / "d"), secret=TEAM) as team:
        team.set("k", VALUE)
    with tiers.Cache(tiers.DiskStore(tmp_path / "d"), secret=STRANGER) as stranger:
        assert stranger.get("k", MISSING) is MISSING
        assert (stranger.stats().foreign, stranger.stats().rejected) == (1, 0)


SharedCache = Callable[[bytes], tiers.Cache]


@pytest.fixture
def redis_tier(redis_url: str) -> Iterator[tuple[SharedCache, Any]]:
    """(a Cache over the Redis server with a given secret, a RedisStore to look inside)."""
    caches: list[tiers.Cache] = []

    def make(secret: bytes) -> tiers.Cache:
        caches.append(tiers.Cache(redis_url, secret=secret))
        return caches[-1]

    store = tiers.RedisStore(redis_url)
    yield make, store
    for cache in caches:
        cache.close()
    store.close()


@pytest.fixture
def s3_tier(moto_s3: Any) -> Iterator[tuple[SharedCache, Any]]:
    """(a Cache over one S3 prefix with a given secret, an ObjectStore to look inside)."""
    bucket = moto_s3.new_bucket()
    caches: list[tiers.Cache] = []

    def make(secret: bytes) -> tiers.Cache:
        store = tiers.ObjectStore(f"s3://{bucket}/p/", **moto_s3.store_options())
        caches.append(tiers.Cache(store, secret=secret))
        return caches[-1]

    store = tiers.ObjectStore(f"s3://{bucket}/p/", **moto_s3.store_options())
    yield make, store
    for cache in caches:
        cache.close()
    store.close()


@pytest.fixture(params=["redis", "s3"])
def shared(request: pytest.FixtureRequest) -> tuple[SharedCache, Any]:
    fixture: tuple[SharedCache, Any] = request.getfixturevalue(f"{request.param}_tier")
    return fixture


def test_a_wrong_secret_process_misses_on_a_shared_tier(shared: tuple[SharedCache, Any]) -> None:
    make, _store = shared
    make(TEAM).set("k", VALUE)
    stranger = make(STRANGER)
    assert stranger.get("k", MISSING) is MISSING
    assert stranger.get_many(["k"], MISSING) == {"k": MISSING}
    assert make(TEAM).get("k", MISSING) in (VALUE, MISSING)  # (kept: see the test below)


def test_a_wrong_secret_process_leaves_the_teams_entries_alone(
    shared: tuple[SharedCache, Any],
) -> None:
    make, store = shared
    team = make(TEAM)
    for key in ("k", "m", "a"):
        team.set(key, VALUE)
    stranger = make(STRANGER)
    assert stranger.get("k", MISSING) is MISSING
    assert stranger.get_many(["m"], MISSING) == {"m": MISSING}
    assert stranger.get("a", MISSING) is MISSING
    assert store.get(":k") is not None and store.get(":m") is not None
    assert store.get(":a") is not None
    fresh = make(TEAM)  # another process of the team, nothing in memory
    assert fresh.get("k") == VALUE
    assert fresh.get_many(["m", "a"]) == {"m": VALUE, "a": VALUE}


def test_a_tampered_entry_on_a_shared_tier_is_still_removed(
    shared: tuple[SharedCache, Any],
) -> None:
    from tiers._stores import Entry

    make, store = shared
    make(TEAM).set("k", VALUE)
    entry = store.get(":k")
    assert entry is not None and entry.header[1] & KEY_ID
    body = bytearray(entry.value)
    body[len(body) // 2] ^= 1
    store.set(
        ":k",
        Entry(bytes(body), entry.header, entry.created_at, entry.expires_at, entry.tags,
              entry.meta, entry.size),
    )  # fmt: skip
    reader = make(TEAM)
    assert reader.get("k", MISSING) is MISSING
    assert reader.stats().rejected == 1
    assert store.get(":k") is None
