"""faultfs: a pass-through FUSE filesystem that counts, fails and forgets operations.

Run as a process of its own (never inside a test process, whose threads and signals it would
share), single-threaded (``FAULTFS_THREADS=1``: libfuse's thread pool):

    python tests/_faultfs/daemon.py BACKING MOUNTPOINT CONTROL_SOCKET [ENTRY_CACHE_SECONDS [PID]]

(with PID, it unmounts itself and exits once that process is gone)

Every operation on MOUNTPOINT is done on BACKING. The kernel caches found names for
ENTRY_CACHE_SECONDS, but neither attributes (st_nlink and st_size stay exact although each name
of a hard link is a node of its own) nor missing names (a create that fails after the file
was made must not leave the name hidden). A Unix socket
at CONTROL_SOCKET takes one JSON object per line and answers one per line (`FaultFS.command`):

- ``trace``/``log``: record the (kind, path) of every operation matching a glob, in order;
  ``counts``: calls per kind;
- ``fail``: make the nth call of an operation kind (on paths matching a glob) fail with an
  errno (EIO, ENOSPC, EDQUOT, EROFS, ...), write only half its bytes (``short``) or n of them
  (``short:n``), or sleep first (``delay:seconds``); rules carry a tag, and ``fired`` and
  ``clear`` (the calls failed so far; drop the rules) take one, so runs can share a mount;
- ``powerloss``: from now on, keep what a power cut would keep (LazyFS-style); ``sync``: all
  of it is durable now; ``cut``: every operation after the next n fails with EIO (the machine
  is dead); ``crash``: rewrite BACKING to what survived (`Durable.survivors`: only what was
  synced, or every name change but no unsynced byte, or a random part of both).

Power-loss model. The state when power-loss mode starts is durable. Each namespace change
(create, mkdir, symlink, link, unlink, rmdir, rename) is queued; fsync of a directory makes
the queued changes touching it durable, each with the earlier ones touching the same
directories (a journal commits in order; a rename is atomic across its two directories).
fsync/fdatasync of a file makes its current bytes durable. Files are known by inode number:
while the mode is on, nothing is really unlinked (it moves to a graveyard beside BACKING, and
st_nlink leaves those names out), so inode numbers are never reused. Locks (flock, fcntl) are
left to the kernel, which keeps them locally when the filesystem does not implement them:
right for one host.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import mfusepy as fuse

ERRNOS = {
    name: getattr(errno, name)
    for name in ("EIO", "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ENOMEM", "EFBIG")
}
PAGE = 4096


class Rule:
    """Fail (or slow down) calls `nth` .. `nth + times - 1` of `op` on paths matching `glob`."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.op: str = spec.get("op", "*")
        self.glob: str = spec.get("glob", "*")
        self.nth: int = int(spec.get("nth", 1))
        self.times: int = int(spec.get("times", 1))
        self.action: str = spec.get("action", "EIO")
        self.tag: str = spec.get("tag", "")
        self.seen = 0

    def matches(self, kind: str, path: str) -> bool:
        return fnmatch.fnmatchcase(kind, self.op) and fnmatch.fnmatchcase(path, self.glob)


class Durable:
    """What a power cut keeps (see the module docstring)."""

    def __init__(self, root: str, grave: str) -> None:
        self.root, self.grave = root, grave
        self.dirs: dict[int, dict[str, int]] = {}
        self.files: dict[int, bytes] = {}
        self.kinds: dict[int, str] = {}
        self.modes: dict[int, int] = {}
        self.targets: dict[int, str] = {}
        self.pending: list[tuple[Any, ...]] = []
        self.root_ino = os.lstat(root).st_ino
        self._snapshot(root)

    def _snapshot(self, path: str) -> None:
        info = os.lstat(path)
        self.learn(path, info)
        if stat.S_ISDIR(info.st_mode):
            entries = {}
            for name in os.listdir(path):
                child = os.path.join(path, name)
                entries[name] = os.lstat(child).st_ino
                self._snapshot(child)
            self.dirs[info.st_ino] = entries
        elif stat.S_ISREG(info.st_mode):
            with open(path, "rb") as handle:
                self.files[info.st_ino] = handle.read()

    def learn(self, path: str, info: os.stat_result | None = None) -> int:
        """Note what inode `path` is (kind, mode, symlink target); return its number."""
        info = info or os.lstat(path)
        ino = info.st_ino
        self.modes[ino] = stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            self.kinds[ino] = "d"
        elif stat.S_ISLNK(info.st_mode):
            self.kinds[ino] = "l"
            self.targets[ino] = os.readlink(path)
        else:
            self.kinds[ino] = "f"
        return ino

    # -- changes ----------------------------------------------------------------------------

    def queue(self, op: tuple[Any, ...]) -> None:
        self.pending.append(op)

    @staticmethod
    def touched(op: tuple[Any, ...]) -> set[int]:
        return {op[1], op[3]} if op[0] == "rename" else {op[1]}

    def commit_dir(self, ino: int) -> None:
        """fsync of directory `ino`: its queued changes (and those they depend on) are durable."""
        dirs, chosen = {ino}, set()
        for at in range(len(self.pending) - 1, -1, -1):
            if self.touched(self.pending[at]) & dirs:
                chosen.add(at)
                dirs |= self.touched(self.pending[at])
        for at in sorted(chosen):
            self._apply(self.pending[at])
        self.pending = [op for at, op in enumerate(self.pending) if at not in chosen]

    def commit_file(self, ino: int, fd: int) -> None:
        reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)  # `fd` may be write-only
        try:
            self.files[ino] = _read_fd(reader)
        finally:
            os.close(reader)
        self.modes[ino] = stat.S_IMODE(os.fstat(fd).st_mode)

    def _apply(self, op: tuple[Any, ...]) -> None:
        if op[0] == "link":
            self.dirs.setdefault(op[1], {})[op[2]] = op[3]
        elif op[0] == "unlink":
            self.dirs.setdefault(op[1], {}).pop(op[2], None)
        else:  # rename: src dir, src name, dst dir, dst name, inode
            self.dirs.setdefault(op[1], {}).pop(op[2], None)
            self.dirs.setdefault(op[3], {})[op[4]] = op[5]

    # -- the cut ----------------------------------------------------------------------------

    def survivors(self, mode: str, seed: int) -> dict[str, Any]:
        """Apply what survives a crash in `mode` ("drop": only what was synced; "metadata":
        every namespace change but no unsynced data; "random": a random prefix of the namespace
        changes and a random choice, page by page, between synced and unsynced data)."""
        rng = random.Random(seed)
        current = self._current_paths()
        kept_ops = {"drop": 0, "metadata": len(self.pending), "all": len(self.pending)}.get(
            mode, rng.randint(0, len(self.pending))
        )
        for op in self.pending[:kept_ops]:
            self._apply(op)
        changed_files = 0
        for ino, path in current.items():
            if self.kinds.get(ino) != "f":
                continue
            try:
                now = _read_path(path)
            except OSError:
                continue
            old = self.files.get(ino, b"")
            if now == old:
                continue
            changed_files += 1
            if mode == "all":
                self.files[ino] = now
            elif mode == "random":
                self.files[ino] = _mix_pages(old, now, rng)
        return {"pending_ops": len(self.pending), "kept_ops": kept_ops,
                "unsynced_files": changed_files}  # fmt: skip

    def _current_paths(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for top in (self.root, self.grave):
            for base, dirnames, filenames in os.walk(top):
                for name in dirnames + filenames:
                    path = os.path.join(base, name)
                    found.setdefault(os.lstat(path).st_ino, path)
        return found

    def rebuild(self) -> None:
        """Replace the contents of the backing root with the durable tree."""
        for name in os.listdir(self.root):
            _remove(os.path.join(self.root, name))
        for name in os.listdir(self.grave):
            _remove(os.path.join(self.grave, name))
        self._build_dir(self.root_ino, self.root, {self.root_ino}, {})

    def _build_dir(self, ino: int, path: str, seen: set[int], made: dict[int, str]) -> None:
        for name, child in sorted(self.dirs.get(ino, {}).items()):
            target = os.path.join(path, name)
            kind = self.kinds.get(child, "f")
            if kind == "d":
                if child in seen:
                    continue  # a directory cannot have two parents
                seen.add(child)
                os.mkdir(target)
                self._build_dir(child, target, seen, made)
            elif kind == "l":
                os.symlink(self.targets.get(child, ""), target)
                continue
            elif child in made:
                os.link(made[child], target)  # a hard link to a file built already
                continue
            else:
                with open(target, "wb") as handle:
                    handle.write(self.files.get(child, b""))
                made[child] = target
            os.chmod(target, self.modes.get(child, 0o600))


def _mix_pages(old: bytes, new: bytes, rng: random.Random) -> bytes:
    size = len(new) if rng.random() < 0.5 else len(old)
    out = bytearray(size)
    for at in range(0, size, PAGE):
        source = new if rng.random() < 0.5 else old
        page = source[at : at + PAGE]
        out[at : at + len(page)] = page
    return bytes(out)


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    parts, at = [], 0
    while at < size:
        chunk = os.pread(fd, min(1 << 20, size - at), at)
        if not chunk:
            break
        parts.append(chunk)
        at += len(chunk)
    return b"".join(parts)


def _read_path(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return _read_fd(fd)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class FaultFS(fuse.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, backing: str, grave: str) -> None:
        self.backing = os.path.realpath(backing)
        self.grave = grave
        self.mutex = threading.RLock()
        self.rules: dict[int, Rule] = {}
        self.next_rule = 0
        self.fired: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.trace_glob: str | None = None
        self.trace: list[tuple[str, str]] = []
        self.durable: Durable | None = None
        self.ops_total = 0
        self.cut_at: int | None = None
        self.dead = False
        self.handles: set[int] = set()
        self.buried = 0
        self.grave_links: dict[int, int] = {}  # inode -> names it has in the graveyard

    # -- plumbing -------------------------------------------------------------------------

    def real(self, path: str | None) -> str:
        if path is None:
            raise fuse.FuseOSError(errno.ENOENT)  # (an unlinked file: only its handle works)
        return self.backing + path if path != "/" else self.backing

    def gate(self, kind: str, path: str | None) -> str | None:
        """Count the call; fail it if a rule or the power cut says so; return an action to
        take while doing it (``short``) or None."""
        path = path or "<unlinked>"
        delay = 0.0
        action: str | None = None
        with self.mutex:
            self.ops_total += 1
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if self.trace_glob is not None and fnmatch.fnmatchcase(path, self.trace_glob):
                self.trace.append((kind, path))
            if self.dead:
                raise fuse.FuseOSError(errno.EIO)
            if self.cut_at is not None and self.ops_total >= self.cut_at:
                self.dead = True  # this call is the last one the disk sees
            for index, rule in self.rules.items():
                if not rule.matches(kind, path):
                    continue
                rule.seen += 1
                if not rule.nth <= rule.seen < rule.nth + rule.times:
                    continue
                self.fired.append({"rule": index, "tag": rule.tag, "op": kind, "path": path,
                                   "action": rule.action, "nth": rule.seen})  # fmt: skip
                if rule.action in ERRNOS:
                    raise fuse.FuseOSError(ERRNOS[rule.action])
                if rule.action.startswith("delay:"):
                    delay = float(rule.action.split(":", 1)[1])
                else:
                    action = rule.action
        if delay:
            time.sleep(delay)
        return action

    def bury(self, real: str) -> None:
        """Keep an inode alive in the graveyard (power-loss mode: no inode number reuse)."""
        self.buried += 1
        grave = os.path.join(self.grave, str(self.buried))
        if os.path.isdir(real) and not os.path.islink(real):
            os.rename(real, grave)
        else:
            os.link(real, grave, follow_symlinks=False)
            ino = os.lstat(grave).st_ino
            self.grave_links[ino] = self.grave_links.get(ino, 0) + 1

    def parent(self, real: str) -> int:
        return os.lstat(os.path.dirname(real)).st_ino

    # -- attributes -----------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        self.gate("getattr", path)
        with self.mutex:
            info = os.fstat(fh) if fh is not None else os.lstat(self.real(path))
        keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
                "st_blksize", "st_rdev")  # fmt: skip
        out: dict[str, Any] = {key: getattr(info, key) for key in keys}
        if not stat.S_ISDIR(info.st_mode):  # graveyard names are not the filesystem's
            out["st_nlink"] -= self.grave_links.get(info.st_ino, 0)
        out.update(st_atime=info.st_atime_ns, st_mtime=info.st_mtime_ns,
                   st_ctime=info.st_ctime_ns)  # fmt: skip
        return out

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        self.gate("chmod", path)
        with self.mutex:
            if fh is not None:
                os.fchmod(fh, mode)
            else:
                os.chmod(self.real(path), mode, follow_symlinks=False)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        self.gate("chown", path)
        with self.mutex:
            os.chown(self.real(path), uid, gid, follow_symlinks=False)
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None,
                fh: int | None = None) -> int:  # fmt: skip
        self.gate("utimens", path)
        target: Any = fh if fh is not None else self.real(path)
        now = times is None or min(times) < 2 * 10**9  # UTIME_NOW / UTIME_OMIT: now
        follow = fh is not None  # (a descriptor has nothing to follow; a path must not)
        with self.mutex:
            if now or times is None:
                os.utime(target, follow_symlinks=follow)
            else:
                os.utime(target, ns=times, follow_symlinks=follow)
        return 0

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self.gate("truncate", path)
        with self.mutex:
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(self.real(path), length)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        self.gate("statfs", path)
        info = os.statvfs(self.real(path))
        names = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                 "f_files", "f_flag", "f_frsize", "f_namemax")  # fmt: skip
        return {name: getattr(info, name) for name in names}

    # -- namespace ------------------------------------------------------------------------

    def _created(self, real: str) -> None:
        if self.durable is not None:
            ino = self.durable.learn(real)
            self.durable.queue(("link", self.parent(real), os.path.basename(real), ino))

    def mknod(self, path: str, mode: int, dev: int) -> int:
        self.gate("mknod", path)
        with self.mutex:
            os.mknod(self.real(path), mode, dev)
            self._created(self.real(path))
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        self.gate("mkdir", path)
        with self.mutex:
            os.mkdir(self.real(path), mode)
            self._created(self.real(path))
        return 0

    def symlink(self, target: str, source: str) -> int:
        self.gate("symlink", target)
        with self.mutex:
            os.symlink(source, self.real(target))
            self._created(self.real(target))
        return 0

    def link(self, target: str, source: str) -> int:
        self.gate("link", target)
        with self.mutex:
            os.link(self.real(source), self.real(target), follow_symlinks=False)
            self._created(self.real(target))
        return 0

    def readlink(self, path: str) -> str:
        self.gate("readlink", path)
        return os.readlink(self.real(path))

    def unlink(self, path: str) -> int:
        self.gate("unlink", path)
        real = self.real(path)
        with self.mutex:
            if self.durable is not None:
                parent = self.parent(real)
                self.bury(real)
                os.unlink(real)
                self.durable.queue(("unlink", parent, os.path.basename(real)))
            else:
                os.unlink(real)
        return 0

    def rmdir(self, path: str) -> int:
        self.gate("rmdir", path)
        real = self.real(path)
        with self.mutex:
            if self.durable is not None:
                if os.listdir(real):
                    raise fuse.FuseOSError(errno.ENOTEMPTY)
                parent = self.parent(real)
                self.bury(real)
                self.durable.queue(("unlink", parent, os.path.basename(real)))
            else:
                os.rmdir(real)
        return 0

    def rename(self, old: str, new: str) -> int:
        self.gate("rename", old)
        src, dst = self.real(old), self.real(new)
        with self.mutex:
            if self.durable is None:
                os.rename(src, dst)
                return 0
            moving = os.lstat(src)
            try:
                there = os.lstat(dst)
            except FileNotFoundError:
                there = None
            if there is not None and there.st_ino != moving.st_ino:
                if stat.S_ISDIR(moving.st_mode) != stat.S_ISDIR(there.st_mode):
                    raise fuse.FuseOSError(
                        errno.EISDIR if stat.S_ISDIR(there.st_mode) else errno.ENOTDIR
                    )
                if stat.S_ISDIR(there.st_mode) and os.listdir(dst):
                    raise fuse.FuseOSError(errno.ENOTEMPTY)
                self.bury(dst)
            sparent, dparent = self.parent(src), self.parent(dst)
            os.rename(src, dst)
            self.durable.queue(("rename", sparent, os.path.basename(src), dparent,
                                os.path.basename(dst), moving.st_ino))  # fmt: skip
        return 0

    # -- files ----------------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        self.gate("open", path)
        with self.mutex:
            fd = os.open(self.real(path), flags & ~(os.O_CREAT | os.O_EXCL))
            self.handles.add(fd)
        return fd

    def create(self, path: str, mode: int, flags: int) -> int:
        self.gate("create", path)
        with self.mutex:
            fd = os.open(self.real(path), flags | os.O_CREAT, mode)
            self.handles.add(fd)
            self._created(self.real(path))
        return fd

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self.gate("read", path)
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        action = self.gate("write", path)
        if action is not None and action.startswith("short") and len(data) > 1:
            keep = int(action[6:]) if action.startswith("short:") else len(data) // 2
            data = data[: max(1, min(keep, len(data) - 1))]
        with self.mutex:
            return os.pwrite(fh, data, offset)

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        self.gate("fallocate", path)
        if mode != 0:
            raise fuse.FuseOSError(errno.EOPNOTSUPP)
        with self.mutex:
            os.posix_fallocate(fh, offset, size)
        return 0

    def flush(self, path: str, fh: int) -> int:
        self.gate("flush", path)
        return 0

    def release(self, path: str, fh: int) -> int:
        try:
            self.gate("release", path)  # (failed or not, the handle goes: the kernel forgets it)
        finally:
            with self.mutex:
                if fh in self.handles:
                    self.handles.discard(fh)
                    os.close(fh)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        self.gate("fdatasync" if datasync else "fsync", path)
        with self.mutex:
            (os.fdatasync if datasync else os.fsync)(fh)
            if self.durable is not None:
                self.durable.commit_file(os.fstat(fh).st_ino, fh)
        return 0

    # -- directories ----------------------------------------------------------------------

    def opendir(self, path: str) -> int:
        self.gate("opendir", path)
        with self.mutex:
            fd = os.open(self.real(path), os.O_RDONLY | os.O_DIRECTORY)
            self.handles.add(fd)
        return fd

    def readdir(self, path: str, fh: int) -> Iterator[Any]:
        self.gate("readdir", path)
        with self.mutex:
            names = os.listdir(self.real(path))
            found = []
            for name in names:
                try:
                    info = os.lstat(os.path.join(self.real(path), name))
                except FileNotFoundError:
                    continue
                found.append((name, {"st_mode": info.st_mode, "st_ino": info.st_ino}, 0))
        yield "."
        yield ".."
        yield from found

    def releasedir(self, path: str, fh: int) -> int:
        try:
            self.gate("releasedir", path)  # (failed or not, the handle goes: the kernel forgets it)
        finally:
            with self.mutex:
                if fh in self.handles:
                    self.handles.discard(fh)
                    os.close(fh)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        self.gate("fsyncdir", path)
        with self.mutex:
            os.fsync(fh)
            if self.durable is not None:
                self.durable.commit_dir(os.fstat(fh).st_ino)
        return 0

    # -- control --------------------------------------------------------------------------

    def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control command (see the module docstring); the answer to send back."""
        cmd = request.get("cmd")
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "ping": lambda r: {"pid": os.getpid()},
            "trace": self._cmd_trace,
            "log": self._cmd_log,
            "counts": lambda r: {"counts": dict(self.counts), "total": self.ops_total},
            "fail": self._cmd_fail,
            "clear": self._cmd_clear,
            "fired": lambda r: {"fired": self._fired(r.get("tag"))},
            "powerloss": self._cmd_powerloss,
            "sync": self._cmd_sync,
            "cut": self._cmd_cut,
            "crash": self._cmd_crash,
            "status": lambda r: {"dead": self.dead, "handles": len(self.handles),
                                 "powerloss": self.durable is not None,
                                 "pending": len(self.durable.pending) if self.durable else 0},
        }  # fmt: skip
        if cmd not in handlers:
            return {"error": f"unknown command {cmd!r}"}
        with self.mutex:
            return handlers[cmd](request)

    def _cmd_trace(self, r: dict[str, Any]) -> dict[str, Any]:
        self.trace_glob, self.trace = r.get("glob"), []
        return {}

    def _cmd_log(self, r: dict[str, Any]) -> dict[str, Any]:
        ops, self.trace = self.trace, []
        return {"ops": ops}

    def _fired(self, tag: str | None) -> list[dict[str, Any]]:
        return [event for event in self.fired if tag is None or event["tag"] == tag]

    def _cmd_fail(self, r: dict[str, Any]) -> dict[str, Any]:
        rule = Rule(r)
        if not (rule.action in ERRNOS or rule.action.startswith(("short", "delay:"))):
            return {"error": f"unknown action {rule.action!r}"}
        self.next_rule += 1
        self.rules[self.next_rule] = rule
        return {"rule": self.next_rule}

    def _cmd_clear(self, r: dict[str, Any]) -> dict[str, Any]:
        """Drop the rules with `tag` (all without one); return what they failed."""
        tag = r.get("tag")
        fired = self._fired(tag)
        self.fired = [event for event in self.fired if event not in fired]
        self.rules = {
            i: rule for i, rule in self.rules.items() if tag is not None and rule.tag != tag
        }
        return {"fired": fired}

    def _cmd_powerloss(self, r: dict[str, Any]) -> dict[str, Any]:
        self.durable = Durable(self.backing, self.grave) if r.get("on", True) else None
        if self.durable is None:
            for name in os.listdir(self.grave):
                _remove(os.path.join(self.grave, name))
            self.grave_links.clear()
        return {}

    def _cmd_sync(self, r: dict[str, Any]) -> dict[str, Any]:
        if self.durable is not None:
            self.durable = Durable(self.backing, self.grave)
        return {}

    def _cmd_cut(self, r: dict[str, Any]) -> dict[str, Any]:
        after = int(r.get("after", 0))
        if after <= 0:
            self.dead = True
        else:
            self.cut_at = self.ops_total + after
        return {}

    def _cmd_crash(self, r: dict[str, Any]) -> dict[str, Any]:
        if self.durable is None:
            return {"error": "power-loss mode is off"}
        deadline = time.monotonic() + 5
        while self.handles and time.monotonic() < deadline:
            self.mutex.release()  # let the kernel's late RELEASE calls through
            time.sleep(0.02)
            self.mutex.acquire()
        open_handles = len(self.handles)
        for fd in self.handles:
            os.close(fd)
        self.handles.clear()
        report = self.durable.survivors(r.get("mode", "drop"), int(r.get("seed", 0)))
        self.durable.rebuild()
        self.grave_links.clear()
        self.durable = Durable(self.backing, self.grave)
        self.dead, self.cut_at = False, None
        return {**report, "open_handles": open_handles}


class _FUSE(fuse.FUSE):  # type: ignore[misc]
    """mfusepy's FUSE, passing the file handle to truncate/chmod/utimens (ftruncate, fchmod,
    futimens): without it, those calls on an unlinked open file have no path to work on."""

    def _fh(self, fip: Any) -> int | None:
        return fip.contents.fh if fip else None

    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        return int(self.operations.truncate(self._path(path), length, self._fh(fip)))

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        return int(self.operations.chmod(self._path(path), mode, self._fh(fip)))

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        times = None
        if buf:
            times = (fuse.time_of_timespec(buf.contents.actime, use_ns=True),
                     fuse.time_of_timespec(buf.contents.modtime, use_ns=True))  # fmt: skip
        return int(self.operations.utimens(self._path(path), times, self._fh(fip)))


def serve_control(fs: FaultFS, path: str) -> None:
    """Answer control commands on the Unix socket `path` (one thread per connection)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)

    def talk(conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                try:
                    answer = fs.command(json.loads(line))
                except Exception as exc:  # report, keep serving
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                stream.write(json.dumps(answer).encode() + b"\n")
                stream.flush()

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=talk, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def watch_parent(pid: int, mountpoint: str) -> None:
    """Unmount (lazily) once process `pid` is gone: a test process killed before its teardown
    leaves no mount and no daemon behind."""

    def watch() -> None:
        while True:
            time.sleep(1)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
        for command in (["fusermount3", "-u", "-z", mountpoint], ["umount", "-l", mountpoint]):
            try:
                if subprocess.run(command, capture_output=True, check=False).returncode == 0:
                    return  # the FUSE loop ends, and the process with it
            except OSError:
                continue
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    backing, mountpoint, control = argv[1:4]
    cache = float(argv[4]) if len(argv) > 4 else 0.0
    if len(argv) > 5:
        watch_parent(int(argv[5]), mountpoint)
    grave = os.path.realpath(backing).rstrip("/") + ".grave"
    os.makedirs(grave, exist_ok=True)
    fs = FaultFS(backing, grave)
    serve_control(fs, control)
    _FUSE(
        fs,
        mountpoint,
        foreground=True,
        nothreads=os.environ.get("FAULTFS_THREADS") != "1",
        fsname="faultfs",
        default_permissions=True,
        entry_timeout=cache,
        attr_timeout=0,  # st_nlink must be exact: a hard link's other names are other nodes
        negative_timeout=0,  # a create that fails after it happened must not hide the name
        hard_remove=True,
        use_ino=True,
    )


if __name__ == "__main__":
    main(sys.argv)
