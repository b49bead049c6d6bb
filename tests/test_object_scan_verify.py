"""ObjectStore's scan and verify against real S3 servers (moto, SeaweedFS) and obstore's memory
and local stores: what scan gives and what it downloads, and damage planted straight into the
bucket found, fixed, and gone on the next verify."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import obstore
import obstore.store
import pytest

from tiers._stores import Entry, _wire
from tiers._stores._object import ObjectStore
from tiers._stores._protocol import implements
from tiers.errors import StorePermissionError
from tiers.protocol import Damage, SupportsLocks, SupportsScan, SupportsUsage, SupportsVerify
from tiers.testing import FakeClock

from ._origin import TracingStore

MiB = 1024 * 1024
BACKENDS = ["memory", "local", "moto", "seaweed"]


class Medium:
    """A store and the raw obstore store under it (its objects under `root`)."""

    def __init__(self, store: ObjectStore, raw: Any, root: str, kind: str = "memory") -> None:
        self.store = store
        self.raw = raw
        self.root = root
        self.kind = kind

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if self.root else relative

    def put(self, relative: str, data: bytes) -> None:
        obstore.put(self.raw, self.path(relative), data)

    def read(self, relative: str) -> bytes:
        return bytes(obstore.get(self.raw, self.path(relative)).bytes())

    def exists(self, relative: str) -> bool:
        try:
            obstore.head(self.raw, self.path(relative))
        except FileNotFoundError:
            return False
        return True

    def remove(self, relative: str) -> None:
        obstore.delete(self.raw, self.path(relative))

    def entry(self, key: str) -> str:
        """An entry's object, relative to the store's root."""
        return self.store._layout.relative(self.store._layout.entry(key))

    def marker(self, tag: str, key: str) -> str:
        layout = self.store._layout
        return layout.relative(layout.marker(tag, layout.entry(key)))


@pytest.fixture(params=BACKENDS)
def medium(request: Any, tmp_path: Path) -> Iterator[Medium]:
    kind = request.param
    if kind == "memory":
        store = ObjectStore("memory://", prefix="p")
        made = Medium(store, store.store, "p", kind)
    elif kind == "local":
        store = ObjectStore(f"file://{tmp_path}/objects", prefix="cache")
        made = Medium(store, obstore.store.LocalStore(tmp_path / "objects"), "cache", kind)
    else:
        server = request.getfixturevalue("moto_s3" if kind == "moto" else "seaweed_s3")
        bucket = server.new_bucket()
        store = ObjectStore(f"s3://{bucket}", prefix="p/q", **server.store_options())
        raw = obstore.store.from_url(f"s3://{bucket}", **server.store_options())
        made = Medium(store, raw, "p/q", kind)
    yield made
    made.store.close()


def scanned(store: ObjectStore, prefix: str = "", tag: str | None = None, *,
            use_async: bool = False) -> dict[str, Entry]:  # fmt: skip
    if not use_async:
        return dict(store.scan(prefix, tag))

    async def collect() -> dict[str, Entry]:
        return {key: entry async for key, entry in store.scan_async(prefix, tag)}

    return asyncio.run(collect())


def test_object_store_has_scan_and_verify_and_no_usage() -> None:
    store = ObjectStore("memory://")
    assert implements(store, SupportsScan) and isinstance(store, SupportsScan)
    assert implements(store, SupportsVerify) and isinstance(store, SupportsVerify)
    assert not implements(store, SupportsUsage)


# -- scan ------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_scan_gives_every_entry_present_with_its_metadata_and_no_value(
    medium: Medium, use_async: bool
) -> None:
    store = medium.store
    clock = FakeClock()
    store.clock = clock
    now = clock.time()
    long_key = "a/" + "k" * 600  # past 400 bytes: its object's name is a digest
    store.set("a/1", Entry(b"one", b"hd1", now - 5, None, ("red", "blue"), {"n": 1}))
    store.set("a/2", Entry(b"two!", b"h2", now - 4, now + 5, ("red",)))
    store.set("b/1", Entry(b"three", b"", now - 3, now + 100, (), {"n": [3]}))
    store.set(long_key, Entry(b"long", b"h", now, None, ("blue",)))
    many = 30 if medium.kind == "moto" else 1010  # more than a page of the listing (but on
    for start in range(0, many, 101):  # moto, at 300 requests/s: SeaweedFS pages S3 lists)
        store.set_many([(f"m/{i:04}", Entry(b"x" * (i % 7), b"h", now))
                        for i in range(start, min(many, start + 101))])  # fmt: skip
    clock.advance(10)  # a/2 expired: not a key any more, but present
    assert "a/2" not in set(store.keys("a/"))

    found = scanned(store, use_async=use_async)
    assert len(found) == many + 4
    one, two, three = found["a/1"], found["a/2"], found["b/1"]
    assert (one.value, one.header, one.created_at, one.expires_at) == (None, b"hd1", now - 5, None)
    assert (one.tags, one.meta, one.size, one.accessed_at) == (("red", "blue"), {"n": 1}, 6, None)
    assert (two.value, two.expires_at, two.tags, two.size) == (None, now + 5, ("red",), 6)
    assert (three.expires_at, three.meta, three.size) == (now + 100, {"n": [3]}, 5)
    assert found[long_key].tags == ("blue",)
    assert all(entry.value is None and entry.version for entry in found.values())
    assert found["m/0006"].size == 6 + 1

    assert sorted(scanned(store, "a/", use_async=use_async)) == ["a/1", "a/2", long_key]
    assert sorted(scanned(store, "a/k", use_async=use_async)) == [long_key]
    assert sorted(scanned(store, tag="red", use_async=use_async)) == ["a/1", "a/2"]
    assert sorted(scanned(store, "a/", "blue", use_async=use_async)) == ["a/1", long_key]
    assert scanned(store, "m/", "red", use_async=use_async) == {}
    assert scanned(store, "zzz", use_async=use_async) == {}
    store.set("a/1", Entry(b"one", b"hd1", now, None, ("blue",)))  # its red marker is stale
    assert sorted(scanned(store, tag="red", use_async=use_async)) == ["a/2"]


def test_scan_skips_what_is_not_a_record(medium: Medium) -> None:
    store = medium.store
    store.set("good", Entry(b"g", b"h", 1.0))
    store.set("copied", Entry(b"c", b"h", 1.0))
    medium.put(medium.entry("junk"), b"not a record")
    medium.put(medium.entry("cut"), medium.read(medium.entry("good"))[:30])
    medium.put(medium.entry("other"), medium.read(medium.entry("copied")))  # another's name
    medium.put(medium.store._layout.relative(store._layout.entries()) + "/x.tmp", b"T1")
    assert sorted(dict(store.scan())) == ["copied", "good"]
    assert sorted(scanned(store, use_async=True)) == ["copied", "good"]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_scan_reads_record_heads_never_values(moto_s3: Any, use_async: bool) -> None:
    """Counted at the S3 client: the bytes of every GET a scan makes."""
    origin = TracingStore(obstore.store.S3Store(moto_s3.new_bucket(), **moto_s3.store_options()))
    store = ObjectStore(origin, prefix="big")
    body = bytes(2 * MiB)
    keys = ["a", "b", "k" * 6000]  # the long key's record head is past the first ranged read
    for i, key in enumerate(keys):
        store.set(key, Entry(body, b"hdr", 1.0, None, ("t",), {"i": i, "m": "x" * 5000}))
    origin.reset()
    found = scanned(store, tag="t" if use_async else None, use_async=use_async)
    assert sorted(found) == sorted(keys)
    assert {entry.size for entry in found.values()} == {len(body) + 3}
    assert found[keys[2]].meta == {"i": 2, "m": "x" * 5000}
    assert origin.requests["get"] >= 3
    assert origin.bytes_fetched < 64 * 1024, f"{origin.bytes_fetched} bytes for a scan"
    store.close()


# -- verify ----------------------------------------------------------------------------------


def _plant_damage(medium: Medium) -> dict[str, tuple[str, str | None]]:
    """Damage of every kind verify finds in object storage; what it should report, by
    location: (problem, key)."""
    store = medium.store
    for name in ("flipped", "cut", "renamed", "unindexed", "healthy", "stale"):
        store.set(name, Entry(b"value of " + name.encode(), b"hdr", 1.0, None, ("t",)))
    flipped = bytearray(medium.read(medium.entry("flipped")))
    flipped[0] ^= 0x01  # a flipped bit in the magic
    medium.put(medium.entry("flipped"), bytes(flipped))
    medium.put(medium.entry("cut"), medium.read(medium.entry("cut"))[:36])  # in its metadata
    renamed = bytearray(medium.read(medium.entry("renamed")))
    key_at = renamed.index(b"renamed", _wire.FIXED.size)  # the key, before the body
    renamed[key_at] ^= 0x04  # "renamed" -> "venamed": a flipped bit in the key
    medium.put(medium.entry("renamed"), bytes(renamed))
    medium.remove(medium.marker("t", "unindexed"))  # an entry whose marker is gone
    store.set("stale", Entry(b"value of stale", b"hdr", 1.0))  # overwritten without its tag
    medium.put(medium.marker("t", "gone"), b"")  # a marker whose entry is gone
    medium.put("e/junk.tmp", b"junk")  # not an entry's name
    medium.put("t/not-a-tag/" + medium.entry("healthy")[2:], b"")  # not a tag's folder
    medium.put(medium.marker("t", "healthy") + "x", b"")  # not an entry's name
    medium.put(medium.marker("other", "healthy"), b"not empty")  # not a marker
    medium.put("l/weird", b"x")  # not a lock
    medium.put("l/~clock." + "ab" * 16, b"")  # a probe left by a stopped process
    medium.put("unrelated/file", b"another application's")  # outside the store's folders
    return {
        medium.entry("flipped"): ("unreadable", "flipped"),
        medium.entry("cut"): ("truncated", "cut"),
        medium.entry("renamed"): ("checksum", "renamed"),
        medium.marker("t", "unindexed"): ("index", "unindexed"),
        medium.marker("t", "stale"): ("leftover", "stale"),
        medium.marker("t", "gone"): ("leftover", "gone"),
        "e/junk.tmp": ("orphan", None),
        "t/not-a-tag/" + medium.entry("healthy")[2:]: ("orphan", None),
        medium.marker("t", "healthy") + "x": ("orphan", None),
        medium.marker("other", "healthy"): ("orphan", None),
        "l/weird": ("orphan", None),
        "l/~clock." + "ab" * 16: ("temp", None),
    }


def _by_place(damages: list[Damage]) -> dict[str, tuple[str, str | None]]:
    found: dict[str, tuple[str, str | None]] = {}
    for damage in damages:
        assert damage.location not in found, damage
        found[damage.location] = (damage.problem, damage.key)
    return found


def test_verify_finds_planted_damage_and_fix_leaves_a_clean_store(medium: Medium) -> None:
    store = medium.store
    clock = FakeClock(time.time() + 3600)  # the probe planted below is an hour old on it
    store.clock = clock
    store.set("expired", Entry(b"e", b"h", clock.time(), clock.time() + 1, ("t",)))
    clock.advance(5)  # expired, still present: not damage
    if implements(store, SupportsLocks):  # (not on a local store)
        assert store.acquire_lock("lapsed", "token", 0.001)  # a lapsed lease: not damage
    store.set_many([(f"fine/{i}", Entry(b"fine %d" % i, b"h", 1.0)) for i in range(30)])
    assert list(store.verify()) == []

    expected = _plant_damage(medium)
    found = list(store.verify())
    assert _by_place(found) == expected
    assert not any(damage.fixed for damage in found)
    assert medium.exists(medium.entry("flipped"))  # verify alone changes nothing

    fixed = list(store.verify(fix=True))
    # removing the damaged records leaves their markers indexing nothing: found and fixed
    gone = {medium.marker("t", key): ("leftover", key) for key in ("flipped", "cut", "renamed")}
    assert _by_place(fixed) == expected | gone
    assert all(damage.fixed for damage in fixed)
    assert list(store.verify()) == []

    for name in ("healthy", "unindexed", "stale"):
        entry = store.get(name)
        assert entry is not None and entry.value == b"value of " + name.encode()
    assert store.get("fine/29") is not None
    assert sorted(store.keys(tag="t")) == ["healthy", "unindexed"]
    assert medium.read("unrelated/file") == b"another application's"
    assert store.evict("t") == 2  # the marker put back finds "unindexed"


def test_verify_fix_keeps_a_record_rewritten_since_it_was_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S3 has no conditional delete: a damaged record is deleted only if a HEAD just before
    still shows the bytes judged, so a write landing after verify's read survives."""
    store = ObjectStore("memory://")
    medium = Medium(store, store.store, "")
    medium.put(medium.entry("k"), b"not a record")
    judge = _wire.damage

    def rewrite_then_judge(data: bytes) -> tuple[str, str] | None:
        store.set("k", Entry(b"new", b"h", 1.0))  # another process's write, after the read
        return judge(data)

    monkeypatch.setattr(_wire, "damage", rewrite_then_judge)
    (damage,) = list(store.verify(fix=True))
    monkeypatch.undo()
    assert (damage.problem, damage.key) == ("unreadable", "k")
    entry = store.get("k")
    assert entry is not None and entry.value == b"new"
    assert list(store.verify()) == []


def test_a_local_store_is_walked_without_following_links(tmp_path: Path) -> None:
    """On ``file://``, links planted in the store's folders are listed, never followed:
    scan does not read through them and a fix removes the links, not their targets."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "victim").write_bytes(b"keep me")
    root = tmp_path / "objects" / "cache"
    store = ObjectStore(f"file://{tmp_path}/objects", prefix="cache")
    medium = Medium(store, obstore.store.LocalStore(tmp_path / "objects"), "cache", "local")
    store.set("good", Entry(b"g", b"h", 1.0, None, ("t",)))
    victim_record = outside / "record"
    victim_record.write_bytes(medium.read(medium.entry("good")))
    (root / medium.entry("dir")).symlink_to(outside)  # a linked directory, named as an entry
    (root / medium.entry("good")).rename(root / "e" / "moved")
    (root / medium.entry("good")).symlink_to(victim_record)  # a linked record
    os.mkfifo(root / medium.entry("fifo"))  # would block a read
    (root / (medium.entry("cut") + "#3")).write_bytes(b"T1")  # a local write cut short
    (root / "t" / "linked").symlink_to(outside)  # a link in the tags folder
    assert list(dict(store.scan())) == []
    assert scanned(store, tag="t", use_async=True) == {}

    expected = {
        medium.entry("dir"): ("orphan", None),
        medium.entry("good"): ("orphan", None),
        medium.entry("fifo"): ("orphan", None),
        medium.entry("cut") + "#3": ("temp", None),
        "e/moved": ("orphan", None),
        "t/linked": ("orphan", None),
        medium.marker("t", "good"): ("leftover", "good"),  # its entry is a link: gone
    }
    assert _by_place(list(store.verify())) == expected
    assert _by_place(list(store.verify(fix=True))) == expected
    assert list(store.verify()) == []
    assert (outside / "sub" / "victim").read_bytes() == b"keep me"
    assert victim_record.exists() and outside.is_dir()
    assert sorted(os.listdir(root / "e")) == []

    # a linked tag folder: never written through; its entry's marker is put once it is gone
    store.set("new", Entry(b"n", b"h", 1.0, None, ("u",)))
    marker = root / medium.marker("u", "new")
    marker.unlink()
    marker.parent.rmdir()
    marker.parent.symlink_to(outside)
    with pytest.raises(StorePermissionError):
        store.set("other", Entry(b"o", b"h", 1.0, None, ("u",)))
    assert list(dict(store.scan())) == ["new"]
    first = _by_place(list(store.verify(fix=True)))
    assert first == {
        medium.marker("u", "new"): ("index", "new"),
        medium.marker("u", "new").rpartition("/")[0]: ("orphan", None),
    }
    assert sorted(os.listdir(outside)) == ["record", "sub"]
    assert _by_place(list(store.verify(fix=True))) == {medium.marker("u", "new"): ("index", "new")}
    assert list(store.verify()) == []
    assert list(store.keys(tag="u")) == ["new"]
