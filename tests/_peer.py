"""Process B of the coherence tests: a command server (`serve` of a workers module) in a
spawned child, asked one command at a time by the test's process (A)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

SPAWN = multiprocessing.get_context("spawn")


class Peer:
    """`serve(conn)` in a spawned child, one command at a time."""

    def __init__(self, serve: Callable[[Any], None], timeout: float = 60) -> None:
        self.conn, child = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=serve, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.pid = self.proc.pid
        self.timeout = timeout

    def ask(self, *command: Any, timeout: float | None = None) -> Any:
        self.conn.send(command)
        limit = self.timeout if timeout is None else timeout
        if not self.conn.poll(limit):  # a late answer would be taken for the next one's
            self.proc.kill()
            raise TimeoutError(f"process B did not answer {command[:2]} within {limit} s")
        status, result = self.conn.recv()
        if status != "ok":
            raise AssertionError(f"process B failed {command[:2]}: {result}")
        return result

    def open(self, spec: dict[str, Any]) -> Peer:
        """Open B's cache, with this test's user directories (so its signing key is A's)."""
        names = ("TIERS_CONFIG_DIR", "TIERS_CACHE_DIR")
        self.ask("open", spec, {n: os.environ[n] for n in names if n in os.environ})
        return self

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.ask("call", name, args, kwargs)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.is_alive():
                self.ask("stop", timeout=10)
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=10)
        self.conn.close()


def replaced_if_dead(holder: list[Peer], serve: Callable[[Any], None], timeout: float) -> Peer:
    """The module's process B, a new one if it died."""
    if not holder[0].proc.is_alive():
        holder[0].stop()
        holder[0] = Peer(serve, timeout)
    return holder[0]
