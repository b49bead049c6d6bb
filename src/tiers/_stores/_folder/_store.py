"""FolderStore: one folder per entry, human-browsable, shared by threads and processes.

Each entry is ``<root>/<slug>-<hash>/`` holding the value as it was encoded (``data.<random>``
with an extension naming its serializer, so ``cat data.*.json`` shows a JSON cache's value) and
a pretty-printed ``metadata.json``. Writes, replacements and removals are atomic for readers
(`_entry_dir`); the data file's xxh3-64 checksum is verified on every read, and metadata.json
carries one of its own: damage is a miss, the folder removed and counted. See docs/folder.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from ... import _rules
from ..._clock import SYSTEM_CLOCK, Clock
from ...errors import StoreError, StorePermissionError, TiersError
from .._fs import open_dir, os_errors, store_path
from .._generations import Generations
from .._private import only_owner_writes
from .._protocol import Damage, Entry, StoreCounters, Usage
from .._twins import in_thread, inline, iter_in_thread
from . import _entry_dir as dirs
from . import _usage
from ._changes import Changes, slot_of
from ._counters import CounterFile
from ._locks import LocalLocks, Locks
from ._metadata import DamagedMetadata, Metadata, checksum, decode, encode
from ._naming import ENTRY_DIR, data_file, entry_dir
from ._root import open_folder_root, recover, register
from ._verify import verify_folder


class FolderStore:
    """A store keeping each entry in a folder of its own under `path`, readable by people:
    the encoded value in a data file and everything else in ``metadata.json``.

    Persistent and shared by the threads and processes of one host; every write is atomic
    (a reader sees the old entry or the new one) and survives the writer being killed;
    every read is checked. Listing, counting and evicting by tag scan every folder.
    """

    holds_objects: ClassVar[bool] = False
    private = property(lambda self: only_owner_writes(self._root))  # (decision 0013)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = store_path(path, "FolderStore")
        self.clock: Clock = SYSTEM_CLOCK
        self._closed = False
        with os_errors(self, "open the store"):
            self._root, self._read_only = open_folder_root(self.path)
            read_only = self._read_only is not None
            self._counters = CounterFile(self._root, read_only=read_only)
            self._usage = _usage.usage_file(self._root, read_only=read_only)
            self._counters.create()
            self._usage.create()
            self._locks: Locks | LocalLocks = LocalLocks() if read_only else Locks(self._root)
            root_fd = open_dir(self._root)
            try:
                self._changes = Changes(self._root, root_fd, read_only=read_only)
            finally:
                os.close(root_fd)
            if not read_only:
                recover(self._root, self._clean_entries)

    def __repr__(self) -> str:
        return f"FolderStore({str(self.path)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FolderStore, (str(self.path),))

    @property
    def directory(self) -> Path:
        """The store's resolved directory."""
        return self._root

    @property
    def read_only(self) -> bool:
        """Whether the store was opened read-only: this process cannot write its folder (a
        read-only file system, no write permission, or ``chmod -R a-w``). Reads work; every
        change raises `StorePermissionError`; nothing in the folder is changed."""
        return self._read_only is not None

    def _writable(self, action: str) -> None:
        """`StorePermissionError` if the store is read-only (see `read_only`)."""
        if self._read_only is not None:
            raise StorePermissionError(
                f"{self!r} is read-only ({self._read_only}), so it cannot {action}; make "
                f"{self._root} writable and open the store again to change it"
            )

    # -- plumbing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _at_root(self, action: str, *, writing: bool = False) -> Iterator[int]:
        """A descriptor of the root (checked: a real directory, not a symlink); what the OS
        says in the block is raised as a `StoreError` (`os_errors`)."""
        with os_errors(self, action), self._root_open(writing) as root_fd:
            yield root_fd

    @contextlib.contextmanager
    def _root_open(self, writing: bool) -> Iterator[int]:
        """`_at_root`, the errors of the block left as they are."""
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if writing:
            register(self._root)  # (again after a fork) before leaving anything behind
        root_fd = open_dir(self._root)
        try:
            yield root_fd
        finally:
            os.close(root_fd)

    def _valid(self, raw: bytes | None, key: str | None, name: str) -> Metadata | None:
        """The metadata in `raw` if it is sound and belongs in folder `name` (and to `key`)."""
        if raw is None:
            return None
        try:
            m = decode(raw)
        except DamagedMetadata:
            return None
        if m.key != key if key is not None else entry_dir(m.key) != name:
            return None  # another key's folder (swapped, or copied by hand)
        return m

    def _remove_if(self, root_fd: int, name: str, raw: bytes | None, kind: str | None) -> bool:
        """Remove folder `name` if its metadata.json still reads `raw` (nobody replaced the
        entry meanwhile); count the removal under `kind`."""
        with self._changes.changing(name), dirs.locked(root_fd, name, exclusive=True) as fd:
            if fd is None or dirs.read_metadata(fd) != raw:
                return False
            trashed = dirs.trash(root_fd, name, fd)
        dirs.discard(root_fd, trashed)
        if kind is not None:
            self._counters.add(kind)
        return True

    @staticmethod
    def _entry(m: Metadata, body: bytes | None) -> Entry:
        return Entry(
            body, m.header, m.created_at, m.expires_at, m.tags, m.meta, m.size + len(m.header)
        )

    # -- core -----------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self._read(key, with_value=True)

    def _read(self, key: str, *, with_value: bool) -> Entry | None:
        name = entry_dir(key)
        with self._at_root("read an entry") as root_fd:
            entry, raw, kind = self._load(root_fd, key, name, with_value=with_value)
            if kind is not None and self._read_only is None:
                with contextlib.suppress(OSError, TiersError):  # a read never fails to clean up
                    self._remove_if(root_fd, name, raw, kind)
            return entry

    def _load(
        self, root_fd: int, key: str, name: str, *, with_value: bool
    ) -> tuple[Entry | None, bytes | None, str | None]:
        """(the live entry, its metadata.json bytes, None) of `key` in folder `name`; for a
        folder that must go (damaged or expired), (None, its metadata.json bytes, the kind of
        removal to count), for the caller to remove; (None, None, None) if there is none."""
        kind = "rejected"
        data_fd = -1
        with dirs.locked(root_fd, name, exclusive=False) as fd:
            if fd is None:
                return None, None, None
            raw = dirs.read_metadata(fd)
            m = self._valid(raw, key, name)
            if m is not None and not m.live(self.clock.time()):
                kind = "expirations"
            elif m is not None and not with_value:
                return self._entry(m, None), raw, None
            elif m is not None:
                with contextlib.suppress(dirs.DataFileDamaged):
                    data_fd = dirs.open_data(fd, m.data)
        if m is not None and data_fd >= 0:
            with contextlib.suppress(dirs.DataFileDamaged):
                body = dirs.read_data(data_fd, m.size)
                if checksum(body) == m.checksum:
                    return self._entry(m, body), raw, None
        return None, raw, kind

    def set(
        self, key: str, entry: Entry, epoch: int | None = None, stamp: int | None = None
    ) -> bool:
        """Store the entry; False if `epoch` is given and the key changed since `epoch(key)`
        returned it (a copy from a slower tier then stays out). The key's generation becomes
        `stamp` (default: a random one)."""
        self._writable("store an entry")
        data, metadata = self._encoded(key, entry)
        name = entry_dir(key)
        with (
            self._at_root("write an entry", writing=True) as root_fd,
            self._changes.changing(name, epoch, stamp) as unchanged,
        ):
            if not unchanged:
                return False
            dirs.write(root_fd, name, data, entry.value, metadata)
        return True

    @staticmethod
    def _encoded(key: str, entry: Entry) -> tuple[str, bytes]:
        """(the data file's name, metadata.json's bytes) of `entry` under `key`."""
        body = entry.value
        header = bytes(entry.header)
        _rules.finite_times(entry.created_at, entry.expires_at)
        data = data_file(header)
        m = Metadata(
            key, header, entry.created_at, entry.expires_at, tuple(entry.tags),
            dict(entry.meta) if entry.meta is not None else None, data,
            memoryview(body).nbytes, checksum(body),
        )  # fmt: skip
        try:
            return data, encode(m)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"meta must be a dict of JSON values: {exc}") from exc

    def delete(self, key: str) -> bool:
        self._writable("delete an entry")
        name = entry_dir(key)
        with self._at_root("delete an entry") as root_fd, self._changes.changing(name):
            with dirs.locked(root_fd, name, exclusive=True) as fd:
                if fd is None:
                    return False
                m = self._valid(dirs.read_metadata(fd), key, name)
                trashed = dirs.trash(root_fd, name, fd)
            dirs.discard(root_fd, trashed)
        return m is not None and m.live(self.clock.time())

    def clear(self, prefix: str = "") -> int:
        self._writable("clear entries")
        return self._remove_all(
            "clear the store", lambda m: not prefix or (m is not None and m.key.startswith(prefix))
        )

    def stats(self) -> StoreCounters:
        items = size = 0
        with self._at_root("read the stats") as root_fd:
            for name in _entry_names(root_fd):
                with contextlib.suppress(TiersError):
                    has_metadata, nbytes = dirs.folder_sizes(root_fd, name)
                    items += has_metadata
                    size += nbytes
        counts = self._counters.read()
        return StoreCounters(
            evictions=counts["evictions"], expirations=counts["expirations"],
            rejected=counts["rejected"], items=items, bytes=size,
        )  # fmt: skip

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._changes.close()

    # -- capabilities ---------------------------------------------------------------------

    @property
    def generations(self) -> Generations:
        """The store's generation table (shared by the processes of this host)."""
        return self._changes.generations

    def generation_slot(self, key: str) -> int:
        """The key's slot in `generations`."""
        return slot_of(entry_dir(key))

    def epoch(self, key: str) -> int:
        """The key's generation now: pass it to `set` to store only if the key is unchanged."""
        return self._changes.epoch(entry_dir(key))

    def info(self, key: str) -> Entry | None:
        return self._read(key, with_value=False)

    def pop(self, key: str) -> Entry | None:
        self._writable("remove an entry")
        name = entry_dir(key)
        found: Entry | None = None
        with self._at_root("pop an entry") as root_fd, self._changes.changing(name):
            with dirs.locked(root_fd, name, exclusive=True) as fd:
                if fd is None:
                    return None
                m = self._valid(dirs.read_metadata(fd), key, name)
                kind: str | None = "rejected"
                if m is not None and not m.live(self.clock.time()):
                    kind = "expirations"
                elif m is not None:
                    with contextlib.suppress(dirs.DataFileDamaged):
                        body = dirs.read_data(dirs.open_data(fd, m.data), m.size)
                        if checksum(body) == m.checksum:
                            found, kind = self._entry(m, body), None
                trashed = dirs.trash(root_fd, name, fd)
            dirs.discard(root_fd, trashed)
        if kind is not None:
            self._counters.add(kind)
        return found

    def update(self, key: str, change: Callable[[Entry | None], Entry | None]) -> Entry | None:
        """Replace the key's live entry by `change(entry)` (see `SupportsUpdate`) holding the
        key's stripe of ``.generations.lock``, which every change of the key in every process
        holds (`Changes.changing`), from the read to the write; `change` runs once, holding
        it. The write is `set`'s, in place when the folder exists (`dirs.rewrite`); an expired
        or damaged entry it replaces is counted as a read would count it. What `change`
        raises passes as it is (outside `os_errors`)."""
        self._writable("update an entry")
        name = entry_dir(key)
        with contextlib.ExitStack() as held:
            with os_errors(self, "update an entry"):
                root_fd = held.enter_context(self._root_open(writing=True))
                held.enter_context(self._changes.changing(name))
                current, _raw, kind = self._load(root_fd, key, name, with_value=True)
            new = change(current)
            if new is None:
                return None
            data, metadata = self._encoded(key, new)
            with os_errors(self, "update an entry"):
                dirs.rewrite(root_fd, name, data, new.value, metadata)
        if kind is not None:
            self._counters.add(kind)
        return new

    def touch(self, key: str, expires_at: float | None) -> bool:
        _rules.finite_times(None, expires_at)
        self._writable("change an entry's expiry")
        name = entry_dir(key)
        with self._at_root("touch an entry", writing=True) as root_fd, self._changes.changing(name):
            with dirs.locked(root_fd, name, exclusive=True) as fd:
                if fd is None:
                    return False
                m = self._valid(dirs.read_metadata(fd), key, name)
                if m is not None and m.live(self.clock.time()):
                    dirs.replace_metadata(root_fd, fd, encode(replace(m, expires_at=expires_at)))
                    return True
                trashed = dirs.trash(root_fd, name, fd)
            dirs.discard(root_fd, trashed)
        self._counters.add("rejected" if m is None else "expirations")
        return False

    def expire(self) -> int:
        self._writable("remove expired entries")
        now = self.clock.time()
        count = 0
        with self._at_root("expire entries") as root_fd:
            for name, raw, m in self._scan(root_fd):
                if m is not None and not m.live(now) and self._remove_if(root_fd, name, raw, None):
                    count += 1
        self._counters.add("expirations", count)
        return count

    def evict(self, tag: str, prefix: str = "") -> int:
        self._writable("evict entries")
        return self._remove_all(
            "evict entries", lambda m: m is not None and tag in m.tags and m.key.startswith(prefix)
        )

    def _remove_all(self, action: str, doomed: Callable[[Metadata | None], bool]) -> int:
        """Remove the entry folders whose metadata (None: damaged) is `doomed`; how many of
        them were live. Every generation changes first: no copy in flight lands after the scan."""
        now = self.clock.time()
        count = 0
        self._changes.change_all()
        with self._at_root(action) as root_fd:
            for name, raw, m in self._scan(root_fd):
                removed = doomed(m) and self._remove_if(root_fd, name, raw, None)
                if removed and m is not None and m.live(now):
                    count += 1
        return count

    def keys(self, prefix: str = "", tag: str | None = None) -> Iterator[str]:
        now = self.clock.time()
        with self._at_root("list keys") as root_fd:
            found = [
                m.key
                for _name, _raw, m in self._scan(root_fd)
                if m is not None
                and m.live(now)
                and m.key.startswith(prefix)
                and (tag is None or tag in m.tags)
            ]
        return iter(found)

    def count(self, prefix: str = "") -> int:
        return sum(1 for _ in self.keys(prefix))

    # -- locks (single-flight across processes) -------------------------------------------

    def acquire_lock(self, name: str, token: str, lease: float) -> bool:
        now = self.clock.time()
        with self._at_root("take a lock"):
            return self._locks.acquire(name, token, now + lease, now)

    def renew_lock(self, name: str, token: str, lease: float) -> bool:
        with self._at_root("renew a lock"):
            return self._locks.renew(name, token, self.clock.time() + lease)

    def release_lock(self, name: str, token: str) -> bool:
        with self._at_root("release a lock"):
            return self._locks.release(name, token)

    def set_if_held(
        self, key: str, entry: Entry, name: str, token: str, stamp: int | None = None
    ) -> bool:
        """Store the entry only while `token` holds lock `name` (`SupportsFencedWrites`): the
        key's generation is read before the lock is checked and the write is conditional on
        it, so a successor who took the lock and wrote since is never overwritten."""
        self._writable("store an entry")
        epoch = self.epoch(key)
        with self._at_root("check a lock"):
            if not self._locks.holds(name, token, self.clock.time()):
                return False
        return self.set(key, entry, epoch, stamp)

    # -- what `tiers ls`, `stats` and `verify` need: scans, usage, checks ----------------------

    def scan(self, prefix: str = "", tag: str | None = None) -> Iterator[tuple[str, Entry]]:
        """``(key, entry)`` of every entry present, expired ones included, with its metadata
        and no value, read folder by folder as the root lists them (memory stays bounded).
        `Entry.accessed_at` is None: the store records no reads (and a file's atime is no
        record: relatime and noatime mounts do not keep it)."""
        with self._at_root("scan the entries") as root_fd:
            for _name, _raw, m in self._scan(root_fd, streamed=True):
                if m is not None and m.key.startswith(prefix) and (tag is None or tag in m.tags):
                    yield m.key, self._entry(m, None)

    def usage(self) -> Usage:
        """The usage counters every process added (`SupportsUsage`; zeros if damaged)."""
        with self._at_root("read the usage counters"):
            return _usage.as_usage(self._usage.read())

    def add_usage(self, usage: Usage) -> None:
        """Add `usage` to the counters, atomically across processes (under the exclusive
        flock of ``.usage.json``). A read-only store cannot count: it drops it."""
        _usage.check(usage)
        if not usage or self._read_only is not None:
            return
        now = self.clock.time()
        with self._at_root("count usage"):
            self._usage.change(lambda values: _usage.added(values, usage, now))

    def reset_usage(self) -> None:
        """Zero the usage counters and the removal counters (evictions, expirations,
        rejected)."""
        self._writable("reset the counters")
        with self._at_root("reset the counters"):
            self._usage.reset()
            self._counters.reset()

    def verify(self, fix: bool = False) -> Iterator[Damage]:
        """Check every entry and the store's own files (`_verify`, `_verify_root`); yield
        each damage, first removed or repaired with `fix`. Leftovers of unfinished writes
        count once the store's sweep would remove them (their writer is gone, or they are
        a day old); lock files an hour after their lease ended."""
        if fix:
            self._writable("repair the store")
        with self._at_root("verify the store"):
            pass  # (a closed store, or a root that cannot be opened, fails here)
        return self._verified(fix)

    def _verified(self, fix: bool) -> Iterator[Damage]:
        with self._at_root("verify the store") as root_fd:
            files = (self._counters, self._usage)
            now = self.clock.time()
            yield from verify_folder(self._root, root_fd, self._changes, files, now, fix=fix)

    # -- scans and recovery ---------------------------------------------------------------

    def _scan(
        self, root_fd: int, *, streamed: bool = False
    ) -> Iterator[tuple[str, bytes | None, Metadata | None]]:
        """(folder name, metadata.json bytes, metadata if sound) of every entry folder; the
        names listed first (for the callers removing folders as they go) or `streamed`."""
        names = _entry_names(root_fd) if not streamed else _streamed_entry_names(root_fd)
        for name in names:
            try:
                fd = dirs.open_entry(root_fd, name)
            except TiersError:
                continue  # a symlink or file planted under an entry's name: never followed
            if fd is None:
                continue
            try:
                raw = dirs.read_metadata(fd)
            finally:
                os.close(fd)
            yield name, raw, self._valid(raw, None, name)

    def _clean_entries(self) -> None:
        """Delete the files a killed writer left in entry folders (see `_entry_dir`)."""
        with self._at_root("clean up after crashed writers") as root_fd:
            for name in _entry_names(root_fd):
                with contextlib.suppress(TiersError, OSError):
                    fd = dirs.open_entry(root_fd, name)
                    if fd is None:
                        continue
                    try:
                        extra = len(os.listdir(fd)) > 2
                    finally:
                        os.close(fd)
                    if extra:
                        self._clean_entry(root_fd, name)

    def _clean_entry(self, root_fd: int, name: str) -> None:
        with dirs.locked(root_fd, name, exclusive=True) as fd:
            if fd is None:
                return
            m = self._valid(dirs.read_metadata(fd), None, name)
            if m is not None:
                dirs.remove_others(fd, m.data)

    # -- async twins (`_twins`): the blocking file work runs in a worker thread -------------

    get_async = in_thread(get)
    set_async = in_thread(set)
    delete_async = in_thread(delete)
    clear_async = in_thread(clear)
    stats_async = in_thread(stats)
    close_async = inline(close)
    info_async = in_thread(info)
    pop_async = in_thread(pop)
    update_async = in_thread(update)
    touch_async = in_thread(touch)
    expire_async = in_thread(expire)
    evict_async = in_thread(evict)
    keys_async = iter_in_thread(keys)
    count_async = in_thread(count)
    acquire_lock_async = in_thread(acquire_lock)
    renew_lock_async = in_thread(renew_lock)
    release_lock_async = in_thread(release_lock)
    set_if_held_async = in_thread(set_if_held)
    scan_async = iter_in_thread(scan)
    usage_async = in_thread(usage)
    add_usage_async = in_thread(add_usage)
    reset_usage_async = in_thread(reset_usage)


def _entry_names(root_fd: int) -> list[str]:
    return [name for name in os.listdir(root_fd) if ENTRY_DIR.match(name)]


def _streamed_entry_names(root_fd: int) -> Iterator[str]:
    return (name for name in dirs.listed(root_fd) if ENTRY_DIR.match(name))
