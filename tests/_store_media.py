"""The `stored` and `plant` hooks of `tiers.testing.StoreTests` for the built-in stores.

Each mixin reaches a store's medium (its slots, directory, server or bucket) without the
store object, reusing only the pure format modules that define what the medium holds, so
the conformance suite checks writes against what is kept and reads against what was put
there, not a store against itself. Put the mixin before `StoreTests` among the bases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import obstore

from tiers import DiskStore
from tiers._stores import _wire
from tiers._stores._disk import _format as disk
from tiers._stores._folder._metadata import Metadata, checksum, decode, encode
from tiers._stores._folder._naming import METADATA, data_file, entry_dir
from tiers._stores._memory import Slot
from tiers._stores._object._paths import Layout
from tiers._stores._protocol import Entry
from tiers._stores._redis._keys import KeySpace
from tiers._stores._redis._keys import encode as redis_key


class MemoryMedium:
    """A MemoryStore keeps its entries in its own table of slots: in-process, there is no
    other medium, so the hooks read and fill that table (and its tag index) directly."""

    bypass = True

    def stored(self, store: Any, key: str) -> Entry | None:
        slot = store._data.get(key)
        return None if slot is None else slot.entry

    def plant(self, store: Any, key: str, entry: Entry) -> None:
        clock = store.clock
        expiry = None
        if entry.expires_at is not None:
            expiry = clock.monotonic() + (entry.expires_at - clock.time())
        with store._lock:
            store._data[key] = Slot.of(entry, expiry)
            store._bytes += entry.size
            for tag in entry.tags:
                store._tags.setdefault(tag, set()).add(key)


class DiskMedium:
    """A DiskStore keeps its entries in its directory. `stored` decodes the files with the
    pure format functions (`_disk._format`): the key's slot in its shard's table, the record
    it points to in the log, the value file. `plant` writes through a second DiskStore on the
    directory, as another process would: appending to the log and filling a slot by hand
    would be a second engine to keep in step with the first."""

    bypass = True

    def stored(self, store: Any, key: str) -> Entry | None:
        root = Path(store.directory)
        shards = json.loads((root / "tiers-store.json").read_bytes())["shards"]
        lkey = disk.index_key(key)
        khash = disk.key_hash(lkey)
        shard = root / "index" / f"{khash % shards:02x}"
        try:
            table = (shard / "table").read_bytes()
        except FileNotFoundError:
            return None
        header = disk.unpack_header(table[: disk.HEADER_SIZE], khash % shards)
        home = (khash >> 8) & (header.capacity - 1)
        for position in range(home, home + disk.PROBE):
            at = disk.HEADER_SIZE + position * disk.SLOT_SIZE
            found = disk.slot_khash(table, at)
            if found == 0:
                return None  # the end of the key's probe chain
            if found != khash:
                continue
            slot = disk.unpack_slot(table, at, position)
            if not slot.live:
                continue  # a tombstone
            log = (shard / f"log.{slot.seg}").read_bytes()
            record = disk.unpack_record(log[slot.off : slot.off + slot.rlen], lkey)
            if record.full_key not in (None, key):
                continue  # a long key sharing the index key's digest prefix
            if record.file_name is not None:
                name = record.file_name
                record.value = (root / "data" / name[2:4] / name).read_bytes()
            record.expires_at = slot.expires_at
            return record
        return None

    def plant(self, store: Any, key: str, entry: Entry) -> None:
        other = DiskStore(store.directory)
        other.clock = store.clock
        try:
            assert other.set(key, entry) is True
        finally:
            other.close()


class FolderMedium:
    """A FolderStore keeps each entry in a folder of its own (`_folder._naming`) holding the
    data file and metadata.json (`_folder._metadata`): read and written here as plain files."""

    bypass = True

    def stored(self, store: Any, key: str) -> Entry | None:
        folder = Path(store.directory) / entry_dir(key)
        try:
            m = decode((folder / METADATA).read_bytes())
        except FileNotFoundError:
            return None
        assert m.key == key
        body = (folder / m.data).read_bytes()
        assert checksum(body) == m.checksum
        return Entry(body, m.header, m.created_at, m.expires_at, m.tags, m.meta, len(body))

    def plant(self, store: Any, key: str, entry: Entry) -> None:
        folder = Path(store.directory) / entry_dir(key)
        folder.mkdir(mode=0o700)
        body, header = bytes(entry.value), bytes(entry.header)
        data = data_file(header)
        (folder / data).write_bytes(body)
        m = Metadata(
            key, header, entry.created_at, entry.expires_at, tuple(entry.tags), entry.meta,
            data, len(body), checksum(body),
        )  # fmt: skip
        (folder / METADATA).write_bytes(encode(m))


class RedisMedium:
    """A RedisStore keeps each entry as a record (`_wire`) under its names (`_redis._keys`)
    on the server, and each tag as a set of keys: a plain redis-py client, `redis` (set by
    the test class's fixture), reads and writes them."""

    bypass = True
    redis: Any

    def stored(self, store: Any, key: str) -> Entry | None:
        data = self.redis.get(KeySpace(store.prefix).entry(key))
        return None if data is None else _wire.unpack(data)[0]

    def plant(self, store: Any, key: str, entry: Entry) -> None:
        names = KeySpace(store.prefix)
        for tag in entry.tags:
            self.redis.sadd(names.tag(tag), redis_key(key))
        self.redis.set(names.entry(key), _wire.pack(entry))


class ObjectMedium:
    """An ObjectStore keeps each entry as an object holding its record (`_wire`) and each
    tag as an empty marker object, at the names of `_object._paths`: an obstore store of
    the test's own on the same bucket or directory, `objects` (set by ``make_store``), reads
    and writes them."""

    bypass = True
    objects: Any

    def stored(self, store: Any, key: str) -> Entry | None:
        path = Layout(store.prefix.strip("/")).entry(key)
        try:
            data = obstore.get(self.objects, path).bytes()
        except FileNotFoundError:
            return None
        return _wire.unpack(bytes(data))[0]

    def plant(self, store: Any, key: str, entry: Entry) -> None:
        layout = Layout(store.prefix.strip("/"))
        path = layout.entry(key)
        for tag in entry.tags:
            obstore.put(self.objects, layout.marker(tag, path), b"")
        obstore.put(self.objects, path, _wire.pack(entry, key))
