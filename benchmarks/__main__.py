"""``python -m benchmarks``: every comparison, each in a fresh process, as one table.

Options: ``--quick`` (small counts, a smoke run), ``--scale-1m`` (the 1M-entry scale row),
``--only NAME`` (one comparison or a group such as ``disk``), ``--markdown PATH`` (also write
the table as Markdown), ``--profile`` (cProfile the tiers cases, to stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from . import select
from ._harness import Row
from ._machine import cpu_seconds, load, machine, versions
from ._one import MARKER
from ._report import markdown, text_table

ROOT = Path(__file__).resolve().parent.parent  # where `benchmarks` is importable from
TIMEOUT = 3600


def run_one(name: str, flags: list[str]) -> list[Row]:
    """Run comparison `name` in a subprocess; its stderr (progress) passes through.

    Each row is stamped with how many CPUs other work kept busy while it ran.
    """
    print(f"[{name}]", file=sys.stderr, flush=True)
    busy, ours = cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._one", name, *flags],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    busy_after, ours_after = cpu_seconds()
    other = max(0.0, (busy_after - busy) - (ours_after - ours)) / (time.perf_counter() - started)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"comparison {name!r} failed (exit status {done.returncode})")
    rows = [Row(**fields) for fields in json.loads(lines[-1][len(MARKER) :])]
    return [dataclasses.replace(row, other_load=other) for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    parser.add_argument("--scale-1m", action="store_true", help="scale row at 1M entries")
    parser.add_argument("--only", metavar="NAME", help="one comparison or group (e.g. disk)")
    parser.add_argument("--markdown", metavar="PATH", type=Path, help="write the table here")
    parser.add_argument("--profile", action="store_true", help="cProfile tiers cases to stderr")
    args = parser.parse_args()
    names = select(args.only)
    flags = [
        flag
        for flag, on in (("--quick", args.quick), ("--scale-1m", args.scale_1m),
                         ("--profile", args.profile))
        if on
    ]  # fmt: skip

    about_machine, about_versions = machine(), versions()
    print(f"machine: {about_machine}")
    print(f"versions: {about_versions}", flush=True)
    started = time.perf_counter()
    rows: list[Row] = []
    failed: list[str] = []
    for name in names:
        try:
            rows.extend(run_one(name, flags))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed.append(name)
    print()
    print(text_table(rows))
    elapsed = time.perf_counter() - started
    print(f"\n{len(names)} comparisons in {elapsed:.0f} s; load average now {load()}", end="")
    print(f"; failed: {', '.join(failed)}" if failed else "", flush=True)
    if args.quick:
        print("--quick: small counts, a smoke run; the verdicts of a full run are the ones to use")
    if args.markdown:
        command = " ".join(["python -m benchmarks", *sys.argv[1:]])
        args.markdown.write_text(markdown(rows, about_machine, about_versions, command))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
