"""Replays the store workload under libfiu (``fiu-run -x``), failing one C library call.

    fiu-run -x python tests/_faultfs/fiu_worker.py KIND BASE PLAN.json OUT.jsonl

PLAN.json lists runs: ``{"point": "posix/io/rw/write", "nth": 7, "errno": "EIO"}`` (``nth``
0: count only; -1: every call fails). Each run replays `workload.STEPS` on a store of its own
under BASE with the nth call of the failure point failing (an external libfiu callback counts
the calls, so the step the fault fired in is known), and appends its result to OUT.jsonl as
one JSON line. Results are written between runs, when no failure is pending: a crash (a
signal) loses only the run it happened in, and the parent starts a new worker for the rest.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests._faultfs import workload

_CB = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
    ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_uint),
)  # fmt: skip


class Point:
    """One libfiu failure point, failing its `nth` call (0: never; -1: every call), counting
    every call."""

    def __init__(self, lib: Any, name: str) -> None:
        self.lib, self.name = lib, name.encode()
        self.calls = self.nth = 0
        self.fired = False
        self._callback = _CB(self._decide)  # (kept alive: libfiu holds only the pointer)

    def _decide(self, _name: bytes, _failnum: Any, _failinfo: Any, _flags: Any) -> int:
        self.calls += 1
        if self.calls == self.nth or self.nth < 0:
            self.fired = True
            return 1
        return 0

    def arm(self, nth: int, code: int) -> None:
        self.calls, self.nth, self.fired = 0, nth, False
        self.lib.fiu_enable_external(self.name, 1, ctypes.c_void_p(code), 0, self._callback)

    def disarm(self) -> None:
        self.lib.fiu_disable(self.name)


def main(kind: str, base: str, plan_path: str, out_path: str) -> None:
    lib = ctypes.CDLL("libfiu.so.0")
    lib.fiu_enable_external.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                                        ctypes.c_uint, _CB]  # fmt: skip
    lib.fiu_disable.argtypes = [ctypes.c_char_p]
    plan = json.loads(Path(plan_path).read_text())
    done = len(Path(out_path).read_text().splitlines()) if os.path.exists(out_path) else 0
    for run in plan[done:]:
        point = Point(lib, run["point"])
        code = getattr(errno, run.get("errno") or "EIO")
        path = os.path.join(base, f"f{run['index']}", "store")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fault = {"action": run.get("action", run.get("errno")),
                 "tolerate": run.get("tolerate", []), "sync": "/sync/" in run["point"]}  # fmt: skip
        counts: list[int] = []

        def fired(point: Point = point, counts: list[int] = counts) -> bool:
            counts.append(point.calls)
            return point.fired

        point.arm(run["nth"], code)
        try:
            result = workload.replay(kind, path, fault, fired)
        finally:
            point.disarm()
        result["calls_per_step"] = counts
        result["fired"] = point.fired
        with open(out_path, "a") as out:
            out.write(json.dumps({"index": run["index"], **result}) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])
