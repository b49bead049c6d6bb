"""FolderStore against `tiers.testing.StoreTests`, plus what is particular to it: a layout
people can browse, data files named after their serializer, readable folder names, atomic
overwrites under concurrent readers, pickling and URLs."""

from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import tiers
from tests._disk_workers import check_value, entry, make_value
from tests._store_media import FolderMedium
from tiers import FolderStore
from tiers._stores import Store
from tiers._stores._folder._naming import ENTRY_DIR, SLUG_MAX, entry_dir, slug
from tiers._stores._url import tier_opener
from tiers.errors import ConfigError
from tiers.testing import StoreTests
from tiers.testing._base import HOSTILE_KEYS


class TestFolderStore(FolderMedium, StoreTests):
    def make_store(self, tmp_path: Path) -> Store:
        return FolderStore(tmp_path / "store")


def entry_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir())


# -- a layout to browse ----------------------------------------------------------------------


def test_layout_is_browsable(tmp_path: Path) -> None:
    """One folder per entry, named after the key; `cat data*.json` shows the value and
    metadata.json says what it is."""
    root = tmp_path / "results"
    cache = tiers.Cache(FolderStore(root), serializer="json")
    cache.set("report", {"a": 1}, tags=("monthly",), meta={"by": "test"})
    (folder,) = entry_folders(root)
    assert folder.name.startswith("report-")
    (data,) = folder.glob("data*.json")
    assert data.read_text() == '{"a":1}'
    text = (folder / "metadata.json").read_text()
    assert text.startswith("{\n  ")  # pretty-printed
    meta = json.loads(text)
    assert meta["key"] == ":report"
    assert (meta["serializer"], meta["compression"]) == ("json", None)
    assert meta["checksum"] == xxhash.xxh3_64_hexdigest(data.read_bytes())
    assert (meta["data"], meta["size"]) == (data.name, 7)
    assert (meta["tags"], meta["meta"], meta["expires"]) == (["monthly"], {"by": "test"}, None)
    assert meta["created"].endswith("Z") and meta["created"][:2] == "20"
    assert sorted(p.name for p in folder.iterdir()) == sorted([data.name, "metadata.json"])
    assert {".gitignore", "CACHEDIR.TAG", ".tiers-folder.json"} <= {p.name for p in root.iterdir()}
    cache.set("report", {"a": 2}, ttl=60)  # an overwrite keeps one folder, one data file
    (again,) = entry_folders(root)
    assert again == folder
    assert len(list(folder.glob("data*"))) == 1
    assert json.loads((folder / "metadata.json").read_text())["expires"].endswith("Z")
    cache.close()


BIG = {"rows": [{"name": "x" * 20, "n": n} for n in range(200)]}


@pytest.mark.parametrize(
    ("serializer", "compress", "value", "suffix"),
    [
        ("pickle", None, BIG, ".pkl"),
        ("json", None, BIG, ".json"),
        ("msgpack", None, BIG, ".msgpack"),
        ("raw", None, b"\x00\x01" * 5000, ".bin"),
        ("pickle", "zlib", BIG, ".pkl.zlib"),
        ("json", "zstd", BIG, ".json.zst"),
        ("msgpack", "lz4", BIG, ".msgpack.lz4"),
        ("json", "zlib", {"small": 1}, ".json"),  # below the compression threshold
    ],
)
def test_data_file_extension_follows_serializer_and_compression(
    tmp_path: Path, serializer: str, compress: str | None, value: object, suffix: str
) -> None:
    cache = tiers.Cache(FolderStore(tmp_path / "s"), serializer=serializer, compress=compress)
    cache.set("v", value)
    (data,) = entry_folders(tmp_path / "s")[0].glob("data.*")
    assert data.name.endswith(suffix) and data.name.count(".") == suffix.count(".") + 1
    assert cache.get("v") == value
    meta = json.loads((data.parent / "metadata.json").read_text())
    assert meta["compression"] == (compress if suffix.count(".") == 2 else None)
    cache.close()


def test_unknown_serializer_gets_a_dat_file(tmp_path: Path) -> None:
    class Upper:
        name = "upper-text"

        def dumps(self, value: str) -> bytes:
            return value.upper().encode()

        def loads(self, data: bytes) -> str:
            return data.decode()

    cache = tiers.Cache(FolderStore(tmp_path / "s"), serializer=Upper())
    cache.set("k", "hello")
    (data,) = entry_folders(tmp_path / "s")[0].glob("data.*")
    assert data.suffix == ".dat" and data.read_bytes() == b"HELLO"
    assert json.loads((data.parent / "metadata.json").read_text())["serializer"] == "upper-text"
    assert cache.get("k") == "HELLO"
    cache.close()


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (":user:42", "user-42"),
        ("app:report", "app-report"),
        (":mod.func:v1:3f2a", "mod.func-v1-3f2a"),
        ("Café Crème / Über", "cafe-creme-uber"),
        ("../../etc/passwd", "etc-passwd"),
        ("..", "key"),
        ("", "key"),
        ("\0", "key"),
        ("日本語", "key"),
        (".hidden", "hidden"),
        ("snake_case-and.dots", "snake_case-and.dots"),
    ],
)
def test_slugs_read_well(key: str, expected: str) -> None:
    assert slug(key) == expected


@settings(max_examples=300, deadline=None)
@given(*[st.text(st.characters(exclude_categories=()), max_size=300)] * 2)
def test_folder_names_are_safe_and_distinct(a: str, b: str) -> None:
    for key in (a, b):
        name = entry_dir(key)
        assert ENTRY_DIR.match(name) and not name.startswith(".")
        assert "/" not in name and "\\" not in name and "\0" not in name
        assert 1 <= len(slug(key)) <= SLUG_MAX
    assert (entry_dir(a) == entry_dir(b)) == (a == b)


def test_hostile_keys_through_a_cache_stay_inside_the_root(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "neighbour.txt").write_text("keep")
    before = sorted(os.listdir(parent))
    root = parent / "store"
    cache = tiers.Cache(FolderStore(root), serializer="json")
    for i, key in enumerate(HOSTILE_KEYS):
        cache.set(key, {"i": i})
    for i, key in enumerate(HOSTILE_KEYS):
        assert cache.get(key) == {"i": i}, repr(key[:20])
    assert sorted(os.listdir(parent)) == sorted([*before, "store"])
    folders = entry_folders(root)
    assert len(folders) == len(HOSTILE_KEYS)
    assert all(ENTRY_DIR.match(p.name) for p in folders)
    for path in root.rglob("*"):
        assert path.resolve().is_relative_to(root.resolve())
    assert cache.clear() == len(HOSTILE_KEYS)
    assert entry_folders(root) == []
    cache.close()


# -- tiers, pickling, URLs -------------------------------------------------------------------


def test_memory_over_folder_with_signed_pickle(tmp_path: Path) -> None:
    """Values round-trip through the folder tier, survive the process (a new cache), and an
    entry signed with another secret is refused."""
    value = {"tuple": (1, 2), "set": {3}, "bytes": b"\x00" * 3}
    cache = tiers.Cache(tiers.MemoryStore(), FolderStore(tmp_path / "s"), secret="s" * 32)
    cache.set("k", value)
    cache.set("raw", b"bytes pass through")
    assert cache.get("k") == value
    cache.close()
    fresh = tiers.Cache(tiers.MemoryStore(), FolderStore(tmp_path / "s"), secret="s" * 32)
    assert fresh.info("k").tier == 1  # type: ignore[union-attr]
    assert fresh.get("k") == value
    assert fresh.get("raw") == b"bytes pass through"
    (data,) = (tmp_path / "s").glob("k-*/data.*.pkl")
    assert data.read_bytes().startswith(b"\x80")  # the pickle itself, not an envelope
    fresh.close()
    other = tiers.Cache(FolderStore(tmp_path / "s"), secret="t" * 32)
    assert other.get("k", "miss") == "miss"
    other.close()


def test_overwrites_under_concurrent_readers_never_miss_or_mix(tmp_path: Path) -> None:
    """Readers of a key being overwritten (small and 2 MB values) always get a whole value of
    that key: never a miss, never a torn or foreign one."""
    store = FolderStore(tmp_path / "s")
    sizes = (10, 20_000, 300_000, 2_000_000)
    store.set("hot", entry(make_value("hot", 0, 10)))
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def write(n: int) -> None:
        seq = n
        while not stop.is_set():
            seq += 2
            store.set("hot", entry(make_value("hot", seq, sizes[seq // 2 % len(sizes)])))

    def read() -> None:
        while not stop.is_set():
            got = store.get("hot")
            try:
                assert got is not None, "a miss during an overwrite"
                check_value("hot", got.value)
                reads[0] += 1
            except AssertionError as exc:
                problems.append(str(exc))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    stop.wait(1.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert problems == []
    assert reads[0] > 50
    assert len(list(entry_folders(store.directory)[0].iterdir())) == 2
    assert store.stats().rejected == 0
    store.close()


def test_pickled_store_points_at_the_same_folder(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    store.set("k", entry(b"value"))
    copy = pickle.loads(pickle.dumps(store))
    assert repr(copy) == repr(store) == f"FolderStore({str(tmp_path / 's')!r})"
    assert copy.directory == store.directory == (tmp_path / "s").resolve()
    assert copy.get("k").value == b"value"
    store.close()
    copy.close()


def test_folder_url_opens_a_folder_store(tmp_path: Path) -> None:
    root = tmp_path / "from url"
    store, owned = tier_opener(f"folder://{root.as_posix().replace(' ', '%20')}")()
    assert isinstance(store, FolderStore) and owned
    assert store.directory == root.resolve()
    store.close()
    cache = tiers.Cache("memory://", f"folder://{root}")
    cache.set("k", [1, 2])
    cache.close()
    assert tiers.Cache(FolderStore(root)).get("k") == [1, 2]
    for bad in ("folder://", f"folder://{root}?max_size=1GB"):
        with pytest.raises(ConfigError):
            tier_opener(bad)


def test_data_survives_reopen_with_expiry_tags_and_meta(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    created = 1_700_000_000.25
    store.set("k", tiers._stores.Entry(b"v", b"h", created, 4e9, ("a", "b"), {"m": [1]}, 1))
    store.close()
    again = FolderStore(tmp_path / "s")
    got = again.get("k")
    assert got is not None
    assert (got.value, got.header, got.created_at, got.expires_at) == (b"v", b"h", created, 4e9)
    assert (got.tags, got.meta, got.size) == (("a", "b"), {"m": [1]}, 2)
    assert sorted(again.keys(tag="b")) == ["k"]
    again.close()


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    store.close()
    with pytest.raises(tiers.errors.StoreError, match="closed"):
        store.get("k")
    with pytest.raises(TypeError):
        FolderStore(42)  # type: ignore[arg-type]


def test_lock_files_exist_only_while_a_lock_is_held(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    locks = tmp_path / "s" / ".locks"
    assert store.release_lock("L", "a") is False
    assert store.renew_lock("L", "a", 5) is False
    assert list(locks.iterdir()) == []
    assert store.acquire_lock("L", "a", 5) is True
    (held,) = locks.iterdir()
    assert '"token": "a"' in held.read_text()
    assert store.release_lock("L", "a") is True
    assert list(locks.iterdir()) == []
    store.close()


def test_a_store_of_another_version_or_a_damaged_marker_is_refused(tmp_path: Path) -> None:
    FolderStore(tmp_path / "s").close()
    marker = tmp_path / "s" / ".tiers-folder.json"
    marker.write_text('{"format": "tiers-folder", "version": 99}')
    with pytest.raises(ConfigError, match="version 99"):
        FolderStore(tmp_path / "s")
    marker.write_text("garbage")
    with pytest.raises(ConfigError, match="damaged"):
        FolderStore(tmp_path / "s")
