"""Start, drive and stop a faultfs daemon (`daemon.py`) from a test process.

The daemon is a process of its own, in a session of its own; `FaultMount.stop` unmounts
(``fusermount3 -u``, else ``umount -l``) and then kills the daemon by its pid if it is still
there, so a failed test never leaves a mount or a process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DAEMON = Path(__file__).with_name("daemon.py")
START_SECONDS = 20.0


class FaultFSUnavailable(RuntimeError):
    """faultfs cannot run here (no /dev/fuse, mfusepy, libfuse3 or mount rights)."""


def unavailable_reason() -> str | None:
    """Why faultfs cannot run on this machine, or None if it should."""
    import importlib.util

    if sys.platform != "linux":
        return "faultfs needs Linux FUSE"
    if not os.path.exists("/dev/fuse"):
        return "faultfs needs /dev/fuse"
    if importlib.util.find_spec("mfusepy") is None:
        return "faultfs needs the mfusepy package (pip install mfusepy)"
    if shutil.which("fusermount3") is None and os.geteuid() != 0:
        return "faultfs needs fusermount3 (Debian: fuse3) or root"
    return None


class Control:
    """A client of a faultfs control socket (one per process: do not share across a fork)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._sock: socket.socket | None = None
        self._stream: Any = None

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._stream = None

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one command; its answer (RuntimeError if the daemon reports an error)."""
        if self._stream is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(60)
            sock.connect(self.path)
            self._sock, self._stream = sock, sock.makefile("rwb")
        self._stream.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        self._stream.flush()
        line = self._stream.readline()
        if not line:
            self.close()
            raise ConnectionError("the faultfs daemon closed the control socket")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"faultfs {cmd}: {answer['error']}")
        return answer


class FaultMount:
    """A faultfs mounted at `mountpoint` over `backing`, with its control socket."""

    def __init__(self, base: Path, *, cache_seconds: float = 1.0) -> None:
        self.base = base
        self.cache_seconds = cache_seconds
        self.backing = base / "backing"
        self.mountpoint = base / "mnt"
        self.control = base / "ctl" / "sock"
        self.log = base / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._control = Control(self.control)
        for path in (self.backing, self.mountpoint, self.control.parent):
            path.mkdir(parents=True, exist_ok=True)

    # -- process --------------------------------------------------------------------------

    def start(self) -> FaultMount:
        reason = unavailable_reason()
        if reason is not None:
            raise FaultFSUnavailable(reason)
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(DAEMON), str(self.backing), str(self.mountpoint),
                 str(self.control), str(self.cache_seconds), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                self.proc = None
                raise FaultFSUnavailable(f"the faultfs daemon exited at start:\n{tail}")
            if os.path.ismount(self.mountpoint) and self.control.exists():
                with contextlib.suppress(OSError):
                    self.call("ping")
                    return self
            time.sleep(0.02)
        self.stop()
        raise FaultFSUnavailable(f"faultfs did not mount within {START_SECONDS} s")

    def stop(self) -> None:
        """Unmount and end the daemon (by pid), whatever state it is in."""
        self._control.close()
        if os.path.ismount(self.mountpoint):
            done = subprocess.run(
                ["fusermount3", "-u", str(self.mountpoint)], capture_output=True, check=False,
                timeout=30,
            ) if shutil.which("fusermount3") else None  # fmt: skip
            if done is None or done.returncode != 0:
                subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True,
                               check=False, timeout=30)  # fmt: skip
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.wait(timeout=3)  # (a lazy unmount waits for open files: do not wait)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def remount(self) -> None:
        self.stop()
        self.start()

    # -- control --------------------------------------------------------------------------

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one control command to the daemon; its answer."""
        return self._control.call(cmd, **args)

    def trace(self, glob: str | None) -> None:
        """Record (kind, path) of each operation on a path matching `glob` (None: stop)."""
        self.call("trace", glob=glob)

    def ops(self) -> list[tuple[str, str]]:
        """The operations recorded since `trace` (or the last call), in order."""
        return [(kind, path) for kind, path in self.call("log")["ops"]]

    def fail(self, op: str, nth: int = 1, *, glob: str = "*", action: str = "EIO",
             times: int = 1, tag: str = "") -> None:  # fmt: skip
        """Make calls nth..nth+times-1 of `op` on paths matching `glob` fail with `action`
        (an errno name, ``short`` for a half write, ``short:<n>`` to write n bytes, or
        ``delay:<seconds>``)."""
        self.call("fail", op=op, nth=nth, glob=glob, action=action, times=times, tag=tag)

    def clear(self, tag: str | None = None) -> list[dict[str, Any]]:
        """Drop the rules (those with `tag`, if given); the calls they failed."""
        return list(self.call("clear", tag=tag)["fired"])

    def powerloss(self, on: bool = True) -> None:
        """Start keeping only what a power cut would keep (from the current state)."""
        self.call("powerloss", on=on)

    def sync(self) -> None:
        """Make everything durable now (like the kernel writing everything back)."""
        self.call("sync")

    def cut(self, after: int = 0) -> None:
        """Cut the power after `after` more operations (0: now): later ones fail with EIO."""
        self.call("cut", after=after)

    def crash(self, mode: str = "drop", seed: int = 0, *, remount: bool = True) -> dict[str, Any]:
        """Restore what survives a power cut (see daemon.Durable.survivors), then remount (the
        machine restarts). Every process using the mount must be gone."""
        report = self.call("crash", mode=mode, seed=seed)
        if remount:
            self.remount()
        return report

    def status(self) -> dict[str, Any]:
        return self.call("status")
