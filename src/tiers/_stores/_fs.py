"""Filesystem helpers shared by the stores that live in a directory (DiskStore, FolderStore).

- errors: what the OS says, as the store errors of `tiers.errors`, in one shape for every
  call site (`os_errors`, `store_error`);
- store roots: created 0700, owned by us, never a symlink; a non-empty directory that is not
  a store of ours is refused; a format marker written once, atomically;
- descriptor-walked access: `open_dir` opens ``root/a/b`` one component at a time with
  O_NOFOLLOW, so a symlink swapped in under the root fails the operation instead of being
  followed; `remove_tree` deletes the same way;
- the process registry (``procs/<pid>``): which processes had a store open, so the next opener
  can tell the leftovers of a killed writer (dead pid) from files still in flight.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .._codec._documents import load_object
from .._paths import make_private_dirs
from ..errors import ConfigError, StoreError, StoreFullError, StorePermissionError

if sys.platform != "win32":
    import fcntl

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW
Buffer = bytes | bytearray | memoryview


# -- errors ----------------------------------------------------------------------------------


def _is_full(exc: BaseException) -> bool:
    """Whether `exc` says the device (or the user's quota, or a file's size limit) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def store_error(exc: OSError, where: object, action: str) -> StoreError:
    """The store error for `exc`, met by `where` (a store, or a path) doing `action`, in one
    shape, ``<where>: cannot <action>: <why>``: `StoreFullError` (with the errno) for no space,
    `StorePermissionError` for a refused path or a read-only file system, `StoreError` for the
    rest (EIO...). A store error passes as it is."""
    if isinstance(exc, StoreError):
        return exc
    message = f"{where}: cannot {action}"
    if _is_full(exc):
        return StoreFullError(exc.errno, f"{message}: no space left on the device")
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        why = os.strerror(exc.errno).lower() if exc.errno else "permission denied"
        return StorePermissionError(
            f"{message}: {why}; give this process write access or choose another path"
        )
    return StoreError(f"{message}: {exc}")


class os_errors:
    """Raise what the OS says inside the block as `store_error` would name it, from the
    original (``__cause__``); errors of tiers pass through. A class, not a generator: it is
    entered on every store call."""

    __slots__ = ("action", "where")

    def __init__(self, where: object, action: str) -> None:
        self.where = where
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, OSError) and not isinstance(exc, StoreError):
            raise store_error(exc, self.where, self.action) from exc


# -- store roots -----------------------------------------------------------------------------


def store_path(path: object, kind: str) -> Path:
    """`path` (a str or a path) as a Path; `TypeError` naming the store `kind` if not one."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{kind} path must be a str or a path, not {type(path).__qualname__!r}")
    return Path(path)


def open_root(path: str | os.PathLike[str], marker: str) -> Path:
    """Create or check the store directory at `path` (resolved); refuse a directory of another
    user, a symlink or file, or one that is not empty and has no `marker` file. An existing
    directory is used as it is: its mode is never changed."""
    root = Path(os.path.realpath(os.fspath(path)))
    try:
        created = make_private_dirs(root)
    except NotADirectoryError as exc:
        raise StoreError(_under_a_file(root)) from exc
    except OSError as exc:
        raise store_error(exc, root, "create the store directory") from exc
    check_dir(root, fix_mode=False)
    marker_path = root / marker
    if not created and not marker_path.exists():
        stray = [p.name for p in root.iterdir() if not _is_ours_before_marker(p.name, marker)]
        if stray and not marker_path.exists():  # (it may have appeared while we listed)
            other = next((kind for name, kind in _MARKERS.items() if name in stray), None)
            if other is not None:
                raise StorePermissionError(
                    f"{root} is not a tiers store of this kind: it holds a {other}, so open "
                    "it as one"
                )
            raise StorePermissionError(
                f"{root} is not empty and is not a tiers store; use an empty or new directory"
            )
    return root


_MARKERS = {
    ".tiers-folder.json": "FolderStore (folder:///path)",
    "tiers-store.json": "DiskStore (a plain path, or disk:///path)",
}


def _under_a_file(root: Path) -> str:
    """The message for a store path inside a file (``afile/sub``)."""
    for parent in root.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                return (
                    f"cannot create the store directory {root} ({_NOT_A_DIRECTORY}: {parent} "
                    "is a file); choose a path that is not inside a file"
                )
            break
    return f"cannot create the store directory {root} ({_NOT_A_DIRECTORY}); choose another path"


_NOT_A_DIRECTORY = os.strerror(errno.ENOTDIR)  # "Not a directory" (the words the OS uses)


def read_only_reason(root: Path, names: Iterable[str]) -> str | None:
    """Why this process must not write the store at `root`, or None if it may: a read-only
    file system, no write permission on the root or on one of the store's own files or
    folders `names` (those of ours: links and others' files are for the store's checks), or
    no write permission bit at all on one of them (``chmod -R a-w``: read-only by intent,
    honoured even for root, who may write anyway)."""
    try:
        if os.statvfs(root).f_flag & getattr(os, "ST_RDONLY", 1):
            return f"{root} is on a read-only file system"
    except OSError:
        pass
    for name in ("", *names):
        path = root / name if name else root
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            continue
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            continue
        kind = "folder" if stat.S_ISDIR(info.st_mode) else "file"
        if not info.st_mode & 0o222:
            return f"the {kind} {path} is marked read-only (mode {stat.S_IMODE(info.st_mode):o})"
        wanted = os.W_OK | (os.X_OK if kind == "folder" else 0)
        if not _access(path, wanted):
            return f"this process may not write the {kind} {path}"
    return None


def _access(path: Path, mode: int) -> bool:
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True, follow_symlinks=False)
    return os.access(path, mode)


def _is_ours_before_marker(name: str, marker: str) -> bool:
    """Files a store has before its marker: cosmetic ones, and the marker being written by
    another process creating the same store at this moment (`write_new`)."""
    return name in COSMETIC_FILES or (name.startswith(f".{marker}.") and name.endswith(".tmp"))


class DamagedMarker(ConfigError):
    """A store's format marker is ours but does not hold a marker (a torn write, damage)."""


MARKER_MAX = 64 * 1024
COSMETIC_FILES = {
    ".gitignore": b"# created by tiers: this directory is a cache\n*\n",
    "CACHEDIR.TAG": b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This directory is a cache created by tiers (https://bford.info/cachedir/).\n",
}


def read_or_write_marker(
    root_fd: int, root: Path, name: str, content: dict[str, Any]
) -> dict[str, Any]:
    """The JSON object of the marker `name` in the store's root; written as `content` first
    if missing (one writer wins). `DamagedMarker` if it is ours but not a marker;
    `StorePermissionError` if something else is planted under its name (a link)."""
    try:
        return read_marker(root_fd, root, name)
    except FileNotFoundError:
        write_new(root_fd, name, json.dumps(content).encode() + b"\n")
        return read_marker(root_fd, root, name)


def read_marker(root_fd: int, root: Path, name: str) -> dict[str, Any]:
    """The marker's JSON object (see `read_or_write_marker`); FileNotFoundError if none."""
    try:
        flags = os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(name, flags, dir_fd=root_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise StorePermissionError(f"{root / name} is a link; delete it") from exc
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            _forget_temporaries(root_fd, name, info)  # a writer could not unlink its own
            info = os.fstat(fd)
        if not (stat.S_ISREG(info.st_mode) and info.st_nlink == 1) or info.st_size > MARKER_MAX:
            raise StorePermissionError(f"{root / name} is not a file of this store; delete it")
        raw = read_exact(fd, info.st_size)
    except EOFError as exc:
        raise DamagedMarker(f"{root / name} is damaged; delete the store directory") from exc
    finally:
        os.close(fd)
    try:
        return load_object(raw)
    except ValueError as exc:
        message = f"{root / name} is damaged; delete the store directory to start over"
        raise DamagedMarker(message) from exc


def _forget_temporaries(dir_fd: int, name: str, file: os.stat_result) -> None:
    """Unlink the temporary names `name` was written under (``.<name>.<...>.tmp``) that still
    lead to it: what a writer whose last unlink failed (EIO) leaves behind."""
    for other in os.listdir(dir_fd):
        if not (other.startswith(f".{name}.") and other.endswith(".tmp")):
            continue
        with contextlib.suppress(FileNotFoundError):
            info = os.stat(other, dir_fd=dir_fd, follow_symlinks=False)
            if (info.st_dev, info.st_ino) == (file.st_dev, file.st_ino):
                os.unlink(other, dir_fd=dir_fd)


def write_new(dir_fd: int, name: str, data: bytes) -> None:
    """Create `name` holding `data` unless it exists (one writer wins), so that it appears
    whole or not at all (`_put_whole`)."""

    def link(tmp: str) -> None:
        with contextlib.suppress(FileExistsError):
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)

    _put_whole(dir_fd, name, data, link)


def replace_file(dir_fd: int, name: str, data: bytes) -> None:
    """Put a new file holding `data` at `name`, atomically (whatever had the name, a link
    included, is replaced: never written through)."""

    def rename(tmp: str) -> None:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    _put_whole(dir_fd, name, data, rename)


def _put_whole(dir_fd: int, name: str, data: bytes, put: Callable[[str], None]) -> None:
    """Write `data` to a fresh temporary name beside `name` (``.<name>.<pid>.<random>.tmp``,
    0600, fsynced), `put` it in place by that name, then remove the temporary name."""
    tmp = f".{name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, 0o600)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        put(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)


def exists(dir_fd: int, name: str) -> bool:
    """Whether anything (a link included) has the name `name` in `dir_fd`."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def write_cosmetic_files(root_fd: int) -> None:
    """``.gitignore`` and ``CACHEDIR.TAG``: keep the cache out of git and backups."""
    for name, data in COSMETIC_FILES.items():
        with contextlib.suppress(OSError):  # cosmetic: never fail an open for them
            if not exists(root_fd, name):
                write_new(root_fd, name, data)


def make_dir(directory: Path) -> None:
    """mkdir 0700 (existing ones are checked, never changed: a real directory, ours, not a
    symlink). A new directory is synced into its parent, so that files made durable in it stay
    reachable."""
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise store_error(exc, directory, "create the directory") from exc
    else:
        sync_dir(directory.parent)
        check_dir(directory, fix_mode=True)  # (a new one: 0700 whatever the umask)
        return
    check_dir(directory, fix_mode=False)  # an existing one keeps its mode


def sync_dir(directory: Path) -> None:
    """fsync a directory (its entries); best effort where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, DIR_FLAGS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_dir(directory: Path, *, fix_mode: bool) -> None:
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StorePermissionError(
            f"{directory} must be a directory, not a symlink or a file; choose another path"
        )
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise StorePermissionError(
            f"{directory} belongs to another user (uid {info.st_uid}); refusing to use it, "
            "so choose a directory of your own"
        )
    if fix_mode and stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)


# -- descriptor-walked access ----------------------------------------------------------------


def open_dir(root: Path, *parts: str) -> int:
    """A descriptor of ``root/parts...``, refusing a symlink or non-directory at every step."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for at, part in enumerate(parts):
            inner = open_subdir(fd, part, root.joinpath(*parts[: at + 1]))
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_subdir(dir_fd: int, name: str, shown: object) -> int:
    """A descriptor of the directory `name` in `dir_fd`, never following a symlink:
    `StorePermissionError` naming it as `shown` if a symlink or a file has its name."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StorePermissionError(
                f"{shown} is a symlink or a file, not a directory; refusing it"
            ) from exc
        raise


def flock(fd: int, *, exclusive: bool) -> None:
    """Wait for a shared or exclusive `flock` of `fd` (released when `fd` is closed)."""
    if sys.platform == "win32":
        raise StoreError("this store needs POSIX file locks (flock), which Windows lacks")
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


@contextlib.contextmanager
def flocked(
    dir_fd: int, name: str, open_it: Callable[[], int | None], *, exclusive: bool
) -> Iterator[int | None]:
    """`name` in `dir_fd`, opened by `open_it` (None: absent) and flock-ed. Once the flock is
    had, `name` must still lead to what was opened: whoever deleted or replaced it meanwhile
    (holding the flock) makes this open the new one."""
    while True:
        fd = open_it()
        if fd is None:
            yield None
            return
        try:
            flock(fd, exclusive=exclusive)
            if _still_named(dir_fd, name, fd):
                break
        except BaseException:
            unlock_and_close(fd)
            raise
        unlock_and_close(fd)  # removed (or replaced) while we waited: look again
    try:
        yield fd
    finally:
        unlock_and_close(fd)


def _still_named(dir_fd: int, name: str, fd: int) -> bool:
    try:
        at_name = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (at_name.st_dev, at_name.st_ino) == (held.st_dev, held.st_ino)


def unlock_and_close(fd: int) -> None:
    """Release a flock, then close: a close that fails (EIO) may leave the descriptor open,
    and with it a lock that would block this process's next attempt forever."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_exact(fd: int, size: int) -> bytes:
    """`size` bytes from `fd`, finishing short reads (huge files, signals); EOFError if the
    file ends first."""
    data = os.read(fd, size) if size else b""
    if len(data) < size:
        parts = [data]
        got = len(data)
        while got < size:
            chunk = os.read(fd, size - got)
            if not chunk:
                raise EOFError(f"the file ended after {got} of {size} bytes")
            parts.append(chunk)
            got += len(chunk)
        data = b"".join(parts)
    return data


def write_all(fd: int, body: Buffer) -> None:
    view = memoryview(body).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def remove_tree(parent_fd: int, name: str) -> None:
    """Delete ``name`` (a file or a directory tree) inside `parent_fd`, never following a
    symlink; an already absent name is fine."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent_fd)  # a file or a symlink: the link itself goes
        return
    try:
        for inner in os.listdir(fd):
            remove_tree(fd, inner)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=parent_fd)


# -- processes -------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    # A zombie (dead, not yet reaped by its parent) still answers kill(0): check its state.
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


_REGISTERED: set[tuple[Path, str]] = set()  # (root, registry folder) this process is in


def register(root: Path, part: str) -> None:
    """Note in ``root/part`` that this process has the store open (once per process: a forked
    child registers again; at exit every registration is removed). Reached by descriptor:
    a registry folder swapped for a symlink fails the call instead of writing elsewhere."""
    if (root, part) in _REGISTERED:
        return
    fd = open_dir(root, part)
    try:
        with contextlib.suppress(FileExistsError):
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW
            os.close(os.open(str(os.getpid()), flags, 0o600, dir_fd=fd))
    finally:
        os.close(fd)
    _REGISTERED.add((root, part))


def forget_registrations() -> None:
    """After a fork: the child is a new process, registered nowhere yet."""
    _REGISTERED.clear()


def unregister_all() -> None:
    """At exit: this process no longer has any store open (never unlinks through a link)."""
    for root, part in list(_REGISTERED):
        with contextlib.suppress(OSError):
            fd = open_dir(root, part)
            try:
                os.unlink(str(os.getpid()), dir_fd=fd)
            finally:
                os.close(fd)
    _REGISTERED.clear()


def dead_processes(registry_fd: int) -> set[int]:
    """Pids registered in a registry folder that no longer run (they crashed with the store
    open)."""
    names = os.listdir(registry_fd)
    return {int(n) for n in names if n.isdigit() and not pid_alive(int(n))}


def forget_processes(registry_fd: int, pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.unlink(str(pid), dir_fd=registry_fd)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_registrations)
atexit.register(unregister_all)
