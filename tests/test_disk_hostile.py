"""DiskStore under hostile conditions: damaged index files, planted links and forged records,
`close()` racing threads, `fork()`, a root deleted while open.

The rule for each: never a crash (the damage runs in a child process, so a SIGBUS or a
segfault fails the test instead of killing pytest), a hang, a raw exception or a wrong value;
nothing outside the store's root is read, written, created, chmodded or deleted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests._disk_workers import check_value, entry, make_value
from tiers import Cache, DiskStore
from tiers.errors import StoreError, TiersError

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="uses fork and signals")
ROOT = Path(__file__).resolve().parent.parent
SIZES = (10, 300, 5_000, 40_000)  # inline records, and values in files of their own


def _fill(path: Path, keys: int = 40) -> None:
    store = DiskStore(path)
    try:
        for n in range(keys):
            store.set(f"k{n}", entry(make_value(f"k{n}", n, SIZES[n % len(SIZES)])))
    finally:
        store.close()


def _index_files(path: Path) -> list[Path]:
    return sorted(p for p in (path / "index").rglob("*") if p.is_file())


_CHILD = """
import sys, traceback
sys.path.insert(0, {root!r})
from tests._disk_workers import check_value, entry, make_value
from tiers import DiskStore
from tiers.errors import TiersError
path, keys = sys.argv[1], int(sys.argv[2])
try:
    store = DiskStore(path)
    for n in range(keys):
        got = store.get(f"k{{n}}")
        if got is not None:
            check_value(f"k{{n}}", got.value)
    list(store.keys())
    store.count()
    for n in range(0, keys, 3):
        store.set(f"k{{n}}", entry(make_value(f"k{{n}}", 1000 + n, 700)))
        check_value(f"k{{n}}", store.get(f"k{{n}}").value)
    store.delete("k1")
    store.expire()
    store.evict("t")
    store.clear()
    store.close()
except TiersError as exc:
    print("tiers-error", type(exc).__name__, exc)
    sys.exit(3)
except BaseException:
    traceback.print_exc()
    sys.exit(4)
"""


def _use_in_child(path: Path, keys: int = 40) -> subprocess.CompletedProcess[str]:
    """Open the store at `path` in a fresh interpreter and read, check, write, delete."""
    code = _CHILD.format(root=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", code, str(path), str(keys)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_survived(done: subprocess.CompletedProcess[str], what: str) -> None:
    assert done.returncode >= 0, f"{what}: the process died with signal {-done.returncode}"
    assert done.returncode == 0, f"{what}: exit {done.returncode}\n{done.stdout}{done.stderr}"


# -- A: truncated index files ---------------------------------------------------------------------


@linux_only
@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.99])
def test_truncated_index_files_are_misses_not_crashes(tmp_path: Path, fraction: float) -> None:
    """A bad copy or a damaged sector cuts every index file short: opening and using the store
    is safe, every read is the right value or a miss, and it works again afterwards."""
    path = tmp_path / "store"
    _fill(path)
    for file in _index_files(path):
        size = file.stat().st_size
        os.truncate(file, int(size * fraction))
    _assert_survived(_use_in_child(path), f"index files truncated to {fraction:.0%}")
    _assert_survived(_use_in_child(path), "reopened after the repair")


# -- B: flipped bits in index files ---------------------------------------------------------------


@linux_only
def test_single_bit_flips_in_index_headers_are_misses_not_crashes(tmp_path: Path) -> None:
    """Every bit of the first 128 bytes of each index file of one shard (its table header and
    its first record), one flip at a time: the store opens, reads are right or misses, writes
    work. (Every flip of every decoder's whole input is tested on the decoders themselves.)"""
    path = tmp_path / "store"
    _fill(path, keys=16)
    shard_dir = max((path / "index").iterdir(), key=lambda d: sum(1 for _ in d.rglob("*")))
    code = textwrap.dedent(
        """
        import os, shutil, sys
        sys.path.insert(0, {root!r})
        from tests._disk_workers import check_value, entry, make_value
        from tiers import DiskStore
        path, shard_dir = sys.argv[1], sys.argv[2]
        pristine = shard_dir + ".pristine"
        shutil.copytree(shard_dir, pristine)
        names = os.listdir(shard_dir)
        files = sorted(f for f in names if os.path.isfile(os.path.join(shard_dir, f)))
        flips = 0
        for name in files:
            file = os.path.join(shard_dir, name)
            original = open(file, "rb").read()
            for at in range(min(128, len(original))):
                for bit in range(8):
                    damaged = bytearray(original)
                    damaged[at] ^= 1 << bit
                    with open(file, "r+b") as handle:
                        handle.write(damaged)
                    store = DiskStore(path)
                    for n in range(16):
                        got = store.get(f"k{{n}}")
                        if got is not None:
                            check_value(f"k{{n}}", got.value)
                    if flips % 61 == 0:
                        store.set("k0", entry(make_value("k0", 99, 300)))
                        check_value("k0", store.get("k0").value)
                    store.close()
                    shutil.rmtree(shard_dir)
                    shutil.copytree(pristine, shard_dir)
                    flips += 1
        print(flips)
        """
    ).format(root=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(shard_dir)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    _assert_survived(done, "bit flips in index headers")
    assert int(done.stdout.split()[-1]) >= 2 * 8 * 128


# -- C: close() racing other threads --------------------------------------------------------------


def _hammer_then_close(path: str, through_cache: bool, delay: float) -> None:
    """Run in a child: 3 threads set/get while the main thread closes the store."""
    store = DiskStore(path)
    cache = Cache(store, serializer="raw") if through_cache else None
    errors: list[BaseException] = []
    go = threading.Event()

    def work(n: int) -> None:
        go.wait()
        for i in range(20_000):
            key = f"k{n}-{i % 50}"
            try:
                if cache is not None:
                    cache.set(key, b"v" * (i % 3000))
                    cache.get(key)
                else:
                    store.set(key, entry(make_value(key, i, 200 + i % 3000)))
                    got = store.get(key)
                    if got is not None:
                        check_value(key, got.value)
            except TiersError:
                return  # "closed" is the expected answer once close() ran
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    go.set()
    time.sleep(delay)
    if cache is not None:
        cache.close()
    else:
        store.close()
    for thread in threads:
        thread.join(60)
    if errors:
        raise SystemExit(f"raw error: {errors[0]!r}")


@linux_only
@pytest.mark.parametrize("through_cache", [False, True])
def test_close_while_threads_use_the_store_is_safe(tmp_path: Path, through_cache: bool) -> None:
    ctx = __import__("multiprocessing").get_context("spawn")
    for run in range(10):
        delay = 0.005 * (run + 1)  # close at a different moment of the threads' work each time
        proc = ctx.Process(
            target=_hammer_then_close, args=(str(tmp_path / f"s{run}"), through_cache, delay)
        )
        proc.start()
        proc.join(120)
        assert proc.exitcode == 0, f"run {run}: exit code {proc.exitcode} (negative: a signal)"


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "s")
    store.set("k", entry(b"v"))
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get("k")
    with pytest.raises(StoreError, match="closed"):
        store.set("k", entry(b"w"))


# -- D: fork after open ---------------------------------------------------------------------------


@linux_only
def test_a_forked_child_uses_the_store_at_once(tmp_path: Path) -> None:
    """The child's first call answers right (no spurious miss, no raw error) and its writes
    are seen by the parent; the parent keeps working."""
    store = DiskStore(tmp_path / "s")
    store.set("k", entry(make_value("k", 1, 300)))
    store.set("big", entry(make_value("big", 1, 50_000)))
    store.get("k")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            os.close(read)
            got = store.get("k")
            big = store.get("big")
            ok = got is not None and big is not None
            if ok:
                check_value("k", got.value)  # type: ignore[union-attr]
                check_value("big", big.value)  # type: ignore[union-attr]
                store.set("child", entry(make_value("child", 2, 300)))
                store.acquire_lock("lock", "child", 30)
            os.write(write, b"ok" if ok else b"miss")
            status = 0
        except BaseException as exc:
            os.write(write, repr(exc).encode()[:200])
        finally:
            os._exit(status)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    said = os.read(read, 300)
    os.close(read)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, said
    assert said == b"ok", said
    check_value("child", store.get("child").value)  # type: ignore[union-attr]
    assert store.acquire_lock("lock", "parent", 30) is False  # the child's lock holds
    store.close()


# -- E: the root deleted while a store is open ----------------------------------------------------


def test_a_root_deleted_while_open_never_serves_deleted_data(tmp_path: Path) -> None:
    path = tmp_path / "s"
    old = DiskStore(path)
    old.set("k", entry(make_value("k", 1, 300)))
    old.set("big", entry(make_value("big", 1, 50_000)))
    shutil.rmtree(path)
    new = DiskStore(path)
    try:
        assert new.get("k") is None
        assert new.get("big") is None
        new.set("n", entry(make_value("n", 1, 300)))
        assert new.acquire_lock("lock", "new", 30) is True
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; sys.path.insert(0, sys.argv[2]); from tiers import DiskStore;"
                "s = DiskStore(sys.argv[1]); print(s.get('n') is not None, s.get('k') is None,"
                " s.acquire_lock('lock', 'other', 30))",
                str(path),
                str(ROOT),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.split() == ["True", "True", "False"], done.stdout + done.stderr
        # the store that was open when its root went away follows the new one
        deadline = time.monotonic() + 5
        while old.get("n") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert old.get("k") is None
        check_value("n", old.get("n").value)  # type: ignore[union-attr]
    finally:
        new.close()
        old.close()


# -- G: links planted where the store writes ------------------------------------------------------


def _outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside" / "precious"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"precious data\n")
    target.chmod(0o644)
    return target


def _assert_untouched(target: Path) -> None:
    assert target.read_bytes() == b"precious data\n", "a file outside the root was written"
    assert (target.stat().st_mode & 0o777) == 0o644, "a file outside the root was chmodded"


def _store_paths(path: Path) -> list[Path]:
    """Every file the store keeps outside data/ and tmp/ (names differ between engines)."""
    return sorted(
        p for p in path.rglob("*") if p.is_file() and "data" not in p.relative_to(path).parts[:1]
    )


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_links_planted_at_store_files_never_reach_outside(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "s"
    _fill(path, keys=12)
    store = DiskStore(path)
    store.acquire_lock("lock", "t", 30)
    store.close()
    planted = [p for p in _store_paths(path) if not p.name.isdigit()]
    planted.append(path / "procs" / ".swept")
    assert len(planted) >= 5
    targets = []
    for n, file in enumerate(planted):
        target = _outside(tmp_path / f"o{n}")
        targets.append(target)
        file.unlink(missing_ok=True)
        if kind == "symlink":
            file.symlink_to(target)
        else:
            os.link(target, file)
    (path / "procs" / ".swept").parent.mkdir(exist_ok=True)
    os.utime(path / "procs" / ".swept", (0, 0), follow_symlinks=False)  # a sweep is due
    try:
        store = DiskStore(path)
    except TiersError:
        pass  # refusing the store is fine; touching what is outside is not
    else:
        for n in range(12):
            got = store.get(f"k{n}")
            if got is not None:
                check_value(f"k{n}", got.value)
            store.set(f"k{n}", entry(make_value(f"k{n}", 50 + n, 300)))
        store.acquire_lock("lock", "u", 30)
        store.release_lock("lock", "u")
        store.clear()
        store.close()
    for target in targets:
        _assert_untouched(target)


def test_every_directory_tiers_creates_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        DiskStore(tmp_path / "a" / "b" / "c").close()
    finally:
        os.umask(old)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert (directory.stat().st_mode & 0o777) == 0o700, directory


# -- no file of the store is ever mapped into memory ----------------------------------------------


@linux_only
def test_no_store_file_is_mapped_into_memory(tmp_path: Path) -> None:
    """A mapped file that shrinks kills its reader with SIGBUS: the store reads with pread."""
    path = tmp_path / "s"
    _fill(path, keys=12)
    store = DiskStore(path)
    try:
        for n in range(12):
            store.get(f"k{n}")
        maps = Path("/proc/self/maps").read_text()
        assert str(store.directory) not in maps
    finally:
        store.close()


# -- F: forged records ----------------------------------------------------------------------------


def _forge(path: Path, key: str, forge: dict[str, object]) -> None:
    """Rewrite `key`'s record as an attacker who can write the index would: a new record with
    valid checksums (xxh3 is unkeyed), appended to its shard's log, its slot pointed at it."""
    from tiers._stores._disk import _format as fmt

    lkey = fmt.index_key(key)
    khash = fmt.key_hash(lkey)
    shard_dir = path / "index" / f"{khash % 8:02x}"
    table = shard_dir / "table"
    raw = bytearray(table.read_bytes())
    header = fmt.unpack_header(bytes(raw[: fmt.HEADER_SIZE]), khash % 8)
    home = (khash >> 8) & (header.capacity - 1)
    for position in range(home, home + fmt.PROBE):
        at = fmt.HEADER_SIZE + position * fmt.SLOT_SIZE
        try:
            slot = fmt.unpack_slot(bytes(raw), at, position)
        except fmt.Damaged:
            continue  # empty, or damaged by an earlier forgery's miss
        if slot.khash == khash and slot.live:
            break
    else:
        raise AssertionError("slot not found")
    rec = fmt.Record(b"", b"H", 0.0, None, (), None, 0, lkey, 100_000, 0, None, None)
    for name, value in forge.items():
        setattr(rec, name, value)
    data = bytearray(fmt.pack_record(rec))  # names and sizes are written as given
    head = header.segments[-1]
    log = shard_dir / f"log.{head.number}"
    with open(log, "r+b") as handle:
        handle.seek(head.end)
        handle.write(data)
    slot.seg, slot.off, slot.rlen = head.number, head.end, len(data)
    slot.flags |= fmt.IN_FILE if rec.file_name is not None else 0
    raw[at : at + fmt.SLOT_SIZE] = fmt.pack_slot(slot, position)
    head.end += len(data)
    packed = fmt.pack_header(header)
    raw[: len(packed)] = packed
    table.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "name",
    ["/{outside}", "../../../../{outside}", "0" * 42 + "/../../{outside}", "data/../{outside}"],
)
def test_a_forged_value_file_name_never_reaches_outside(tmp_path: Path, name: str) -> None:
    """A record naming an absolute or relative path as its value file: reads miss, and an
    ordinary overwrite or delete of the key removes nothing outside the root."""
    path = tmp_path / "s"
    _fill(path, keys=8)
    target = _outside(tmp_path)
    forged = name.format(outside=str(target).lstrip("/")) if name[0] != "/" else str(target)
    _forge(path, "k3", {"file_name": forged, "body_size": len(b"precious data\n")})
    store = DiskStore(path)
    try:
        assert store.get("k3") is None
        assert store.stats().rejected >= 1
        _forge(path, "k5", {"file_name": forged, "body_size": len(b"precious data\n")})
        store.set("k5", entry(make_value("k5", 9, 300)))  # an ordinary overwrite
        check_value("k5", store.get("k5").value)  # type: ignore[union-attr]
        _forge(path, "k7", {"file_name": forged, "body_size": len(b"precious data\n")})
        store.delete("k7")
        store.clear()
    finally:
        store.close()
    _assert_untouched(target)


def test_forged_sizes_never_allocate_beyond_what_is_on_disk(tmp_path: Path) -> None:
    """A forged record claiming a huge inline body or huge field lengths: a miss, without
    reading or allocating more than the log holds."""
    path = tmp_path / "s"
    _fill(path, keys=8)
    _forge(path, "k2", {"body_size": 2**60, "value": b"x" * 10})
    store = DiskStore(path)
    try:
        assert store.get("k2") is None
        for n in (0, 1, 3, 4):
            check_value(f"k{n}", store.get(f"k{n}").value)  # type: ignore[union-attr]
    finally:
        store.close()


def test_the_signing_key_directories_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "x" / "y" / "tiers"
    monkeypatch.setenv("TIERS_CONFIG_DIR", str(config))
    old = os.umask(0o022)
    try:
        cache = Cache(DiskStore(tmp_path / "store"))
        cache.set("k", [1])  # a signed pickle: the key file is created on first use
        assert cache.get("k") == [1]
        cache.close()
    finally:
        os.umask(old)
    for directory in (tmp_path / "x", tmp_path / "x" / "y", config):
        assert (directory.stat().st_mode & 0o777) == 0o700, directory


_SWAP_PROCS = """
import os, sys
sys.path.insert(0, {root!r})
from tests._disk_workers import entry
from tiers import DiskStore
from tiers.errors import TiersError
root, outside, moved = sys.argv[1:4]
store = DiskStore(root)
store.set("k", entry(b"v" * 100))
os.rename(os.path.join(root, "procs"), moved)
os.symlink(outside, os.path.join(root, "procs"))
open(os.path.join(outside, str(os.getpid())), "w").write("precious")
pid = os.fork()
if pid == 0:
    try:
        store.set("child", entry(b"c" * 100))  # the child reopens the store: it registers
    except TiersError:
        pass
    os._exit(0)
os.waitpid(pid, 0)
print(pid)
"""  # then the process exits: it unregisters itself from procs/


@linux_only
def test_procs_swapped_for_a_symlink_while_open(tmp_path: Path) -> None:
    """`procs/<pid>` is created when a process opens the store (a forked child: on first use)
    and deleted at exit: with `procs` swapped for a symlink, neither happens outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-c", _SWAP_PROCS.format(root=str(ROOT)), str(root), str(outside),
         str(tmp_path / "moved")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in outside.iterdir())
    assert done.stdout.strip() not in names, "a registration was created outside the root"
    assert len(names) == 1, f"the parent's file outside the root was deleted: {names}"
    assert (outside / names[0]).read_text() == "precious"


def test_a_store_of_the_first_format_is_emptied_and_reused(tmp_path: Path) -> None:
    """0.1 wrote LMDB shards (format version 1): opening one starts the store afresh."""
    root = tmp_path / "old"
    (root / "index" / "00").mkdir(parents=True)
    (root / "index" / "00" / "data.mdb").write_bytes(b"\0" * 8192)
    (root / "data" / "ab").mkdir(parents=True)
    (root / "data" / "ab" / ("00ab" + "0" * 28)).write_bytes(b"old value")
    (root / "reserve").write_bytes(b"\0" * 1024)
    (root / "tiers-store.json").write_text('{"format": "tiers-disk", "version": 1, "shards": 8}')
    store = DiskStore(root)
    try:
        assert list(store.keys()) == []
        store.set("k", entry(make_value("k", 1, 300)))
        check_value("k", store.get("k").value)  # type: ignore[union-attr]
        assert not (root / "reserve").exists()
        assert not (root / "index" / "00" / "data.mdb").exists()
        assert list((root / "data").rglob("00ab*")) == []
    finally:
        store.close()


@pytest.mark.parametrize("damage", [b"", b"{", b'{"format": "tiers-disk"}', b"[1]"])
def test_a_damaged_marker_of_ours_starts_the_store_afresh(tmp_path: Path, damage: bytes) -> None:
    path = tmp_path / "s"
    _fill(path, keys=4)
    (path / "tiers-store.json").write_bytes(damage)
    store = DiskStore(path)
    try:
        store.set("k", entry(make_value("k", 1, 300)))
        check_value("k", store.get("k").value)  # type: ignore[union-attr]
    finally:
        store.close()
